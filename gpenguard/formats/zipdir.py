"""The zip central directory, selected and parsed exactly the way miniz (torch's reader) does.

torch.load reads a zip through miniz (`caffe2/serialize/inline_container.cc`); the scanner must
judge the members miniz hands to torch, not the ones another zip reader would find. So this
module follows miniz's own choices: the last end record found by its backward search, the
zip64 locator only right before that record with an absolute offset, zip64 fields replacing
the 32-bit ones, the directory offset taken literally (no "prepended bytes" shift), and exactly
the declared number of entries. Where a second reader (Python's `zipfile`, which shifts offsets
and reads entries until the directory's byte size runs out) could see something else, the
layout check below says so: `layout_anomalies` lists every byte of the file that no zip
structure accounts for, every overlap and every field the two readers would read differently.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_EOCD = struct.Struct("<4sHHHHIIH")
_LOC64 = struct.Struct("<4sIQI")
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_EOCD_SIG = b"PK\x05\x06"
_CENTRAL_SIG = b"PK\x01\x02"
_DESCRIPTOR_SIG = b"PK\x07\x08"
_SEARCH_BLOCK = 4096
_SEARCH_SPAN = 0xFFFF + _EOCD.size
"""miniz gives up once its backward search has covered this many bytes from the end."""
_U32 = 0xFFFFFFFF
DOS_DIRECTORY = 0x10


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
    """Offset of the local header, taken literally as miniz does."""
    extract_version: int
    external_attr: int = 0

    @property
    def is_dir(self) -> bool:
        """What miniz calls a directory: extraction then returns without reading a byte."""
        return self.raw_name.endswith(b"/") or bool(self.external_attr & DOS_DIRECTORY)

    @property
    def key(self) -> bytes:
        """The name as miniz's lookup compares it: ASCII letters folded to lower case."""
        return self.raw_name.lower()


@dataclass(frozen=True, slots=True)
class Directory:
    entries: tuple[Entry, ...]
    start: int
    """Offset of the first central-directory record in the file."""
    size: int
    """The directory's byte size, as the end record (or its zip64 twin) declares it."""
    prepended: int
    """zipfile's "concat": the shift it would add to every offset; torch adds none."""
    declared: int
    """Entry count the end record declares (miniz parses exactly this many)."""
    truncated: bool
    """True when more entries exist than `max_entries` allowed to read."""
    end: int
    """Offset of the end-of-central-directory record miniz chose."""
    zip64_end: int | None
    """Offset of the zip64 end record miniz used, if any."""
    parsed: int = 0
    """Bytes of the directory the parsed entries fill (less than `size`: entries only zipfile lists)."""
    hidden: tuple[Entry, ...] = ()
    """Entries past the declared count that zipfile lists and torch does not."""
    refusal: str | None = None
    """Why miniz (so torch.load) refuses this directory; the entries are then zipfile's view."""


def find_end(buf: memoryview) -> int | None:
    """The end record miniz picks: its backward search in 4 KiB blocks, over ~64 KiB."""
    size = len(buf)
    if size < _EOCD.size:
        return None
    cur = max(size - _SEARCH_BLOCK, 0)
    while True:
        block = bytes(buf[cur : cur + min(_SEARCH_BLOCK, size - cur)])
        i = len(block) - 4
        while i >= 0:
            i = block.rfind(_EOCD_SIG, 0, i + 4)
            if i < 0:
                break
            if size - (cur + i) >= _EOCD.size:
                return cur + i
            i -= 1
        if cur == 0 or size - cur >= _SEARCH_SPAN:
            return None
        cur = max(cur - (_SEARCH_BLOCK - 3), 0)


def read_directory(buf: memoryview, *, max_entries: int) -> Directory:
    """The central directory miniz would use; `zipfile`'s reading when miniz refuses it."""
    end = find_end(buf)
    if end is None:
        raise DirectoryError("no end-of-central-directory record")
    try:
        return _miniz(buf, end, max_entries)
    except DirectoryError as exc:
        refusal = str(exc)
    # torch.load refuses the archive; other readers may not, so inspect what zipfile would see.
    fallback = _zipfile_view(buf, end, max_entries)
    return Directory(
        fallback.entries,
        fallback.start,
        fallback.size,
        fallback.prepended,
        fallback.declared,
        fallback.truncated,
        end,
        None,
        fallback.parsed,
        refusal=refusal,
    )


