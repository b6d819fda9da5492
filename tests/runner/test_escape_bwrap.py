"""The escape battery under bubblewrap: the same probes, the same host-side checks."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from gpenguard.errors import SandboxError, SandboxOOM, SandboxTimeout
from gpenguard.policy import Policy, SandboxPolicy
from gpenguard.runner.bwrap import BwrapBackend, HostRuntime, bwrap_argv
from gpenguard.runner.seccomp import load_profile
from gpenguard.runner.spec import HOST_IMAGE, Bind, Job, SandboxSpec, build_spec
from tests.runner import battery

REPO = Path(__file__).resolve().parents[2]
UNPRIVILEGED_UID = 54321
"""A uid with no account: the unprivileged caller when the tests run as root."""
PLAIN_PYTHON = "/usr/bin/python3"
"""The distribution's Python (the probes need only the standard library)."""

POLICY = Policy(name="battery", sandbox=SandboxPolicy(memory_bytes=512 * 2**20, pids_limit=64, cpus=1.0, timeout_s=60.0))


def _spec(source: str, args: dict[str, Any], weights: Path, out: Path, *, inputs: tuple[str, ...] = (), policy: Policy = POLICY) -> SandboxSpec:
    job = Job(
        image=HOST_IMAGE,
        command=("python", "-c", source, json.dumps(args)),
        weights=(str(weights),),
        inputs=inputs,
        output_dir=str(out),
    )
    return build_spec(policy, job, seccomp_profile=load_profile())


