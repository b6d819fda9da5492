"""Legacy torch serialization (torch < 1.6, or ``_use_new_zipfile_serialization=False``).

The file is five pickles back to back: the magic number, the protocol version (1001),
``sys_info``, the object graph (storages as persistent ids), and the list of storage keys;
then, for each key in that order, an int64 element count and the raw storage bytes.
"""

from __future__ import annotations

from gpenguard.formats._context import Ctx
from gpenguard.formats.container import Container, Format, PickleStream
from gpenguard.formats.pickle import probe, split_stream
from gpenguard.scan.walker import WalkLimits, constant, walk

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
RECORDS = ("magic number", "protocol version", "sys_info", "object", "storage keys")


def is_legacy(buf: memoryview) -> bool:
    """True when the first pickle is a constant equal to torch's legacy magic number."""
    first = probe(buf, 0, max_ops=64)
    if not first.complete:
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
    streams += _check_tail(ctx, buf, streams[-1], pos)
    ctx.add("GG303", "legacy torch serialization (five pickles and raw storages)", offset=0)
    return Container(
        path=ctx.path,
        format=Format.TORCH_LEGACY,
        pickles=tuple(streams),
        legacy_tail=tail,
        member=ctx.where,
    )


def _check_tail(
    ctx: Ctx, buf: memoryview, keys: PickleStream, tail_start: int
) -> list[PickleStream]:
    """When the storage-key list is no list of strings, the tail cannot be storages."""
    res = walk(keys.data, 0, ctx.walk_limits)
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
