"""Two readings of one file: gpenguard's, and the real loaders'; and where they disagree.

gpenguard's view is its verdict, every pickle program it judged (member, offset, bytes, the
globals its symbolic walker resolved), the storages it located and the tensors the weights-only
reader of `gpenguard convert` returns. The loaders' view comes from the readers torch.load
itself uses, driven the way torch.load drives them:

- zip: ``torch._C.PyTorchFileReader`` (miniz): records, ``data.pkl``, ``data/<key>``;
- legacy stream / bare pickle: CPython's C unpickler over the file, five programs in a row,
  from a real file (``torch.load(path)``: buffered, peek-capable) and from ``BytesIO``;
- legacy tar: ``tarfile`` member lookup and the record streams inside ``storages``/``tensors``;
- tensors: ``torch.load(weights_only=True)``, normally and with ``mmap=True``.

The C unpickler never resolves a global: `InertUnpickler.find_class` returns a fresh recorder
class and `persistent_load` returns a recorder, so nothing the file names is imported or
called. ``torch.load(weights_only=True)`` runs only in this test oracle, never in the product.

A *differential* is an input gpenguard passes while a loader reads other bytes, requests other
globals, or returns other tensors.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import tarfile
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gpenguard.errors import GpenguardError
from gpenguard.findings import Verdict
from gpenguard.formats import Limits, Source, read_container
from gpenguard.formats.container import Container
from gpenguard.formats.weights import read_tensors
from gpenguard.pickling.walker import walk
from gpenguard.scan import scan_source
from gpenguard.scan.allowlist import normalize
from tests.differential.inert import Recorded, Run, run_pickle

LIMITS = Limits(max_opcodes=200_000, max_members=256, max_uncompressed_bytes=64 * 2**20)
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

_STORAGE_ELEMENT = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
    "BoolStorage": 1, "ComplexDoubleStorage": 16, "ComplexFloatStorage": 8,
    "QUInt8Storage": 1, "QInt8Storage": 1, "QInt32Storage": 4, "QUInt4x2Storage": 1,
    "QUInt2x4Storage": 1,
}  # fmt: skip
"""Element sizes of torch's typed storage classes (the legacy tar reader needs them)."""

_ST_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL", torch.uint16: "U16", torch.uint32: "U32",
    torch.uint64: "U64", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the inert C unpickler


def _decided_unequal(value: object, expected: int) -> bool:
    """True when the check torch makes on `value` surely fails; a recorder could be anything."""
    if isinstance(value, Recorded) or (
        type(value) is tuple and any(isinstance(v, Recorded) for v in value)
    ):
        return False
    try:
        return bool(value != expected)
    except Exception:
        return True


def legacy_sequence(f: Any) -> list[Run]:
    """The pickles ``torch.serialization._legacy_load`` runs, in order, stopping where it would."""
    runs: list[Run] = []
    for index in range(5):
        run = run_pickle(f)
        runs.append(run)
        if run.end is None:
            break
        if index == 0 and _decided_unequal(run.value, MAGIC_NUMBER):
            break
        if index == 1 and _decided_unequal(run.value, PROTOCOL_VERSION):
            break
    return runs


# ---------------------------------------------------------------------------------------------
# views


@dataclass(frozen=True)
class Judged:
    """One pickle program gpenguard judged."""

    member: str | None
    offset: int
    data: bytes
    globals: frozenset[str]


@dataclass
class GuardView:
    verdict: Verdict
    rules: tuple[str, ...]
    format: str | None
    streams: list[Judged]
    storages: dict[str, bytes]
    tensors: dict[str, tuple[str, tuple[int, ...], bytes]] | None
    tensor_error: str | None = None
    legacy_tail: int | None = None
    """Legacy stream: where gpenguard says the raw storage records start."""


@dataclass
class Loaded:
    """A pickle the loader ran, and where in the file (or member) it came from."""

    reader: str
    """Which loader path read it (``zip``, ``legacy-file``, ``legacy-bytesio``, ``tar``)."""
    member: str | None
    run: Run
    data: bytes
    """The bytes it read the program from (the record or member, or the whole file)."""


