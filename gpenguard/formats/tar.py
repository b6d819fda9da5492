"""Tar containers, including torch's pre-1.0 tar serialization.

The legacy torch tar has members ``sys_info``, ``pickle`` (the object graph), ``storages``
and ``tensors``. The last two are record streams: a pickled count, then per record a pickle
followed by raw bytes whose length depends on what that pickle says. torch unpickles every
record, so every record pickle is located and scanned, by following the same layout.
"""

from __future__ import annotations

import struct
from collections import Counter

from gpenguard.errors import FormatError
from gpenguard.formats import members as _members
from gpenguard.formats._context import Ctx, MemFile
from gpenguard.formats.container import Container, Format, PickleStream
from gpenguard.formats.pickle import probe, split_stream
from gpenguard.pickling.walker import Global, WalkResult, constant, walk

_BLOCK = 512

ELEMENT_SIZE = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
    "BoolStorage": 1, "ComplexDoubleStorage": 16, "ComplexFloatStorage": 8,
    "QUInt8Storage": 1, "QInt8Storage": 1, "QInt32Storage": 4, "QUInt4x2Storage": 1,
    "QUInt2x4Storage": 1, "UntypedStorage": 1,
}  # fmt: skip


def is_tar(buf: memoryview) -> bool:
    """Whether `tarfile.open(mode="r:")` opens the bytes, as torch.load tries from a path.

    The first header's checksum is tested first exactly as tarfile tests it (so non-tars cost
    no import); tarfile itself then decides, since it also refuses first headers whose pax or
    GNU long-name records are broken.
    """
    if not header_checksum_ok(buf):
        return False
    import tarfile  # NOTE: deferred: only tar candidates need it (start-up is per-file time)

    try:
        tarfile.open(fileobj=MemFile(buf), mode="r:")  # noqa: SIM115 - nothing to close over a view
    except (tarfile.TarError, ValueError, OSError, EOFError, UnicodeError):
        return False
    return True


def header_checksum_ok(buf: memoryview) -> bool:
    """Whether the first 512 bytes pass tarfile's first test: a non-empty header whose checksum
    field matches. A probe that sees only a file's head must stop here: what tarfile reads next
    (a pax or GNU long-name record) may lie beyond any window."""
    if len(buf) < _BLOCK:
        return False
    head = bytes(buf[:_BLOCK])
    if head == b"\0" * _BLOCK:
        return False
    try:
        stored = tar_number(head[148:156])
    except ValueError:
        return False
    return stored in _checksums(head)


def tar_number(field: bytes) -> int:
    """A tar number field as CPython's tarfile (`nti`) reads it: base-256 when the first byte
    is 0x80 or 0xff, else the text up to the first NUL, stripped, through ``int(text, 8)``
    (which also takes ``0o17``, ``1_7``, a sign, and an empty field as 0)."""
    if field[:1] in (b"\x80", b"\xff"):
        n = int.from_bytes(field[1:], "big")
        return n - 256 ** (len(field) - 1) if field[0] == 0xFF else n
    text = field.split(b"\0", 1)[0].decode("ascii")  # UnicodeDecodeError is a ValueError
    return int(text.strip() or "0", 8)


def _checksums(head: bytes) -> tuple[int, int]:
    """tarfile's `calc_chksums`: the header summed as unsigned and as signed bytes."""
    unsigned = sum(head[:148]) + 8 * 32 + sum(head[156:])
    signed = (
        sum(struct.unpack("148b", head[:148])) + 8 * 32 + sum(struct.unpack("356b", head[156:]))
    )
    return unsigned, signed


