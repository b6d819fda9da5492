"""`restore`: the whole gate, then GPEN inside the sandbox.

    for each weight file: gate -> convert into the content-addressed store   (Blocked: stop)
    list the input images on the host; refuse, one by one, those not in an accepted format
    build the SandboxSpec from the policy; re-check each stored file's sha256 against its
    provenance record right before the backend starts (DESIGN inv. 4); run the worker
    publish: the host names, decodes and re-encodes every result (gpenguard.runner.publish)

A poisoned checkpoint raises `Blocked` from the gate before any container exists. Results
appear in OUTDIR only after the whole run succeeded; a failed run leaves OUTDIR as it was. An
image that fails (refused format, decoder error) is listed in `RestoreOutcome.failures` with
its host path, and the other images are restored and published.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gpenguard.decoders import LISTED_SUFFIXES, ImageHeader, inspect
from gpenguard.errors import InputError, UsageError, VerificationError
from gpenguard.policy import Policy
from gpenguard.runner import BackendName
from gpenguard.runner.interface import Backend, Event, EventSink, RunResult
from gpenguard.runner.publish import (
    FSIZE_FLOOR,
    ImageFailure,
    PlannedImage,
    Staging,
    check_targets,
    expected_sizes,
    failure_reason,
    output_names,
    publish,
    results_budget,
)
from gpenguard.runner.spec import (
    GPU_ID,
    HOST_IMAGE,
    INPUTS_DIR,
    JOB_FILE,
    NOBODY,
    RESULTS_FILE,
    WEIGHTS_DIR,
    Job,
    build_spec,
    input_leaf,
)
from gpenguard.runner.worker import WeightFile, WorkerJob

ROLES = ("gpen", "detector", "parser")
WORKER_COMMAND = ("python", "-m", "gpenguard.runner.worker")
MAX_IMAGES = 100_000
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
    runtime: str | None = None
    """Docker's runtime: ``runc``, ``runsc`` or ``auto``; default: the policy's ``sandbox.runtime``."""
    policy: Policy | str | os.PathLike[str] | None = None
    registry: Path | None = None
    trust_root: Path | None = None
    tuf_repo: str | None = None
    """A TUF repository (folder or URL) whose targets are the registry; `trust_root` is its root.json."""
    audit_log: Path | None = None
    image: str | None = None
    """Docker image reference or id; default ``gpenguard-sandbox:latest``, resolved to its id."""
    dtype: str = "float32"
    store: Path | None = None
    overwrite: bool = False
    """Replace files already in OUTDIR that have a result's name (never done otherwise)."""


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
    failures: tuple[ImageFailure, ...] = ()
    """Inputs not restored, each with its host path and why; the CLI exits 2 when there are any."""


@dataclass(frozen=True, slots=True)
class PreparedInputs:
    """The host's own listing of the inputs: what is mounted, what the worker restores, where
    each result goes, and the images refused before the job."""

    mounts: tuple[Path, ...]
    entries: tuple[tuple[str, ...] | None, ...]
    """Per mount: for a folder, its accepted images (all the job may see of it); None for a file."""
    plan: tuple[PlannedImage, ...]
    refused: tuple[ImageFailure, ...]


