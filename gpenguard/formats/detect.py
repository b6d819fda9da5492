"""Which format a byte buffer is, decided by content in the order torch.load decides it.

torch.load treats a file as a zip when it starts with a local-header signature, else tries
tar, else unpickles it. A file valid under more than one reading is a polyglot: the reading
torch would use is the container, every other valid reading is inspected as a child, and
the ambiguity itself is a finding.
"""

from __future__ import annotations

import dataclasses
import struct

from gpenguard.errors import FormatError, LimitExceeded
from gpenguard.formats import safetensors
from gpenguard.formats._context import Ctx
from gpenguard.formats.container import Container, Limits
from gpenguard.formats.legacy import is_legacy, read_legacy
from gpenguard.formats.numpy import is_npy, read_npy
from gpenguard.formats.pickle import looks_like_pickle, probe, read_bare
from gpenguard.formats.source import Source
from gpenguard.formats.tar import is_tar, read_tar
from gpenguard.formats.torchzip import read_zip
from gpenguard.formats.zipdir import DirectoryError, find_end, read_directory

_EOCD = b"PK\x05\x06"
_ARCHIVES = ("zip", "tar", "legacy", "zip-embedded")


def interpretations(buf: memoryview, limits: Limits) -> list[str]:
    """Every format the bytes are valid as, the one torch.load would pick first."""
    kinds: list[str] = []
    head = bytes(buf[:4])
    if head in (b"PK\x03\x04", _EOCD):
        kinds.append("zip")
    if is_tar(buf):
        kinds.append("tar")
    if is_npy(buf):
        kinds.append("npy")
    if safetensors.looks_like(buf):
        kinds.append("safetensors")
    if _pickle_reading(buf, limits, secondary=bool(kinds)):
        kinds.insert(
            len([k for k in kinds if k in ("zip", "tar")]), "legacy" if is_legacy(buf) else "pickle"
        )
    if "zip" not in kinds and _embedded_zip(buf):
        kinds.append("zip-embedded")
    return kinds


def _pickle_reading(buf: memoryview, limits: Limits, *, secondary: bool) -> bool:
    if not secondary:
        return looks_like_pickle(buf, max_ops=limits.max_opcodes)
    if bytes(buf[:1]) == b"P":
        # PERSID first: CPython's unpickler stops there (no persistent_load), torch.load's
        # legacy reader stops there (the id is no storage tuple, no int), its weights-only
        # one refuses the opcode. No loader runs what follows, so it is not a reading; a zip
        # (``PK``) decoded this way made ordinary checkpoints look like polyglots at random.
        return False
    # Next to another valid reading, only a complete program that imports something counts:
    # random header bytes decode as a few opcodes often enough to cry wolf otherwise.
    p = probe(buf, 0, max_ops=min(limits.max_opcodes, 1_000_000))
    return p.complete and p.imports > 0


def _embedded_zip(buf: memoryview) -> bool:
    if find_end(buf) is None:
        return False
    try:
        return bool(read_directory(buf, max_entries=1).entries)
    except (DirectoryError, struct.error):
        return False


def sniff_archive(buf: memoryview, limits: Limits) -> str | None:
    """The archive-like reading of a member (zip, tar, legacy torch), if any."""
    if len(buf) < 4:
        return None
    head = bytes(buf[:4])
    if head in (b"PK\x03\x04", _EOCD):
        return "zip"
    if is_tar(buf):
        return "tar"
    if head[:1] == b"\x80" and is_legacy(buf):
        return "legacy"
    return None


def _read_as(kind: str, ctx: Ctx, buf: memoryview) -> Container:
    if kind in ("zip", "zip-embedded"):
        box = read_zip(ctx, buf)
    elif kind == "tar":
        box = read_tar(ctx, buf)
    elif kind == "legacy":
        box = read_legacy(ctx, buf)
    elif kind == "pickle":
        box = read_bare(ctx, buf)
    elif kind == "npy":
        box = read_npy(ctx, buf)
    elif kind == "safetensors":
        box = safetensors.read_safetensors(ctx, buf)
    else:  # pragma: no cover - kinds come from interpretations()
        raise AssertionError(kind)
    return box


def _read(ctx: Ctx, buf: memoryview, kinds: list[str]) -> Container:
    box = _read_as(kinds[0], ctx, buf)
    extra: list[Container] = []
    for kind in kinds[1:]:
        ctx.add(
            "GG207",
            f"read as {kinds[0]}, but also valid as {kind}; both readings inspected",
            offset=0,
        )
        sub = ctx.child(f"[as {kind}]")
        try:
            extra.append(
                dataclasses.replace(_read_as(kind, sub, buf), findings=tuple(sub.findings))
            )
        except FormatError as exc:
            ctx.add("GG212", f"the {kind} reading cannot be inspected: {exc.message}", offset=0)
    return dataclasses.replace(
        box, findings=tuple(ctx.findings), children=box.children + tuple(extra)
    )


def read_top(source: Source, limits: Limits) -> Container:
    """`read_container` for a whole file."""
    buf = source.buf
    if source.size == 0:
        raise FormatError("not a checkpoint: empty file", path=source.name)
    if source.size > limits.max_file_bytes:
        raise LimitExceeded(
            f"file of {source.size} bytes exceeds the {limits.max_file_bytes}-byte bound",
            path=source.name,
        )
    kinds = interpretations(buf, limits)
    if not kinds:
        first = bytes(buf[:16]).hex(" ")
        raise FormatError(
            f"not a checkpoint: unrecognised content (first bytes {first})", path=source.name
        )
    return _read(Ctx(source.name, limits), buf, kinds)


def read_nested(ctx: Ctx, name: str, data: memoryview) -> Container | None:
    """A container stored as member `name` of the current one, within the nesting bound."""
    if ctx.depth + 1 > ctx.limits.max_nesting:
        ctx.add(
            "GG213",
            f"nested deeper than {ctx.limits.max_nesting} levels; not inspected",
            member=name,
        )
        return None
    kinds = [k for k in interpretations(data, ctx.limits) if k in _ARCHIVES]
    if not kinds:
        return None
    ctx.add("GG209", f"{kinds[0]} nested inside the archive; inspected recursively", member=name)
    sub = ctx.child(name)
    try:
        return _read(sub, data, kinds)
    except FormatError as exc:
        ctx.add("GG212", f"nested {kinds[0]} cannot be read: {exc.message}", member=name)
        return None
