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
from collections.abc import Iterator
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


@dataclass(frozen=True, slots=True)
class Op:
    """One decoded opcode: its name, argument, and where it starts and ends."""

    name: str
    arg: object
    offset: int
    end: int


# opcode byte -> (name, argument kind)
_TABLE: dict[int, tuple[str, str | None]] = {
    ord(op.code.encode("latin-1")): (op.name, op.arg.name if op.arg is not None else None)
    for op in pickletools.opcodes
}

OPCODE_BYTES = frozenset(_TABLE)
IMPORT_OPS = frozenset({"GLOBAL", "INST", "STACK_GLOBAL", "EXT1", "EXT2", "EXT4"})

_U2 = struct.Struct("<H")
_I4 = struct.Struct("<i")
_U4 = struct.Struct("<I")
_U8 = struct.Struct("<Q")
_F8 = struct.Struct(">d")


def opcode_name(byte: int) -> str | None:
    """The pickle opcode a byte stands for, or None when it is none."""
    entry = _TABLE.get(byte)
    return entry[0] if entry else None


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
        code = self.buf[start]
        entry = _TABLE.get(code)
        if entry is None:
            raise DecodeError(start, f"unknown opcode 0x{code:02x}")
        name, kind = entry
        self.pos = start + 1
        arg = self._read_arg(kind, name, start) if kind is not None else None
        return Op(name, arg, start, self.pos)

    # -- argument readers ------------------------------------------------------------------

    def _take(self, n: int, at: int) -> memoryview:
        if n < 0:
            raise DecodeError(at, f"negative length {n}")
        if self.pos + n > self.end:
            raise DecodeError(at, f"argument of {n} bytes runs past the end", truncated=True)
        view = self.buf[self.pos : self.pos + n]
        self.pos += n
        return view

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

    def _sized(self, n: int, at: int, *, text: bool) -> object:
        if n > MAX_INLINE:
            offset = self.pos
            self._take(n, at)
            return Blob(offset, n, text)
        raw = self._take(n, at)
        if text:
            try:
                return str(raw, "utf-8", "surrogatepass")
            except UnicodeDecodeError as exc:
                raise DecodeError(at, f"invalid UTF-8 in string: {exc.reason}") from None
        return raw.tobytes()

    def _read_arg(self, kind: str, name: str, at: int) -> object:
        if kind == "uint1":
            return int(self._take(1, at)[0])
        if kind == "uint2":
            return int(_U2.unpack(self._take(2, at))[0])
        if kind == "int4":
            return int(_I4.unpack(self._take(4, at))[0])
        if kind == "uint4":
            return int(_U4.unpack(self._take(4, at))[0])
        if kind == "uint8":
            return int(_U8.unpack(self._take(8, at))[0])
        if kind == "float8":
            return float(_F8.unpack(self._take(8, at))[0])
        if kind == "long1":
            n = self._take(1, at)[0]
            return int.from_bytes(self._take(n, at), "little", signed=True)
        if kind == "long4":
            n = int(_I4.unpack(self._take(4, at))[0])
            if n > MAX_INLINE:
                raise DecodeError(at, f"LONG4 of {n} bytes")
            return int.from_bytes(self._take(n, at), "little", signed=True)
        if kind in ("string1", "bytes1", "unicodestring1"):
            n = self._take(1, at)[0]
            return self._sized(n, at, text=kind != "bytes1")
        if kind in ("string4", "bytes4", "unicodestring4"):
            n = int((_I4 if kind == "string4" else _U4).unpack(self._take(4, at))[0])
            return self._sized(n, at, text=kind != "bytes4")
        if kind in ("bytes8", "bytearray8", "unicodestring8"):
            n = int(_U8.unpack(self._take(8, at))[0])
            return self._sized(n, at, text=kind == "unicodestring8")
        line = self._line(at)
        if kind == "decimalnl_short":
            return _parse_int(line, at, allow_bool=name == "INT")
        if kind == "decimalnl_long":
            return _parse_int(line[:-1] if line.endswith(b"L") else line, at, allow_bool=False)
        if kind == "floatnl":
            try:
                return float(line)
            except ValueError:
                raise DecodeError(at, f"bad float {line[:40]!r}") from None
        if kind == "stringnl":
            return _parse_quoted(line, at)
        if kind == "stringnl_noescape":
            return line.decode("latin-1")
        if kind == "unicodestringnl":
            try:
                return codecs.decode(line, "raw-unicode-escape")
            except UnicodeDecodeError as exc:
                raise DecodeError(at, f"bad UNICODE argument: {exc.reason}") from None
        if kind == "stringnl_noescape_pair":
            first = line
            second = self._line(at)
            try:
                return (first.decode("utf-8"), second.decode("utf-8"))
            except UnicodeDecodeError:
                raise DecodeError(at, "import name is not UTF-8") from None
        raise DecodeError(at, f"unsupported argument kind {kind}")  # pragma: no cover


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


def skim(buf: memoryview, start: int = 0, *, max_ops: int | None = None) -> int:
    """Return the offset just after the STOP of the pickle at `start`, or raise DecodeError.

    Only decodes; the stack is not modelled. Used to find where one pickle of a stream ends.
    """
    dec = Decoder(buf, start)
    count = 0
    while True:
        op = dec.next_op()
        count += 1
        if max_ops is not None and count > max_ops:
            raise DecodeError(op.offset, f"more than {max_ops} opcodes")
        if op.name == "STOP":
            return op.end
