"""The program that runs inside the sandbox: verify the weights again, restore, write results.

It trusts nothing it was handed: every weight file must be a `.safetensors` whose sha256
matches the digest in its provenance record, or the job stops before a tensor is built. The
bytes hashed are the bytes loaded (one read into memory, hashed, then parsed). Inputs are
decoded only by the accepted decoders (`gpenguard.decoders`); an image that cannot be
read or restored is reported (``image-failed``, by index, without its in-sandbox path) and the
others go on. Results go into one tar archive, the job's only writable file, as PNG members
named by input index (``000003.png``); the host names, checks and re-encodes them
(`gpenguard.runner.publish`). Progress goes to stdout as one JSON object per line. There is no
network code here, and the sandbox has no network to use.

    python -m gpenguard.runner.worker --job-file /in/job.json     (or --job '<WorkerJob JSON>')
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import io
import json
import os
import sys
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from gpenguard.errors import ExitCode, GpenguardError, SandboxError, VerificationError

JOB_LIMIT = 64 * 2**20
"""Bytes of a job description read from a file; a real one is far smaller."""


def result_member(index: int) -> str:
    """The archive member holding the result for input number `index`."""
    return f"{index:06d}.png"


@dataclass(frozen=True, slots=True)
class WeightFile:
    """A weight file as the worker sees it: a sandbox path and where its expected digest is."""

    path: str
    provenance: str
    """The provenance record (in-toto statement JSON) naming the file's sha256."""


