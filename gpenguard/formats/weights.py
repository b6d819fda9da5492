"""The weights-only reader: a checkpoint's tensors as records, without running its pickle.

``torch.load`` -- even with ``weights_only=True`` -- executes the checkpoint's pickle program on
torch's own virtual machine, and that machine has had bypasses (DESIGN invariant 1). This module
carries its own small pickle interpreter instead. It knows a closed set of opcodes and a closed
set of global names, and every global it accepts resolves to an object defined *here*; nothing
named by the input is ever imported or called. The interpreter only builds plain values
(dict, list, tuple, str, int, float, bool, None, bytes) and three inert records: a storage
reference, a tensor view over one, and a marker for the few torch constructors it imitates.

`read_tensors` turns a `Container` (torch zip or legacy stream) into a `StateDict`: ordered
`TensorRecord`s (name, dtype, shape, stride, storage key, offset, byte count) checked against the
storages they point into, without reading tensor data. `StateDict.tensor_bytes` then hands out
one tensor's bytes at a time: a zero-copy slice of the source mapping when the tensor is
contiguous, a materialised copy when it is a strided view.
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from gpenguard.errors import ConversionError, LimitExceeded
from gpenguard.formats.container import Container, Format, Limits, PickleStream
from gpenguard.pickling import crosscheck
from gpenguard.pickling.opcodes import Blob, DecodeError, Decoder, Op

__all__ = [
    "DTYPES",
    "DType",
    "StateDict",
    "StorageRecord",
    "TensorRecord",
    "interpret_pickle",
    "read_tensors",
]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_NDIM = 64
EXPANSION_FLOOR = 64 * 2**20
"""A strided view may materialise to more bytes than it spans only up to this size, or ..."""
EXPANSION_RATIO = 200
"""... up to this many times the bytes it spans (stride-0 views are a memory bomb otherwise)."""


# --------------------------------------------------------------------------------------------
# dtypes


@dataclass(frozen=True, slots=True)
class DType:
    """An element type, by its safetensors name, with what it takes to stride over raw bytes."""

    name: str
    itemsize: int
    numpy: str
    """A numpy dtype of the same width used to move elements (bf16 has none of its own)."""


DTYPES: Mapping[str, DType] = {
    d.name: d
    for d in (
        DType("F64", 8, "<f8"),
        DType("F32", 4, "<f4"),
        DType("F16", 2, "<f2"),
        DType("BF16", 2, "<u2"),
        DType("I64", 8, "<i8"),
        DType("I32", 4, "<i4"),
        DType("I16", 2, "<i2"),
        DType("I8", 1, "i1"),
        DType("U8", 1, "u1"),
        DType("BOOL", 1, "u1"),
        DType("U16", 2, "<u2"),
        DType("U32", 4, "<u4"),
        DType("U64", 8, "<u8"),
        DType("F8_E4M3", 1, "u1"),
        DType("F8_E5M2", 1, "u1"),
    )
}

_STORAGE_TYPES: Mapping[str, str] = {
    "DoubleStorage": "F64",
    "FloatStorage": "F32",
    "HalfStorage": "F16",
    "BFloat16Storage": "BF16",
    "LongStorage": "I64",
    "IntStorage": "I32",
    "ShortStorage": "I16",
    "CharStorage": "I8",
    "ByteStorage": "U8",
    "BoolStorage": "BOOL",
    "UntypedStorage": "U8",
}
"""``torch.<name>`` storage classes -> the dtype of their elements (untyped: bytes)."""

_V3_DTYPES: Mapping[str, str] = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}
"""``torch.<dtype>`` names `_rebuild_tensor_v3` may name (torch uses v3 for the newer dtypes)."""


# --------------------------------------------------------------------------------------------
# records handed to callers


@dataclass(frozen=True, slots=True)
class StorageRecord:
    """One storage as the pickle declared it and the container holds it."""

    key: str
    dtype: str
    numel: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class TensorRecord:
    """Where one tensor's elements live; offsets and strides are in elements, as in torch."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    storage_key: str
    storage_offset: int
    storage_dtype: str
    nbytes: int
    """Bytes of the tensor itself once contiguous (numel x itemsize)."""
    requires_grad: bool = False
    parameter: bool = False

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def contiguous(self) -> bool:
        """Row-major with no gaps, the way torch decides it (size-1 dims carry any stride)."""
        return _is_contiguous(self.shape, self.stride)

    @property
    def byte_span(self) -> tuple[int, int]:
        """The byte range of the storage this tensor's elements fall in (may hold gaps)."""
        size = DTYPES[self.dtype].itemsize
        start = self.storage_offset * size
        return start, start + _span(self.shape, self.stride) * size


