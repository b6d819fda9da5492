"""`restore`: the whole gate, then GPEN inside the sandbox.

    for each weight file: gate -> convert into the content-addressed store   (Blocked: stop)
    build the SandboxSpec from the policy; re-check each stored file's sha256 against its
    provenance record right before the backend starts (DESIGN inv. 4); run the worker
    move the worker's finished images from a private staging folder into OUTDIR

A poisoned checkpoint raises `Blocked` from the gate before any container exists. Results
appear in OUTDIR only after the whole run succeeded; a failed run leaves OUTDIR as it was.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gpenguard.errors import InputError, SandboxError, UsageError, VerificationError
from gpenguard.policy import Policy
from gpenguard.runner import BackendName
from gpenguard.runner.interface import Backend, Event, EventSink, RunResult
from gpenguard.runner.spec import (
    GPU_ID,
    HOST_IMAGE,
    INPUTS_DIR,
    NOBODY,
    OUTPUT_DIR,
    WEIGHTS_DIR,
    Job,
    build_spec,
    input_leaf,
)
from gpenguard.runner.worker import IMAGE_SUFFIXES, WeightFile, WorkerJob

ROLES = ("gpen", "detector", "parser")
_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.png$")
MAX_OUTPUTS = 100_000
GPEN_SIZES = (256, 512, 1024, 2048)
"""The released GPEN-BFR sizes (`gpenguard.nets.gpen.GPEN_BFR`'s keys, without importing torch)."""

StageSink = Callable[[str, str], None]
"""(stage, detail) notifications for the CLI: ``gate``, ``convert``, ``sandbox``..."""


@dataclass(frozen=True, slots=True)
class RestoreRequest:
    """A `gpenguard restore` invocation as values."""

    inputs: tuple[Path, ...]
    output_dir: Path
    gpen: Path
    detector: Path | None = None
    parser: Path | None = None
    mode: str | None = None
    """``aligned`` or ``full``; default: ``full`` when detector and parser are given."""
    size: int = 2048
    gpus: tuple[str, ...] = ()
    backend: str | None = None
    """``docker`` or ``bwrap``; default: the policy's ``sandbox.backend``."""
    policy: Policy | str | os.PathLike[str] | None = None
    registry: Path | None = None
    trust_root: Path | None = None
    audit_log: Path | None = None
    image: str | None = None
    """Docker image reference or id; default ``gpenguard-sandbox:latest``, resolved to its id."""
    dtype: str = "float32"
    store: Path | None = None


@dataclass(frozen=True, slots=True)
class StoredInput:
    """A weight file after the gate: where the store keeps it and what it must hash to."""

    role: str
    source: Path
    path: Path
    provenance: Path
    sha256: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RestoreOutcome:
    """What `restore` did."""

    outputs: tuple[Path, ...]
    weights: tuple[StoredInput, ...]
    run: RunResult
    image: str
    events: tuple[Event, ...] = field(default=())


def restore(
    request: RestoreRequest, *, on_stage: StageSink | None = None, on_event: EventSink | None = None
) -> RestoreOutcome:
    """Gate and convert every weight file, then restore the inputs inside the sandbox."""
    from gpenguard.policy import load_policy

    stage = on_stage or (lambda _stage, _detail: None)
    policy = request.policy if isinstance(request.policy, Policy) else load_policy(request.policy)
    mode = request.mode or ("full" if request.detector and request.parser else "aligned")
    if mode not in {"aligned", "full"}:
        raise UsageError(f"--mode must be aligned or full, not {mode!r}")
    if mode == "full" and (request.detector is None or request.parser is None):
        raise UsageError("--mode full needs --detector and --parser weights")
    if request.size not in GPEN_SIZES:
        raise UsageError(f"--size must be one of {', '.join(map(str, GPEN_SIZES))}, not {request.size}")
    inputs = _resolve_inputs(request.inputs)
    # Everything a user can get wrong is refused before the (possibly long) gate and conversion.
    if request.output_dir.exists() and not request.output_dir.is_dir():
        raise InputError("the output path exists and is not a folder", path=request.output_dir)
    backend_name = BackendName.parse(request.backend or policy.sandbox.backend)
    if request.gpus:
        from gpenguard.runner.check import require_gpu_allowed, toolkit_version

        if backend_name is BackendName.BWRAP:
            raise UsageError("GPU runs need the docker backend; bwrap runs on the CPU only")
        bad = [gpu for gpu in request.gpus if not GPU_ID.match(gpu)]
        if bad:
            raise UsageError(f"--gpu takes GPU indexes or GPU-/MIG- UUIDs, comma-separated; not {', '.join(map(repr, bad))}")
        require_gpu_allowed(policy, request.gpus, toolkit_version())
    # The gate runs first: a poisoned checkpoint is refused with its reasons (exit 1) whether
    # or not a sandbox engine or image exists on this host.
    weights = tuple(
        _gate_and_store(role, path, request, policy, stage)
        for role, path in zip(ROLES, (request.gpen, request.detector, request.parser), strict=True)
        if path is not None and (role == "gpen" or mode == "full")
    )
    backend = backend_name.create()
    if backend_name is BackendName.DOCKER:
        from gpenguard.runner.docker import DEFAULT_IMAGE, DockerBackend, resolve_image

        assert isinstance(backend, DockerBackend)
        image = resolve_image(backend.engine, request.image or DEFAULT_IMAGE)
    else:
        image = HOST_IMAGE
    output_dir = request.output_dir
    result, outputs = run_worker(
        backend, image, policy, weights, inputs, output_dir,
        mode=mode, size=request.size, gpus=request.gpus, dtype=request.dtype, on_event=on_event, on_stage=stage,
    )  # fmt: skip
    stage("done", f"{len(outputs)} image(s) in {output_dir}")
    return RestoreOutcome(outputs=outputs, weights=weights, run=result, image=image, events=result.events)


def run_worker(
    backend: Backend,
    image: str,
    policy: Policy,
    weights: Sequence[StoredInput],
    inputs: Sequence[Path],
    output_dir: Path,
    *,
    mode: str = "aligned",
    size: int = 2048,
    gpus: tuple[str, ...] = (),
    dtype: str = "float32",
    on_event: EventSink | None = None,
    on_stage: StageSink | None = None,
) -> tuple[RunResult, tuple[Path, ...]]:
    """Run the worker on already gated and stored weights; publish its results.

    Each stored file is re-hashed against its provenance record here, as the last step before
    the backend starts (DESIGN invariant 4), so no caller can skip it.
    """
    stage = on_stage or (lambda _stage, _detail: None)
    created = not output_dir.exists()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output directory: {exc.strerror}", path=output_dir) from exc
    user = NOBODY if os.geteuid() == 0 else (os.getuid(), os.getgid())
    staging = Path(tempfile.mkdtemp(prefix=".gpenguard-run-", dir=output_dir)).resolve()
    published = False
    try:
        if os.geteuid() == 0:
            os.chown(staging, *backend.output_owner(user))
        by_role = {w.role: w for w in weights}

        def weight_file(role: str) -> WeightFile | None:
            stored = by_role.get(role)
            if stored is None:
                return None
            return WeightFile(
                path=f"{WEIGHTS_DIR}/{stored.path.name}", provenance=f"{WEIGHTS_DIR}/{stored.provenance.name}"
            )

        gpen_file = weight_file("gpen")
        if gpen_file is None:
            raise UsageError("no GPEN weights to run")
        worker_job = WorkerJob(
            gpen=gpen_file,
            detector=weight_file("detector"),
            parser=weight_file("parser"),
            inputs=tuple(f"{INPUTS_DIR}/{input_leaf(i, str(p))}" for i, p in enumerate(inputs)),
            output_dir=OUTPUT_DIR,
            mode=mode,
            size=size,
            device="cuda" if gpus else "cpu",
            dtype=dtype,
        )
        job = Job(
            image=image,
            command=("python", "-m", "gpenguard.runner.worker", "--job", worker_job.to_json()),
            weights=tuple(str(p) for w in weights for p in (w.path, w.provenance)),
            inputs=tuple(str(p) for p in inputs),
            output_dir=str(staging),
            gpus=gpus,
            user=user,
        )
        from gpenguard.runner.seccomp import load_profile

        spec = build_spec(policy, job, seccomp_profile=load_profile())
        for stored in weights:
            recheck(stored)
        stage("verified", "stored weights match their provenance records")
        stage("sandbox", f"{backend.name}: {image}")
        result = backend.run(spec, on_event=on_event)
        outputs = _publish(staging, output_dir)
        published = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not published:  # a failed run leaves OUTDIR as it was: absent
            with contextlib.suppress(OSError):
                output_dir.rmdir()
    return result, outputs


def _resolve_inputs(paths: Sequence[Path]) -> list[Path]:
    if not paths:
        raise UsageError("give at least one input image or folder")
    resolved = []
    for raw in paths:
        try:
            path = Path(raw).resolve(strict=True)
        except OSError as exc:
            raise InputError("input not found", path=raw) from exc
        if path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})", path=raw)
        if not (path.is_file() or path.is_dir()):
            raise InputError("input is neither a file nor a folder", path=raw)
        if path.is_dir() and not _has_image(path):
            raise InputError(f"no image files in this folder (expected one of {', '.join(IMAGE_SUFFIXES)})", path=raw)
        resolved.append(path)
    return resolved


