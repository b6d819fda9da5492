"""Zip containers: torch checkpoints (``torch.save`` since 1.6), .npz, and plain zips.

torch (`PyTorchStreamReader`) takes the archive root from the first central-directory entry
and looks every record up as ``<root>/<name>`` with miniz's case-insensitive search:
``data.pkl``, ``byteorder``, ``.data/version`` (else ``version``), ``.storage_alignment`` and
``data/<key>`` for each storage. The records it reads are found here the same way, and what
it does with them (version parsed as ``std::stoull``, byte order, deflated storages that its
mmap path reads raw) is checked. The scanner looks further than torch does: every member
that is a pickle, an .npy or another archive is inspected, whatever its name, because other
loaders (and later torch versions) may read it. Storage records are raw tensor bytes that no
loader unpickles, so they are never judged as pickles.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from gpenguard.formats import members as _members
from gpenguard.formats._context import Ctx
from gpenguard.formats.container import Container, Format, PickleStream
from gpenguard.formats.numpy import is_npy
from gpenguard.formats.ziparchive import (
    LazyStorages,
    Member,
    ZipReadError,
    member_bytes,
    open_directory,
)

MIN_VERSION, MAX_VERSION = 1, 10
"""The archive versions torch 2.13 reads (``caffe2/serialize/versions.h``)."""
_STOULL = re.compile(rb"[ \t\n\v\f\r]*[+-]?([0-9]+)")


def read_zip(ctx: Ctx, buf: memoryview) -> Container:
    """Read a zip archive and classify it as torch checkpoint, .npz or plain zip."""
    members = open_directory(ctx, buf)
    entries = [m for m in members if not m.hidden]  # what torch's reader lists
    index: dict[bytes, Member] = {}
    for m in entries:
        index.setdefault(m.info.key, m)
    first = entries[0].info.raw_name if entries else b""
    root_raw = first.split(b"/", 1)[0] if b"/" in first else None

    def record(name: str) -> Member | None:
        """What torch's getRecord(name) reads: ``root/name``, ASCII case folded."""
        assert root_raw is not None
        return index.get((root_raw + b"/" + name.encode()).lower())

    main = record("data.pkl") if root_raw is not None else None
    is_torch = main is not None
    root = root_raw.decode("utf-8", "surrogateescape") if root_raw is not None else None
    # what miniz calls a directory but holds data is still inspected: zipfile reads those bytes
    files = [m for m in members if not m.info.is_dir or m.info.file_size]
    storages: dict[str, Member] = {}
    byteorder: str | None = None
    if is_torch:
        assert root_raw is not None
        _check_torchscript(ctx, entries, root_raw)
        # getAllRecords (called by every torch.load) throws on a name without the root prefix
        outside = [m.name for m in entries if not m.info.raw_name.startswith(root_raw + b"/")]
        if outside:
            ctx.add(
                "GG211",
                f"{len(outside)} members outside the root folder {root!r} (first: "
                f"{outside[0][:80]!r}): torch.load refuses the archive, zip tools read them",
            )
        prefix = (root_raw + b"/data/").lower()
        for m in entries:
            if m.info.key.startswith(prefix) and len(m.info.key) > len(prefix):
                key = m.info.raw_name[len(prefix) :].decode("utf-8", "surrogateescape")
                storages.setdefault(key, m)
                if m.info.compress_type != 0:
                    ctx.add(
                        "GG216",
                        "compressed storage: torch.load inflates it, but torch.load(mmap=True) "
                        "maps the compressed bytes as the tensor",
                        member=m.name,
                    )
        byteorder = _records(ctx, buf, record)
    npz_members = 0
    storage_ids = {id(m): key for key, m in storages.items()}
    inflated: dict[str, memoryview] = {}
    pickles: list[PickleStream] = []
    children: list[Container] = []
    for m in files:
        is_storage = id(m) in storage_ids
        try:
            data = member_bytes(ctx, buf, m, check_crc=not is_storage)
        except ZipReadError as exc:
            if not exc.reported:
                ctx.add("GG212", f"member not inspected: {exc}", member=m.name)
            continue
        if is_npy(data):
            npz_members += 1
        if is_storage:
            if m.info.compress_type != 0:
                inflated[storage_ids[id(m)]] = data  # keep it: the reader must not inflate twice
            continue
        found, kids = _members.inspect(ctx, m.name, data, main_pickle=m is main, torch_zip=is_torch)
        pickles += found
        children += kids
    fmt = (
        Format.TORCH_ZIP
        if is_torch
        else Format.NUMPY_ZIP
        if files and npz_members == len(files)
        else Format.ZIP
    )
    return Container(
        path=ctx.path,
        format=fmt,
        pickles=tuple(pickles),
        storages=LazyStorages(ctx, buf, storages, inflated) if is_torch else {},
        children=tuple(children),
        member=ctx.where,
        root=root if is_torch else None,
        main_pickle=main.name if main is not None else None,
        byteorder=byteorder,
    )


def _check_torchscript(ctx: Ctx, entries: list[Member], root: bytes) -> None:
    # getAllRecords reads names as C strings (a NUL ends them); the test is on constants.pkl.
    for m in entries:
        name = m.info.raw_name.split(b"\0", 1)[0].lower()
        if name == (root + b"/constants.pkl").lower() or name.startswith(
            (root + b"/code/").lower()
        ):
            ctx.add(
                "GG210",
                "TorchScript archive: torch.jit.load would run the code it carries",
                member=m.name,
            )
            return


def _records(ctx: Ctx, buf: memoryview, record: Callable[[str], Member | None]) -> str | None:
    """Check the small records torch reads before the pickle; return the byte order."""

    def read(name: str) -> tuple[Member, bytes] | None:
        m = record(name)
        if m is None:
            return None
        try:
            return m, bytes(member_bytes(ctx, buf, m))
        except ZipReadError as exc:
            ctx.add("GG212", f"record torch reads cannot be read: {exc}", member=m.name)
            return None

    version = read(".data/version") or read("version")
    if version is None:
        ctx.add("GG216", "no version record: torch refuses the archive, other readers do not")
    else:
        match = _STOULL.match(version[1])
        value = int(match.group(1)) if match else None
        if match and version[1].lstrip()[:1] == b"-":
            value = None  # stoull wraps a negative number around to a huge one
        if value is None or not MIN_VERSION <= value <= MAX_VERSION:
            ctx.add(
                "GG216",
                f"version record {version[1][:40]!r}: torch refuses the archive",
                member=version[0].name,
            )
    alignment = read(".storage_alignment")
    if alignment is not None:
        try:
            int(alignment[1])
        except ValueError:
            ctx.add(
                "GG216",
                f".storage_alignment {alignment[1][:40]!r} is no integer: torch refuses the archive",
                member=alignment[0].name,
            )
    order = read("byteorder")
    if order is None:
        return None
    if order[1] not in (b"little", b"big"):
        ctx.add(
            "GG216",
            f"byteorder record {order[1][:40]!r} is neither 'little' nor 'big': torch refuses it",
            member=order[0].name,
        )
        return None
    return order[1].decode()
