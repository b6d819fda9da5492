"""convert: an approved checkpoint becomes a safetensors file plus a provenance record.

The gate decides first, on the same open `Source` the converter then reads (DESIGN invariant
2): a file swapped on disk after the check cannot change what is converted. Tensors come from
the weights-only reader (`gpenguard.formats.weights`), so nothing in the checkpoint runs.

The output is written to a temp file beside the destination, re-read and compared byte for
byte against the source storages, hashed, and only then renamed into place, together with an
in-toto Statement whose SLSA-provenance predicate ties the output digest to the source digest
(optionally signed as a DSSE envelope). Tensors are streamed one at a time from the source
mapping, so memory does not grow with the number or size of tensors.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpenguard import __version__
from gpenguard.errors import (
    Blocked,
    ConversionError,
    ExitCode,
    FormatError,
    GpenguardError,
    InputError,
    SignatureError,
    UsageError,
)
from gpenguard.fileio import read_regular
from gpenguard.formats.container import Container, Limits, read_container
from gpenguard.formats.source import Source
from gpenguard.formats.weights import DTYPES, StateDict, TensorRecord, read_tensors
from gpenguard.store import Store, StoredWeights, provenance_path

if TYPE_CHECKING:
    from gpenguard.gate import GateDecision
    from gpenguard.policy import Policy
    from gpenguard.trust.dsse import Envelope
    from gpenguard.trust.keys import PrivateKey, PublicKey

__all__ = [
    "BUILD_TYPE",
    "FORMAT_MARKER",
    "ConversionRecord",
    "Provenance",
    "WrittenWeights",
    "convert",
    "read_provenance",
    "write_safetensors",
]

FORMAT_MARKER = "gpenguard-safetensors/1"
"""``__metadata__["gpenguard.format"]``: what wrote the file and how to read its metadata."""
BUILD_TYPE = "urn:gpenguard:buildtype:convert:v1"
BUILDER_ID = "urn:gpenguard:builder:convert"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
MAX_HEADER = 100_000_000
"""safetensors' own bound on the JSON header (its Rust parser refuses more)."""
_CHUNK = 8 * 2**20


# --------------------------------------------------------------------------------------------
# values


@dataclass(frozen=True)
class WrittenWeights:
    """A safetensors file this module wrote and verified."""

    path: Path
    sha256: str
    size: int
    header_size: int
    order: tuple[str, ...]
    """Tensor names in data order."""


@dataclass(frozen=True)
class ConversionRecord:
    """What `convert` did: the file it wrote, what it came from, and what it had to adapt."""

    source: str
    source_sha256: str
    output: Path
    sha256: str
    size: int
    provenance: Path
    tensors: int
    elements: int
    select: str | None
    strip_prefix: str | None
    shared: tuple[tuple[str, ...], ...]
    """Groups of tensors that shared one storage in the source; each got its own bytes."""
    materialised: tuple[str, ...]
    """Strided views copied into contiguous bytes."""
    artifact: str | None
    """``name@version`` of the registry entry the gate matched, if any."""
    registry_version: int | None
    policy: str
    signed_by: tuple[str, ...]
    started: datetime
    finished: datetime
    stored: StoredWeights | None = None
    decision: Any = None
    """The gate's `GateDecision`."""


@dataclass(frozen=True)
class Provenance:
    """A provenance record as read back: the Statement, and the envelope if it was signed."""

    path: Path
    statement: Mapping[str, Any]
    envelope: Envelope | None

    @property
    def subject_sha256(self) -> str:
        return str(self.statement["subject"][0]["digest"]["sha256"])

    @property
    def source_sha256(self) -> str:
        deps = self.statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        return str(deps[0]["digest"]["sha256"])

    def byproduct(self, name: str) -> Any:
        """A JSON byproduct (``gate-decision``, ``shared-storage-groups``...), or None."""
        for item in self.statement["predicate"]["runDetails"].get("byproducts", []):
            if item.get("name") == name and "content" in item:
                return json.loads(base64.b64decode(item["content"]))
        return None

    def verified_by(self, keys: Sequence[PublicKey]) -> tuple[str, ...]:
        """Key ids among `keys` whose signature over this envelope verifies (empty if unsigned)."""
        if self.envelope is None:
            return ()
        from gpenguard.trust import dsse
        from gpenguard.trust import keys as keylib

        message = dsse.pae(self.envelope.payload_type, self.envelope.payload)
        valid = []
        for key in keys:
            kid = keylib.key_id(key)
            if any(
                s.keyid in ("", kid) and keylib.verify(key, s.sig, message)
                for s in self.envelope.signatures
            ):
                valid.append(kid)
        return tuple(valid)


