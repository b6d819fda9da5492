"""What `gpenguard sandbox check` reports: can this host run the sandbox, and how safely?

The engine's version, runtimes and isolation options; the NVIDIA Container Toolkit version
(GPU runs are refused below the policy's minimum, CVE-2025-23266 "NVIDIAScape" and friends);
whether the sandbox image is present and its immutable id; gVisor's runsc (installed, registered
with the flags it needs, and what the policy's runtime becomes here); and bubblewrap as the fallback.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from gpenguard.errors import SandboxError
from gpenguard.policy import Policy
from gpenguard.runner.docker import DEFAULT_IMAGE

TOOLKIT_COMMANDS = (("nvidia-ctk", "--version"), ("nvidia-container-cli", "--version"))
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True, slots=True)
class SandboxReport:
    """The host as the sandbox sees it; `problems` block runs, `warnings` do not."""

    backend: str
    engine_version: str | None = None
    api_version: str | None = None
    runtimes: tuple[str, ...] = ()
    default_runtime: str | None = None
    rootless: bool | None = None
    userns_remap: bool | None = None
    security_options: tuple[str, ...] = ()
    cgroup_version: str | None = None
    image: str | None = None
    image_id: str | None = None
    nvidia_toolkit: str | None = None
    gpu_allowed: bool = False
    gpu_refusals: tuple[str, ...] = ()
    bwrap_version: str | None = None
    bwrap_limits: str | None = None
    """``cgroup`` or ``rlimit``: how bwrap would enforce the pids and memory limits."""
    runsc_version: str | None = None
    """gVisor's runsc on this host's PATH (None: not installed)."""
    runsc_registered: bool | None = None
    """Whether the engine has a usable ``runsc`` runtime (registered with the flags it needs)."""
    runtime: str | None = None
    """The runtime a restore under this policy would use here (docker backend)."""
    warnings: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def parse_version(text: str) -> tuple[int, int, int] | None:
    """The first ``X.Y.Z`` in a tool's version output."""
    match = _VERSION.search(text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def toolkit_version(run: Any = subprocess.run) -> str | None:
    """The NVIDIA Container Toolkit version on this host, or None when it is not installed."""
    for command in TOOLKIT_COMMANDS:
        if shutil.which(command[0]) is None:
            continue
        try:
            done = run(list(command), capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        version = parse_version(done.stdout + done.stderr)
        if version is not None:
            return ".".join(map(str, version))
    return None


def gpu_problems(policy: Policy, toolkit: str | None) -> list[str]:
    """Why a GPU run must be refused under this policy on this host (empty: allowed)."""
    if not policy.sandbox.allow_gpu:
        return [f"policy {policy.name!r} forbids GPU runs (sandbox.allow_gpu: false)"]
    if toolkit is None:
        return ["the NVIDIA Container Toolkit is not installed (nvidia-ctk not found); GPU runs are refused"]
    have, need = parse_version(toolkit), parse_version(policy.sandbox.min_nvidia_toolkit)
    if have is None or need is None or have < need:
        return [
            f"NVIDIA Container Toolkit {toolkit} is older than {policy.sandbox.min_nvidia_toolkit}, the policy's "
            "minimum (CVE-2025-23266 and CVE-2025-23267 are fixed in 1.17.8); upgrade it, or run on the CPU"
        ]
    return []


def require_gpu_allowed(policy: Policy, gpus: tuple[str, ...], toolkit: str | None) -> None:
    """Raise before anything starts when the policy or the host forbids the requested GPUs."""
    if not gpus:
        return
    problems = gpu_problems(policy, toolkit)
    if problems:
        raise SandboxError(problems[0], hint="omit --gpu to run on the CPU")


def runsc_version(run: Any = subprocess.run) -> str | None:
    """The installed runsc's version line, or None when there is none."""
    path = shutil.which("runsc")
    if path is None:
        return None
    try:
        done = run([path, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown version"


def runtime_findings(policy: Policy, runtimes: dict[str, Any], installed: str | None) -> tuple[str, list[str], list[str]]:
    """(runtime a restore would use, warnings, problems) for the policy's ``sandbox.runtime``."""
    from gpenguard.runner.docker import runsc_problem

    wanted = policy.sandbox.runtime
    problem = runsc_problem(runtimes)
    if problem is not None and installed is None:
        problem = "runsc (gVisor) is not installed (apt-get install runsc)"
    if wanted == "runc":
        return "runc", [], []
    if problem is None:
        return "runsc", [], []
    if wanted == "auto":
        return "runc", [f"policy {policy.name!r} runs under gVisor where the host has it, but {problem}: runs use runc"], []
    return "runsc", [], [f"policy {policy.name!r} requires runsc, but {problem}"]


def check_docker(policy: Policy, image: str = DEFAULT_IMAGE, engine: Any = None, toolkit: str | None = None) -> SandboxReport:
    """Inspect the Docker engine and the sandbox image; never raises for what it finds."""
    from gpenguard.runner.docker import client, resolve_image, runsc_problem

    warnings: list[str] = []
    problems: list[str] = []
    try:
        engine = engine or client(timeout=30)
    except SandboxError as exc:
        return SandboxReport(
            backend="docker",
            problems=(exc.message,),
            nvidia_toolkit=toolkit,
            gpu_refusals=("the Docker engine is not reachable",),
        )
    info = engine.info()
    version = engine.version()
    security = tuple(str(s) for s in info.get("SecurityOptions") or ())
    rootless = any("rootless" in s for s in security)
    userns = any("userns" in s for s in security)
    if not (rootless or userns):
        warnings.append(
            "the engine runs containers without user-namespace remapping or rootless mode; the sandbox "
            "user 65534 is the host's uid 65534 (enable userns-remap, CIS 2.9, for a further layer)"
        )
    if not any("seccomp" in s for s in security):
        problems.append("the engine has no seccomp support; the sandbox profile cannot be applied")
    image_id = None
    try:
        image_id = resolve_image(engine, image)
    except SandboxError as exc:
        problems.append(f"{exc.message} ({exc.hint})" if exc.hint else exc.message)
    runtimes = tuple(sorted((info.get("Runtimes") or {}).keys()))
    installed = runsc_version()
    runtime, runtime_warnings, runtime_problems = runtime_findings(policy, info.get("Runtimes") or {}, installed)
    warnings += runtime_warnings
    problems += runtime_problems
    gpu = gpu_problems(policy, toolkit)
    return SandboxReport(
        backend="docker",
        engine_version=str(version.get("Version")),
        api_version=str(version.get("ApiVersion")),
        runtimes=runtimes,
        default_runtime=info.get("DefaultRuntime"),
        rootless=rootless,
        userns_remap=userns,
        security_options=security,
        cgroup_version=str(info.get("CgroupVersion") or "") or None,
        image=image,
        image_id=image_id,
        runsc_version=installed,
        runsc_registered=runsc_problem(info.get("Runtimes") or {}) is None,
        runtime=runtime,
        nvidia_toolkit=toolkit,
        gpu_allowed=not gpu,
        gpu_refusals=tuple(gpu),
        warnings=tuple(warnings),
        problems=tuple(problems),
    )


def check_bwrap(policy: Policy) -> SandboxReport:
    """Bubblewrap's version and whether it can make the namespaces the sandbox needs."""
    path = shutil.which("bwrap")
    if path is None:
        return SandboxReport(backend="bwrap", problems=("bubblewrap (bwrap) is not installed",))
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    probe = subprocess.run(
        [path, "--unshare-all", "--ro-bind", "/", "/", "true"], capture_output=True, text=True, check=False
    )
    problems = [] if probe.returncode == 0 else [f"bubblewrap cannot create namespaces: {probe.stderr.strip()}"]
    from gpenguard.runner.bwrap import limits_mode

    limits = limits_mode()
    if limits == "none":
        problems.append("running as root without a usable pids/memory cgroup: limits cannot be enforced")
    return SandboxReport(
        backend="bwrap",
        bwrap_version=version or None,
        bwrap_limits=limits,
        gpu_allowed=False,
        gpu_refusals=("the bwrap backend runs on the CPU only",),
        problems=tuple(problems),
    )