def test_bwrap_argv_is_exactly_the_hardening() -> None:
    runtime = HostRuntime(
        python="/opt/py/bin/python3.11",
        ro_paths=("/opt/py", "/usr"),
        symlinks=(("usr/bin", "/bin"),),
        gpenguard_package="/src/gpenguard",
        masked_files=("/proc/kcore",),
        masked_dirs=("/proc/acpi",),
    )
    spec = SandboxSpec(
        image=HOST_IMAGE,
        command=("python", "-m", "gpenguard.runner.worker"),
        user=(65534, 65534),
        binds=(Bind("/s/w.safetensors", "/weights/w.safetensors"), Bind("/o", "/out", False)),
        tmpfs=(("/tmp", "rw,noexec,nosuid,nodev,size=1024"),),
        env=(("HOME", "/tmp"),),
        gpus=(),
        memory_bytes=2**30,
        pids_limit=64,
        nano_cpus=10**9,
        timeout_s=10.0,
    )
    assert bwrap_argv(spec, runtime, seccomp_fd=7) == [
        "bwrap", "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534",
        "--hostname", "gpenguard-sandbox", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--clearenv", "--proc", "/proc",
        "--dev-bind", "/dev/null", "/proc/kcore", "--dev-bind", "/dev/null", "/proc/1/cmdline",
        "--dev-bind", "/dev/null", "/proc/1/environ", "--tmpfs", "/proc/acpi", "--remount-ro", "/proc/acpi",
        "--tmpfs", "/proc/sys", "--remount-ro", "/proc/sys",
        "--perms", "0755", "--size", "65536", "--tmpfs", "/dev",
        "--dev-bind", "/dev/null", "/dev/null", "--dev-bind", "/dev/zero", "/dev/zero",
        "--dev-bind", "/dev/full", "/dev/full", "--dev-bind", "/dev/random", "/dev/random",
        "--dev-bind", "/dev/urandom", "/dev/urandom",
        "--symlink", "/proc/self/fd/0", "/dev/stdin", "--symlink", "/proc/self/fd/1", "/dev/stdout",
        "--symlink", "/proc/self/fd/2", "/dev/stderr", "--symlink", "/proc/self/fd", "/dev/fd",
        "--dir", "/dev/shm", "--remount-ro", "/dev",
        "--perms", "1777", "--size", str(64 * 2**20), "--tmpfs", "/dev/shm",
        "--perms", "1777", "--size", "1024", "--tmpfs", "/tmp",
        # after /tmp: a Python installed under /tmp stays visible
        "--ro-bind", "/opt/py", "/opt/py", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
        "--ro-bind", "/src/gpenguard", "/opt/gpenguard-src/gpenguard",
        "--ro-bind", "/s/w.safetensors", "/weights/w.safetensors", "--bind", "/o", "/out",
        "--remount-ro", "/",
        "--setenv", "HOME", "/tmp", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
        "--setenv", "PYTHONPATH", "/opt/gpenguard-src",
        "--chdir", "/", "--seccomp", "7",
        "--", "/opt/py/bin/python3.11", "-m", "gpenguard.runner.worker",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def battery_run(tmp_path_factory: pytest.TempPathFactory, bwrap_available: str) -> dict[str, Any]:
    return battery.bwrap_battery(tmp_path_factory.mktemp("battery-bwrap"), bwrap_available)


@pytest.fixture(scope="module")
def unprivileged_battery_run(bwrap_available: str) -> dict[str, Any]:
    """The same battery run by an unprivileged caller: rlimits instead of a cgroup, no host root.

    When the tests run as root, a throwaway uid runs it (setpriv, the Debian python); as any
    other user, the caller itself does.
    """
    uid = UNPRIVILEGED_UID if os.geteuid() == 0 else os.geteuid()
    root = Path(tempfile.mkdtemp(prefix="gpenguard-battery-unpriv-"))
    try:
        os.chown(root, uid, uid)
        command = [PLAIN_PYTHON, "-m", "tests.runner.battery", bwrap_available, str(root)]
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("setpriv (util-linux) is needed to run the battery as an unprivileged user")
            command = ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups", *command]
        done = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "LANG": "C.UTF-8"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.bwrap
@pytest.mark.parametrize("attempt", [p for p in battery.EXPECTED_PROBES if p != "exec_from_tmp"])
def test_escape_attempt_fails(battery_run: dict[str, Any], attempt: str) -> None:
    result = battery_run["results"][attempt]
    assert result["escaped"] is False, f"{attempt} got through: {result['detail']}"
    if attempt == "setuid_binary":  # the attempt was really made: a setuid-root binary ran
        assert str(result["detail"]).startswith("euid after exec"), result["detail"]


@pytest.mark.bwrap
@pytest.mark.parametrize("attempt", [p for p in battery.EXPECTED_PROBES if p != "exec_from_tmp"])
def test_escape_attempt_fails_for_an_unprivileged_caller(unprivileged_battery_run: dict[str, Any], attempt: str) -> None:
    result = unprivileged_battery_run["results"][attempt]
    assert result["escaped"] is False, f"{attempt} got through: {result['detail']}"
    if attempt == "setuid_binary":  # the attempt was really made: a setuid-root binary ran
        assert str(result["detail"]).startswith("euid after exec"), result["detail"]


@pytest.mark.bwrap
def test_program_run_from_tmp_stays_confined(battery_run: dict[str, Any]) -> None:
    """bwrap cannot mount /tmp noexec; what runs from there keeps seccomp and no_new_privs."""
    detail = str(battery_run["results"]["exec_from_tmp"]["detail"])
    assert "NoNewPrivs:\t1" in detail, detail
    assert "Seccomp:\t2" in detail, detail


@pytest.mark.bwrap
def test_positive_control_and_host_side(battery_run: dict[str, Any]) -> None:
    assert battery_run["results"]["output_is_writable"]["escaped"] is True
    assert battery_run["accepted"] == {host: [] for host in battery_run["accepted"]}
    before, after = battery_run["before"], battery_run["after"]
    assert {k for k in set(before) | set(after) if before.get(k) != after.get(k)} == {"out/probe-ok.txt"}


@pytest.mark.bwrap
def test_fork_bomb_is_stopped(tmp_path: Path, bwrap_available: str) -> None:
    weights, out, _ = battery.job_files(tmp_path)
    result = BwrapBackend(bwrap=bwrap_available).run(_spec(battery.fork_bomb_source(), {}, weights, out))
    (event,) = [e for e in result.events if e["event"] == "forkbomb"]
    assert event["errno"] == 11
    assert 0 < event["forked"] < POLICY.sandbox.pids_limit


@pytest.mark.bwrap
def test_memory_bomb_is_reported_as_oom(tmp_path: Path, bwrap_available: str) -> None:
    weights, out, _ = battery.job_files(tmp_path)
    with pytest.raises(SandboxOOM, match="512 MiB"):
        BwrapBackend(bwrap=bwrap_available).run(_spec(battery.MEMORY_BOMB, {}, weights, out))


@pytest.mark.bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is for root callers")
def test_root_without_a_cgroup_is_refused_not_run_unbounded(tmp_path: Path, bwrap_available: str) -> None:
    """The kernel exempts root from RLIMIT_NPROC; without a cgroup there would be no pids limit."""
    weights, out, _ = battery.job_files(tmp_path)
    backend = BwrapBackend(bwrap=bwrap_available, use_cgroup=False)
    with pytest.raises(SandboxError, match="needs a pids/memory cgroup"):
        backend.run(_spec(battery.fork_bomb_source(), {}, weights, out))
    assert list(out.iterdir()) == []


@pytest.mark.bwrap
def test_timeout_kills_the_sandbox(tmp_path: Path, bwrap_available: str) -> None:
    weights, out, _ = battery.job_files(tmp_path)
    policy = dataclasses.replace(POLICY, sandbox=dataclasses.replace(POLICY.sandbox, timeout_s=2.0))
    started = time.monotonic()
    with pytest.raises(SandboxTimeout, match="2 s limit"):
        BwrapBackend(bwrap=bwrap_available).run(_spec(battery.SLEEPER, {}, weights, out, policy=policy))
    assert time.monotonic() - started < 15


@pytest.mark.bwrap
def test_gpu_jobs_are_refused(tmp_path: Path, bwrap_available: str) -> None:
    weights, out, _ = battery.job_files(tmp_path)
    spec = dataclasses.replace(_spec("pass", {}, weights, out), gpus=("0",))
    with pytest.raises(SandboxError, match="does not pass GPUs"):
        BwrapBackend(bwrap=bwrap_available).run(spec)
