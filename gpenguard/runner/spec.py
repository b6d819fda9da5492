"""The sandbox hardening as plain data, built by one pure function from a policy and a job.

Every backend turns the same `SandboxSpec` into its own invocation (docker SDK kwargs, a
bubblewrap argv), so what the sandbox allows is decided here, once, and tested as data.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from gpenguard.errors import PolicyError, SandboxError
from gpenguard.store import PROVENANCE_SUFFIX

if TYPE_CHECKING:
    from gpenguard.policy import Policy

NOBODY = (65534, 65534)

WEIGHTS_DIR = "/weights"
WEIGHT_SUFFIXES = (".safetensors", ".safetensors" + PROVENANCE_SUFFIX)
"""What may be mounted under WEIGHTS_DIR: converted weights and their provenance records."""
INPUTS_DIR = "/in"
OUTPUT_DIR = "/out"
RESULTS_FILE = "/out/results.tar"
"""The job's one writable file when it has one (`Job.results`); /out itself is read-only then."""
JOB_FILE = "/in/job.json"

# Host paths that must never be visible inside the sandbox, and whose ancestors must not be
# mounted either (mounting /var would expose /var/run/docker.sock).
SENSITIVE_PATHS = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd",
    "/var/lib/docker",
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/boot",
    "/root",
)
# Trees nothing may be mounted from, even a single file inside them.
FORBIDDEN_TREES = ("/proc", "/sys", "/dev", "/run", "/var/run", "/etc", "/boot", "/var/lib/docker")

IMAGE_ID = re.compile(r"^(?:sha256:[0-9a-f]{64}|bwrap:host)$")
HOST_IMAGE = "bwrap:host"
"""The bwrap backend's "image": the host's own read-only /usr and Python (see runner/bwrap.py)."""
GPU_ID = re.compile(r"^(?:[0-9]{1,3}|GPU-[0-9a-fA-F-]{8,64}|MIG-[0-9a-zA-Z/-]{8,80})$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._+-]")


def safe_chars(name: str) -> str:
    """`name` in SAFE_NAME's alphabet: every other character (space, quote, non-ASCII) becomes ``_``."""
    return _UNSAFE_CHARS.sub("_", name)


def input_leaf(index: int, source: str) -> str:
    """The name input number `index` has in INPUTS_DIR (the worker's `output_name` drops the prefix)."""
    return f"{index:04d}-{safe_chars(PurePosixPath(source).name)}"

TMPFS_OPTIONS = "rw,noexec,nosuid,nodev"

# What a job never needs from /proc and /sys: Docker's default masked and read-only paths,
# plus /sys/kernel/vmcoreinfo (the kernel's crash-dump note address, a KASLR hint) that
# Docker leaves readable. The docker backend hands MASKED_PATHS to the engine (which then
# uses it instead of its own list); bwrap masks the /proc entries of both lists (it has no /sys).
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/sys/kernel/vmcoreinfo",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
"""Docker keeps these read-only (its default); bwrap hides them."""


@dataclass(frozen=True, slots=True)
class Bind:
    """One host path made visible inside the sandbox."""

    source: str
    """Absolute host path, already resolved."""
    target: str
    """Absolute path inside the sandbox."""
    read_only: bool = True
    entries: tuple[str, ...] | None = None
    """For a folder: the only files of it the sandbox sees (the images the host accepted), so a
    job never reads the notes or keys that share the folder. None: every plain file in it."""