# --------------------------------------------------------------------------------------------
# the safetensors writer


def _layout(state: StateDict) -> list[tuple[TensorRecord, int, int]]:
    """Data order: widest dtype first, then by name, so every tensor is aligned to its width."""
    order = sorted(state.tensors, key=lambda r: (-DTYPES[r.dtype].itemsize, r.name))
    out = []
    pos = 0
    for rec in order:
        out.append((rec, pos, pos + rec.nbytes))
        pos += rec.nbytes
    return out


def _header(
    layout: list[tuple[TensorRecord, int, int]], metadata: Mapping[str, str], source: str
) -> bytes:
    head: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    for rec, begin, end in layout:
        if rec.name == "__metadata__":
            raise ConversionError(
                "a tensor is named '__metadata__', which safetensors reserves", path=source
            )
        head[rec.name] = {"dtype": rec.dtype, "shape": list(rec.shape), "data_offsets": [begin, end]}
    raw = json.dumps(head, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(len(raw) + 8) % 8)  # data starts 8-byte aligned
    if len(raw) > MAX_HEADER:
        raise ConversionError(
            f"safetensors header would be {len(raw)} bytes (limit {MAX_HEADER})", path=source
        )
    return struct.pack("<Q", len(raw)) + raw


def _write_all(fd: int, data: memoryview | bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


@contextlib.contextmanager
def _temp_beside(dest: Path, suffix: str = ".tmp") -> Iterator[tuple[int, Path]]:
    """A temp file in `dest`'s folder, removed unless the caller renamed it away."""
    try:
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=suffix)
    except FileNotFoundError:
        raise InputError("output folder does not exist", path=dest.parent) from None
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror or exc}", path=dest) from exc
    tmp = Path(name)
    try:
        yield fd, tmp
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _write_tmp(state: StateDict, fd: int, tmp: Path, metadata: Mapping[str, str]) -> WrittenWeights:
    layout = _layout(state)
    header = _header(layout, metadata, state.path)
    size = len(header) + (layout[-1][2] if layout else 0)
    try:
        digest = _stream(state, fd, tmp, header, layout)
        os.fsync(fd)
        if os.fstat(fd).st_size != size:
            raise ConversionError(f"written file is {os.fstat(fd).st_size} bytes, expected {size}", path=tmp)
        if os.pread(fd, len(header), 0) != header:
            raise ConversionError("header read back differs from the header written", path=tmp)
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror or exc}", path=tmp) from exc
    _check_header_json(header[8:], layout, metadata, tmp)
    _check_with_safetensors(tmp, layout, metadata)
    return WrittenWeights(tmp, digest, size, len(header) - 8, tuple(r.name for r, _, _ in layout))


def _pieces(state: StateDict, header: bytes, layout: list[tuple[TensorRecord, int, int]]) -> Iterator[tuple[memoryview, TensorRecord | None, bool]]:
    """The file's bytes in order: (piece, tensor it belongs to, last piece of that tensor)."""
    yield memoryview(header), None, True
    for rec, _begin, _end in layout:
        done = 0
        for piece in state.iter_bytes(rec, _CHUNK):
            done += len(piece)
            yield piece, rec, done >= rec.nbytes


def _stream(
    state: StateDict, fd: int, path: Path, header: bytes, layout: list[tuple[TensorRecord, int, int]]
) -> str:
    """Write every piece, read it back from the file, compare, and hash what was read.

    The sha256 is of the bytes read back, so it is the digest of the file on disk. Hashing runs
    in a worker thread (hashlib releases the GIL) on one of two alternating buffers while the
    next piece is written and compared; each tensor's source pages are handed back once it is
    done, so memory stays at a few chunks however large the checkpoint is.
    """
    h = hashlib.sha256()
    buffers = [bytearray(_CHUNK), bytearray(_CHUNK)]
    pending: list[Future[None] | None] = [None, None]
    pos = 0
    rfd = os.open(path, os.O_RDONLY)  # read back through a separate open of the file
    with contextlib.ExitStack() as stack:
        stack.callback(os.close, rfd)
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpenguard-sha256"))
        for i, (piece, rec, last) in enumerate(_pieces(state, header, layout)):
            _write_all(fd, piece)
            slot = i % 2
            waiting = pending[slot]
            if waiting is not None:
                waiting.result()
            got = buffers[slot] if len(piece) == _CHUNK else bytearray(len(piece))
            if os.preadv(rfd, [got], pos) != len(piece) or got != piece:
                what = f"tensor {rec.name[:80]!r}" if rec is not None else "the header"
                raise ConversionError(
                    f"{what} read back from the output differs from the source", path=path
                )
            pending[slot] = pool.submit(h.update, got)
            pos += len(piece)
            if rec is not None and last:
                state.release(rec)
        for waiting in pending:
            if waiting is not None:
                waiting.result()
    return h.hexdigest()