@dataclass(frozen=True, slots=True)
class WorkerOutcome:
    """What `run_worker` did: the sandbox run, what it published, and what failed."""

    run: RunResult
    outputs: tuple[Path, ...]
    failures: tuple[ImageFailure, ...]


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
    prepare_inputs(inputs, request.output_dir, mode=mode, size=request.size, overwrite=request.overwrite)
    backend_name = BackendName.parse(request.backend or policy.sandbox.backend)
    if request.gpus:
        from gpenguard.runner.check import require_gpu_allowed, toolkit_version

        if backend_name is BackendName.BWRAP:
            raise UsageError("GPU runs need the docker backend; bwrap runs on the CPU only")
        bad = [gpu for gpu in request.gpus if not GPU_ID.match(gpu)]
        if bad:
            raise UsageError(f"--gpu takes GPU indexes or GPU-/MIG- UUIDs, comma-separated; not {', '.join(map(repr, bad))}")
        require_gpu_allowed(policy, request.gpus, toolkit_version())
    runtime = request.runtime or policy.sandbox.runtime
    if backend_name is not BackendName.DOCKER and (
        request.runtime not in {None, "auto"} or policy.sandbox.runtime == "runsc"
    ):
        raise UsageError(f"the {backend_name} backend has no container runtime; runsc needs --backend docker")
    # The gate runs first: a poisoned checkpoint is refused with its reasons (exit 1) whether
    # or not a sandbox engine, runtime or image exists on this host.
    weights = tuple(
        _gate_and_store(role, path, request, policy, stage)
        for role, path in zip(ROLES, (request.gpen, request.detector, request.parser), strict=True)
        if path is not None and (role == "gpen" or mode == "full")
    )
    backend: Backend
    if backend_name is BackendName.DOCKER:
        from gpenguard.runner.docker import (
            DEFAULT_IMAGE,
            DockerBackend,
            client,
            resolve_image,
            resolve_runtime,
        )

        engine = client()
        runtime = resolve_runtime(engine, runtime, gpus=bool(request.gpus))
        backend = DockerBackend(engine, runtime)
        image = resolve_image(engine, request.image or DEFAULT_IMAGE)
        stage("runtime", runtime)
    else:
        backend = backend_name.create()
        image = HOST_IMAGE
    output_dir = request.output_dir
    done = run_worker(
        backend, image, policy, weights, inputs, output_dir,
        mode=mode, size=request.size, gpus=request.gpus, dtype=request.dtype, on_event=on_event, on_stage=stage,
        overwrite=request.overwrite,
    )  # fmt: skip
    failed = f", {len(done.failures)} failed" if done.failures else ""
    stage("done", f"{len(done.outputs)} image(s) in {output_dir}{failed}")
    return RestoreOutcome(
        outputs=done.outputs, weights=weights, run=done.run, image=image, events=done.run.events, failures=done.failures
    )


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
    overwrite: bool = False,
    command: tuple[str, ...] = WORKER_COMMAND,
) -> WorkerOutcome:
    """Run the worker on already gated and stored weights; publish its results.

    Each stored file is re-hashed against its provenance record here, as the last step before
    the backend starts (DESIGN invariant 4), so no caller can skip it. `command` is the program
    the sandbox runs (``--job-file`` is appended); the escape battery puts hostile payloads
    there to attack the publisher.
    """
    stage = on_stage or (lambda _stage, _detail: None)
    prepared = prepare_inputs(inputs, output_dir, mode=mode, size=size, overwrite=overwrite)
    plan = prepared.plan
    created = not output_dir.exists()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output directory: {exc.strerror}", path=output_dir) from exc
    user = NOBODY if os.geteuid() == 0 else (os.getuid(), os.getgid())
    outputs: tuple[Path, ...] = ()
    try:
        owner = backend.output_owner(user) if os.geteuid() == 0 else None
        with Staging(output_dir, results_owner=owner) as staging:
            gpen_file = _weight_file(weights, "gpen")
            if gpen_file is None:
                raise UsageError("no GPEN weights to run")
            worker_job = WorkerJob(
                gpen=gpen_file,
                detector=_weight_file(weights, "detector"),
                parser=_weight_file(weights, "parser"),
                inputs=tuple(p.sandbox_path for p in plan),
                results=RESULTS_FILE,
                mode=mode,
                size=size,
                device="cuda" if gpus else "cpu",
                dtype=dtype,
            )
            budget = results_budget(plan)
            job = Job(
                image=image,
                command=(*command, "--job-file", JOB_FILE),
                weights=tuple(str(p) for w in weights for p in (w.path, w.provenance)),
                inputs=tuple(str(p) for p in prepared.mounts),
                input_entries=prepared.entries,
                gpus=gpus,
                user=user,
                results=str(staging.results),
                output_bytes=max(budget, FSIZE_FLOOR),
                job_file=str(staging.write_job(worker_job.to_json())),
            )
            from gpenguard.runner.seccomp import load_profile

            spec = build_spec(policy, job, seccomp_profile=load_profile())
            for stored in weights:
                recheck(stored)
            stage("verified", "stored weights match their provenance records")
            stage("sandbox", f"{backend.name}: {image}")
            result = backend.run(spec, on_event=_host_named(plan, on_event))
            staged = staging.collect(plan, budget=budget)
            failed = {
                int(e["index"]): failure_reason(e.get("reason"))
                for e in result.events
                if e.get("event") == "image-failed" and isinstance(e.get("index"), int)
            }
            outputs, failures = publish(staged, plan, overwrite=overwrite, failed=failed)
    finally:
        if created and not outputs:  # a run that published nothing leaves OUTDIR as it was: absent
            with contextlib.suppress(OSError):
                output_dir.rmdir()
    return WorkerOutcome(run=result, outputs=outputs, failures=(*prepared.refused, *failures))