@dataclass(frozen=True, slots=True)
class Job:
    """What to run: the files it may see and the command, all paths absolute and resolved.

    Weights are `.safetensors` files (with their provenance records); inputs are images or
    directories of images; the output directory is the only writable place.
    """

    image: str
    """Immutable image id, ``sha256:<64 hex>``."""
    command: tuple[str, ...]
    weights: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    input_entries: tuple[tuple[str, ...] | None, ...] = ()
    """Per input (same order): for a folder, the names in it the job may see (`Bind.entries`)."""
    output_dir: str | None = None
    gpus: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    """Extra variables for the worker (never secrets; the sandbox has nothing to protect them)."""
    user: tuple[int, int] = NOBODY
    """uid, gid inside the sandbox; root is refused."""
    results: str | None = None
    """A host file bound writable at RESULTS_FILE, instead of `output_dir`: the job's only output,
    its size capped by `output_bytes` (see gpenguard/runner/publish.py)."""
    output_bytes: int | None = None
    """RLIMIT_FSIZE for the job: no file it writes may grow past this many bytes."""
    job_file: str | None = None
    """A host file bound read-only at JOB_FILE: the worker's instructions."""


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """Everything a backend needs to start the job, hardening included, as values."""

    image: str
    command: tuple[str, ...]
    user: tuple[int, int]
    binds: tuple[Bind, ...]
    tmpfs: tuple[tuple[str, str], ...]
    """(path, mount options); the only writable places besides the output bind."""
    env: tuple[tuple[str, str], ...]
    gpus: tuple[str, ...]
    memory_bytes: int
    pids_limit: int
    nano_cpus: int
    timeout_s: float
    nofile: int = 1024
    seccomp: str | None = None
    """The seccomp profile as JSON text; None keeps the engine's default (never unconfined)."""
    network: str = "none"
    read_only_root: bool = True
    no_new_privileges: bool = True
    cap_drop: tuple[str, ...] = ("ALL",)
    ipc_mode: str = "private"
    shm_bytes: int = 64 * 2**20
    init: bool = True
    workdir: str = "/tmp"
    fsize_bytes: int | None = None
    """RLIMIT_FSIZE (bytes); required when the job writes a results file."""
    labels: tuple[tuple[str, str], ...] = field(default=(("org.gpenguard.sandbox", "1"),))