@dataclass(frozen=True, slots=True)
class WorkerJob:
    """The worker's instructions; written by the host pipeline, read inside the sandbox."""

    gpen: WeightFile
    inputs: tuple[str, ...]
    """One sandbox path per image, listed by the host; the result for ``inputs[i]`` is member ``i``."""
    results: str
    """The tar archive the results go into."""
    detector: WeightFile | None = None
    parser: WeightFile | None = None
    mode: str = "aligned"
    size: int = 2048
    device: str = "cpu"
    dtype: str = "float32"
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WorkerJob:
        try:
            raw = json.loads(text)
            weights = {
                key: WeightFile(**raw[key]) if raw.get(key) is not None else None
                for key in ("gpen", "detector", "parser")
            }
            gpen = weights.pop("gpen")
            if gpen is None:
                raise KeyError("gpen")
            return cls(
                gpen=gpen,
                inputs=tuple(str(p) for p in raw["inputs"]),
                results=str(raw["results"]),
                mode=str(raw.get("mode", "aligned")),
                size=int(raw.get("size", 2048)),
                device=str(raw.get("device", "cpu")),
                dtype=str(raw.get("dtype", "float32")),
                options=dict(raw.get("options") or {}),
                **weights,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SandboxError(f"malformed worker job: {exc}") from exc


def expected_sha256(record_path: str | Path, weight_path: str | Path) -> str:
    """The sha256 a provenance record states for a weight file (the in-toto subject digest).

    A record with several subjects must name the file; a record that names no sha256 for it
    is refused rather than skipped.
    """
    try:
        record = json.loads(Path(record_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VerificationError(f"cannot read provenance record: {exc}", path=record_path) from exc
    statement = record
    if isinstance(record, dict) and "payload" in record and "payloadType" in record:
        # A DSSE envelope around the statement: the digest is inside the payload.
        import base64

        try:
            statement = json.loads(base64.b64decode(record["payload"]))
        except (ValueError, TypeError) as exc:
            raise VerificationError("provenance envelope payload is not JSON", path=record_path) from exc
    subjects = statement.get("subject") if isinstance(statement, dict) else None
    if not isinstance(subjects, list) or not subjects:
        raise VerificationError("provenance record has no subject", path=record_path)
    name = Path(weight_path).name
    named = [s for s in subjects if isinstance(s, dict) and s.get("name") in {name, str(weight_path)}]
    chosen = named or (subjects if len(subjects) == 1 else [])
    if len(chosen) != 1 or not isinstance(chosen[0], dict):
        raise VerificationError(f"provenance record does not name {name}", path=record_path)
    digest = chosen[0].get("digest", {})
    value = digest.get("sha256") if isinstance(digest, dict) else None
    if not isinstance(value, str) or len(value) != 64:
        raise VerificationError("provenance record has no sha256 for the weights", path=record_path)
    return value.lower()


def read_verified(weight: WeightFile) -> bytes:
    """The weight file's bytes, after checking suffix, safetensors framing and sha256."""
    path = Path(weight.path)
    if path.suffix != ".safetensors":
        raise VerificationError("only .safetensors weights may be loaded in the sandbox", path=path)
    expected = expected_sha256(weight.provenance, path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SandboxError(f"cannot read weights: {exc.strerror}", path=path) from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise VerificationError(
            f"sha256 {actual} does not match the provenance record ({expected}); refusing to load",
            path=path,
        )
    return data


def load_tensors(data: bytes, path: str) -> dict[str, Any]:
    """Parse verified safetensors bytes; never a pickle."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = dict(load(data))
    except (SafetensorError, ValueError) as exc:
        raise VerificationError(f"not a valid safetensors file: {exc}", path=path) from exc
    # NOTE: tensors parsed from a bytes buffer sit at arbitrary offsets; oneDNN convolutions on
    # unaligned weights ran ~4% slower per GPEN-256 forward (interleaved A/B), so realign them.
    for name, tensor in tensors.items():
        if tensor.data_ptr() % 64:
            tensors[name] = tensor.clone()
    return tensors


def emit(event: str, **fields: Any) -> None:
    """One progress line on stdout; the host parses these."""
    sys.stdout.write(json.dumps({"event": event, **fields}, sort_keys=True) + "\n")
    sys.stdout.flush()


def run(job: WorkerJob) -> int:
    """Verify, build the restorer once, restore every input; returns the number restored.

    An input that cannot be decoded or restored is reported and skipped; anything that stops
    the whole job (weights, the results file) raises.
    """
    started = time.monotonic()
    weights: dict[str, dict[str, Any]] = {}
    for role, weight in (("gpen", job.gpen), ("detector", job.detector), ("parser", job.parser)):
        if weight is None:
            continue
        tensors = load_tensors(read_verified(weight), weight.path)
        weights[role] = tensors
        emit("weights-verified", role=role, path=weight.path, tensors=len(tensors))
    restorer = build_restorer(job, weights)
    emit("model-loaded", seconds=round(time.monotonic() - started, 4), images=len(job.inputs))

    from gpenguard.decoders import decode

    done = 0
    try:
        with Path(job.results).open("wb") as handle, tarfile.open(
            fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT
        ) as archive:
            for index, source in enumerate(job.inputs):
                t0 = time.monotonic()
                try:
                    restored = restorer.restore_image(decode(source))
                    data = io.BytesIO()
                    _as_pil(restored).save(data, format="PNG")
                except GpenguardError as exc:  # the message without the in-sandbox path
                    emit("image-failed", index=index, reason=exc.message)
                    continue
                except (RuntimeError, ValueError) as exc:  # torch and numpy on an odd image
                    emit("image-failed", index=index, reason=f"{type(exc).__name__}: {exc}")
                    continue
                member = tarfile.TarInfo(result_member(index))
                member.size = data.tell()
                member.mode = 0o644
                data.seek(0)
                archive.addfile(member, data)
                handle.flush()
                done += 1
                emit("image", index=index, total=len(job.inputs), seconds=round(time.monotonic() - t0, 4))
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise SandboxError("the results outgrew their size budget") from exc
        raise SandboxError(f"cannot write the results: {exc.strerror or exc}") from exc
    emit("done", images=done, seconds=round(time.monotonic() - started, 4))
    return done


def build_restorer(job: WorkerJob, weights: Mapping[str, Mapping[str, Any]]) -> Any:
    """The face restorer, built once from the verified tensors (no weight file is reopened).

    Handing `Restorer` the tensors already hashed, rather than the paths, keeps DESIGN
    invariant 2 inside the sandbox too: the bytes checked are the bytes used.
    """
    import torch

    from gpenguard.restore import Restorer

    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        # NOTE: under gVisor torch counts one CPU whatever OMP_NUM_THREADS says; set it outright.
        torch.set_num_threads(int(threads))
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(job.dtype)
    if dtype is None:
        raise SandboxError(f"unsupported dtype {job.dtype!r}")
    if job.mode not in {"aligned", "full"}:
        raise SandboxError(f"unknown mode {job.mode!r}")
    if job.mode == "full" and not {"detector", "parser"} <= set(weights):
        raise SandboxError("full mode needs detector and parser weights")
    mode: Literal["aligned", "full"] = "full" if job.mode == "full" else "aligned"
    roles = ("gpen", "detector", "parser") if mode == "full" else ("gpen",)
    return Restorer({role: weights[role] for role in roles}, device=job.device, dtype=dtype, size=job.size, mode=mode)


def _as_pil(image: Any) -> Any:
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    import numpy as np

    array = np.asarray(image)
    return Image.fromarray(array.astype(np.uint8))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpenguard-worker", description=__doc__)
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--job", help="WorkerJob as JSON")
    given.add_argument("--job-file", help="a file holding the WorkerJob JSON")
    args = parser.parse_args(argv)
    try:
        run(WorkerJob.from_json(args.job if args.job is not None else _read_job(args.job_file)))
    except GpenguardError as exc:
        emit("error", kind=type(exc).__name__, message=str(exc))
        sys.stderr.write(f"error: {exc}\n")
        return int(ExitCode.BLOCKED if exc.exit_code == ExitCode.BLOCKED else ExitCode.ERROR)
    return 0


def _read_job(path: str) -> str:
    try:
        with Path(path).open("rb") as handle:
            return handle.read(JOB_LIMIT).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SandboxError(f"cannot read the job description: {exc}", path=path) from exc


if __name__ == "__main__":
    sys.exit(main())