def _miniz(buf: memoryview, end: int, max_entries: int) -> Directory:
    size = len(buf)
    _sig, this_disk, cd_disk, on_disk, total, cd_size, cd_offset, _clen = _EOCD.unpack_from(
        buf, end
    )
    zip64_end = None
    if end >= _LOC64.size + _EOCD64.size:
        loc = end - _LOC64.size
        sig, _d, off64, disks = _LOC64.unpack_from(buf, loc)
        if sig == b"PK\x06\x07":
            if off64 > size - _EOCD64.size:
                raise DirectoryError("the zip64 locator points past the end of the file")
            rec = _EOCD64.unpack_from(buf, off64)
            if rec[0] == b"PK\x06\x06":
                if rec[1] < _EOCD64.size - 12:
                    raise DirectoryError("the zip64 end record is too short")
                if disks != 1:
                    raise DirectoryError(f"the zip64 locator counts {disks} disks")
                if rec[7] > _U32 or rec[6] > _U32 or rec[8] > _U32:
                    raise DirectoryError("the zip64 end record is beyond miniz's limits")
                zip64_end = off64
                on_disk, total, cd_size, cd_offset = rec[6], rec[7], rec[8], rec[9]
                this_disk, cd_disk = rec[4], rec[5]
    if total != on_disk:
        raise DirectoryError("the end record counts entries on more than one disk")
    if (this_disk | cd_disk) != 0 and (this_disk != 1 or cd_disk != 1):
        raise DirectoryError("multi-disk archive")
    if cd_size < total * _CENTRAL.size:
        raise DirectoryError(f"a {cd_size}-byte directory cannot hold {total} entries")
    if cd_offset + cd_size > size:
        raise DirectoryError("the central directory runs past the end of the file")
    entries: list[Entry] = []
    pos, left = cd_offset, cd_size
    truncated = False
    for _ in range(total):
        if len(entries) >= max_entries:
            truncated = True
            break
        if left < _CENTRAL.size or bytes(buf[pos : pos + 4]) != _CENTRAL_SIG:
            raise DirectoryError(f"bad central-directory record at byte {pos}")
        entry, length = _entry(buf, pos)
        rec = _CENTRAL.unpack_from(buf, pos)
        if (
            rec[8] != _U32
            and rec[9] != _U32
            and ((rec[4] == 0 and rec[8] != rec[9]) or (rec[9] and not rec[8]))
        ):
            raise DirectoryError(f"entry {entry.name!r}: impossible compressed/uncompressed sizes")
        if rec[13] == 0xFFFF or (rec[13] != this_disk and rec[13] != 1):
            raise DirectoryError(f"entry {entry.name!r} lies on another disk")
        if rec[8] != _U32 and rec[16] + _LOCAL.size + rec[8] > size:
            raise DirectoryError(f"entry {entry.name!r} runs past the end of the file")
        if rec[3] & 0x2000:
            raise DirectoryError(f"entry {entry.name!r} has a masked local header")
        if length > left:
            raise DirectoryError(f"central-directory record at byte {pos} overruns the directory")
        entries.append(entry)
        pos += length
        left -= length
    record_start = zip64_end if zip64_end is not None else end
    declared_end = pos
    hidden: list[Entry] = []
    while left >= _CENTRAL.size and bytes(buf[pos : pos + 4]) == _CENTRAL_SIG and not truncated:
        try:
            entry, length = _entry(buf, pos)
        except DirectoryError:
            break
        if len(entries) + len(hidden) >= max_entries or length > left:
            break
        hidden.append(entry)
        pos += length
        left -= length
    return Directory(
        tuple(entries),
        cd_offset,
        cd_size,
        record_start - cd_size - cd_offset,
        total,
        truncated,
        end,
        zip64_end,
        declared_end - cd_offset,
        tuple(hidden),
    )


