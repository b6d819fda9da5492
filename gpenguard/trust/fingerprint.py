"""Architecture fingerprint: what shape of network a checkpoint holds, without loading it.

A checkpoint can pass every byte-level check and still be the wrong model (another size of
GPEN, a truncated export, a different network under the right file name). The fingerprint pins
the *structure* of the state_dict: every tensor's name, dtype and shape. It is computed from
the pickle's structure (the weights-only reader's tensor records), never from tensor data, so
it costs the same for a 300 MB file as for a 3 KB one.

Canonical text (the exact bytes that are hashed; UTF-8, every line ends in ``"\\n"``)::

    <name>|<DTYPE>|<d0>,<d1>,...        one line per tensor, sorted by name (code point order,
                                        which equals UTF-8 byte order); a 0-d tensor has an
                                        empty shape field: ``name|F32|``
    tensors=<N>                         number of tensor lines
    elements=<E>                        sum over tensors of the product of the shape

``DTYPE`` is the safetensors spelling (``F32``, ``F16``, ``BF16``, ``F64``, ``I64``, ``I32``,
``I16``, ``I8``, ``U8``, ``BOOL``); torch spellings (``torch.float32``, ``float32``,
``FloatStorage``) are normalised to it first. The fingerprint is ``sha256(canonical).hexdigest()``
(64 lower-case hex digits). Example for GPEN-BFR-2048 (fp32, 201 keys)::

    ecd0.0.0.weight|F32|16,3,1,1
    ...
    generator.to_rgbs.8.upsample.kernel|F32|4,4
    tensors=201
    elements=71295201

Parameters versus elements: a state_dict holds both parameters and buffers (GPEN's 27 FIR
kernels, BatchNorm running statistics) and nothing in the file says which is which. The digest
therefore covers only what the file states: ``elements`` is the total of *all* state_dict
elements (71,295,201 for GPEN-BFR-2048). `Fingerprint.parameter_count` is derived separately,
by excluding tensors whose last name component is a well-known buffer name (`BUFFER_NAMES`);
for GPEN-BFR-2048 that gives the published 71,294,769. It is a readable cross-check for the
registry, not part of the digest, so improving the heuristic never changes a pinned digest.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gpenguard.errors import FormatError, InputError

BUFFER_NAMES = frozenset({"kernel", "running_mean", "running_var", "num_batches_tracked"})
"""Last name components that are buffers, not parameters, in the networks gpenguard knows:
GPEN's upfirdn FIR ``kernel`` and BatchNorm's running statistics (RetinaFace, ParseNet)."""

_DTYPES: dict[str, str] = {
    "F64": "F64", "FLOAT64": "F64", "DOUBLE": "F64", "DOUBLESTORAGE": "F64",
    "F32": "F32", "FLOAT32": "F32", "FLOAT": "F32", "FLOATSTORAGE": "F32",
    "F16": "F16", "FLOAT16": "F16", "HALF": "F16", "HALFSTORAGE": "F16",
    "BF16": "BF16", "BFLOAT16": "BF16", "BFLOAT16STORAGE": "BF16",
    "I64": "I64", "INT64": "I64", "LONG": "I64", "LONGSTORAGE": "I64",
    "I32": "I32", "INT32": "I32", "INT": "I32", "INTSTORAGE": "I32",
    "I16": "I16", "INT16": "I16", "SHORT": "I16", "SHORTSTORAGE": "I16",
    "I8": "I8", "INT8": "I8", "CHAR": "I8", "CHARSTORAGE": "I8",
    "U8": "U8", "UINT8": "U8", "BYTE": "U8", "BYTESTORAGE": "U8",
    "BOOL": "BOOL", "BOOLSTORAGE": "BOOL",
}


class TensorLike(Protocol):
    """Anything with a tensor's name, dtype and shape (the weights reader's records)."""

    @property
    def name(self) -> str: ...

    @property
    def dtype(self) -> object: ...

    @property
    def shape(self) -> tuple[int, ...]: ...


@dataclass(frozen=True)
class TensorInfo:
    """One state_dict entry, as far as the fingerprint cares."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Fingerprint:
    """The architecture fingerprint of one state_dict, and the counts behind it."""

    digest: str
    """sha256 hex of the canonical text (see the module docstring)."""
    tensor_count: int
    element_count: int
    """All state_dict elements, parameters and buffers alike (this is what the digest covers)."""
    parameter_count: int
    """`element_count` minus tensors named like buffers (`BUFFER_NAMES`); a derived figure."""
    canonical: str
    """The exact text that was hashed, for diffing two fingerprints by hand."""


