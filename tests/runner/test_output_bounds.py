"""A job cannot grow the host through its stdout or stderr: every backend reads them with a budget.

Before, a job printing without newlines made the host hold everything it printed (4+ GiB);
now the excess ends the job with a clear error, and the host's memory stays bounded.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from gpenguard.errors import SandboxError
from gpenguard.policy import Policy, SandboxPolicy
from gpenguard.runner.interface import LINE_CAP, STDERR_CAP, STDOUT_CAP, STDOUT_KEEP, JobOutput
from gpenguard.runner.seccomp import load_profile
from gpenguard.runner.spec import HOST_IMAGE, Job, build_spec
from tests.runner import battery

POLICY = Policy(name="bounds", sandbox=SandboxPolicy(memory_bytes=512 * 2**20, pids_limit=64, cpus=1.0, timeout_s=120.0))
GIB = "1 << 30"


def _flood(stream: int, newline: bool) -> str:
    """Write 1 GiB to fd `stream`, in 64 KiB blocks, with or without newlines."""
    block = "b'x' * 1023 + b'\\n'" if newline else "b'x' * 1024"
    return f"import os\nblock = ({block}) * 64\nfor _ in range(({GIB}) // len(block)):\n    os.write({stream}, block)\n"


def test_job_output_keeps_bounded_state() -> None:
    out = JobOutput("stdout", cap=STDOUT_CAP, keep=STDOUT_KEEP)
    chunk = b"y" * 2**16
    fed = 0
    while out.feed(chunk):
        fed += len(chunk)
    assert fed <= LINE_CAP + len(chunk)
    assert out.overflow == "the sandboxed job wrote a line of more than 1 MiB to stdout and was killed"
    assert len(out.text()) <= STDOUT_KEEP


def test_job_output_parses_events_split_across_chunks() -> None:
    seen: list[Any] = []
    out = JobOutput("stdout", cap=STDOUT_CAP, keep=STDOUT_KEEP, on_event=seen.append)
    for piece in (b'noise\n{"event": "ima', b'ge", "n": 1}\n{"event": "done"}'):
        assert out.feed(piece)
    out.close()
    assert [e["event"] for e in seen] == ["image", "done"]


def test_job_output_total_cap() -> None:
    err = JobOutput("stderr", cap=STDERR_CAP, keep=100, tail=True)
    line = b"z" * 1023 + b"\n"
    while err.feed(line * 64):
        pass
    assert err.overflow == "the sandboxed job wrote more than 16 MiB to stderr and was killed"
    assert len(err.text()) == 100


@pytest.fixture(params=["docker-runc", "docker-runsc", "bwrap"])
def backend_and_image(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, str, Path]:
    """(backend, image, output folder) for each backend and runtime the battery covers."""
    if request.param == "bwrap":
        from gpenguard.runner.bwrap import BwrapBackend

        bwrap = request.getfixturevalue("bwrap_available")
        _, out, _ = battery.job_files(tmp_path)
        return BwrapBackend(bwrap=bwrap), HOST_IMAGE, out
    from gpenguard.runner.docker import DockerBackend

    engine = request.getfixturevalue("docker_engine")
    image = request.getfixturevalue("sandbox_image")
    runtime = request.param.split("-", 1)[1]
    if runtime == "runsc" and "runsc" not in (engine.info().get("Runtimes") or {}):
        request.getfixturevalue("docker_runtime")  # skips, or fails under GPENGUARD_REQUIRE_RUNSC=1
    owner = (65534, 65534) if os.geteuid() == 0 else None
    _, out, _ = battery.job_files(tmp_path, out_owner=owner)
    return DockerBackend(engine, runtime), image, out


def _run(backend: Any, image: str, out: Path, source: str) -> tuple[BaseException, int]:
    user = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    job = Job(image=image, command=("python", "-c", source), output_dir=str(out), user=user)
    spec = build_spec(POLICY, job, seccomp_profile=load_profile())
    tracemalloc.start()
    try:
        with pytest.raises(SandboxError) as caught:
            backend.run(spec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return caught.value, peak


def test_a_line_without_end_is_cut_off(backend_and_image: tuple[Any, str, Path]) -> None:
    error, peak = _run(*backend_and_image, _flood(1, newline=False))
    assert error.message == "the sandboxed job wrote a line of more than 1 MiB to stdout and was killed"
    assert peak < 32 * 2**20, f"the host held {peak >> 20} MiB of the job's output"


def test_too_much_stdout_ends_the_job(backend_and_image: tuple[Any, str, Path]) -> None:
    error, peak = _run(*backend_and_image, _flood(1, newline=True))
    assert error.message == "the sandboxed job wrote more than 64 MiB to stdout and was killed"
    assert peak < 32 * 2**20, f"the host held {peak >> 20} MiB of the job's output"


def test_stderr_flood_is_bounded(backend_and_image: tuple[Any, str, Path]) -> None:
    """bwrap reads stderr itself (budget, then kill); Docker's log driver keeps at most 16 MiB
    and the host asks it for the last lines only, so the job just fails with a short tail."""
    backend = backend_and_image[0]
    error, peak = _run(*backend_and_image, _flood(2, newline=False) + "raise SystemExit(3)\n")
    if backend.name == "bwrap":
        assert error.message == "the sandboxed job wrote more than 16 MiB to stderr and was killed"
    else:
        assert error.message == "the sandboxed job exited with status 3"
    assert len(error.hint or "") <= 4 * 2**20
    assert peak < 64 * 2**20, f"the host held {peak >> 20} MiB of the job's output"
