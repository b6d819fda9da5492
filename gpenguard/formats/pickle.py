"""Bare pickles and streams of pickles: where each program starts and ends.

Protocols 2-5 announce themselves with PROTO; protocols 0 and 1 have no header at all, so a
file counts as a pickle when its opcodes decode to a STOP, or when a run of valid opcodes
imports something before the bytes break off (the truncated-payload trick).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpenguard.formats._context import Ctx
from gpenguard.formats.container import Container, Format, PickleStream
from gpenguard.pickling.opcodes import extent


@dataclass(frozen=True, slots=True)
class Probe:
    """What decoding (not running) the opcodes at one offset showed."""

    end: int | None
    """Offset after STOP, None when decoding failed first."""
    ops: int
    imports: int
    proto: int | None

    @property
    def complete(self) -> bool:
        return self.end is not None


def probe(buf: memoryview, start: int = 0, *, max_ops: int = 50_000_000) -> Probe:
    """Decode opcodes from `start` until STOP, an error or `max_ops`."""
    end, ops, imports = extent(buf, start, max_ops=max_ops)
    proto = buf[start + 1] if starts_with_proto(buf, start) else None
    return Probe(end, ops, imports, proto)


def starts_with_proto(buf: memoryview, start: int = 0) -> bool:
    return len(buf) >= start + 2 and buf[start] == 0x80 and buf[start + 1] <= 5


def looks_like_pickle(buf: memoryview, start: int = 0, *, max_ops: int = 50_000_000) -> bool:
    """Whether the bytes at `start` are a pickle an unpickler would at least start running."""
    if start >= len(buf):
        return False
    if starts_with_proto(buf, start):
        return True
    p = probe(buf, start, max_ops=max_ops)
    if p.complete:
        return True
    return p.ops >= 4 and p.imports > 0


def split_stream(
    ctx: Ctx,
    buf: memoryview,
    *,
    member: str | None,
    expect: int = 1,
    first_index: int = 0,
    start: int = 0,
) -> list[PickleStream]:
    """Every pickle program in `buf`, one after another, flagging extras and trailing bytes.

    `member` is relative to the current container (None: the container itself). The first
    program is always returned, even when broken, so the scanner reports why.
    """
    streams: list[PickleStream] = []
    where = ctx.sub(member) if member is not None else ctx.where
    pos = start
    max_ops = ctx.limits.max_opcodes
    while pos < len(buf):
        index = first_index + len(streams)
        if (streams or expect == 0) and not looks_like_pickle(buf, pos, max_ops=max_ops):
            if streams:
                ctx.add(
                    "GG112",
                    f"{len(buf) - pos} bytes of non-pickle data after the last STOP",
                    member=member,
                    offset=pos,
                )
            break
        p = probe(buf, pos, max_ops=max_ops)
        stop = p.end if p.end is not None else len(buf)
        if len(streams) >= expect:
            ctx.add(
                "GG113",
                f"pickle #{index + 1} follows where {expect} expected; scanned too",
                member=member,
                offset=pos,
            )
        streams.append(
            PickleStream(
                member=where, offset=pos, data=buf[pos:stop], index=index, record=buf[pos:]
            )
        )
        if p.end is None or len(streams) >= ctx.limits.max_members:
            break
        pos = p.end
    return streams


def read_bare(ctx: Ctx, buf: memoryview) -> Container:
    """A file that is one pickle (or several): what ``torch.load`` treats as a legacy file."""
    streams = split_stream(ctx, buf, member=None)
    ctx.add("GG305", "bare pickle, not a torch container", offset=0)
    return Container(path=ctx.path, format=Format.PICKLE, pickles=tuple(streams), member=ctx.where)
