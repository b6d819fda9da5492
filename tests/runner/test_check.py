"""`gpenguard sandbox check`: toolkit minimums, GPU refusals, and the real engine's report."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gpenguard.cli import app
from gpenguard.errors import SandboxError
from gpenguard.policy import Policy, SandboxPolicy, load_policy
from gpenguard.runner.check import (
    check_docker,
    gpu_problems,
    parse_version,
    require_gpu_allowed,
    toolkit_version,
)


def test_toolkit_version_parsing() -> None:
    assert parse_version("NVIDIA Container Toolkit CLI version 1.17.8\ncommit: 1234") == (1, 17, 8)
    assert parse_version("cli-version: 1.16.2") == (1, 16, 2)
    assert parse_version("no version here") is None


@pytest.mark.parametrize(
    ("toolkit", "allowed"),
    [("1.17.7", False), ("1.16.2", False), ("1.17.8", True), ("1.18.0", True), (None, False)],
)
def test_gpu_runs_need_a_patched_toolkit(toolkit: str | None, allowed: bool) -> None:
    problems = gpu_problems(Policy(), toolkit)
    assert (problems == []) is allowed
    if toolkit == "1.17.7":
        assert "CVE-2025-23266" in problems[0]


def test_policy_without_gpu_refuses_even_a_patched_toolkit() -> None:
    policy = Policy(name="cpu-only", sandbox=SandboxPolicy(allow_gpu=False))
    with pytest.raises(SandboxError, match="forbids GPU runs"):
        require_gpu_allowed(policy, ("0",), "1.18.0")
    require_gpu_allowed(policy, (), None)  # CPU runs are fine


def test_toolkit_version_reads_nvidia_ctk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}" if name == "nvidia-ctk" else None)

    def fake_run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        assert argv == ["nvidia-ctk", "--version"]
        return subprocess.CompletedProcess(argv, 0, "NVIDIA Container Toolkit CLI version 1.17.7\n", "")

    assert toolkit_version(run=fake_run) == "1.17.7"


@pytest.mark.docker
def test_check_reports_the_real_engine_and_image(docker_engine: Any, sandbox_image: str) -> None:
    report = check_docker(Policy(), sandbox_image, engine=docker_engine, toolkit=None)
    assert report.ok, report.problems
    assert report.image_id == sandbox_image
    assert report.engine_version and report.api_version
    assert "runc" in report.runtimes
    assert report.gpu_allowed is False and "not installed" in report.gpu_refusals[0]


@pytest.mark.docker
def test_check_reports_a_missing_image(docker_engine: Any) -> None:
    report = check_docker(Policy(), "gpenguard-no-such-image:never", engine=docker_engine, toolkit=None)
    assert not report.ok
    assert "not on this host" in report.problems[0]


@pytest.mark.docker
def test_cli_check_exit_codes(docker_engine: Any, sandbox_image: str) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["sandbox", "check", "--image", sandbox_image])
    assert ok.exit_code == 0, ok.output
    assert sandbox_image in ok.output
    assert runner.invoke(app, ["sandbox", "check", "--image", sandbox_image, "--gpu"]).exit_code == 1
    assert runner.invoke(app, ["sandbox", "check", "--image", "gpenguard-no-such-image:never"]).exit_code == 2


def test_policy_dataclass_default_minimum() -> None:
    assert dataclasses.replace(SandboxPolicy()).min_nvidia_toolkit == "1.17.8"


def test_unknown_backend_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["sandbox", "check", "--backend", "podman"])
    assert result.exit_code == 2
    assert "unknown sandbox backend 'podman'" in result.output


@pytest.mark.bwrap
def test_bwrap_check_reports_how_limits_are_enforced() -> None:
    from gpenguard.runner.check import check_bwrap

    report = check_bwrap(Policy())
    assert report.ok, report.problems
    assert report.bwrap_version and report.bwrap_version.startswith("bubblewrap")
    assert report.bwrap_limits in {"cgroup", "rlimit"}


def test_build_without_an_engine_stops_before_any_download(tmp_path: Path) -> None:
    """No engine: build.sh says so first, instead of reading `image inspect` as "no base" and debootstrapping."""
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent", "GPENGUARD_SANDBOX_BUILD_DIR": str(tmp_path / "build")}
    script = Path(__file__).resolve().parents[2] / "sandbox" / "build.sh"
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "cannot reach the Docker engine at unix:///nonexistent" in done.stderr
    assert "debootstrap" not in done.stderr
    assert not (tmp_path / "build").exists()


def test_check_without_an_engine_says_why_gpu_runs_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")
    result = CliRunner().invoke(app, ["sandbox", "check", "--backend", "docker"])
    assert result.exit_code == 2
    assert "cannot reach the Docker engine" in result.output
    assert "refused: the Docker engine is not reachable" in result.output
    assert "backend has no GPU support" not in result.output


# --- the gVisor tier: runsc installed, registered with the flags it needs, chosen by policy ---

GOOD_RUNSC = {"runc": {"path": "runc"}, "runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--platform=ptrace", "--network=none", "--oci-seccomp"]}}


class _Engine:
    def __init__(self, runtimes: dict[str, Any]) -> None:
        self.runtimes = runtimes

    def info(self) -> dict[str, Any]:
        return {"Runtimes": self.runtimes}


def test_runsc_must_be_registered_with_no_network_and_the_seccomp_profile() -> None:
    from gpenguard.runner.docker import runsc_problem

    assert runsc_problem(GOOD_RUNSC) is None
    assert runsc_problem({"runc": {}}) == "the gVisor runtime (runsc) is not registered with the Docker engine"
    bare = {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--platform=ptrace"]}}
    assert runsc_problem(bare) == "the engine's runsc runtime lacks --network=none and --oci-seccomp in its runtimeArgs"


@pytest.mark.parametrize(
    ("wanted", "runtimes", "gpus", "expected"),
    [
        ("runc", GOOD_RUNSC, False, "runc"),
        ("runsc", GOOD_RUNSC, False, "runsc"),
        ("auto", GOOD_RUNSC, False, "runsc"),
        ("auto", {"runc": {}}, False, "runc"),
        ("auto", GOOD_RUNSC, True, "runc"),
        ("auto", {"runsc": {"path": "runsc"}}, False, "runc"),
    ],
)
def test_runtime_resolution(wanted: str, runtimes: dict[str, Any], gpus: bool, expected: str) -> None:
    from gpenguard.runner.docker import resolve_runtime

    assert resolve_runtime(_Engine(runtimes), wanted, gpus=gpus) == expected


@pytest.mark.parametrize(
    ("runtimes", "gpus", "message"),
    [
        ({"runc": {}}, False, "is not registered with the Docker engine"),
        ({"runsc": {"path": "runsc", "runtimeArgs": ["--network=none"]}}, False, "lacks --oci-seccomp"),
        (GOOD_RUNSC, True, "cannot pass GPUs"),
    ],
)
def test_explicit_runsc_never_falls_back_to_runc(runtimes: dict[str, Any], gpus: bool, message: str) -> None:
    from gpenguard.runner.docker import resolve_runtime

    with pytest.raises(SandboxError, match=message):
        resolve_runtime(_Engine(runtimes), "runsc", gpus=gpus)


def test_strict_policy_asks_for_runsc_where_the_host_has_it() -> None:
    from gpenguard.runner.check import runtime_findings

    strict = load_policy("strict")
    assert strict.sandbox.runtime == "auto"
    assert runtime_findings(strict, GOOD_RUNSC, "runsc version x") == ("runsc", [], [])
    runtime, warnings, problems = runtime_findings(strict, {"runc": {}}, None)
    assert (runtime, problems) == ("runc", [])
    assert warnings == [
        "policy 'strict' runs under gVisor where the host has it, but runsc (gVisor) is not installed "
        "(apt-get install runsc): runs use runc"
    ]
    required = dataclasses.replace(strict, sandbox=dataclasses.replace(strict.sandbox, runtime="runsc"))
    assert runtime_findings(required, {"runc": {}}, "runsc version x")[2] == [
        "policy 'strict' requires runsc, but the gVisor runtime (runsc) is not registered with the Docker engine"
    ]
    assert runtime_findings(load_policy("default"), {"runc": {}}, None) == ("runc", [], [])


@pytest.mark.docker
def test_check_reports_runsc_on_this_engine(docker_engine: Any, sandbox_image: str, docker_runtime: str) -> None:
    """Where runsc is registered (CI), `sandbox check` says so and strict picks it."""
    if docker_runtime != "runsc":
        pytest.skip("covered by the runsc parameter")
    report = check_docker(load_policy("strict"), sandbox_image)
    assert report.runsc_version is not None and report.runsc_version.startswith("runsc version")
    assert report.runsc_registered is True
    assert report.runtime == "runsc"