def _has_image(folder: Path) -> bool:
    """Whether the worker's `list_inputs` would find anything to restore in `folder`."""
    try:
        with os.scandir(folder) as entries:
            return any(Path(e.name).suffix.lower() in IMAGE_SUFFIXES and e.is_file() for e in entries)
    except OSError as exc:
        raise InputError(f"cannot list the folder: {exc.strerror}", path=folder) from exc


def _gate_and_store(role: str, path: Path, request: RestoreRequest, policy: Policy, stage: StageSink) -> StoredInput:
    """Gate one weight file and convert it into the store; `Blocked` if the gate says no."""
    from gpenguard.convert import convert
    from gpenguard.store import Store

    if path.suffix == ".safetensors":
        raise UsageError(
            "pass the original checkpoint; restore gates and converts it itself",
            path=path,
            hint="already-converted weights are in the store; give the .pth the registry approved",
        )
    stage("gate", f"{role}: {path}")
    record = convert(
        path,
        None,
        store=Store(request.store) if request.store is not None else Store(),
        registry=request.registry,
        policy=policy,
        trust_root=request.trust_root,
        audit_log=request.audit_log,
    )
    decision = record.decision
    warnings = tuple(getattr(decision, "warnings", ()) or ())
    stage("convert", f"{role}: sha256:{record.sha256}")
    return StoredInput(
        role=role, source=path, path=record.output, provenance=record.provenance, sha256=record.sha256, warnings=warnings
    )


