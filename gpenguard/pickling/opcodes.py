"""Decode pickle opcodes from a byte buffer without running them.

`pickletools.genops` reads from a file object, copies every argument and stops with a bare
`ValueError`; this decoder works on a memoryview, keeps large string and bytes arguments as
(offset, length) placeholders instead of copying them, and reports every problem with the
byte offset where it happened, so the scanner can turn it into a finding.

Arguments are read the way CPython's C unpickler (`_pickle.c`, what ``torch.load`` runs) reads
them, not the way `pickle.py` does: text integers go through C ``strtol`` (base 0, leading ``0``
means octal, a NUL ends the text) before Python's parser, three-byte ``0``/``1`` lines are
bools, STRING text is decoded as UTF-8 (``torch.load`` passes ``encoding="utf-8"``), INST and
PERSID lines must be ASCII. Where the two unpicklers, or one unpickler fed bytes vs a file,
could read the same bytes differently (an argument straddling a FRAME, a text form no pickle
writer emits), the decoder keeps the C reading and leaves a `Note` for the scanner to block on.
"""

from __future__ import annotations

import codecs
import pickletools
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

MAX_INLINE = 1 << 20
"""String and bytes arguments longer than this stay as a `Blob` placeholder."""

_MAX_LINE = 1 << 20


