"""`gpenguard.pipeline`: what `restore` refuses before the gate, and the re-check before start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpenguard.errors import InputError, UsageError, VerificationError
from gpenguard.pipeline import GPEN_SIZES, RestoreRequest, restore, run_worker
from gpenguard.policy import Policy
from gpenguard.runner.interface import EventSink, RunResult
from gpenguard.runner.spec import HOST_IMAGE, JOB_FILE, SandboxSpec
from gpenguard.runner.worker import WorkerJob
from tests.runner import battery


def test_sizes_match_the_released_models() -> None:
    from gpenguard.nets.gpen import GPEN_BFR

    assert tuple(sorted(GPEN_BFR)) == GPEN_SIZES


def _png(path: Path, size: int = 8) -> Path:
    from PIL import Image

    Image.new("RGB", (size, size), (90, 120, 150)).save(path)
    return path


def _request(tmp_path: Path, **changes: Any) -> RestoreRequest:
    face = _png(tmp_path / "face.png")
    fields: dict[str, Any] = {
        "inputs": (face,), "output_dir": tmp_path / "out", "gpen": tmp_path / "never-read.pth",
        "backend": "bwrap", "store": tmp_path / "store", **changes,
    }  # fmt: skip
    return RestoreRequest(**fields)


def test_unknown_size_is_refused_before_the_gate(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--size must be one of 256, 512, 1024, 2048, not 300"):
        restore(_request(tmp_path, size=300))
    assert not (tmp_path / "store").exists()


def test_output_path_that_is_a_file_is_refused_before_the_gate(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    with pytest.raises(InputError, match="exists and is not a folder") as caught:
        restore(_request(tmp_path, output_dir=tmp_path / "taken"))
    assert caught.value.exit_code == 2
    assert not (tmp_path / "store").exists()


class _NeverRun:
    name = "never"

    def __init__(self) -> None:
        self.started = False

    def output_owner(self, user: tuple[int, int]) -> tuple[int, int]:
        return user

    def run(self, spec: SandboxSpec, *, on_event: EventSink | None = None) -> RunResult:
        self.started = True
        raise AssertionError("the backend must not start")


def test_run_worker_rechecks_the_store_before_the_backend_starts(tmp_path: Path) -> None:
    """Any caller of `run_worker`, not only `restore`, gets invariant 4's re-check."""
    stored = battery.stored_weights(tmp_path)
    weights = stored.path
    weights.write_bytes(weights.read_bytes() + b" ")  # changed after conversion
    face = _png(tmp_path / "face.png")
    backend = _NeverRun()
    with pytest.raises(VerificationError, match="provenance record says"):
        run_worker(backend, HOST_IMAGE, Policy(name="t"), [stored], [face], tmp_path / "out")
    assert not backend.started
    assert not (tmp_path / "out").exists()  # a failed run leaves OUTDIR as it was


class _Recorder(_NeverRun):
    spec: SandboxSpec
    job: WorkerJob

    def run(self, spec: SandboxSpec, *, on_event: EventSink | None = None) -> RunResult:
        self.spec = spec
        self.job = WorkerJob.from_json(Path(next(b.source for b in spec.binds if b.target == JOB_FILE)).read_text())
        return RunResult(backend=self.name, exit_code=0, events=(), stdout="", stderr_tail="", duration_s=0.0)


def test_worker_inputs_are_where_the_spec_mounts_them(tmp_path: Path) -> None:
    """A name with a space is mounted under a safe name, and the worker is told that same name."""
    stored = battery.stored_weights(tmp_path)
    faces = [tmp_path / "my photo.png", tmp_path / "album"]
    _png(faces[0])
    faces[1].mkdir()
    _png(faces[1] / "b.png")
    backend = _Recorder()
    done = run_worker(backend, HOST_IMAGE, Policy(name="t"), [stored], faces, tmp_path / "out")
    assert backend.job.inputs == ("/in/0000-my_photo.png", "/in/0001-album/b.png")
    assert backend.spec.command[-2:] == ("--job-file", JOB_FILE)
    mounted = {bind.target for bind in backend.spec.binds}
    assert {"/in/0000-my_photo.png", "/in/0001-album"} <= mounted
    # A job that returned nothing: each image is a failure naming its host path; nothing left behind.
    assert [str(f) for f in done.failures] == [
        f"{faces[0]}: the sandbox returned no result for it", f"{faces[1] / 'b.png'}: the sandbox returned no result for it"
    ]
    assert not (tmp_path / "out").exists()


def test_a_folder_without_images_is_refused_before_the_gate(tmp_path: Path) -> None:
    empty = tmp_path / "album"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no image files in this folder") as caught:
        restore(_request(tmp_path, inputs=(empty,)))
    assert caught.value.exit_code == 2
    assert not (tmp_path / "store").exists()


def test_a_malformed_gpu_id_is_refused_before_the_gate(tmp_path: Path) -> None:
    """Before the toolkit check too: a typo is a usage error on every host."""
    with pytest.raises(UsageError, match=r"--gpu takes GPU indexes .* not 'garbage'"):
        restore(_request(tmp_path, backend="docker", gpus=("0", "garbage")))
    assert not (tmp_path / "store").exists()


def test_runsc_with_bwrap_is_refused_before_the_gate(tmp_path: Path) -> None:
    """bwrap has no container runtime: asking for gVisor there is a usage error, not a runc run."""
    with pytest.raises(UsageError, match="runsc needs --backend docker"):
        restore(_request(tmp_path, runtime="runsc"))
    assert not (tmp_path / "store").exists()