def _check_header_json(
    raw: bytes, layout: list[tuple[TensorRecord, int, int]], metadata: Mapping[str, str], path: Path
) -> None:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ConversionError("written header has duplicate keys", path=path)
        return dict(pairs)

    head = json.loads(raw, object_pairs_hook=no_duplicates)
    if head.pop("__metadata__", {}) != dict(metadata):
        raise ConversionError("written metadata differs from the metadata intended", path=path)
    if set(head) != {rec.name for rec, _, _ in layout}:
        raise ConversionError("written header names differ from the tensors", path=path)


def _check_with_safetensors(
    path: Path, layout: list[tuple[TensorRecord, int, int]], metadata: Mapping[str, str]
) -> None:
    """Let the reference parser validate the framing (offsets contiguous, sizes, no trailer)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            names = set(f.keys())
            meta = f.metadata() or {}
            for rec, _, _ in layout:
                piece = f.get_slice(rec.name)
                if piece.get_dtype() != rec.dtype or tuple(piece.get_shape()) != rec.shape:
                    raise ConversionError(
                        f"safetensors reads {rec.name!r} back as {piece.get_dtype()}"
                        f"{piece.get_shape()}, not {rec.dtype}{list(rec.shape)}",
                        path=path,
                    )
    except GpenguardError:
        raise
    except Exception as exc:  # the parser raises its own SafetensorError
        raise ConversionError(f"safetensors refuses the written file: {exc}", path=path) from exc
    if names != {rec.name for rec, _, _ in layout} or meta != dict(metadata):
        raise ConversionError("safetensors reads back other names or metadata", path=path)


def write_safetensors(
    state: StateDict, out: str | os.PathLike[str], *, metadata: Mapping[str, str] | None = None
) -> WrittenWeights:
    """Write `state` to `out` as safetensors; verified against the source, then renamed in.

    The source `Source` must still be open. Nothing is left at `out` (or beside it) on failure.
    """
    dest = Path(out)
    with _temp_beside(dest) as (fd, tmp):
        written = _write_tmp(state, fd, tmp, metadata or {})
        _rename(tmp, dest)
    return WrittenWeights(dest, written.sha256, written.size, written.header_size, written.order)


def _rename(tmp: Path, dest: Path) -> None:
    try:
        tmp.chmod(0o644)
        tmp.replace(dest)
    except OSError as exc:
        raise InputError(f"cannot move the output into place: {exc.strerror or exc}", path=dest) from exc


# --------------------------------------------------------------------------------------------
# provenance


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def provenance_statement(
    *,
    output_name: str,
    sha256: str,
    source_name: str,
    approval: _Approval,
    source_format: str,
    select: str | None,
    strip_prefix: str | None,
    shared: Sequence[Sequence[str]],
    materialised: Sequence[str],
    started: datetime,
    finished: datetime,
) -> dict[str, Any]:
    """An in-toto Statement v1 with a SLSA provenance v1 predicate for one conversion."""
    source: dict[str, Any] = {"name": source_name}
    if approval.artifact:
        source["artifact"] = approval.artifact
    external: dict[str, Any] = {
        "source": source,
        "policy": approval.policy,
        "select": select,
        "stripPrefix": strip_prefix,
    }
    if approval.registry_name is not None:
        external["registry"] = {"name": approval.registry_name, "version": approval.registry_version}
        if approval.registry_sha256:
            external["registry"]["digest"] = {"sha256": approval.registry_sha256}
    gate = {
        "verdict": "pass",
        "checks": [{"check": c, "outcome": o} for c, o in approval.checks],
        "warnings": list(approval.warnings),
        "notChecked": list(approval.not_checked),
    }
    byproducts = [_json_descriptor("gate-decision", gate)]
    if shared:
        byproducts.append(_json_descriptor("shared-storage-groups", [list(g) for g in shared]))
    if materialised:
        byproducts.append(_json_descriptor("materialised-views", list(materialised)))
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": output_name, "digest": {"sha256": sha256}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": {"sourceFormat": source_format, "formatMarker": FORMAT_MARKER},
                "resolvedDependencies": [
                    {"name": source_name, "digest": {"sha256": approval.source_sha256}},
                ],
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"gpenguard": __version__}},
                "metadata": {"startedOn": _iso(started), "finishedOn": _iso(finished)},
                "byproducts": byproducts,
            },
        },
    }


def _json_descriptor(name: str, value: Any) -> dict[str, Any]:
    """An in-toto ResourceDescriptor carrying JSON: `content` is bytes, so base64 in JSON."""
    raw = json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return {
        "name": name,
        "mediaType": "application/json",
        "content": base64.b64encode(raw).decode("ascii"),
        "digest": {"sha256": hashlib.sha256(raw).hexdigest()},
    }


def _provenance_bytes(statement: Mapping[str, Any], key: PrivateKey | None) -> tuple[bytes, tuple[str, ...]]:
    payload = json.dumps(statement, indent=2, sort_keys=False).encode("utf-8") + b"\n"
    if key is None:
        return payload, ()
    from gpenguard.trust import dsse
    from gpenguard.trust import keys as keylib

    kid = keylib.key_id(key.public_key())
    sig = keylib.sign(key, dsse.pae(PAYLOAD_TYPE, payload))
    env = dsse.Envelope(PAYLOAD_TYPE, payload, (dsse.DsseSignature(keyid=kid, sig=sig),))
    return dsse.serialize_envelope(env), (kid,)


def read_provenance(path: str | os.PathLike[str]) -> Provenance:
    """Read a provenance record, bare Statement or DSSE envelope; signatures are not checked here."""
    p = Path(path)
    try:
        raw = read_regular(p, 16 * 2**20)
    except OSError as exc:
        raise InputError(f"cannot read provenance: {exc.strerror or exc}", path=p) from exc
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"provenance is not JSON: {exc}", path=p) from exc
    envelope = None
    if isinstance(obj, dict) and "payloadType" in obj:
        from gpenguard.trust import dsse

        envelope = dsse.envelope_from_obj(obj, str(p))
        if envelope.payload_type != PAYLOAD_TYPE:
            raise SignatureError(f"envelope carries {envelope.payload_type}, not an in-toto statement", path=p)
        try:
            obj = json.loads(envelope.payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FormatError(f"envelope payload is not JSON: {exc}", path=p) from exc
    try:
        ok = (
            obj["_type"] == STATEMENT_TYPE
            and obj["predicateType"] == PREDICATE_TYPE
            and isinstance(obj["subject"][0]["digest"]["sha256"], str)
            and isinstance(
                obj["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["sha256"], str
            )
        )
    except (KeyError, IndexError, TypeError):
        ok = False
    if not ok:
        raise FormatError("not a gpenguard provenance statement", path=p)
    return Provenance(p, obj, envelope)


# --------------------------------------------------------------------------------------------
# convert


@dataclass(frozen=True)
class _Approval:
    """What the gate said that the output must carry."""

    source_sha256: str
    artifact: str | None
    registry_name: str | None
    registry_version: int | None
    registry_sha256: str | None
    policy: str
    checks: tuple[tuple[str, str], ...] = ()
    """(check, outcome) as the gate listed them: what "approved" meant for this file."""
    warnings: tuple[str, ...] = ()
    not_checked: tuple[str, ...] = ()


def _approval(decision: GateDecision, path: Path) -> _Approval:
    if not decision.passed:
        if str(decision.verdict) == "error":
            err = Blocked("the gate could not decide on this file, so it is not converted",
                          reasons=decision.reasons, path=path)
            err.exit_code = ExitCode.ERROR  # as `gpenguard verify`: 2 means "could not decide"
            raise err
        raise Blocked("the gate blocks this file", reasons=decision.reasons, path=path)
    digest = (decision.sha256 or "").removeprefix("sha256:").lower()
    if len(digest) != 64:  # a pass always hashes; anything else is not a pass we can use
        raise Blocked("the gate passed the file without hashing it", path=path)
    return _Approval(
        source_sha256=digest,
        artifact=decision.artifact,
        registry_name=decision.registry_name,
        registry_version=decision.registry_version,
        registry_sha256=decision.registry_sha256,
        policy=decision.policy,
        checks=tuple((c.name, str(c.outcome)) for c in decision.checks),
        warnings=decision.warnings,
        not_checked=decision.not_checked,
    )


def _metadata(
    approval: _Approval,
    state: StateDict,
    shared: tuple[tuple[str, ...], ...],
    materialised: tuple[str, ...],
) -> dict[str, str]:
    """The output's ``__metadata__``: no timestamps, so one input converts to one digest."""
    meta = {
        "format": "pt",
        "gpenguard.format": FORMAT_MARKER,
        "gpenguard.version": __version__,
        "gpenguard.source_sha256": approval.source_sha256,
        "gpenguard.source_format": str(state.format),
    }
    if approval.artifact:
        name, _, version = approval.artifact.rpartition("@")
        meta["gpenguard.artifact"] = name or approval.artifact
        meta["gpenguard.artifact_version"] = version
    if approval.registry_name is not None:
        meta["gpenguard.registry"] = approval.registry_name
    if approval.registry_version is not None:
        meta["gpenguard.registry_version"] = str(approval.registry_version)
    if state.select:
        meta["gpenguard.select"] = state.select
    if state.strip_prefix:
        meta["gpenguard.strip_prefix"] = state.strip_prefix
    if shared:
        meta["gpenguard.shared"] = json.dumps([list(g) for g in shared], separators=(",", ":"))
    if materialised:
        meta["gpenguard.materialised"] = json.dumps(list(materialised), separators=(",", ":"))
    return meta