@dataclass
class LoaderView:
    pickles: list[Loaded] = field(default_factory=list)
    storages: dict[str, bytes] = field(default_factory=dict)
    records: list[str] | None = None
    torchscript: bool = False
    byteorder: bytes | None = None
    tensors: dict[str, dict[str, tuple[str, tuple[int, ...], bytes]] | None] = field(
        default_factory=dict
    )
    """Per torch.load mode (``bytesio``, ``mmap``): name -> (dtype, shape, bytes), or None."""
    notes: list[str] = field(default_factory=list)
    legacy_tail: dict[str, int] = field(default_factory=dict)
    """Legacy stream: where each reading (file, BytesIO) starts reading raw storages."""


@dataclass(frozen=True)
class Differential:
    kind: str
    """``bytes``, ``globals``, ``tensors``, ``storage``, ``torchscript``."""
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def _walk_globals(data: bytes) -> frozenset[str]:
    res = walk(memoryview(data), 0, LIMITS.walk_limits())
    return frozenset(normalize(g.module, g.name) for g in res.imports)


def _boxes(box: Container) -> Iterator[Container]:
    yield box
    for child in box.children:
        yield from _boxes(child)


def _tensor_table(state: Any) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    return {
        rec.name: (rec.dtype, tuple(rec.shape), bytes(state.tensor_bytes(rec))) for rec in state
    }


def guard_view(data: bytes, name: str = "input.pt") -> GuardView:
    """What gpenguard makes of `data`: verdict, judged programs, storages, convert's tensors."""
    src = Source.from_bytes(data, name)
    report = scan_source(src, limits=LIMITS)
    streams: list[Judged] = []
    storages: dict[str, bytes] = {}
    tensors = None
    tensor_error = None
    legacy_tail = None
    try:
        box = read_container(src, limits=LIMITS)
    except GpenguardError:
        box = None
    if box is not None:
        for sub in _boxes(box):
            for s in sub.pickles:
                raw = bytes(s.data)
                streams.append(Judged(s.member, s.offset, raw, _walk_globals(raw)))
        with contextlib.suppress(Exception):
            storages = {k: bytes(v) for k, v in box.storages.items()}
        if box.legacy_tail is not None:
            legacy_tail = len(data) - len(box.legacy_tail)
        try:
            tensors = _tensor_table(read_tensors(box, limits=LIMITS))
        except GpenguardError as exc:
            tensor_error = exc.message
        except Exception as exc:  # a reader bug is still "no tensors"; the scan decides
            tensor_error = f"{type(exc).__name__}: {exc}"
    return GuardView(
        verdict=report.verdict,
        rules=tuple(f.rule_id for f in report.findings),
        format=report.format,
        streams=streams,
        storages=storages,
        tensors=tensors,
        tensor_error=tensor_error,
        legacy_tail=legacy_tail,
    )


def _torch_tensors(obj: object) -> dict[str, tuple[str, tuple[int, ...], bytes]] | None:
    if not isinstance(obj, dict):
        return None
    out: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    for k, v in obj.items():
        if type(v) not in (torch.Tensor, torch.nn.Parameter) or v.layout is not torch.strided:
            return None
        if v.dtype not in _ST_NAMES or v.is_quantized:
            return None
        raw = v.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        out[str(k)] = (_ST_NAMES[v.dtype], tuple(v.shape), raw)
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _load_tensors(
    load: Callable[[], object],
) -> dict[str, tuple[str, tuple[int, ...], bytes]] | None:
    try:
        with _quiet():
            return _torch_tensors(load())
    except Exception:
        return None


def _zip_view(data: bytes, path: str, view: LoaderView) -> None:
    try:
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
    except Exception as exc:
        view.notes.append(f"PyTorchFileReader refused: {exc}"[:200])
        return
    try:
        records = list(reader.get_all_records())
    except Exception as exc:
        view.notes.append(f"get_all_records failed: {exc}"[:200])
        return
    view.records = records
    if "constants.pkl" in records:
        view.torchscript = True  # torch.load(weights_only=False) hands it to torch.jit.load
        return
    with contextlib.suppress(Exception):
        if reader.has_record("byteorder"):
            view.byteorder = bytes(reader.get_record("byteorder"))
    try:
        pkl = bytes(reader.get_record("data.pkl"))
    except Exception as exc:
        view.notes.append(f"no data.pkl: {exc}"[:200])
        return
    run = run_pickle(io.BytesIO(pkl))
    view.pickles.append(Loaded("zip", "data.pkl", run, pkl))
    for pid in run.pids:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            break  # torch's persistent_load raises
        key = pid[2]
        if not isinstance(key, str) or key in view.storages:
            continue
        try:
            view.storages[key] = bytes(reader.get_record(f"data/{key}"))
        except Exception:
            break
    view.tensors["bytesio"] = _load_tensors(
        lambda: torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    )
    view.tensors["mmap"] = _load_tensors(
        lambda: torch.load(path, weights_only=True, mmap=True, map_location="cpu")
    )