def build_spec(policy: Policy, job: Job, *, seccomp_profile: str | None) -> SandboxSpec:
    """Turn a policy and a job into the sandbox spec, refusing anything the policy forbids.

    `seccomp_profile` is the JSON text of gpenguard's profile; it is used when the policy asks
    for the ``gpenguard`` profile (the default) and must then be given.
    """
    sandbox = policy.sandbox
    if not IMAGE_ID.match(job.image):
        raise SandboxError(
            f"image must be referenced by its immutable id (sha256:<64 hex>), got {job.image!r}",
            hint="run `gpenguard sandbox check` to see the image id",
        )
    if not job.command:
        raise SandboxError("the sandbox job has no command")
    if job.user[0] == 0 or job.user[1] == 0:
        raise SandboxError("the sandbox refuses to run as root (uid or gid 0)")
    if job.gpus and not sandbox.allow_gpu:
        raise SandboxError(
            f"policy {policy.name!r} forbids GPU runs, but GPUs {', '.join(job.gpus)} were requested",
            hint="run on the CPU (omit --gpu) or use a policy with allow_gpu: true",
        )
    for gpu in job.gpus:
        if not GPU_ID.match(gpu):
            raise SandboxError(f"not a GPU id or UUID: {gpu!r}")
    if sandbox.memory_bytes < 64 * 2**20 or sandbox.pids_limit < 8 or sandbox.cpus <= 0:
        raise PolicyError(f"policy {policy.name!r}: sandbox limits are too small to run anything")
    if sandbox.timeout_s <= 0:
        raise PolicyError(f"policy {policy.name!r}: sandbox timeout must be positive")

    if sandbox.seccomp == "gpenguard":
        if not seccomp_profile:
            raise SandboxError("the gpenguard seccomp profile was not supplied")
        seccomp: str | None = seccomp_profile
    elif sandbox.seccomp == "default":
        seccomp = None
    else:
        raise PolicyError(
            f"policy {policy.name!r}: unknown seccomp setting {sandbox.seccomp!r} "
            "(use 'gpenguard' or 'default'; unconfined is never allowed)"
        )

    binds = _binds(job)
    tmpfs_size = min(512 * 2**20, sandbox.memory_bytes // 4)
    env = [
        ("HOME", "/tmp"),
        ("TMPDIR", "/tmp"),
        ("XDG_CACHE_HOME", "/tmp/.cache"),
        ("TORCH_HOME", "/tmp/.cache/torch"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PYTHONUNBUFFERED", "1"),
        ("OMP_NUM_THREADS", str(max(1, int(sandbox.cpus)))),
    ]
    if job.gpus:
        env.append(("NVIDIA_DRIVER_CAPABILITIES", "compute,utility"))
    for key, _ in job.env:
        if key.startswith(("LD_", "PYTHON")) or key in {"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "PATH"}:
            # NOTE: CVE-2025-23266 let LD_PRELOAD from a container reach a host-side toolkit
            # hook; loader, interpreter and device choice never come from the job.
            raise SandboxError(f"environment variable {key} may not be set for the sandbox")
    env.extend(job.env)
    keys = [key for key, _ in env]
    if len(set(keys)) != len(keys):
        raise SandboxError(f"environment variable set twice: {sorted({k for k in keys if keys.count(k) > 1})}")

    spec = SandboxSpec(
        image=job.image,
        command=job.command,
        user=job.user,
        binds=binds,
        tmpfs=(("/tmp", f"{TMPFS_OPTIONS},size={tmpfs_size}"),),
        env=tuple(env),
        gpus=job.gpus,
        memory_bytes=sandbox.memory_bytes,
        pids_limit=sandbox.pids_limit,
        nano_cpus=int(sandbox.cpus * 1e9),
        timeout_s=sandbox.timeout_s,
        seccomp=seccomp,
        fsize_bytes=job.output_bytes,
    )
    validate_spec(spec)
    return spec


def _binds(job: Job) -> tuple[Bind, ...]:
    binds: list[Bind] = []
    targets: set[str] = set()

    def add(
        source: str, target_dir: str, *, read_only: bool, name: str | None = None, entries: tuple[str, ...] | None = None
    ) -> None:
        leaf = name or PurePosixPath(source).name
        if not SAFE_NAME.match(leaf):
            raise SandboxError(f"file name cannot be passed into the sandbox safely: {leaf!r}", path=source)
        target = f"{target_dir}/{leaf}"
        if target in targets:
            raise SandboxError(f"two job files would appear as {target} in the sandbox", path=source)
        targets.add(target)
        binds.append(Bind(source=source, target=target, read_only=read_only, entries=entries))

    for path in job.weights:
        add(path, WEIGHTS_DIR, read_only=True)
    for index, path in enumerate(job.inputs):
        # Inputs keep their names, prefixed so two `photo.jpg` from different folders coexist.
        entries = job.input_entries[index] if index < len(job.input_entries) else None
        add(path, INPUTS_DIR, read_only=True, name=input_leaf(index, path), entries=entries)
    if job.job_file is not None:
        binds.append(Bind(source=job.job_file, target=JOB_FILE, read_only=True))
    if job.output_dir is not None:
        binds.append(Bind(source=job.output_dir, target=OUTPUT_DIR, read_only=False))
    if job.results is not None:
        binds.append(Bind(source=job.results, target=RESULTS_FILE, read_only=False))
    return tuple(binds)


def validate_spec(spec: SandboxSpec) -> None:
    """Refuse a spec that weakens the sandbox, however it was built.

    Backends call this again right before starting, so a hand-made spec gets the same checks
    as one from `build_spec`.
    """
    if not IMAGE_ID.match(spec.image):
        raise SandboxError(f"image must be an immutable id (sha256:...), got {spec.image!r}")
    if spec.network != "none":
        raise SandboxError(f"the sandbox must have no network, got network {spec.network!r}")
    if not spec.read_only_root:
        raise SandboxError("the sandbox root file system must be read-only")
    if not spec.no_new_privileges:
        raise SandboxError("no-new-privileges must be set")
    if spec.cap_drop != ("ALL",):
        raise SandboxError(f"all capabilities must be dropped, got cap_drop={list(spec.cap_drop)}")
    if spec.user[0] == 0 or spec.user[1] == 0:
        raise SandboxError("the sandbox refuses to run as root (uid or gid 0)")
    if spec.ipc_mode != "private":
        raise SandboxError(f"IPC namespace must be private, got {spec.ipc_mode!r}")
    if spec.seccomp is not None:
        _check_seccomp(spec.seccomp)
    for path, options in spec.tmpfs:
        flags = set(options.split(","))
        if not {"noexec", "nosuid", "nodev"} <= flags:
            raise SandboxError(f"tmpfs {path} must be mounted noexec,nosuid,nodev, got {options!r}")
    writable = [bind for bind in spec.binds if not bind.read_only]
    if len(writable) > 1:
        raise SandboxError(f"only one writable mount (the output directory) is allowed, got {len(writable)}")
    for bind in spec.binds:
        check_mount_source(bind.source)
        if not bind.target.startswith((WEIGHTS_DIR + "/", INPUTS_DIR + "/", OUTPUT_DIR)):
            raise SandboxError(f"mount target {bind.target} is outside /weights, /in and /out")
        if not bind.read_only and bind.target not in {OUTPUT_DIR, RESULTS_FILE}:
            raise SandboxError(f"only {OUTPUT_DIR} or {RESULTS_FILE} may be writable, not {bind.target}")
        if not bind.read_only and bind.target == RESULTS_FILE and spec.fsize_bytes is None:
            raise SandboxError("a results file needs a size limit (fsize_bytes)")
        if bind.target.startswith(WEIGHTS_DIR + "/") and not bind.target.endswith(WEIGHT_SUFFIXES):
            # DESIGN invariant 4: a checkpoint (.pth, a pickle) never crosses into the sandbox.
            raise SandboxError(f"only .safetensors and their provenance records may go to {WEIGHTS_DIR}", path=bind.source)
    if spec.fsize_bytes is not None and spec.fsize_bytes <= 0:
        raise SandboxError(f"the file size limit must be positive, got {spec.fsize_bytes}")


def _check_seccomp(profile: str) -> None:
    """A profile must be JSON whose default denies; an allow-by-default list is no sandbox."""
    try:
        parsed = json.loads(profile)
    except ValueError as exc:
        raise SandboxError(f"seccomp profile is not JSON (unconfined is never allowed): {exc}") from exc
    default = parsed.get("defaultAction") if isinstance(parsed, dict) else None
    if default not in {"SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP"}:
        raise SandboxError(f"seccomp profile must deny by default, not {default!r}")


def check_mount_source(source: str) -> None:
    """Refuse host paths that would hand the sandbox the host: /, /proc, the Docker socket..."""
    path = PurePosixPath(source)
    if not path.is_absolute() or ".." in path.parts:
        raise SandboxError("mount source must be an absolute path without '..'", path=source)
    text = str(path)
    if text == "/":
        raise SandboxError("refusing to mount the host root file system", path=source)
    for sensitive in SENSITIVE_PATHS:
        if text == sensitive or sensitive.startswith(text.rstrip("/") + "/"):
            raise SandboxError(f"refusing to mount {source}: it is or contains {sensitive}", path=source)
    for tree in FORBIDDEN_TREES:
        if text == tree or text.startswith(tree + "/"):
            raise SandboxError(f"refusing to mount a path under {tree}", path=source)
    if path.name.endswith(".sock") or "docker.sock" in path.parts:
        raise SandboxError("refusing to mount a socket", path=source)


def check_binds_on_host(spec: SandboxSpec) -> None:
    """Right before starting: every source exists, is a plain file or directory, and is not a link.

    `validate_spec` judges the path text; this judges what the path is now, so a symlink or a
    socket swapped in after the spec was built is still refused.
    """
    for bind in spec.binds:
        check_mount_source(bind.source)
        try:
            info = os.lstat(bind.source)
        except OSError as exc:
            raise SandboxError(f"cannot mount into the sandbox: {exc.strerror}", path=bind.source) from exc
        if stat.S_ISLNK(info.st_mode):
            raise SandboxError("refusing to mount a symbolic link", path=bind.source)
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            raise SandboxError("refusing to mount something that is not a file or directory", path=bind.source)
        if os.path.realpath(bind.source) != bind.source:
            raise SandboxError("mount source is not a resolved path (a parent is a link)", path=bind.source)
        if not bind.read_only and bind.target == RESULTS_FILE:
            if not stat.S_ISREG(info.st_mode):
                raise SandboxError("the results file must be a plain file", path=bind.source)
        elif not bind.read_only and not stat.S_ISDIR(info.st_mode):
            raise SandboxError("the writable mount must be a directory", path=bind.source)