def convert(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    registry: str | os.PathLike[str] | None = None,
    name: str | None = None,
    policy: Policy | str | os.PathLike[str] | None = None,
    select: str | None = None,
    strip_prefix: str | None = None,
    store: Store | str | os.PathLike[str] | None = None,
    sign_key: str | os.PathLike[str] | None = None,
    trust_root: str | os.PathLike[str] | None = None,
    audit_log: str | os.PathLike[str] | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    limits: Limits | None = None,
    progress: Callable[[int, int], None] | None = None,
    tuf_repo: str | None = None,
) -> ConversionRecord:
    """Gate `path`, then convert what the gate passed into `out` (and/or the store).

    Raises `Blocked` with the gate's reasons when the gate does not pass (exit 1; exit 2 when
    the gate could not decide, as for ``gpenguard verify``), and a
    `ConversionError`/`FormatError`/`InputError` (exit 2) when the weights cannot be read or
    written safely; in every failure no output file is left behind. `select` defaults to the
    state_dict the gate fingerprinted (the registry entry's ``architecture.state_dict_key``).
    `progress(done, total)` follows the gate's hashing of the source, the long part of the gate.
    """
    from gpenguard.gate import _identity, _mapped_identity, verify_source

    started = datetime.now(UTC)
    src_path = Path(path)
    if out is None and store is None:
        raise UsageError("give an output path, a store, or both")
    the_store = store if isinstance(store, Store) or store is None else Store(store)
    private = None
    if sign_key is not None:
        from gpenguard.trust import keys as keylib

        private = keylib.load_private_key(Path(sign_key))  # before any work: a bad key fails fast

    if out is not None:
        _check_output(Path(out), src_path)
    if the_store is not None:
        the_store.prepare()  # a store that cannot be written fails now, not after the work

    before = _identity(src_path)
    source = Source.open(src_path)
    before = _mapped_identity(source, before)  # the file actually mapped, as the gate does

    def unchanged() -> None:
        # The mapping follows in-place rewrites of the file: if the file changed at all, the
        # bytes converted are not provably the bytes the gate hashed. Checked before renaming.
        if before is None or _identity(src_path) != before:
            raise ConversionError(
                "the file changed on disk during conversion; nothing was written", path=src_path
            )

    written: Path | None = None  # the output (or staged output) once it is in place
    try:
        try:
            decision = verify_source(
                source, registry=registry, name=name, policy=policy, trust_root=trust_root,
                audit_log=audit_log, state_dir=state_dir, progress=progress, tuf_repo=tuf_repo,
            )
            approval = _approval(decision, src_path)
            if decision.fingerprint is not None:
                if select is not None and select != decision.state_dict_key:
                    where = repr(decision.state_dict_key) if decision.state_dict_key else "the top level"
                    raise UsageError(
                        f"the registry entry pins the state_dict at {where}; converting {select!r} "
                        "would write tensors the gate did not fingerprint",
                        path=src_path,
                    )
                select = decision.state_dict_key
            dest = Path(out) if out is not None else _store_staging(the_store)
            record = _convert_open(
                source, dest, approval=approval, select=select, strip_prefix=strip_prefix,
                private=private, started=started, limits=limits, before_commit=unchanged,
                output_name=dest.name if out is not None else f"{src_path.stem}.safetensors",
            )
            written = record.output
        finally:
            _close(source)
        record = dataclasses.replace(record, decision=decision)
        if the_store is not None:
            # without -o the output was written into the store's staging folder: move it in
            stored = the_store.add(record.output, record.sha256, record.provenance, move=out is None)
            record = dataclasses.replace(record, stored=stored)
            if out is None:
                record = dataclasses.replace(
                    record, output=stored.path, provenance=stored.provenance or record.provenance
                )
        return record
    except BaseException:
        if written is not None:  # a failed run leaves nothing, not half its outputs
            _unlink_pair(written)
        raise


