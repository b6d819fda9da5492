"""What an archive member holds: a pickle, an .npy, another archive, or inert bytes.

Shared by the zip and tar readers, so both look at members the same way: by content, with
the name only deciding what is *expected* (one pickle in ``data.pkl``, raw bytes in a storage).
"""

from __future__ import annotations

from gpenguard.formats._context import Ctx
from gpenguard.formats.container import Container, PickleStream
from gpenguard.formats.numpy import inspect_npy, is_npy
from gpenguard.formats.pickle import looks_like_pickle, split_stream


def inspect(
    ctx: Ctx,
    name: str,
    data: memoryview,
    *,
    storage: bool = False,
    main_pickle: bool = False,
    torch_zip: bool = False,
) -> tuple[list[PickleStream], list[Container]]:
    """Pickles found in member `name`, and containers nested in it."""
    from gpenguard.formats import detect

    if not data:
        return [], []
    if storage:
        # Raw tensor bytes: no loader unpickles a storage record, and random bytes decode as
        # a short "pickle" often enough to block ordinary checkpoints at random.
        return [], []
    if main_pickle:
        # torch unpickles this record whatever else its bytes could be (a tar whose header
        # holds a pickle program, say): judged as a pickle first, as anything else besides
        kids = []
        if detect.sniff_archive(data, ctx.limits) is not None:
            child = detect.read_nested(ctx, name, data)
            kids = [child] if child is not None else []
        return split_stream(ctx, data, member=name), kids
    if detect.sniff_archive(data, ctx.limits) is not None:
        child = detect.read_nested(ctx, name, data)
        return [], [child] if child is not None else []
    if is_npy(data):
        return inspect_npy(ctx, data, name), []
    if name.lower().endswith((".pkl", ".pickle")) or looks_like_pickle(
        data, max_ops=ctx.limits.max_opcodes
    ):
        if torch_zip and not name.endswith("/constants.pkl"):
            ctx.add("GG214", "pickle member other than data.pkl; scanned as well", member=name)
        return split_stream(ctx, data, member=name), []
    return [], []