def prepare_inputs(
    inputs: Sequence[Path], output_dir: Path, *, mode: str, size: int, overwrite: bool
) -> PreparedInputs:
    """List every input image on the host, read its header, and name its result.

    An image in a refused format, too large, or unreadable is one failure and is not sent to
    the sandbox; if none is left, `InputError`. Results whose names are taken in OUTDIR are
    refused here, before any work, unless `overwrite`.
    """
    listed: list[tuple[int, Path, str | None]] = []  # (argument index, host path, name inside a folder)
    for i, path in enumerate(inputs):
        if path.is_dir():
            listed.extend((i, path / name, name) for name in _image_names(path))
        else:
            listed.append((i, path, None))
    if len(listed) > MAX_IMAGES:
        raise UsageError(f"{len(listed)} images in one run; restore takes at most {MAX_IMAGES}")
    accepted: list[tuple[int, Path, str | None, ImageHeader]] = []
    refused: list[ImageFailure] = []
    for i, path, name in listed:
        try:
            accepted.append((i, path, name, inspect(path, shown=path)))
        except InputError as exc:
            refused.append(ImageFailure(path, exc.message))
    if not accepted:
        first = "; ".join(str(f) for f in refused[:3])
        raise InputError(f"no input image can be restored: {first}")
    mounts = sorted({i for i, *_ in accepted})
    leaf = {i: input_leaf(n, str(inputs[i])) for n, i in enumerate(mounts)}
    names = output_names([path for _, path, _, _ in accepted])
    plan = tuple(
        PlannedImage(
            index=n,
            source=path,
            sandbox_path=f"{INPUTS_DIR}/{leaf[i]}" + (f"/{name}" if name is not None else ""),
            target=output_dir / names[n],
            sizes=expected_sizes(header, mode=mode, size=size),
            icc_profile=header.icc_profile,
        )
        for n, (i, path, name, header) in enumerate(accepted)
    )
    check_targets(plan, overwrite=overwrite)
    entries = tuple(
        tuple(name for j, _, name, _ in accepted if j == i and name is not None) if inputs[i].is_dir() else None
        for i in mounts
    )
    return PreparedInputs(
        mounts=tuple(inputs[i] for i in mounts), entries=entries, plan=plan, refused=tuple(refused)
    )


def _weight_file(weights: Sequence[StoredInput], role: str) -> WeightFile | None:
    stored = next((w for w in weights if w.role == role), None)
    if stored is None:
        return None
    return WeightFile(path=f"{WEIGHTS_DIR}/{stored.path.name}", provenance=f"{WEIGHTS_DIR}/{stored.provenance.name}")


def _host_named(plan: Sequence[PlannedImage], on_event: EventSink | None) -> EventSink | None:
    """Progress events with the host's names for each image in place of anything the job said."""
    if on_event is None:
        return None
    sink = on_event

    def forward(event: Event) -> None:
        index = event.get("index")
        if event.get("event") in {"image", "image-failed"} and isinstance(index, int) and 0 <= index < len(plan):
            planned = plan[index]
            event = {**event, "input": planned.source.name, "output": planned.target.name, "total": len(plan)}
        sink(event)

    return forward


def _resolve_inputs(paths: Sequence[Path]) -> list[Path]:
    if not paths:
        raise UsageError("give at least one input image or folder")
    resolved = []
    for raw in paths:
        try:
            path = Path(raw).resolve(strict=True)
        except OSError as exc:
            raise InputError("input not found", path=raw) from exc
        if path.is_file() and path.suffix.lower() not in LISTED_SUFFIXES:
            raise InputError(f"not an image file (expected one of {', '.join(LISTED_SUFFIXES)})", path=raw)
        if not (path.is_file() or path.is_dir()):
            raise InputError("input is neither a file nor a folder", path=raw)
        if path.is_dir() and not _has_image(path):
            raise InputError(f"no image files in this folder (expected one of {', '.join(LISTED_SUFFIXES)})", path=raw)
        resolved.append(path)
    return resolved


def _has_image(folder: Path) -> bool:
    return bool(_image_names(folder))


def _image_names(folder: Path) -> list[str]:
    """The image files directly in `folder`, sorted: what a folder contributes to a run."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if Path(e.name).suffix.lower() in LISTED_SUFFIXES and e.is_file())
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
        tuf_repo=request.tuf_repo,
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