def recheck(stored: StoredInput) -> None:
    """DESIGN invariant 4: the file about to be mounted hashes to what its provenance says."""
    from gpenguard.convert import read_provenance
    from gpenguard.store import sha256_file

    recorded = read_provenance(stored.provenance).subject_sha256
    actual = sha256_file(stored.path)
    if not (recorded == actual == stored.sha256):
        raise VerificationError(
            f"stored weights hash to {actual}, but the provenance record says {recorded}; refusing to run",
            path=stored.path,
        )


def _publish(staging: Path, output_dir: Path) -> tuple[Path, ...]:
    """Move the worker's PNGs out of staging; anything else the sandbox left there is refused."""
    outputs: list[Path] = []
    entries = sorted(os.scandir(staging), key=lambda e: e.name)
    if len(entries) > MAX_OUTPUTS:
        raise SandboxError(f"the sandbox wrote {len(entries)} files, more than {MAX_OUTPUTS}")
    for entry in entries:
        info = entry.stat(follow_symlinks=False)
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            continue  # an unfinished temp file of the worker; never published
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or not _OUTPUT_NAME.match(entry.name):
            raise SandboxError("the sandbox left something other than a PNG result; nothing published", path=entry.path)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        target = output_dir / entry.name
        with contextlib.suppress(FileNotFoundError):
            if target.is_symlink() or target.is_dir():
                raise SandboxError("refusing to replace a link or folder with a result", path=target)
        if os.geteuid() == 0:
            # Results belong to whoever owns OUTDIR, not to the sandbox's uid 65534.
            owner = output_dir.stat()
            os.chown(entry.path, owner.st_uid, owner.st_gid)
        Path(entry.path).replace(target)
        outputs.append(target)
    return tuple(outputs)