def read_tar(ctx: Ctx, buf: memoryview) -> Container:
    """Read a tar archive; a torch legacy tar gets its record streams followed."""
    import tarfile  # NOTE: deferred: only tar candidates need it (start-up is per-file time)

    try:
        tf = tarfile.open(fileobj=MemFile(buf), mode="r:")  # noqa: SIM115 - nothing to close over a view
        infos: list[tarfile.TarInfo] = []
        while True:
            info = tf.next()
            if info is None:
                break
            infos.append(info)
            if len(infos) > ctx.limits.max_members:
                ctx.add(
                    "GG204", f"more than {ctx.limits.max_members} members; the rest not inspected"
                )
                break
        end = tf.offset
    except (tarfile.TarError, ValueError, OSError, EOFError, UnicodeError) as exc:
        raise FormatError(
            f"tar archive is corrupt: {exc}",
            path=f"{ctx.path}!{ctx.where}" if ctx.where else ctx.path,
        ) from exc
    ctx.budget.members += len(infos)
    for name, count in Counter(i.name for i in infos).items():
        if count > 1:
            ctx.add("GG200", f"member name {name!r} appears {count} times", member=name)
    files: dict[str, memoryview] = {}
    pickles: list[PickleStream] = []
    children: list[Container] = []
    for info in infos:
        norm = info.name.replace("\\", "/")
        if norm.startswith("/") or ".." in norm.split("/") or info.issym() or info.islnk():
            ctx.add(
                "GG201",
                f"member {info.name!r} is absolute, climbs out, or is a link",
                member=info.name,
            )
        if info.issparse() or not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
            ctx.add(
                "GG216",
                f"member {info.name!r} is a sparse file or a device: extracting it (as torch.load "
                "does) gives other bytes than the archive holds",
                member=info.name,
            )
        if not info.isreg():
            continue
        start = info.offset_data
        if start + info.size > len(buf):
            ctx.add(
                "GG212",
                "member data runs past the end of the file",
                member=info.name,
                offset=info.offset,
            )
            continue
        files[info.name] = buf[start : start + info.size]  # getmember: the last one wins
    rest = bytes(buf[end:])
    if rest.strip(b"\0"):
        # tarfile stops silently at the first invalid header after the first: what follows
        # is read by no tar reader that stops there, and maybe by one that does not
        ctx.add(
            "GG215",
            f"{len(rest)} bytes after the last member tarfile reads are not end-of-archive zeros",
            offset=end,
        )
    legacy = "pickle" in files and "storages" in files and "tensors" in files
    for name, data in files.items():
        # torch's tar reader extracts ``storages`` first, then ``tensors``, then ``pickle``,
        # whatever else the archive holds: a record stream is followed wherever it exists.
        if name in ("storages", "tensors"):
            pickles += _records(ctx, name, data)
        elif legacy and name in ("pickle", "sys_info"):
            pickles += split_stream(ctx, data, member=name)
        else:
            found, kids = _members.inspect(ctx, name, data)
            pickles += found
            children += kids
    if legacy:
        ctx.add("GG304", "legacy tar torch serialization", offset=0)
    return Container(
        path=ctx.path,
        format=Format.TORCH_TAR if legacy else Format.TAR,
        pickles=tuple(pickles),
        children=tuple(children),
        member=ctx.where,
    )


def _records(ctx: Ctx, name: str, data: memoryview) -> list[PickleStream]:
    """Follow a ``storages`` or ``tensors`` record stream, returning every pickle in it."""
    streams: list[PickleStream] = []
    where = ctx.sub(name)

    def take(pos: int) -> WalkResult | None:
        p = probe(data, pos, max_ops=ctx.limits.max_opcodes)
        stop = p.end if p.end is not None else len(data)
        streams.append(
            PickleStream(member=where, offset=pos, data=data[pos:stop], index=len(streams))
        )
        if p.end is None:
            return None
        return walk(data[pos:stop], 0, ctx.limits.walk_limits())

    def give_up(pos: int, why: str) -> list[PickleStream]:
        ctx.add("GG306", f"{name} record stream cannot be followed: {why}", member=name, offset=pos)
        if pos < len(data):
            streams.extend(
                split_stream(ctx, data, member=name, expect=0, first_index=len(streams), start=pos)
            )
        return streams

    first = take(0)
    if first is None:
        return streams
    try:
        count = constant(first.value)
    except ValueError:
        return give_up(first.end or 0, "the record count is not a constant")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        return give_up(first.end or 0, f"record count {count!r}")
    pos = first.end or 0
    for _ in range(count):
        if pos >= len(data):
            return give_up(pos, "fewer records than announced")
        rec = take(pos)
        if rec is None or rec.end is None:
            return streams
        pos += rec.end
        skip = _payload_size(name, rec, data, pos)
        if skip is None:
            return give_up(pos, "cannot tell how many raw bytes follow the record")
        pos += skip
    if name == "storages" and pos < len(data):
        view = take(pos)  # storage views list
        if view is not None and view.end is not None:
            pos += view.end
    if pos < len(data):
        ctx.add("GG112", f"{len(data) - pos} bytes after the last record", member=name, offset=pos)
    return streams


def _payload_size(name: str, rec: WalkResult, data: memoryview, pos: int) -> int | None:
    value = rec.value
    if name == "storages":
        if not isinstance(value, tuple) or len(value) != 3 or not isinstance(value[2], Global):
            return None
        size = ELEMENT_SIZE.get(value[2].name)
        if size is None or pos + 8 > len(data):
            return None
        (numel,) = struct.unpack_from("<q", data, pos)
        total = 8 + numel * size
        return total if numel >= 0 and pos + total <= len(data) else None
    if pos + 8 > len(data):
        return None
    (ndim,) = struct.unpack_from("<i", data, pos)
    total = 8 + 16 * ndim + 8
    return total if 0 <= ndim <= 64 and pos + total <= len(data) else None
