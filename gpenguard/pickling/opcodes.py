"""Decode pickle opcodes from a byte buffer without running them.

`pickletools.genops` reads from a file object, copies every argument and stops with a bare
`ValueError`; this decoder works on a memoryview, keeps large string and bytes arguments as
(offset, length) placeholders instead of copying them, and reports every problem with the
byte offset where it happened, so the scanner can turn it into a finding.
"""

from __future__ import annotations

import codecs
import pickletools
import struct
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
        return Op(name, arg, start, self.pos)

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

    def _sized(self, n: int, at: int, *, text: bool) -> object:
        pos = self._need(n, at)
        if n > MAX_INLINE:
            return Blob(pos, n, text)
        raw = self.buf[pos : pos + n]
        if text:
            try:
                return str(raw, "utf-8", "surrogatepass")
            except UnicodeDecodeError as exc:
                raise DecodeError(at, f"invalid UTF-8 in string: {exc.reason}") from None
        return raw.tobytes()

    def _len(self, fmt: struct.Struct, at: int) -> int:
        return int(fmt.unpack_from(self.buf, self._need(fmt.size, at))[0])

    def _text1(self, at: int, name: str) -> object:
        return self._sized(self._uint1(at, name), at, text=True)

    def _bytes1(self, at: int, name: str) -> object:
        return self._sized(self._uint1(at, name), at, text=False)

    def _string4(self, at: int, name: str) -> object:
        return self._sized(self._len(_I4, at), at, text=True)

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

    def _decimal_short(self, at: int, name: str) -> object:
        return _parse_int(self._line(at), at, allow_bool=name == "INT")

    def _decimal_long(self, at: int, name: str) -> object:
        line = self._line(at)
        return _parse_int(line[:-1] if line.endswith(b"L") else line, at, allow_bool=False)

    def _floatnl(self, at: int, name: str) -> object:
        line = self._line(at)
        try:
            return float(line)
        except ValueError:
            raise DecodeError(at, f"bad float {line[:40]!r}") from None

    def _stringnl(self, at: int, name: str) -> object:
        return _parse_quoted(self._line(at), at)

    def _stringnl_noescape(self, at: int, name: str) -> object:
        return self._line(at).decode("latin-1")

    def _unicodenl(self, at: int, name: str) -> object:
        line = self._line(at)
        try:
            return codecs.decode(line, "raw-unicode-escape")
        except UnicodeDecodeError as exc:
            raise DecodeError(at, f"bad UNICODE argument: {exc.reason}") from None

    def _pair(self, at: int, name: str) -> object:
        first = self._line(at)
        second = self._line(at)
        try:
            return (first.decode("utf-8"), second.decode("utf-8"))
        except UnicodeDecodeError:
            raise DecodeError(at, "import name is not UTF-8") from None


_Reader = Callable[[Decoder, int, str], object]

_READERS: dict[str, _Reader] = {
    "uint1": Decoder._uint1, "uint2": Decoder._uint2, "int4": Decoder._int4,
    "uint4": Decoder._uint4, "uint8": Decoder._uint8, "float8": Decoder._float8,
    "long1": Decoder._long1, "long4": Decoder._long4,
    "string1": Decoder._text1, "unicodestring1": Decoder._text1, "bytes1": Decoder._bytes1,
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


def _parse_int(line: bytes, at: int, *, allow_bool: bool) -> int | bool:
    if allow_bool and line == b"00":
        return False
    if allow_bool and line == b"01":
        return True
    try:
        return int(line, 0) if line.strip().lstrip(b"+-").startswith(b"0x") else int(line)
    except ValueError:
        raise DecodeError(at, f"bad integer {line[:40]!r}") from None


def _parse_quoted(line: bytes, at: int) -> str:
    if len(line) >= 2 and line[0] == line[-1] and line[:1] in (b"'", b'"'):
        try:
            raw = codecs.escape_decode(line[1:-1])[0]
        except ValueError:
            raise DecodeError(at, "bad escape in STRING") from None
        return bytes(raw).decode("latin-1")
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
