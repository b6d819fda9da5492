"""Zip containers: torch checkpoints (``torch.save`` since 1.6), .npz, and plain zips.

torch takes the archive root from the first central-directory entry, reads
``<root>/data.pkl`` and the storages under ``<root>/data/``, and nothing else. The scanner
looks further than torch does: every member that is a pickle, an .npy or another archive is
inspected, whatever its name, because other loaders (and later torch versions) may read it.
"""

from __future__ import annotations

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


def read_zip(ctx: Ctx, buf: memoryview) -> Container:
    """Read a zip archive and classify it as torch checkpoint, .npz or plain zip."""
    entries = open_directory(ctx, buf)
    files = [m for m in entries if not m.name.endswith("/")]
    root = entries[0].name.split("/", 1)[0] if entries and "/" in entries[0].name else None
    names = {m.name for m in files}
    is_torch = root is not None and f"{root}/data.pkl" in names
    storages: dict[str, Member] = {}
    pickles: list[PickleStream] = []
    children: list[Container] = []
    if is_torch:
        assert root is not None
        if f"{root}/constants.pkl" in names or any(n.startswith(f"{root}/code/") for n in names):
            ctx.add(
                "GG210",
                "TorchScript archive: torch.jit.load would run the code it carries",
                member=f"{root}/constants.pkl",
            )
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) > 1:
            ctx.add(
                "GG211",
                f"members under {len(roots)} top-level folders: {', '.join(sorted(roots)[:5])}",
            )
        prefix = f"{root}/data/"
        for m in files:
            key = m.name[len(prefix) :]
            if m.name.startswith(prefix) and key and "/" not in key and key not in storages:
                storages[key] = m
    npz_members = 0
    storage_keys = {id(m): key for key, m in storages.items()}
    inflated: dict[str, memoryview] = {}
    for m in files:
        try:
            data = member_bytes(ctx, buf, m, check_crc=id(m) not in storage_keys)
        except ZipReadError as exc:
            if not exc.reported:
                ctx.add("GG212", f"member not inspected: {exc}", member=m.name)
            continue
        if is_npy(data):
            npz_members += 1
        is_storage = id(m) in storage_keys
        if is_storage and m.info.compress_type != 0:
            inflated[storage_keys[id(m)]] = data  # keep it: the reader must not inflate twice
        main = is_torch and m.name == f"{root}/data.pkl"
        found, kids = _members.inspect(
            ctx, m.name, data, storage=is_storage, main_pickle=main, torch_zip=is_torch
        )
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
    )