class DecodeError(Exception):
    """The bytes at `offset` are not a valid pickle opcode or argument."""

    def __init__(self, offset: int, reason: str, *, truncated: bool = False):
        super().__init__(f"offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason
        self.truncated = truncated


NONCANONICAL = "noncanonical"
"""`Note.kind` of an argument in a text form no pickle writer emits (C and pickle.py may differ)."""
FRAME_STRADDLE = "frame"
"""`Note.kind` of an opcode that crosses a FRAME boundary (read differently per input type)."""


@dataclass(frozen=True, slots=True)
class Note:
    """An opcode the C unpickler accepts but other readers may read differently."""

    kind: str
    offset: int
    message: str


@dataclass(frozen=True, slots=True)
class Blob:
    """A string or bytes argument too large to copy; located by offset and length."""

    offset: int
    length: int
    text: bool

    def __repr__(self) -> str:
        kind = "str" if self.text else "bytes"
        return f"<{kind} of {self.length} bytes at offset {self.offset}>"


class Op:
    """One decoded opcode: its name, argument, and where it starts and ends."""

    __slots__ = ("arg", "end", "name", "offset")

    def __init__(self, name: str, arg: object, offset: int, end: int):
        self.name = name
        self.arg = arg
        self.offset = offset
        self.end = end

    def __repr__(self) -> str:
        return f"Op({self.name}, {self.arg!r}, {self.offset})"


_U1 = struct.Struct("<B")
_U2 = struct.Struct("<H")
_I4 = struct.Struct("<i")
_U4 = struct.Struct("<I")
_U8 = struct.Struct("<Q")
_F8 = struct.Struct(">d")


class Decoder:
    """Iterate the opcodes of one pickle program inside `buf`, starting at `start`."""

    def __init__(self, buf: memoryview, start: int = 0, end: int | None = None):
        self.buf = buf
        self.pos = start
        self.end = len(buf) if end is None else min(end, len(buf))
        self.frame_end = -1
        """End of the last FRAME's payload; -1 before the first FRAME."""
        self.notes: list[Note] = []
        """Loader-dependent readings found so far; callers drain it as they go."""

    def __iter__(self) -> Iterator[Op]:
        """Yield opcodes up to and including STOP; raise `DecodeError` on bad input."""
        while True:
            op = self.next_op()
            yield op
            if op.name == "STOP":
                return

    def next_op(self) -> Op:
        start = self.pos
        if start >= self.end:
            raise DecodeError(start, "pickle ends without STOP", truncated=True)
        entry = _TABLE.get(self.buf[start])
        if entry is None:
            raise DecodeError(start, f"unknown opcode 0x{self.buf[start]:02x}")
        name, reader = entry
        self.pos = start + 1
        arg = reader(self, start, name) if reader is not None else None
        if self.frame_end > start:
            self._in_frame(name, start)
        if name == "FRAME":
            assert isinstance(arg, int)
            self.frame_end = self.pos + arg
        return Op(name, arg, start, self.pos)

    def _in_frame(self, name: str, start: int) -> None:
        """Checks for an opcode that starts inside the current frame.

        CPython 3.11 reads a frame into a buffer only when fed a file: an argument running past
        the frame's end is then read from the file and the rest of the frame is dropped, while
        `pickle.loads` reads straight on and `pickle.py` raises (python/cpython#154848). Writers
        end every frame on an opcode boundary, with STOP as the last byte of the last frame.
        """
        fe = self.frame_end
        if self.pos > fe:
            self.notes.append(
                Note(
                    FRAME_STRADDLE,
                    start,
                    f"{name} at offset {start} runs {self.pos - fe} bytes past the end of its "
                    f"frame (offset {fe}); unpicklers read it differently for bytes and files",
                )
            )
        elif name == "FRAME":
            self.notes.append(
                Note(
                    FRAME_STRADDLE,
                    start,
                    f"FRAME at offset {start} opens inside a frame that ends at offset {fe}",
                )
            )
        elif name == "STOP" and self.pos < fe:
            self.notes.append(
                Note(
                    FRAME_STRADDLE,
                    start,
                    f"STOP at offset {start} leaves {fe - self.pos} bytes of its frame unread; "
                    "a file-fed unpickler resumes after the frame, `loads` after STOP",
                )
            )

    # -- argument readers, one per pickletools argument kind ----------------------------------

    def _need(self, n: int, at: int) -> int:
        pos = self.pos
        if n < 0:
            raise DecodeError(at, f"negative length {n}")
        if pos + n > self.end:
            raise DecodeError(at, f"argument of {n} bytes runs past the end", truncated=True)
        self.pos = pos + n
        return pos

    def _fixed(self, fmt: struct.Struct, at: int) -> object:
        value: object = fmt.unpack_from(self.buf, self._need(fmt.size, at))[0]
        return value

    def _uint1(self, at: int, name: str) -> int:
        return int(self.buf[self._need(1, at)])

    def _uint2(self, at: int, name: str) -> object:
        return self._fixed(_U2, at)

    def _int4(self, at: int, name: str) -> object:
        return self._fixed(_I4, at)

    def _uint4(self, at: int, name: str) -> object:
        return self._fixed(_U4, at)

    def _uint8(self, at: int, name: str) -> object:
        return self._fixed(_U8, at)

    def _float8(self, at: int, name: str) -> object:
        return self._fixed(_F8, at)

    def _long(self, n: int, at: int) -> int:
        if n > MAX_INLINE:
            raise DecodeError(at, f"integer of {n} bytes")
        pos = self._need(n, at)
        return int.from_bytes(self.buf[pos : pos + n], "little", signed=True)

    def _long1(self, at: int, name: str) -> int:
        return self._long(self._uint1(at, name), at)

    def _long4(self, at: int, name: str) -> int:
        return self._long(int(_I4.unpack_from(self.buf, self._need(4, at))[0]), at)

    def _sized(self, n: int, at: int, *, text: bool, errors: str = "surrogatepass") -> object:
        pos = self._need(n, at)
        if n > MAX_INLINE:
            return Blob(pos, n, text)
        raw = self.buf[pos : pos + n]
        if text:
            try:
                return str(raw, "utf-8", errors)
            except UnicodeDecodeError as exc:
                raise DecodeError(at, f"invalid UTF-8 in string: {exc.reason}") from None
        return raw.tobytes()

    def _len(self, fmt: struct.Struct, at: int) -> int:
        return int(fmt.unpack_from(self.buf, self._need(fmt.size, at))[0])

    def _text1(self, at: int, name: str) -> object:
        return self._sized(self._uint1(at, name), at, text=True)

    def _str1(self, at: int, name: str) -> object:
        # SHORT_BINSTRING: a Python 2 str, decoded with torch's encoding="utf-8", strict
        return self._sized(self._uint1(at, name), at, text=True, errors="strict")

    def _bytes1(self, at: int, name: str) -> object:
        return self._sized(self._uint1(at, name), at, text=False)

    def _string4(self, at: int, name: str) -> object:
        return self._sized(self._len(_I4, at), at, text=True, errors="strict")

    def _text4(self, at: int, name: str) -> object:
        return self._sized(self._len(_U4, at), at, text=True)

    def _bytes4(self, at: int, name: str) -> object:
        return self._sized(self._len(_U4, at), at, text=False)

    def _text8(self, at: int, name: str) -> object:
        return self._sized(self._len(_U8, at), at, text=True)

    def _bytes8(self, at: int, name: str) -> object:
        return self._sized(self._len(_U8, at), at, text=False)

    def _line(self, at: int) -> bytes:
        chunk = 256
        while True:
            stop = min(self.end, self.pos + chunk)
            piece = bytes(self.buf[self.pos : stop])
            nl = piece.find(b"\n")
            if nl >= 0:
                self.pos += nl + 1
                return piece[:nl]
            if stop >= self.end:
                raise DecodeError(at, "line argument without newline", truncated=True)
            if chunk >= _MAX_LINE:
                raise DecodeError(at, f"line argument longer than {_MAX_LINE} bytes")
            chunk *= 4

    def _note(self, at: int, name: str, line: bytes) -> None:
        self.notes.append(
            Note(
                NONCANONICAL,
                at,
                f"{name} argument {line[:40]!r} is in a form no pickle writer emits",
            )
        )

    def _decimal_short(self, at: int, name: str) -> object:
        line = self._line(at)
        if name == "INT":
            value = c_int(line)
            if value is None:
                raise DecodeError(at, f"bad integer {line[:40]!r}")
            if not _CANON_INT.fullmatch(line):
                self._note(at, name, line)
            return value
        # PUT / GET: PyLong_FromString(line, NULL, 10), which stops at a NUL
        value = c_long(line, base=10)
        if value is None:
            raise DecodeError(at, f"bad memo index {line[:40]!r}")
        if not _CANON_INDEX.fullmatch(line):
            self._note(at, name, line)
        return value

    def _decimal_long(self, at: int, name: str) -> object:
        line = self._line(at)
        if not line:
            raise DecodeError(at, "empty LONG argument")
        value = c_long(line[:-1] if line.endswith(b"L") else line, base=0)
        if value is None:
            raise DecodeError(at, f"bad integer {line[:40]!r}")
        if not _CANON_LONG.fullmatch(line):
            self._note(at, name, line)
        return value

    def _floatnl(self, at: int, name: str) -> object:
        line = self._line(at)
        value = c_float(line)
        if value is None:
            raise DecodeError(at, f"bad float {line[:40]!r}")
        if not _CANON_FLOAT.fullmatch(line):
            self._note(at, name, line)
        return value

    def _stringnl(self, at: int, name: str) -> object:
        return _parse_quoted(self._line(at), at)

    def _stringnl_noescape(self, at: int, name: str) -> object:
        # PERSID: ASCII, may be empty
        line = self._line(at)
        try:
            return line.decode("ascii")
        except UnicodeDecodeError:
            raise DecodeError(at, "persistent id is not ASCII") from None

    def _unicodenl(self, at: int, name: str) -> object:
        line = self._line(at)
        try:
            return codecs.decode(line, "raw-unicode-escape")
        except UnicodeDecodeError as exc:
            raise DecodeError(at, f"bad UNICODE argument: {exc.reason}") from None

    def _pair(self, at: int, name: str) -> object:
        # GLOBAL lines are UTF-8, INST lines ASCII; neither may be empty (C: bad_readline)
        encoding = "utf-8" if name == "GLOBAL" else "ascii"
        first = self._line(at)
        if not first:
            raise DecodeError(at, f"{name} with an empty module name")
        second = self._line(at)
        if not second:
            raise DecodeError(at, f"{name} with an empty name")
        try:
            return (first.decode(encoding), second.decode(encoding))
        except UnicodeDecodeError:
            raise DecodeError(at, f"import name is not {encoding.upper()}") from None


_Reader = Callable[[Decoder, int, str], object]

_READERS: dict[str, _Reader] = {
    "uint1": Decoder._uint1, "uint2": Decoder._uint2, "int4": Decoder._int4,
    "uint4": Decoder._uint4, "uint8": Decoder._uint8, "float8": Decoder._float8,
    "long1": Decoder._long1, "long4": Decoder._long4,
    "string1": Decoder._str1, "unicodestring1": Decoder._text1, "bytes1": Decoder._bytes1,
    "string4": Decoder._string4, "unicodestring4": Decoder._text4, "bytes4": Decoder._bytes4,
    "unicodestring8": Decoder._text8, "bytes8": Decoder._bytes8, "bytearray8": Decoder._bytes8,
    "decimalnl_short": Decoder._decimal_short, "decimalnl_long": Decoder._decimal_long,
    "floatnl": Decoder._floatnl, "stringnl": Decoder._stringnl,
    "stringnl_noescape": Decoder._stringnl_noescape, "unicodestringnl": Decoder._unicodenl,
    "stringnl_noescape_pair": Decoder._pair,
}  # fmt: skip

# opcode byte -> (name, argument reader); the table itself comes from the stdlib
_TABLE: dict[int, tuple[str, _Reader | None]] = {
    ord(op.code.encode("latin-1")): (op.name, _READERS[op.arg.name] if op.arg is not None else None)
    for op in pickletools.opcodes
}

OPCODE_BYTES = frozenset(_TABLE)
IMPORT_OPS = frozenset({"GLOBAL", "INST", "STACK_GLOBAL", "EXT1", "EXT2", "EXT4"})


# What pickle writers emit: Python 2 and 3, protocols 0 and 1 (``repr`` of the value).
_CANON_INT = re.compile(rb"0|-?[1-9][0-9]*|0[01]")
_CANON_LONG = re.compile(rb"(?:0|-?[1-9][0-9]*)L?")
_CANON_INDEX = re.compile(rb"0|[1-9][0-9]*")
_CANON_FLOAT = re.compile(
    rb"-?(?:[0-9]+\.[0-9]*|[0-9]+|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|-?inf|nan", re.IGNORECASE
)

_C_SPACE = b" \t\n\v\f\r"
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_OCTAL = frozenset(b"01234567")
_DECIMAL = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _strtol(text: bytes) -> tuple[int | None, int]:
    """C ``strtol(text, &end, 0)`` on LP64: (value or None when out of range, end index)."""
    i, n = 0, len(text)
    while i < n and text[i] in _C_SPACE:
        i += 1
    sign = 1
    if i < n and text[i] in b"+-":
        sign = -1 if text[i] == 0x2D else 1
        i += 1
    if text[i : i + 2] in (b"0x", b"0X") and text[i + 2 : i + 3] and text[i + 2] in _HEX:
        digits, base, i = _HEX, 16, i + 2
    elif text[i : i + 1] == b"0":
        digits, base = _OCTAL, 8
    else:
        digits, base = _DECIMAL, 10
    j = i
    while j < n and text[j] in digits:
        j += 1
    if j == i:
        return 0, 0  # no digits: end pointer stays at the start of the text
    value = sign * int(text[i:j], base)
    return (value if _LONG_MIN <= value <= _LONG_MAX else None), j


def c_int(line: bytes) -> int | bool | None:
    """What `_pickle.c` ``load_int`` pushes for the INT line (without its newline), or None.

    The line is a C string: ``strtol`` with base 0 is tried first and accepted when it ends at
    the newline or a NUL; otherwise ``PyLong_FromString(s, NULL, 0)``. A line of two bytes
    whose strtol value is 0 or 1 is a bool (``I01``, but also ``I 1`` and ``I+0``).
    """
    if not line:
        return None  # C: bad_readline
    text = line.split(b"\0", 1)[0]
    value, end = _strtol(text)
    if value is not None and end == len(text):
        if len(line) == 2 and value in (0, 1):
            return bool(value)
        return value
    return c_long(text, base=0)


def c_long(line: bytes, *, base: int) -> int | None:
    """``PyLong_FromString(s, NULL, base)`` over a C string (stops at the first NUL), or None."""
    text = line.split(b"\0", 1)[0]
    try:
        return int(text, base)
    except ValueError:
        return None


def c_float(line: bytes) -> float | None:
    """`_pickle.c` ``load_float``: ``PyOS_string_to_double`` up to the newline or a NUL.

    Unlike ``float()``, no surrounding whitespace, no underscores, and overflow is an error.
    """
    if not line:
        return None  # C: bad_readline
    text = line.split(b"\0", 1)[0]
    if not text or text.strip(_C_SPACE) != text or b"_" in text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    if value in (float("inf"), float("-inf")) and b"inf" not in text.lower():
        return None  # C raises OverflowError
    return value


def _parse_quoted(line: bytes, at: int) -> str:
    if len(line) >= 2 and line[0] == line[-1] and line[:1] in (b"'", b'"'):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # "\q": kept, as C keeps it
                raw = codecs.escape_decode(line[1:-1])[0]
        except ValueError:
            raise DecodeError(at, "bad escape in STRING") from None
        try:
            return bytes(raw).decode("utf-8")  # torch.load's encoding, strict
        except UnicodeDecodeError:
            raise DecodeError(at, "STRING argument is not UTF-8") from None
    raise DecodeError(at, "STRING argument is not quoted")


# argument kind -> (prefix bytes, struct of the length prefix or None for a fixed size)
_FIXED = {"uint1": 1, "uint2": 2, "int4": 4, "uint4": 4, "uint8": 8, "float8": 8}
_PREFIXED = {
    "long1": _U1, "string1": _U1, "bytes1": _U1,
    "unicodestring1": _U1, "long4": _I4, "string4": _I4, "bytes4": _U4,
    "unicodestring4": _U4, "bytes8": _U8, "bytearray8": _U8, "unicodestring8": _U8,
}  # fmt: skip
_SKIP: dict[int, tuple[bool, int, struct.Struct | None]] = {}
for _op in pickletools.opcodes:
    _kind = _op.arg.name if _op.arg is not None else None
    _code = ord(_op.code.encode("latin-1"))
    if _kind is None:
        _SKIP[_code] = (False, 0, None)
    elif _kind in _FIXED:
        _SKIP[_code] = (False, _FIXED[_kind], None)
    elif _kind in _PREFIXED:
        _SKIP[_code] = (False, 0, _PREFIXED[_kind])
    else:
        _SKIP[_code] = (True, 0, None)  # newline-terminated: let the full decoder check it
_IMPORT_CODES = frozenset(c for c, (n, _r) in _TABLE.items() if n in IMPORT_OPS)
_STOP = ord(".")


def extent(buf: memoryview, start: int = 0, *, max_ops: int) -> tuple[int | None, int, int]:
    """Where the pickle at `start` ends, decoding only lengths: (end or None, ops, imports).

    A fast path for locating pickles in a stream; arguments are skipped, not built.
    """
    pos = start
    size = len(buf)
    ops = imports = 0
    skip = _SKIP
    while ops < max_ops:
        if pos >= size:
            return None, ops, imports
        code = buf[pos]
        entry = skip.get(code)
        if entry is None:
            return None, ops, imports
        ops += 1
        if code in _IMPORT_CODES:
            imports += 1
        line, fixed, prefix = entry
        if line:
            dec = Decoder(buf, pos)
            try:
                dec.next_op()
            except DecodeError:
                return None, ops, imports
            pos = dec.pos
            continue
        pos += 1 + fixed
        if prefix is not None:
            if pos + prefix.size > size:
                return None, ops, imports
            n = int(prefix.unpack_from(buf, pos)[0])
            if n < 0:
                return None, ops, imports
            pos += prefix.size + n
        if pos > size:
            return None, ops, imports
        if code == _STOP:
            return pos, ops, imports
    return None, ops, imports
