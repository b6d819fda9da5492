"""The zip central directory, parsed the way miniz (torch's reader) parses it, or looser.

Python's `zipfile` refuses archives torch loads (a "version needed" above 6.3, say), and a
scanner that gives up where the loader carries on is a scanner that can be bypassed. This
parser accepts whatever miniz accepts, reads entries by the directory's byte size rather
than its declared count (so it never sees fewer entries than any reader), and reports
disagreements instead of failing on them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_EOCD = struct.Struct("<4sHHHHIIH")
_LOC64 = struct.Struct("<4sIQI")
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_EOCD_SIG = b"PK\x05\x06"
_MAX_COMMENT = 65535


class DirectoryError(Exception):
    """No usable central directory (the message says why)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One central-directory record (field names follow `zipfile.ZipInfo`)."""

    name: str
    """Raw name bytes decoded as UTF-8 with surrogate escapes: byte-equal names stay equal."""
    raw_name: bytes
    flag_bits: int
    compress_type: int
    CRC: int
    compress_size: int
    file_size: int
    header_offset: int
    """Absolute offset of the local header in the file (prepended bytes accounted for)."""
    extract_version: int


@dataclass(frozen=True, slots=True)
class Directory:
    entries: tuple[Entry, ...]
    start: int
    """Offset of the first central-directory record in the file."""
    prepended: int
    """Bytes before the archive proper (zipfile's "concat"); 0 for a file torch would open."""
    declared: int
    """Entry count the end record declares (may disagree with `entries`)."""
    truncated: bool
    """True when more entries exist than `max_entries` allowed to read."""


def find_end(buf: memoryview) -> int | None:
    """Offset of the last end-of-central-directory record, searched like miniz does."""
    tail_start = max(0, len(buf) - (_MAX_COMMENT + _EOCD.size))
    tail = bytes(buf[tail_start:])
    pos = tail.rfind(_EOCD_SIG)
    while pos >= 0 and pos + _EOCD.size > len(tail):
        pos = tail.rfind(_EOCD_SIG, 0, pos)
    return None if pos < 0 else tail_start + pos


def read_directory(buf: memoryview, *, max_entries: int) -> Directory:
    """Parse the central directory; raise `DirectoryError` when there is none to parse."""
    size = len(buf)
    end = find_end(buf)
    if end is None:
        raise DirectoryError("no end-of-central-directory record")
    _sig, _disk, _cd_disk, _n_disk, declared, cd_size, cd_offset, _clen = _EOCD.unpack_from(
        buf, end
    )
    record_start = end
    loc = end - _LOC64.size
    if loc >= 0 and bytes(buf[loc : loc + 4]) == b"PK\x06\x07":
        _s, _d, off64, _t = _LOC64.unpack_from(buf, loc)
        # The zip64 end record normally sits right before its locator; the locator's own
        # offset is wrong once bytes are prepended, so it is only the second choice.
        for at in (loc - _EOCD64.size, off64):
            if 0 <= at <= loc - _EOCD64.size and bytes(buf[at : at + 4]) == b"PK\x06\x06":
                fields = _EOCD64.unpack_from(buf, at)
                declared, cd_size, cd_offset = fields[7], fields[8], fields[9]
                record_start = at
                break
    prepended = record_start - cd_size - cd_offset
    if prepended < 0:
        raise DirectoryError("central directory claims to extend past its end record")
    start = cd_offset + prepended
    stop = start + cd_size
    entries: list[Entry] = []
    pos = start
    truncated = False
    while pos + _CENTRAL.size <= stop:
        if len(entries) >= max_entries:
            truncated = True
            break
        rec = _CENTRAL.unpack_from(buf, pos)
        if rec[0] != b"PK\x01\x02":
            raise DirectoryError(f"bad central-directory record at byte {pos}")
        nlen, elen, clen = rec[10], rec[11], rec[12]
        body = pos + _CENTRAL.size
        if body + nlen + elen + clen > size:
            raise DirectoryError(f"central-directory record at byte {pos} runs past the end")
        raw_name = bytes(buf[body : body + nlen])
        extra = bytes(buf[body + nlen : body + nlen + elen])
        usize, csize, offset = _zip64(extra, rec[9], rec[8], rec[16])
        entries.append(
            Entry(
                name=raw_name.decode("utf-8", "surrogateescape"),
                raw_name=raw_name,
                flag_bits=rec[3],
                compress_type=rec[4],
                CRC=rec[7],
                compress_size=csize,
                file_size=usize,
                header_offset=offset + prepended,
                extract_version=rec[2],
            )
        )
        pos = body + nlen + elen + clen
    return Directory(tuple(entries), start, prepended, declared, truncated)


def _zip64(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    """Apply a zip64 extra field (id 1) to the sizes and offset that overflowed 32 bits."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        data = extra[pos + 4 : pos + 4 + length]
        if tag == 1:
            values = [v for (v,) in struct.iter_unpack("<Q", data[: len(data) // 8 * 8])]
            if usize == 0xFFFFFFFF and values:
                usize = values.pop(0)
            if csize == 0xFFFFFFFF and values:
                csize = values.pop(0)
            if offset == 0xFFFFFFFF and values:
                offset = values.pop(0)
            break
        pos += 4 + length
    return usize, csize, offset