def _check_output(out: Path, src: Path) -> None:
    if out.is_dir():
        raise UsageError("the output is a directory; name the .safetensors file to write", path=out)
    for dest in (out, provenance_path(out)):  # both files written: neither may be the source
        same = dest.resolve() == src.resolve()
        with contextlib.suppress(OSError):
            same = same or (dest.exists() and dest.samefile(src))
        if same:
            raise UsageError("the output would replace the checkpoint being converted", path=dest)


def _convert_open(
    source: Source,
    dest: Path,
    *,
    approval: _Approval,
    select: str | None,
    strip_prefix: str | None,
    private: PrivateKey | None,
    started: datetime,
    limits: Limits | None,
    before_commit: Callable[[], None] | None = None,
    output_name: str | None = None,
) -> ConversionRecord:
    container: Container = read_container(source, limits=limits)
    state = read_tensors(container, select=select, strip_prefix=strip_prefix, limits=limits)
    shared = state.shared_groups()
    materialised = tuple(r.name for r in state if not r.contiguous and r.nbytes)
    meta = _metadata(approval, state, shared, materialised)
    prov_dest = provenance_path(dest)
    with _temp_beside(dest) as (fd, tmp), _temp_beside(prov_dest) as (pfd, ptmp):
        written = _write_tmp(state, fd, tmp, meta)
        finished = datetime.now(UTC)
        statement = provenance_statement(
            output_name=output_name or dest.name,
            sha256=written.sha256,
            source_name=Path(source.name).name,
            approval=approval,
            source_format=str(state.format),
            select=state.select,
            strip_prefix=strip_prefix,
            shared=shared,
            materialised=materialised,
            started=started,
            finished=finished,
        )
        prov_bytes, signed_by = _provenance_bytes(statement, private)
        try:
            _write_all(pfd, prov_bytes)
            os.fsync(pfd)
        except OSError as exc:
            raise InputError(f"cannot write: {exc.strerror or exc}", path=prov_dest) from exc
        if before_commit is not None:
            before_commit()
        _rename(tmp, dest)
        try:
            _rename(ptmp, prov_dest)
        except BaseException:
            with contextlib.suppress(OSError):
                dest.unlink()
            raise
    return ConversionRecord(
        source=source.name,
        source_sha256=approval.source_sha256,
        output=dest,
        sha256=written.sha256,
        size=written.size,
        provenance=prov_dest,
        tensors=len(state),
        elements=state.element_count,
        select=state.select,
        strip_prefix=strip_prefix,
        shared=shared,
        materialised=materialised,
        artifact=approval.artifact,
        registry_version=approval.registry_version,
        policy=approval.policy,
        signed_by=signed_by,
        started=started,
        finished=finished,
    )


def _store_staging(store: Store | None) -> Path:
    assert store is not None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return store.staging() / f"{os.getpid()}-{stamp}.safetensors"


def _unlink_pair(weights: Path) -> None:
    for p in (weights, provenance_path(weights)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _close(source: Source) -> None:
    # NOTE: while an exception is in flight its traceback still holds views into the mapping,
    # and mmap refuses to close under exported buffers; the mapping is then released when the
    # last view goes, and the original error is what the caller sees.
    with contextlib.suppress(BufferError):
        source.close()