def _tar_member(tf: tarfile.TarFile, name: str) -> bytes | None:
    try:
        f = tf.extractfile(name)  # getmember: the last entry of that name
    except (KeyError, tarfile.TarError, OSError, ValueError):
        return None
    return None if f is None else f.read()


def _tar_view(tf: tarfile.TarFile, view: LoaderView) -> None:
    """The record streams torch's legacy tar reader unpickles, member by member."""
    storages = _tar_member(tf, "storages")
    if storages is None:
        return
    f = io.BytesIO(storages)
    count = run_pickle(f)
    view.pickles.append(Loaded("tar", "storages", count, storages))
    n = count.value if isinstance(count.value, int) and count.end is not None else 0
    for _ in range(max(0, min(n, 10_000))):
        rec = run_pickle(f)
        view.pickles.append(Loaded("tar", "storages", rec, storages))
        if rec.end is None or not (isinstance(rec.value, tuple) and len(rec.value) == 3):
            return
        kind = rec.value[2]
        name = getattr(kind, "__gg_name__", "").rsplit(".", 1)[-1]
        size = _STORAGE_ELEMENT.get(name)
        head = f.read(8)
        if size is None or len(head) < 8:
            return
        f.seek(struct.unpack("<q", head)[0] * size, io.SEEK_CUR)
    views = run_pickle(f)
    view.pickles.append(Loaded("tar", "storages", views, storages))
    tensors = _tar_member(tf, "tensors")
    if tensors is None:
        return
    f = io.BytesIO(tensors)
    count = run_pickle(f)
    view.pickles.append(Loaded("tar", "tensors", count, tensors))
    n = count.value if isinstance(count.value, int) and count.end is not None else 0
    for _ in range(max(0, min(n, 10_000))):
        rec = run_pickle(f)
        view.pickles.append(Loaded("tar", "tensors", rec, tensors))
        head = f.read(4)
        if rec.end is None or len(head) < 4:
            return
        (ndim,) = struct.unpack("<i", head)
        if ndim < 0:
            return
        f.seek(4 + 16 * ndim + 8, io.SEEK_CUR)
    main = _tar_member(tf, "pickle")
    if main is not None:
        view.pickles.append(Loaded("tar", "pickle", run_pickle(io.BytesIO(main)), main))


def _legacy_view(data: bytes, path: str, view: LoaderView) -> None:
    # torch.load(path): a real file at offset 0 is tried as a tar first.
    with open(path, "rb") as f:  # noqa: PTH123 - torch.load opens it this way
        tar_ok = False
        try:
            with tarfile.open(fileobj=f, mode="r:", format=tarfile.PAX_FORMAT) as tf:
                tar_ok = True
                _tar_view(tf, view)
        except (tarfile.TarError, OSError, ValueError, EOFError, UnicodeError):
            # NOTE: torch catches only TarError; anything else would end torch.load itself.
            pass
        if not tar_ok:
            f.seek(0)
            runs = legacy_sequence(f)
            view.pickles.extend(Loaded("legacy-file", None, run, data) for run in runs)
            if len(runs) == 5 and runs[-1].end is not None:
                view.legacy_tail["file"] = runs[-1].end
    # torch.load(BytesIO(...)): no fileno, so straight to the pickle sequence.
    runs = legacy_sequence(io.BytesIO(data))
    view.pickles.extend(Loaded("legacy-bytesio", None, run, data) for run in runs)
    if len(runs) == 5 and runs[-1].end is not None:
        view.legacy_tail["bytesio"] = runs[-1].end
    view.tensors["bytesio"] = _load_tensors(
        lambda: torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    )
    view.tensors["file"] = _load_tensors(
        lambda: torch.load(path, weights_only=True, map_location="cpu")
    )