def _zipfile_view(buf: memoryview, end: int, max_entries: int) -> Directory:
    """The entries Python's zipfile would list: shifted offsets, read by byte size."""
    _sig, _d, _c, _n, declared, cd_size, cd_offset, _clen = _EOCD.unpack_from(buf, end)
    record_start = end
    loc = end - _LOC64.size
    if loc >= _EOCD64.size and bytes(buf[loc : loc + 4]) == b"PK\x06\x07":
        at = loc - _EOCD64.size
        if bytes(buf[at : at + 4]) == b"PK\x06\x06":
            fields = _EOCD64.unpack_from(buf, at)
            declared, cd_size, cd_offset = fields[7], fields[8], fields[9]
            record_start = at
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
        if bytes(buf[pos : pos + 4]) != _CENTRAL_SIG:
            raise DirectoryError(f"bad central-directory record at byte {pos}")
        entry, length = _entry(buf, pos, shift=prepended)
        entries.append(entry)
        pos += length
    return Directory(
        tuple(entries), start, cd_size, prepended, declared, truncated, end, None, pos - start
    )


def _entry(buf: memoryview, pos: int, *, shift: int = 0) -> tuple[Entry, int]:
    rec = _CENTRAL.unpack_from(buf, pos)
    nlen, elen, clen = rec[10], rec[11], rec[12]
    body = pos + _CENTRAL.size
    if body + nlen + elen + clen > len(buf):
        raise DirectoryError(f"central-directory record at byte {pos} runs past the end")
    raw_name = bytes(buf[body : body + nlen])
    extra = bytes(buf[body + nlen : body + nlen + elen])
    usize, csize, offset = _zip64(extra, rec[9], rec[8], rec[16])
    entry = Entry(
        name=raw_name.decode("utf-8", "surrogateescape"),
        raw_name=raw_name,
        flag_bits=rec[3],
        compress_type=rec[4],
        CRC=rec[7],
        compress_size=csize,
        file_size=usize,
        header_offset=offset + shift,
        extract_version=rec[2],
        external_attr=rec[15],
    )
    return entry, _CENTRAL.size + nlen + elen + clen