def normalize_dtype(dtype: object) -> str:
    """Return the safetensors spelling of a torch or safetensors dtype name."""
    text = str(dtype).strip()
    for prefix in ("torch.", "torch::"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    key = text.upper()
    if key not in _DTYPES:
        raise FormatError(f"unknown tensor dtype {dtype!r}")
    return _DTYPES[key]


def canonical_lines(tensors: Iterable[TensorLike]) -> list[str]:
    """The sorted ``name|DTYPE|shape`` lines; refuses names that would make the text ambiguous."""
    lines: dict[str, str] = {}
    for t in tensors:
        name = t.name
        if "|" in name or "\n" in name or "\r" in name:
            raise FormatError(f"tensor name {name!r} contains a separator character")
        if name in lines:
            raise FormatError(f"tensor name {name!r} occurs twice")
        if not all(type(d) is int and d >= 0 for d in t.shape):
            raise FormatError(f"tensor {name!r} has an invalid shape {t.shape!r}")
        shape = ",".join(str(d) for d in t.shape)
        lines[name] = f"{name}|{normalize_dtype(t.dtype)}|{shape}"
    return [lines[n] for n in sorted(lines)]


def fingerprint(tensors: Iterable[TensorLike]) -> Fingerprint:
    """Fingerprint a state_dict given its tensors' names, dtypes and shapes (any order)."""
    items = [TensorInfo(t.name, normalize_dtype(t.dtype), tuple(t.shape)) for t in tensors]
    lines = canonical_lines(items)
    elements = sum(math.prod(t.shape) for t in items)
    buffers = sum(math.prod(t.shape) for t in items if t.name.rsplit(".", 1)[-1] in BUFFER_NAMES)
    canonical = "".join(line + "\n" for line in lines)
    canonical += f"tensors={len(lines)}\nelements={elements}\n"
    return Fingerprint(
        digest=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        tensor_count=len(lines),
        element_count=elements,
        parameter_count=elements - buffers,
        canonical=canonical,
    )


_KEY_LINE = re.compile(r"^(?P<name>\S+)\s+\[(?P<shape>[0-9,\s]*)\]\s*$")


def fingerprint_from_lines(lines: Iterable[str], *, dtype: str = "F32", source: str = "<lines>") -> Fingerprint:
    """Fingerprint a key listing of ``name [d0,d1,...]`` lines, every tensor of one `dtype`.

    This is how a registry entry is computed before the weights are at hand: from the
    architecture's documented key list (shared/research/gpen2048_keys.txt), fp32 as released.
    Blank lines and ``#`` comments are skipped; any other malformed line is an error naming it.
    """
    tensors: list[TensorInfo] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _KEY_LINE.match(line)
        if m is None:
            raise FormatError(f"line {number}: expected 'name [d0,d1,...]', got {line!r}", path=source)
        dims = [d.strip() for d in m["shape"].split(",") if d.strip()]
        tensors.append(TensorInfo(m["name"], dtype, tuple(int(d) for d in dims)))
    return fingerprint(tensors)


def fingerprint_from_keys_file(path: str | Path, *, dtype: str = "F32") -> Fingerprint:
    """`fingerprint_from_lines` over a file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read key listing: {exc.strerror}", path=p) from exc
    return fingerprint_from_lines(text.splitlines(), dtype=dtype, source=str(p))