def loader_view(data: bytes) -> LoaderView:
    """What torch.load's readers make of `data` (never resolving a global)."""
    view = LoaderView()
    fd, path = tempfile.mkstemp(prefix="gg-diff-", suffix=".bin")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        if data[:4] == b"PK\x03\x04":
            _zip_view(data, path, view)
        else:
            _legacy_view(data, path, view)
    finally:
        Path(path).unlink()
    return view


# ---------------------------------------------------------------------------------------------
# comparison


def _covering(guard: GuardView, loaded: Loaded) -> Judged | None:
    """A program gpenguard judged that starts with the bytes the loader ran.

    The walker's judgement depends only on the bytes, so where gpenguard found the program does
    not matter; what matters is that it judged these bytes, up to where the loader stopped.
    """
    run = loaded.run
    end = run.end if run.end is not None else len(loaded.data)
    ran = loaded.data[run.start : end]
    best = None
    for s in guard.streams:
        if s.data[: len(ran)] == ran:
            if not set(run.globals) - s.globals:
                return s
            best = s
    return best


def differentials(guard: GuardView, loader: LoaderView) -> list[Differential]:
    """Every way the loader's reading departs from what gpenguard judged (empty unless PASS)."""
    if guard.verdict is not Verdict.PASS:
        return []
    out: list[Differential] = []
    if loader.torchscript:
        out.append(Differential("torchscript", "torch.load dispatches this zip to torch.jit.load"))
    for loaded in loader.pickles:
        run = loaded.run
        if run.end is None and not run.globals:
            continue  # failed before importing anything: the loader stops here
        judged = _covering(guard, loaded)
        where = f"{loaded.reader} {loaded.member or 'file'} @{run.start}"
        if judged is None:
            out.append(
                Differential(
                    "bytes",
                    f"{where}: the loader runs a program gpenguard did not judge "
                    f"(globals {sorted(set(run.globals))})",
                )
            )
            continue
        extra = set(run.globals) - judged.globals
        if extra:
            out.append(
                Differential(
                    "globals",
                    f"{where}: the loader imports {sorted(extra)}; gpenguard saw "
                    f"{sorted(judged.globals)}",
                )
            )
    if guard.legacy_tail is not None:
        for how, start in loader.legacy_tail.items():
            if start != guard.legacy_tail:
                out.append(
                    Differential(
                        "bytes",
                        f"legacy ({how}): torch reads storages from byte {start}, "
                        f"gpenguard from {guard.legacy_tail}",
                    )
                )
    for key, raw in loader.storages.items():
        mine = guard.storages.get(key)
        if mine is not None and mine != raw:
            out.append(Differential("storage", f"data/{key}: {len(raw)} bytes for torch, "
                                    f"{len(mine)} different bytes for gpenguard"))  # fmt: skip
    if guard.tensors is not None:
        for mode, theirs in loader.tensors.items():
            if theirs is None:
                continue
            if theirs != guard.tensors:
                out.append(
                    Differential(
                        "tensors", f"torch.load ({mode}) {_diff_tensors(guard.tensors, theirs)}"
                    )
                )
    return out


def _diff_tensors(
    mine: dict[str, tuple[str, tuple[int, ...], bytes]],
    theirs: dict[str, tuple[str, tuple[int, ...], bytes]],
) -> str:
    if set(mine) != set(theirs):
        return f"returns keys {sorted(theirs)[:5]}, convert {sorted(mine)[:5]}"
    for k in mine:
        if mine[k] != theirs[k]:
            a, b = mine[k], theirs[k]
            return f"differs at {k!r}: torch {b[0]}{list(b[1])}, convert {a[0]}{list(a[1])}" + (
                " (same dtype/shape, other bytes)" if a[:2] == b[:2] else ""
            )
    return "differs"


def check(data: bytes) -> list[Differential]:
    """Differentials for one input: empty when gpenguard blocks or both readings agree."""
    guard = guard_view(data)
    if guard.verdict is not Verdict.PASS:
        return []
    return differentials(guard, loader_view(data))