def _zip64(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    """Apply a zip64 extra field (id 1) to the sizes and offset that overflowed 32 bits."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        data = extra[pos + 4 : pos + 4 + length]
        if tag == 1:
            values = [v for (v,) in struct.iter_unpack("<Q", data[: len(data) // 8 * 8])]
            if usize == _U32 and values:
                usize = values.pop(0)
            if csize == _U32 and values:
                csize = values.pop(0)
            if offset == _U32 and values:
                offset = values.pop(0)
            break
        pos += 4 + length
    return usize, csize, offset


def layout_anomalies(buf: memoryview, d: Directory) -> list[str]:
    """Everything about the archive two zip readers could read differently, in words.

    A file torch.save (or zipfile) writes is a gapless sequence: local header, data, optional
    data descriptor, per entry from byte 0; then the directory, holding exactly the declared
    entries; then the zip64 end record and locator, if any; then the end record, whose comment
    runs to the end of the file. Anything else -- bytes before, between or after, overlaps,
    offsets zipfile would shift, entries only zipfile would list, a second end record -- lets
    readers disagree, and is reported.
    """
    size = len(buf)
    out: list[str] = []
    if d.refusal is not None:
        out.append(
            f"torch's zip reader (miniz) refuses the archive ({d.refusal}); other readers open it"
        )
    if d.prepended:
        out.append(
            f"zipfile would shift every offset by {d.prepended} bytes; torch takes them literally"
        )
    if d.truncated:
        return out
    # the directory end: zip64 end record + locator (if used), then the end record
    cd_end = d.start + d.size
    if d.zip64_end is not None:
        tail = [(d.zip64_end, d.zip64_end + 12 + _EOCD64.unpack_from(buf, d.zip64_end)[1])]
        tail.append((d.end - _LOC64.size, d.end))
    else:
        tail = []
    comment = _EOCD.unpack_from(buf, d.end)[7]
    tail.append((d.end, d.end + _EOCD.size + comment))
    spans: list[tuple[int, int, str]] = []
    for e in d.entries:
        span = _local_span(buf, e)
        if isinstance(span, str):
            out.append(span)
            continue
        spans.append((e.header_offset, span, f"member {e.name!r}"))
    parsed = d.parsed
    spans.append((d.start, d.start + parsed, "the central directory"))
    if parsed != d.size:
        out.append(
            f"the directory is {d.size} bytes but its {d.declared} declared entries fill {parsed}"
            " (zipfile reads on where torch stops)"
        )
        spans.append((d.start + parsed, cd_end, "undeclared directory bytes"))
    for start, stop in tail:
        spans.append((start, stop, "the end records"))
    spans.sort()
    cursor = 0
    for start, stop, what in spans:
        if start > cursor:
            out.append(f"bytes {cursor}-{start} belong to no zip structure (before {what})")
        elif start < cursor:
            out.append(f"{what} at byte {start} overlaps the structure before it")
        cursor = max(cursor, stop)
    if cursor != size:
        out.append(
            f"the end record's comment ends at byte {cursor}, the file at {size}"
            if cursor < size
            else "the end record's comment runs past the end of the file"
        )
    lo = max(size - _SEARCH_SPAN, 0)
    window = bytes(buf[lo:])
    at = window.find(_EOCD_SIG)
    while at >= 0:
        pos = lo + at
        if pos != d.end and (pos > d.end or _plausible_end(buf, pos)):
            out.append(f"a second end-of-directory record at byte {pos}")
            break
        at = window.find(_EOCD_SIG, at + 1)
    return out


def _plausible_end(buf: memoryview, pos: int) -> bool:
    """A PK\\5\\6 that a reader searching differently could take for the end record."""
    if pos + _EOCD.size > len(buf):
        return False
    cd_offset = _EOCD.unpack_from(buf, pos)[6]
    return cd_offset + 4 <= len(buf) and bytes(buf[cd_offset : cd_offset + 4]) == _CENTRAL_SIG


def _local_span(buf: memoryview, e: Entry) -> int | str:
    """Where an entry's local record (header, data, descriptor) ends, or why it is odd."""
    off = e.header_offset
    if off + _LOCAL.size > len(buf) or bytes(buf[off : off + 4]) != b"PK\x03\x04":
        return f"member {e.name!r}: no local header at byte {off}"
    f: tuple[int, ...] = _LOCAL.unpack_from(buf, off)
    flags, method, crc, csize, usize, nlen, elen = f[2], f[3], f[6], f[7], f[8], f[9], f[10]
    name = bytes(buf[off + _LOCAL.size : off + _LOCAL.size + nlen])
    if name != e.raw_name:
        return f"member {e.name!r}: the local header names it {name[:80]!r}"
    if method != e.compress_type or (flags ^ e.flag_bits) & 0x0809:
        return f"member {e.name!r}: local header method or flags differ from the directory's"
    stop: int = off + _LOCAL.size + nlen + elen + e.compress_size
    if stop > len(buf):
        return f"member {e.name!r}: data runs past the end of the file"
    if not flags & 0x08:
        if _U32 not in (csize, usize) and (crc, csize, usize) != (
            e.CRC,
            e.compress_size,
            e.file_size,
        ):
            return f"member {e.name!r}: local header sizes or CRC differ from the directory's"
        return stop
    # a data descriptor follows: signature optional, 32- or 64-bit sizes
    for sig in (_DESCRIPTOR_SIG, b""):
        if sig and bytes(buf[stop : stop + 4]) != sig:
            continue
        at = stop + len(sig)
        for fmt in ("<III", "<IQQ"):
            n = struct.calcsize(fmt)
            if at + n <= len(buf) and struct.unpack_from(fmt, buf, at) == (
                e.CRC,
                e.compress_size,
                e.file_size,
            ):
                return at + n
    return f"member {e.name!r}: its data descriptor does not match the directory"