@dataclass(frozen=True)
class StateDict:
    """A checkpoint's tensors, in pickle order, with lazy access to their bytes.

    The byte views point into the container's mapping: use them while the `Source` is open.
    """

    path: str
    format: Format
    tensors: tuple[TensorRecord, ...]
    storages: Mapping[str, StorageRecord]
    select: str | None = None
    strip_prefix: str | None = None
    _buffers: Mapping[str, memoryview] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self) -> Iterator[TensorRecord]:
        return iter(self.tensors)

    def __getitem__(self, name: str) -> TensorRecord:
        for rec in self.tensors:
            if rec.name == name:
                return rec
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(rec.name for rec in self.tensors)

    @property
    def nbytes(self) -> int:
        return sum(rec.nbytes for rec in self.tensors)

    @property
    def element_count(self) -> int:
        """Elements over all tensors, buffers included (nothing in a file says which is which)."""
        return sum(rec.numel for rec in self.tensors)

    def shared_groups(self) -> tuple[tuple[str, ...], ...]:
        """Names of tensors that view one storage together (safetensors cannot express that)."""
        groups: dict[str, list[str]] = {}
        for rec in self.tensors:
            groups.setdefault(rec.storage_key, []).append(rec.name)
        return tuple(tuple(names) for names in groups.values() if len(names) > 1)

    def storage_bytes(self, key: str) -> memoryview:
        """The raw bytes of one storage (little-endian), zero-copy."""
        return self._buffers[key]

    def tensor_bytes(self, rec: TensorRecord) -> memoryview:
        """`rec`'s elements as contiguous little-endian bytes, row-major.

        Contiguous tensors come back as a slice of the source mapping (no copy); strided views
        are materialised by striding over the raw storage with numpy, one tensor at a time.
        """
        if rec.nbytes == 0:
            return memoryview(b"")
        if rec.contiguous:
            start = rec.byte_span[0]
            return self._buffers[rec.storage_key][start : start + rec.nbytes]
        return self.array(rec).reshape(-1).view(np.uint8).data

    def iter_bytes(self, rec: TensorRecord, chunk: int = 8 * 2**20) -> Iterator[memoryview]:
        """`tensor_bytes` in pieces of about `chunk` bytes, without ever holding all of a view.

        Contiguous tensors are sliced from the mapping; a strided view is materialised a block
        of leading-dimension rows at a time, so even a large transposed tensor costs one chunk.
        """
        if rec.nbytes == 0:
            return
        if rec.contiguous or not rec.shape:
            data = self.tensor_bytes(rec)
            for off in range(0, len(data), chunk):
                yield data[off : off + chunk]
            return
        view = self._strided(rec)
        row_bytes = rec.nbytes // rec.shape[0]
        rows = max(1, chunk // max(row_bytes, 1))
        for i in range(0, rec.shape[0], rows):
            yield np.ascontiguousarray(view[i : i + rows]).reshape(-1).view(np.uint8).data

    def release(self, rec: TensorRecord) -> None:
        """Hand `rec`'s source pages back to the kernel: done with them, for now.

        For a file mapping, the pages leave this process's resident set but stay in the page
        cache, so a later read just maps them again. Streaming a large checkpoint this way keeps
        memory at one tensor's worth instead of the whole file. A no-op for in-memory sources.
        """
        start, end = rec.byte_span
        if end > start:
            _release_pages(self._buffers[rec.storage_key][start:end])

    def array(self, rec: TensorRecord) -> np.ndarray[Any, np.dtype[Any]]:
        """`rec` as a C-contiguous numpy array of a same-width type (bf16 -> uint16, bool -> uint8)."""
        if rec.nbytes == 0:
            return np.zeros(rec.shape, dtype=DTYPES[rec.dtype].numpy)
        return np.ascontiguousarray(self._strided(rec))

    def _strided(self, rec: TensorRecord) -> np.ndarray[Any, np.dtype[Any]]:
        """A read-only numpy view of `rec` over the raw storage (no copy)."""
        dtype = DTYPES[rec.dtype]
        start, end = rec.byte_span
        elems = np.frombuffer(
            self._buffers[rec.storage_key],
            dtype=dtype.numpy,
            count=(end - start) // dtype.itemsize,
            offset=start,
        )
        if rec.contiguous:
            return elems[: rec.numel].reshape(rec.shape)
        # NOTE: `as_strided` trusts its arguments; read_tensors proved that every element it
        # can reach lies inside [start, end) of this storage before any record was handed out.
        return np.lib.stride_tricks.as_strided(
            elems,
            shape=rec.shape,
            strides=tuple(st * dtype.itemsize for st in rec.stride),
            writeable=False,
        )


# --------------------------------------------------------------------------------------------
# values the interpreter builds


@dataclass(frozen=True, slots=True)
class _Builtin:
    """One allow-listed global: our own stand-in for the torch or stdlib name it is known by."""

    qualname: str
    call: Callable[[_Machine, tuple[Any, ...]], Any] | None = None
    storage_dtype: str | None = None
    dtype: str | None = None

    def __repr__(self) -> str:
        return self.qualname


@dataclass(frozen=True, slots=True)
class _StorageRef:
    key: str
    dtype: str
    numel: int


class _Tensor:
    __slots__ = ("dtype", "offset", "parameter", "requires_grad", "shape", "storage", "stride")

    def __init__(
        self,
        storage: _StorageRef,
        offset: int,
        shape: tuple[int, ...],
        stride: tuple[int, ...],
        dtype: str,
    ) -> None:
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.stride = stride
        self.dtype = dtype
        self.requires_grad = False
        self.parameter = False


class _OrderedDict(dict[Any, Any]):
    """``collections.OrderedDict`` as a plain dict that also accepts BUILD (``_metadata``)."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, Any] = {}


_HASHABLE = (str, int, float, bytes, bool, type(None))


# --------------------------------------------------------------------------------------------
# the interpreter


class _Mark:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MARK"


_MARK = _Mark()


class _Machine:
    """A pickle VM over a closed opcode set that can only build inert values.

    Opcodes come from the pickling package's decoder (`gpenguard.pickling.opcodes`), the one
    the scanner's walker reads, so the gate and the converter never disagree on the bytes.
    """

    def __init__(
        self,
        stream: PickleStream,
        *,
        path: str,
        limits: Limits,
        persistent_load: Callable[[_Machine, Any], Any] | None = None,
    ) -> None:
        self.data = stream.data if stream.data.format == "B" else stream.data.cast("B")
        self.stream = stream
        self.path = path
        self.limits = limits
        self.persistent_load = persistent_load
        self.op_pos = 0
        self.op_name = ""
        self.end = 0
        """Offset just after STOP, once the program has run."""
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.imported: list[tuple[str, str]] = []
        """Every global the program names, in order (compared with CPython's reading)."""
        self.pids: list[Any] = []
        self.frames = 0

    # -- errors ------------------------------------------------------------------------------

    def where(self) -> str:
        member = f"member {self.stream.member}, " if self.stream.member else ""
        if self.stream.index:
            member += f"pickle #{self.stream.index}, "
        return f"{member}offset {self.stream.offset + self.op_pos}"

    def fail(self, message: str) -> NoReturn:
        raise ConversionError(f"{message} ({self.where()})", path=self.path)

    # -- stack -------------------------------------------------------------------------------

    def push(self, value: Any) -> None:
        if len(self.stack) >= self.limits.max_stack_depth:
            raise LimitExceeded(
                f"pickle stack deeper than {self.limits.max_stack_depth} ({self.where()})",
                path=self.path,
            )
        self.stack.append(value)

    def pop(self) -> Any:
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            self.fail(f"{self.op_name} on an empty stack")
        return self.stack.pop()

    def top(self) -> Any:
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            self.fail(f"{self.op_name} on an empty stack")
        return self.stack[-1]

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            self.fail(f"{self.op_name} without a MARK")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def remember(self, index: Any) -> None:
        if not isinstance(index, int) or index < 0:
            self.fail("negative memo index")
        if index not in self.memo and len(self.memo) >= self.limits.max_memo:
            raise LimitExceeded(
                f"pickle memo larger than {self.limits.max_memo} ({self.where()})", path=self.path
            )
        self.memo[index] = self.top()

    def recall(self, index: Any) -> None:
        if index not in self.memo:
            self.fail(f"memo entry {_show(index)} read before it was written")
        self.push(self.memo[index])

    # -- globals and calls -------------------------------------------------------------------

    def resolve(self, module: str, name: str) -> None:
        self.imported.append((module, name))
        found = _GLOBALS.get((module, name))
        if found is None:
            self.fail(f"global {_name(module)}.{_name(name)} is not on the weights-only allowlist")
        self.push(found)

    def reduce(self) -> None:
        args = self.pop()
        func = self.pop()
        if not isinstance(func, _Builtin) or func.call is None:
            self.fail(f"REDUCE calls {_describe(func)}, which is not an allow-listed constructor")
        if not isinstance(args, tuple):
            self.fail(f"REDUCE arguments for {func.qualname} are {_describe(args)}, not a tuple")
        self.push(func.call(self, args))

    def build(self) -> None:
        state = self.pop()
        target = self.top()
        if isinstance(target, _OrderedDict) and isinstance(state, dict):
            if not all(isinstance(k, str) for k in state):
                self.fail("BUILD state of an OrderedDict has non-string attribute names")
            target.state.update(state)
            return
        self.fail(f"BUILD on {_describe(target)} with {_describe(state)} is not allowed")

    # -- main loop ---------------------------------------------------------------------------

    def run(self) -> Any:
        size = len(self.data)
        if size > self.limits.max_pickle_bytes:
            raise LimitExceeded(
                f"pickle of {size} bytes exceeds the limit of {self.limits.max_pickle_bytes}",
                path=self.path,
            )
        decoder = Decoder(self.data)
        budget = self.limits.max_opcodes
        while True:
            budget -= 1
            if budget < 0:
                raise LimitExceeded(
                    f"pickle runs more than {self.limits.max_opcodes} opcodes ({self.where()})",
                    path=self.path,
                )
            self.op_pos = decoder.pos
            try:
                op = decoder.next_op()
            except DecodeError as exc:
                self.op_pos = exc.offset
                code = self.data[exc.offset] if exc.offset < size else None
                if code is not None and exc.reason.startswith("unknown opcode"):
                    self.fail(f"opcode {_opcode_label(code)} is not allowed in a weights file")
                if exc.truncated and exc.offset >= size:
                    self.fail("pickle ends without STOP")
                if exc.truncated and code is not None:
                    label = _opcode_label(code).split(" ", 1)[0]
                    self.fail(f"pickle is truncated inside {label}: {exc.reason}")
                self.fail(f"pickle cannot be read: {exc.reason}")
            if decoder.notes:
                # read differently by different unpicklers: refuse rather than pick one
                self.op_pos = decoder.notes[0].offset
                self.fail(decoder.notes[0].message)
            self.op_name = op.name
            if isinstance(op.arg, Blob):
                self.fail(f"{op.name} argument of {op.arg.length} bytes")
            handler = _OPCODES.get(op.name)
            if handler is None:
                self.fail(
                    f"opcode {_opcode_label(self.data[op.offset])} is not allowed in a weights file"
                )
            if op.name == "STOP":
                if self.marks:
                    self.fail("STOP with an open MARK")
                if len(self.stack) != 1:
                    self.fail(f"STOP with {len(self.stack)} values on the stack")
                self.end = op.end
                return self.stack[0]
            handler(self, op)


def _describe(value: Any) -> str:
    if isinstance(value, _Builtin):
        return value.qualname
    if isinstance(value, _Tensor):
        return "a tensor"
    if isinstance(value, _StorageRef):
        return "a storage"
    if value is _MARK:
        return "a MARK"
    if isinstance(value, dict):
        return "a dict"
    kind = type(value).__name__
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


def _name(text: str) -> str:
    return text if len(text) <= 200 else text[:200] + "…"


def _show(value: Any, limit: int = 40) -> str:
    """A short, safe rendering of an untrusted value for a message (no deep or huge repr)."""
    if value is None or isinstance(value, bool | float):
        return repr(value)
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 128 else f"<{value.bit_length()}-bit integer>"
    if isinstance(value, str | bytes):
        return repr(value[:limit]) + ("…" if len(value) > limit else "")
    if (
        isinstance(value, tuple)
        and len(value) <= 8
        and all(v is None or isinstance(v, int | str | bool) for v in value)
    ):
        return "(" + ", ".join(_show(v, 16) for v in value) + ("," if len(value) == 1 else "") + ")"
    return _describe(value)


def _opcode_label(code: int) -> str:
    import pickletools

    for op in pickletools.opcodes:
        if op.code.encode("latin-1") == bytes([code]):
            return f"{op.name} (0x{code:02x})"
    return f"0x{code:02x}"


# opcode handlers ----------------------------------------------------------------------------
# Arguments arrive decoded (`Op.arg`), read the way CPython's C unpickler reads them.


def _op_stop(m: _Machine, op: Op) -> None:  # handled by the loop
    raise AssertionError("STOP is handled by _Machine.run")


def _op_proto(m: _Machine, op: Op) -> None:
    if not isinstance(op.arg, int) or op.arg > 5:
        m.fail(f"pickle protocol {_show(op.arg)} is unknown")


def _op_frame(m: _Machine, op: Op) -> None:
    m.frames += 1
    if not isinstance(op.arg, int) or op.arg > len(m.data) - op.end:
        m.fail("FRAME is longer than the pickle")


def _op_mark(m: _Machine, op: Op) -> None:
    if len(m.marks) >= m.limits.max_stack_depth:
        raise LimitExceeded(f"too many nested MARKs ({m.where()})", path=m.path)
    m.marks.append(len(m.stack))


def _op_pop(m: _Machine, op: Op) -> None:
    m.pop()


def _op_pop_mark(m: _Machine, op: Op) -> None:
    m.pop_mark()


def _op_dup(m: _Machine, op: Op) -> None:
    m.push(m.top())


def _op_const(m: _Machine, op: Op) -> None:
    """INT/LONG/BININT*/LONG1/FLOAT/BINFLOAT/strings/bytes: the decoded argument itself."""
    m.push(op.arg)


def _op_long4(m: _Machine, op: Op) -> None:
    if not isinstance(op.arg, int) or op.arg.bit_length() > 4096 * 8:
        m.fail("LONG4 of more than 4096 bytes")
    m.push(op.arg)


def _op_none(m: _Machine, op: Op) -> None:
    m.push(None)


def _op_true(m: _Machine, op: Op) -> None:
    m.push(True)


def _op_false(m: _Machine, op: Op) -> None:
    m.push(False)


def _op_empty_dict(m: _Machine, op: Op) -> None:
    m.push({})


def _op_empty_list(m: _Machine, op: Op) -> None:
    m.push([])


def _op_empty_tuple(m: _Machine, op: Op) -> None:
    m.push(())


def _op_dict(m: _Machine, op: Op) -> None:
    items = m.pop_mark()
    if len(items) % 2:
        m.fail("DICT with an odd number of items")
    out: dict[Any, Any] = {}
    _set_items(m, out, items)
    m.push(out)


def _op_list(m: _Machine, op: Op) -> None:
    m.push(m.pop_mark())


def _op_tuple(m: _Machine, op: Op) -> None:
    m.push(tuple(m.pop_mark()))


def _tuple_n(n: int) -> Callable[[_Machine, Op], None]:
    def handler(m: _Machine, op: Op) -> None:
        items = [m.pop() for _ in range(n)]
        m.push(tuple(reversed(items)))

    return handler


def _set_items(m: _Machine, target: Any, items: list[Any]) -> None:
    if not isinstance(target, dict):
        m.fail(f"{m.op_name} on {_describe(target)}; only dicts take items")
    for key, value in zip(items[::2], items[1::2], strict=True):
        if not _hashable(key):
            m.fail(f"{m.op_name} with {_describe(key)} as a dict key")
        target[key] = value


def _hashable(key: Any, depth: int = 0) -> bool:
    """Plain scalars, or tuples of them nested a few levels (optimizer state uses int keys)."""
    if isinstance(key, _HASHABLE):
        return True
    return isinstance(key, tuple) and depth < 8 and all(_hashable(k, depth + 1) for k in key)


def _op_setitem(m: _Machine, op: Op) -> None:
    value = m.pop()
    key = m.pop()
    _set_items(m, m.top(), [key, value])


def _op_setitems(m: _Machine, op: Op) -> None:
    items = m.pop_mark()
    if len(items) % 2:
        m.fail("SETITEMS with an odd number of items")
    _set_items(m, m.top(), items)


def _op_append(m: _Machine, op: Op) -> None:
    value = m.pop()
    target = m.top()
    if not isinstance(target, list):
        m.fail(f"APPEND on {_describe(target)}; only lists take items")
    target.append(value)


def _op_appends(m: _Machine, op: Op) -> None:
    items = m.pop_mark()
    target = m.top()
    if not isinstance(target, list):
        m.fail(f"APPENDS on {_describe(target)}; only lists take items")
    target.extend(items)


def _op_put(m: _Machine, op: Op) -> None:
    m.remember(op.arg)


def _op_memoize(m: _Machine, op: Op) -> None:
    m.remember(len(m.memo))


def _op_get(m: _Machine, op: Op) -> None:
    m.recall(op.arg)


def _op_global(m: _Machine, op: Op) -> None:
    assert isinstance(op.arg, tuple)
    m.resolve(str(op.arg[0]), str(op.arg[1]))


def _op_stack_global(m: _Machine, op: Op) -> None:
    name = m.pop()
    module = m.pop()
    if not isinstance(module, str) or not isinstance(name, str):
        m.fail(f"STACK_GLOBAL with {_describe(module)} and {_describe(name)} for names")
    m.resolve(module, name)


def _op_reduce(m: _Machine, op: Op) -> None:
    m.reduce()


def _op_build(m: _Machine, op: Op) -> None:
    m.build()


def _op_binpersid(m: _Machine, op: Op) -> None:
    pid = m.pop()
    if m.persistent_load is None:
        m.fail("persistent id in a pickle that may not reference storages")
    m.push(m.persistent_load(m, pid))


_Handler = Callable[[_Machine, Op], None]

_OPCODES: dict[str, _Handler] = {
    "PROTO": _op_proto, "FRAME": _op_frame, "STOP": _op_stop, "MARK": _op_mark,
    "POP": _op_pop, "POP_MARK": _op_pop_mark, "DUP": _op_dup,
    "INT": _op_const, "LONG": _op_const, "BININT": _op_const, "BININT1": _op_const,
    "BININT2": _op_const, "LONG1": _op_const, "LONG4": _op_long4,
    "FLOAT": _op_const, "BINFLOAT": _op_const,
    "NONE": _op_none, "NEWTRUE": _op_true, "NEWFALSE": _op_false,
    "BINUNICODE": _op_const, "SHORT_BINUNICODE": _op_const, "BINUNICODE8": _op_const,
    "BINSTRING": _op_const, "SHORT_BINSTRING": _op_const,  # Python 2 str, read as UTF-8
    "BINBYTES": _op_const, "SHORT_BINBYTES": _op_const, "BINBYTES8": _op_const,
    "EMPTY_DICT": _op_empty_dict, "EMPTY_LIST": _op_empty_list, "EMPTY_TUPLE": _op_empty_tuple,
    "DICT": _op_dict, "LIST": _op_list, "TUPLE": _op_tuple,
    "TUPLE1": _tuple_n(1), "TUPLE2": _tuple_n(2), "TUPLE3": _tuple_n(3),
    "SETITEM": _op_setitem, "SETITEMS": _op_setitems,
    "APPEND": _op_append, "APPENDS": _op_appends,
    "PUT": _op_put, "BINPUT": _op_put, "LONG_BINPUT": _op_put, "MEMOIZE": _op_memoize,
    "GET": _op_get, "BINGET": _op_get, "LONG_BINGET": _op_get,
    "GLOBAL": _op_global, "STACK_GLOBAL": _op_stack_global,
    "REDUCE": _op_reduce, "BUILD": _op_build, "BINPERSID": _op_binpersid,
}  # fmt: skip
"""Every opcode the reader executes; anything else (INST, OBJ, NEWOBJ, EXT*, PERSID, sets,
out-of-band buffers...) ends the read with an error naming it."""


# allow-listed constructors --------------------------------------------------------------------


def _int(m: _Machine, value: Any, what: str, *, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        m.fail(f"{what} must be an integer >= {low}, got {_show(value)}")
    return value


def _ints(m: _Machine, value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list):
        m.fail(f"{what} must be a tuple of integers, got {_describe(value)}")
    if len(value) > MAX_NDIM:
        m.fail(f"{what} has {len(value)} dimensions (at most {MAX_NDIM})")
    return tuple(_int(m, v, what) for v in value)


def _check_hooks(m: _Machine, hooks: Any) -> None:
    if hooks is None or (isinstance(hooks, dict) and not hooks):
        return
    m.fail("tensor carries backward hooks; a weights file has none")


def _check_metadata(m: _Machine, metadata: Any) -> None:
    if metadata is None or (isinstance(metadata, dict) and not any(metadata.values())):
        return
    # torch records the conj/neg bits here; a set bit changes what the bytes mean.
    m.fail("tensor metadata sets conj/neg bits; such views are not supported")


def _tensor(
    m: _Machine, storage: Any, offset: Any, size: Any, stride: Any, dtype: str | None
) -> _Tensor:
    if not isinstance(storage, _StorageRef):
        m.fail(f"tensor built over {_describe(storage)}, not a storage")
    shape = _ints(m, size, "tensor size")
    strides = _ints(m, stride, "tensor stride")
    if len(shape) != len(strides):
        m.fail(f"tensor size {_show(shape)} and stride {_show(strides)} differ in length")
    return _Tensor(
        storage, _int(m, offset, "storage offset"), shape, strides, dtype or storage.dtype
    )


def _rebuild_tensor(m: _Machine, args: tuple[Any, ...]) -> _Tensor:
    if len(args) != 4:
        m.fail(f"_rebuild_tensor takes 4 arguments, got {len(args)}")
    return _tensor(m, *args, dtype=None)


def _rebuild_tensor_v2(m: _Machine, args: tuple[Any, ...]) -> _Tensor:
    if len(args) not in (6, 7):
        m.fail(f"_rebuild_tensor_v2 takes 6 or 7 arguments, got {len(args)}")
    storage, offset, size, stride, requires_grad, hooks, *rest = args
    _check_hooks(m, hooks)
    _check_metadata(m, rest[0] if rest else None)
    t = _tensor(m, storage, offset, size, stride, dtype=None)
    t.requires_grad = bool(requires_grad)
    return t


def _rebuild_tensor_v3(m: _Machine, args: tuple[Any, ...]) -> _Tensor:
    if len(args) not in (7, 8):
        m.fail(f"_rebuild_tensor_v3 takes 7 or 8 arguments, got {len(args)}")
    storage, offset, size, stride, requires_grad, hooks, dtype, *rest = args
    _check_hooks(m, hooks)
    _check_metadata(m, rest[0] if rest else None)
    if not isinstance(dtype, _Builtin) or dtype.dtype is None:
        m.fail(f"_rebuild_tensor_v3 dtype is {_describe(dtype)}, not a supported torch dtype")
    t = _tensor(m, storage, offset, size, stride, dtype=dtype.dtype)
    t.requires_grad = bool(requires_grad)
    return t


def _rebuild_parameter(m: _Machine, args: tuple[Any, ...]) -> _Tensor:
    if len(args) not in (3, 4):
        m.fail(f"_rebuild_parameter takes 3 or 4 arguments, got {len(args)}")
    data, requires_grad, hooks, *_state = args  # state: plain attributes, inert here
    if not isinstance(data, _Tensor):
        m.fail(f"parameter wraps {_describe(data)}, not a tensor")
    _check_hooks(m, hooks)
    data.requires_grad = bool(requires_grad)
    data.parameter = True
    return data


def _ordered_dict(m: _Machine, args: tuple[Any, ...]) -> _OrderedDict:
    """``OrderedDict()`` then SETITEMS (torch.save), or ``OrderedDict(pairs)`` (Python 2).

    Python 2's ``OrderedDict.__reduce__`` passes ``[[key, value], ...]``; torch's weights-only
    unpickler calls the real constructor, which takes any iterable of pairs or a mapping.
    """
    out = _OrderedDict()
    if not args:
        return out
    if len(args) != 1:
        m.fail(f"OrderedDict takes one argument, got {len(args)}")
    (items,) = args
    if isinstance(items, dict):
        pairs: list[Any] = [[k, v] for k, v in items.items()]
    elif isinstance(items, list | tuple):
        pairs = list(items)
    else:
        m.fail(f"OrderedDict built from {_describe(items)}, not pairs")
    for pair in pairs:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            m.fail(f"OrderedDict item {_describe(pair)} is not a (key, value) pair")
        key, value = pair
        if not _hashable(key):
            m.fail(f"OrderedDict key {_describe(key)} is not a plain value")
        out[key] = value
    return out


def _torch_size(m: _Machine, args: tuple[Any, ...]) -> tuple[int, ...]:
    if len(args) != 1:
        m.fail("torch.Size takes one argument")
    return _ints(m, args[0], "torch.Size")


def _build_globals() -> dict[tuple[str, str], _Builtin]:
    table: dict[tuple[str, str], _Builtin] = {}

    def add(module: str, name: str, **kw: Any) -> None:
        table[(module, name)] = _Builtin(f"{module}.{name}", **kw)

    add("collections", "OrderedDict", call=_ordered_dict)
    add("torch._utils", "_rebuild_tensor", call=_rebuild_tensor)
    add("torch._utils", "_rebuild_tensor_v2", call=_rebuild_tensor_v2)
    add("torch._utils", "_rebuild_tensor_v3", call=_rebuild_tensor_v3)
    add("torch._utils", "_rebuild_parameter", call=_rebuild_parameter)
    add("torch._utils", "_rebuild_parameter_with_state", call=_rebuild_parameter)
    add("torch", "Size", call=_torch_size)
    for cls, dtype in _STORAGE_TYPES.items():
        add("torch", cls, storage_dtype=dtype)
        if cls != "UntypedStorage":
            # saved from a GPU by older torch; the location is ignored, the bytes are the same
            add("torch.cuda", cls, storage_dtype=dtype)
    add("torch.storage", "UntypedStorage", storage_dtype="U8")  # how torch >= 2 names it
    for name, dtype in _V3_DTYPES.items():
        add("torch", name, dtype=dtype)
    return table


_GLOBALS = _build_globals()
"""The whole allowlist. Each value is defined in this module; no input name is ever imported."""


# --------------------------------------------------------------------------------------------
# public entry points


def interpret_pickle(
    stream: PickleStream,
    *,
    path: str,
    limits: Limits | None = None,
    storages: dict[str, StorageRecord] | None = None,
    legacy: bool = False,
) -> Any:
    """Run one pickle on the weights-only machine; returns plain values and inert records.

    With `storages`, ``('storage', type, key, location, numel)`` persistent ids are accepted
    and collected into it (legacy streams add a sixth element, which must be None).
    """
    lim = limits or Limits()

    def persistent_load(m: _Machine, pid: Any) -> _StorageRef:
        assert storages is not None
        m.pids.append(pid)
        want = 6 if legacy else 5
        if not isinstance(pid, tuple) or len(pid) != want or pid[0] != "storage":
            m.fail(f"persistent id {_show(pid)} is not a {want}-field ('storage', ...) record")
        _, stype, key, location, numel, *view = pid
        if not isinstance(stype, _Builtin) or stype.storage_dtype is None:
            m.fail(f"persistent id names {_describe(stype)}, not a torch storage type")
        if not isinstance(key, str) or not key or not isinstance(location, str):
            m.fail(f"persistent id has a malformed key {_show(key)} or location {_show(location)}")
        count = _int(m, numel, "storage numel")
        if view and view[0] is not None:
            m.fail(f"storage {_show(key)} is a legacy storage view; these are not supported")
        known = storages.get(key)
        itemsize = DTYPES[stype.storage_dtype].itemsize
        if known is None:
            storages[key] = StorageRecord(key, stype.storage_dtype, count, count * itemsize)
        elif known.dtype != stype.storage_dtype or known.numel != count:
            m.fail(
                f"storage {_show(key)} declared twice, as {known.dtype}x{_show(known.numel)} and "
                f"{stype.storage_dtype}x{_show(count)}"
            )
        return _StorageRef(key, stype.storage_dtype, count)

    machine = _Machine(
        stream,
        path=path,
        limits=lim,
        persistent_load=persistent_load if storages is not None else None,
    )
    value = machine.run()
    _cross_check(machine)
    return value


def _cross_check(m: _Machine) -> None:
    """CPython's C unpickler, with inert globals, must read the pickle the way we did.

    The gate already ran this check; convert repeats it on the bytes it is about to trust, so
    a reading of its own can never drift from the loader's unnoticed. Archive members are fed
    as torch feeds ``data.pkl`` (a BytesIO), a legacy stream as a file.
    """
    primary = crosscheck.BYTESIO if m.stream.member else crosscheck.FILE
    record = m.stream.record if m.stream.record is not None else m.stream.data
    feeds = crosscheck.FEEDS if m.frames else (primary,)
    jobs = [crosscheck.Job(record, feed, weight=len(m.stream.data)) for feed in feeds]
    try:
        readings = crosscheck.run(jobs)
    except crosscheck.CrossCheckError as exc:
        m.fail(f"cross-check with CPython's unpickler failed: {exc}")
    for reading in readings:
        why = None
        if reading.error is not None:
            why = f"it fails ({reading.error})"
        elif (
            reading.globals_total != len(m.imported)
            or list(reading.globals) != m.imported[: crosscheck.MAX_RECORDED]
        ):
            why = f"it imports {_show(tuple('.'.join(g) for g in reading.globals[:4]))}"
        elif reading.end is not None and reading.end != m.end:
            why = f"it stops at offset {reading.end}, not {m.end}"
        elif list(reading.pids) != [_shape(p) for p in m.pids[: crosscheck.MAX_RECORDED]]:
            why = "it passes other persistent ids"
        if why is not None:
            m.op_pos = 0
            m.fail(f"CPython's unpickler ({reading.feed}) reads this pickle differently: {why}")


def _shape(value: Any) -> object:
    """`crosscheck.shape` for the weights machine's values (its globals are `_Builtin`s)."""
    return crosscheck.shape_of(
        value,
        lambda v: v.qualname.rsplit(".", 1) if isinstance(v, _Builtin) else None,
        lambda v: isinstance(v, list),
    )


def read_tensors(
    container: Container,
    *,
    select: str | None = None,
    strip_prefix: str | None = None,
    limits: Limits | None = None,
) -> StateDict:
    """Interpret `container`'s checkpoint pickle and lay out its tensors, reading no tensor data.

    `select` picks a nested state_dict (``params_ema``; a path like ``model/state_dict`` walks
    further); `strip_prefix` drops a prefix such as ``module.`` from every name that has it.
    Raises `ConversionError` naming the file (and member and offset, for pickle problems).
    """
    lim = limits or Limits()
    path = container.path
    for problem in container.findings:
        if problem.rule_id in _LOADER_DIFFERS:
            raise ConversionError(
                f"torch.load refuses this file or reads it differently ({problem.rule_id}: "
                f"{problem.message}); nothing is converted",
                path=path,
            )
    storages: dict[str, StorageRecord] = {}
    if container.format is Format.TORCH_ZIP:
        root = _read_zip(container, lim, storages)
        buffers = _zip_buffers(container, storages)
    elif container.format is Format.TORCH_LEGACY:
        root, buffers = _read_legacy(container, lim, storages)
    elif container.format is Format.SAFETENSORS:
        raise ConversionError(
            "the file is already safetensors; there is nothing to convert", path=path
        )
    elif container.format is Format.TORCH_TAR:
        raise ConversionError(
            "the pre-1.0 torch tar format is not read; re-save it with a current torch in a sandbox",
            path=path,
        )
    else:
        raise ConversionError(
            f"a {container.format} file holds no torch checkpoint to convert "
            "(only torch zip and legacy torch files are read)",
            path=path,
        )

    chosen = _select(root, select, path)
    records: list[TensorRecord] = []
    seen: set[str] = set()
    for raw_name, value in chosen.items():
        if not isinstance(raw_name, str):
            raise ConversionError(f"state_dict key {_show(raw_name)} is not a string", path=path)
        name = raw_name
        if strip_prefix and name.startswith(strip_prefix):
            name = name[len(strip_prefix) :]
        if not name:
            raise ConversionError(f"key {_show(raw_name)} is empty after stripping", path=path)
        if name in seen:
            raise ConversionError(
                f"two entries are named {_show(name)} after stripping {strip_prefix!r}", path=path
            )
        seen.add(name)
        if not isinstance(value, _Tensor):
            raise ConversionError(
                f"entry {_show(raw_name)} is {_describe(value)}, not a tensor"
                + _candidates_hint(chosen),
                path=path,
            )
        records.append(_record(name, value, storages[value.storage.key], path))

    _check_expansion(records, lim, path)
    return StateDict(
        path=path,
        format=container.format,
        tensors=tuple(records),
        storages=storages,
        select=select,
        strip_prefix=strip_prefix,
        _buffers=buffers,
    )


_LOADER_DIFFERS = frozenset({"GG206", "GG211", "GG215", "GG216"})
"""Container findings that mean torch.load refuses the file or another reading differs."""


# zip and legacy layouts ----------------------------------------------------------------------


def _read_zip(container: Container, lim: Limits, storages: dict[str, StorageRecord]) -> Any:
    # torch reads the one record its case-insensitive lookup finds as <root>/data.pkl
    main = container.main_pickle
    streams = [p for p in container.pickles if main is not None and p.member == main]
    if container.member is not None and main is not None:
        streams = [p for p in container.pickles if p.member == f"{container.member}!{main}"]
    if len(streams) != 1:
        raise ConversionError(
            f"expected one data.pkl in the torch zip, found {len(streams)}", path=container.path
        )
    if container.byteorder not in (None, "little", "big"):
        raise ConversionError(
            f"byteorder record {container.byteorder!r} is neither little nor big",
            path=container.path,
        )
    return interpret_pickle(streams[0], path=container.path, limits=lim, storages=storages)


def _zip_buffers(container: Container, storages: dict[str, StorageRecord]) -> dict[str, memoryview]:
    buffers: dict[str, memoryview] = {}
    for key, rec in storages.items():
        raw = container.storages.get(key)
        if raw is None:
            raise ConversionError(
                f"storage {_show(key)} is referenced by the pickle but missing from the archive",
                path=container.path,
            )
        view = raw if raw.format == "B" and raw.ndim == 1 else raw.cast("B")
        if len(view) != rec.nbytes:
            raise ConversionError(
                f"storage {_show(key)} holds {len(view)} bytes but the pickle declares "
                f"{_show(rec.numel)} x {rec.dtype} = {_show(rec.nbytes)}",
                path=container.path,
            )
        if container.byteorder == "big":
            view = _byteswapped(view, rec.dtype)
        buffers[key] = view
    return buffers


def _byteswapped(view: memoryview, dtype: str) -> memoryview:
    """A big-endian storage as torch.load hands it over: every element of the storage's own
    dtype (an untyped storage counts as bytes, so it stays as is) reversed into little-endian."""
    size = DTYPES[dtype].itemsize
    if size == 1:
        return view
    swapped = np.frombuffer(view, dtype=f">u{size}").astype(f"<u{size}")
    return memoryview(swapped.tobytes())


def _read_legacy(
    container: Container, lim: Limits, storages: dict[str, StorageRecord]
) -> tuple[Any, dict[str, memoryview]]:
    path = container.path
    by_index = {p.index: p for p in container.pickles}
    streams = [by_index[i] for i in range(5) if i in by_index]
    if len(streams) < 5:
        raise ConversionError(
            f"legacy torch stream has {len(streams)} pickles; expected magic, protocol, "
            "sys_info, the object and the storage keys",
            path=path,
        )
    magic, protocol, sys_info = (interpret_pickle(s, path=path, limits=lim) for s in streams[:3])
    if magic != LEGACY_MAGIC:
        raise ConversionError("legacy torch stream has the wrong magic number", path=path)
    if protocol != LEGACY_PROTOCOL:
        raise ConversionError(f"legacy torch protocol {_show(protocol)} is not 1001", path=path)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise ConversionError(
            "legacy torch stream is not marked little-endian; only little-endian storages are read",
            path=path,
        )
    root = interpret_pickle(streams[3], path=path, limits=lim, storages=storages, legacy=True)
    keys = interpret_pickle(streams[4], path=path, limits=lim)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ConversionError("legacy storage-key list is not a list of strings", path=path)
    if container.legacy_tail is None:
        raise ConversionError(
            "legacy torch stream has no storage data after its pickles", path=path
        )
    tail = container.legacy_tail
    tail = tail if tail.format == "B" and tail.ndim == 1 else tail.cast("B")

    buffers: dict[str, memoryview] = {}
    pos = 0
    for key in keys:
        if key in buffers:
            raise ConversionError(
                f"storage {_show(key)} is listed twice in the storage keys", path=path
            )
        rec = storages.get(key)
        if rec is None:
            raise ConversionError(
                f"storage {_show(key)} is listed in the storage keys but no tensor declares it",
                path=path,
            )
        if pos + 8 > len(tail):
            raise ConversionError(f"storage {_show(key)} is truncated (no size header)", path=path)
        numel = int.from_bytes(tail[pos : pos + 8], "little", signed=True)
        pos += 8
        if numel != rec.numel:
            raise ConversionError(
                f"storage {_show(key)} records {numel} elements but the pickle declares {_show(rec.numel)}",
                path=path,
            )
        if pos + rec.nbytes > len(tail):
            raise ConversionError(
                f"storage {_show(key)} is truncated: {_show(rec.nbytes)} bytes declared, "
                f"{len(tail) - pos} left in the file",
                path=path,
            )
        buffers[key] = tail[pos : pos + rec.nbytes]
        pos += rec.nbytes
    missing = [k for k in storages if k not in buffers]
    if missing:
        raise ConversionError(
            f"storage {_show(missing[0])} is used by a tensor but absent from the storage keys",
            path=path,
        )
    if pos != len(tail):
        raise ConversionError(
            f"{len(tail) - pos} unexplained bytes after the last legacy storage", path=path
        )
    return root, buffers


# selection and layout checks -----------------------------------------------------------------


def _select(root: Any, select: str | None, path: str) -> dict[Any, Any]:
    node = root
    if select is not None:
        if isinstance(root, dict) and select in root:
            node = root[select]
        else:
            for part in select.split("/"):
                if not isinstance(node, dict) or part not in node:
                    raise ConversionError(
                        f"checkpoint has no entry {select!r}" + _candidates_hint(root), path=path
                    )
                node = node[part]
    if not isinstance(node, dict):
        what = f"entry {select!r}" if select else "checkpoint"
        raise ConversionError(f"{what} is {_describe(node)}, not a state_dict", path=path)
    return node


def _candidates_hint(node: Any) -> str:
    if not isinstance(node, dict):
        return ""
    found = [
        k if isinstance(k, str) else _show(k)
        for k, v in node.items()
        if isinstance(v, dict) and any(isinstance(x, _Tensor) for x in v.values())
    ]
    return (
        f"; state_dicts found under: {', '.join(found)} (choose one with --select)" if found else ""
    )


def _record(name: str, t: _Tensor, storage: StorageRecord, path: str) -> TensorRecord:
    dtype = DTYPES[t.dtype]
    if storage.dtype != "U8" and storage.dtype != t.dtype:
        raise ConversionError(
            f"tensor {_show(name)} is {t.dtype} over a {storage.dtype} storage", path=path
        )
    numel = 1
    for d in t.shape:
        numel *= d
    rec = TensorRecord(
        name=name,
        dtype=t.dtype,
        shape=t.shape,
        stride=t.stride,
        storage_key=t.storage.key,
        storage_offset=t.offset,
        storage_dtype=storage.dtype,
        nbytes=numel * dtype.itemsize,
        requires_grad=t.requires_grad,
        parameter=t.parameter,
    )
    end = rec.byte_span[1]
    # An empty tensor reads nothing, and torch keeps whatever offset a slice left it with.
    if numel and end > storage.nbytes:
        raise ConversionError(
            f"tensor {_show(name)} (offset {_show(t.offset)}, size {_show(t.shape)}, stride "
            f"{_show(t.stride)}) reaches byte {_show(end)} of storage {_show(storage.key)}, "
            f"which holds {_show(storage.nbytes)}",
            path=path,
        )
    return rec


def _check_expansion(records: list[TensorRecord], lim: Limits, path: str) -> None:
    total = 0
    for rec in records:
        start, end = rec.byte_span
        spanned = end - start
        if rec.nbytes > EXPANSION_FLOOR and rec.nbytes > EXPANSION_RATIO * max(spanned, 1):
            raise LimitExceeded(
                f"tensor {_show(rec.name)} would expand {_show(spanned)} stored bytes into {_show(rec.nbytes)}",
                path=path,
            )
        total += rec.nbytes
    if total > lim.max_uncompressed_bytes:
        raise LimitExceeded(
            f"tensors total {total} bytes, over the limit of {lim.max_uncompressed_bytes}",
            path=path,
        )


_PAGE = mmap.PAGESIZE


def _release_pages(view: memoryview) -> None:
    base = view.obj
    if not isinstance(base, mmap.mmap) or not len(view) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    # The view's offset inside the mapping, from the two buffers' addresses (no copy made).
    offset = _address(view) - _address(memoryview(base))
    start = offset - offset % _PAGE
    with contextlib.suppress(OSError, ValueError):
        base.madvise(mmap.MADV_DONTNEED, start, offset + len(view) - start)


def _address(view: memoryview) -> int:
    return int(np.frombuffer(view, dtype=np.uint8, count=1).ctypes.data)


def _span(shape: tuple[int, ...], stride: tuple[int, ...]) -> int:
    """Elements from the first to one past the last element reachable (0 for an empty tensor)."""
    if any(d == 0 for d in shape):
        return 0
    return 1 + sum((d - 1) * s for d, s in zip(shape, stride, strict=True))


def _is_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expected = 1
    for d, s in zip(reversed(shape), reversed(stride), strict=True):
        if d == 0:
            return True
        if d != 1 and s != expected:
            return False
        expected *= d
    return True
