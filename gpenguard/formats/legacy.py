"""Legacy torch serialization (torch < 1.6, or ``_use_new_zipfile_serialization=False``).

The file is five pickles back to back: the magic number, the protocol version (1001),
``sys_info``, the object graph (storages as persistent ids), and the list of storage keys;
then, for each key in that order, an int64 element count and the raw storage bytes.
"""

from __future__ import annotations

import struct

from gpenguard.formats._context import Ctx
from gpenguard.formats.container import Container, Format, PickleStream
from gpenguard.formats.pickle import probe, split_stream
from gpenguard.formats.tar import ELEMENT_SIZE
from gpenguard.pickling.walker import Global, WalkLimits, constant, walk

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
_MAGIC_BINARY = MAGIC_NUMBER.to_bytes(10, "little", signed=True)  # LONG1 operand, protocol >= 2
_TEXT_INTS = (b"I", b"L")  # INT / LONG opcodes: text CPython parses with base 0 (0x.., 0o.., _)
RECORDS = ("magic number", "protocol version", "sys_info", "object", "storage keys")


def is_legacy(buf: memoryview) -> bool:
    """True when the first pickle is a constant equal to torch's legacy magic number."""
    first = probe(buf, 0, max_ops=64)
    if not first.complete or first.end is None:
        return False
    # NOTE: a byte filter first: without the number's binary encoding (LONG1/LONG4, padded or
    # not) and without a text-int opcode, a pickle that imports nothing cannot evaluate to it,
    # and skipping the walk halves the fixed cost of a bare pickle. The text forms are many
    # (``I0x1950A86A...``, ``L0X..._..L``, NUL-terminated), so the walk, which parses them as
    # CPython's C unpickler does, decides those.
    head = bytes(buf[: first.end])
    if _MAGIC_BINARY not in head and not any(op in head for op in _TEXT_INTS):
        return False
    res = walk(buf[: first.end], 0, WalkLimits(max_opcodes=64))
    if res.imports or not res.complete:
        return False
    try:
        return constant(res.value) == MAGIC_NUMBER
    except ValueError:
        return False


def read_legacy(ctx: Ctx, buf: memoryview) -> Container:
    """Locate the five pickles and the raw storage tail of a legacy torch file."""
    streams: list[PickleStream] = []
    pos = 0
    max_ops = ctx.limits.max_opcodes
    for index, what in enumerate(RECORDS):
        p = probe(buf, pos, max_ops=max_ops)
        if p.end is None:
            ctx.add("GG306", f"legacy record {index} ({what}) is not a complete pickle", offset=pos)
            streams.append(PickleStream(member=ctx.where, offset=pos, data=buf[pos:], index=index))
            return Container(
                path=ctx.path, format=Format.TORCH_LEGACY, pickles=tuple(streams), member=ctx.where
            )
        streams.append(
            PickleStream(member=ctx.where, offset=pos, data=buf[pos : p.end], index=index)
        )
        pos = p.end
    tail = buf[pos:]
    streams += _check_tail(ctx, buf, streams[3], streams[-1], pos)
    ctx.add("GG303", "legacy torch serialization (five pickles and raw storages)", offset=0)
    return Container(
        path=ctx.path,
        format=Format.TORCH_LEGACY,
        pickles=tuple(streams),
        legacy_tail=tail,
        member=ctx.where,
    )


def _check_tail(
    ctx: Ctx, buf: memoryview, main: PickleStream, keys: PickleStream, tail_start: int
) -> list[PickleStream]:
    """Follow the storage records after the key list, as torch reads them.

    Each record is an int64 element count followed by that many elements; the element size
    comes from the storage type in the object pickle's persistent ids. Bytes left after the
    last record are never read by torch: a place to park data, so they are reported.
    """
    res = walk(keys.data, 0, ctx.limits.walk_limits())
    try:
        value = constant(res.value)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        ctx.add("GG306", "legacy storage-key record is not a list of strings", offset=keys.offset)
        if tail_start < len(buf):
            # Not storages, so nothing says what the bytes are: scan any pickles they hold.
            return split_stream(
                ctx, buf, member=None, expect=0, first_index=len(RECORDS), start=tail_start
            )
        return []
    main_walk = walk(main.data, 0, ctx.limits.walk_limits())
    if not main_walk.complete:
        return []  # the scanner reports why the object pickle breaks off; sizes are unknown
    declared = _declared_storages(main_walk.pids)
    pos = tail_start
    for key in value:
        if key not in declared:
            ctx.add("GG306", f"storage {key!r} is listed but no tensor refers to it", offset=pos)
            return []
        elem, numel = declared[key]
        if pos + 8 > len(buf):
            ctx.add("GG306", f"storage {key!r}: record runs past the end of the file", offset=pos)
            return []
        (count,) = struct.unpack_from("<q", buf, pos)
        if count != numel:
            ctx.add(
                "GG306",
                f"storage {key!r} holds {count} elements, the object pickle says {numel}",
                offset=pos,
            )
            return []
        pos += 8 + count * elem
        if pos > len(buf):
            ctx.add("GG306", f"storage {key!r}: data runs past the end of the file", offset=pos)
            return []
    if pos < len(buf):
        ctx.add(
            "GG112",
            f"{len(buf) - pos} bytes after the last storage record; torch never reads them",
            offset=pos,
        )
    return []


def _declared_storages(pids: list[object]) -> dict[str, tuple[int, int]]:
    """storage key -> (element size, element count) from ``('storage', type, key, loc, numel, view)``."""
    out: dict[str, tuple[int, int]] = {}
    for pid in pids:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            continue
        kind, key, numel = pid[1], pid[2], pid[4]
        size = ELEMENT_SIZE.get(kind.name) if isinstance(kind, Global) else None
        if size is not None and isinstance(key, str) and isinstance(numel, int) and numel >= 0:
            out.setdefault(key, (size, numel))
    return out
