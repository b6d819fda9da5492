""".npy arrays and .npz archives of them.

An .npy file is a magic string, a version, a Python-literal header dict and the raw data. If
the dtype holds Python objects, the "data" is a pickle that ``numpy.load(allow_pickle=True)``
runs; that pickle is handed to the scanner like any other.
"""

from __future__ import annotations

import ast
import math
import struct
from dataclasses import dataclass

from gpenguard.formats._context import Ctx
from gpenguard.formats.container import Container, Format, PickleStream
from gpenguard.formats.pickle import split_stream

MAGIC = b"\x93NUMPY"
_MAX_HEADER = 1 << 20


@dataclass(frozen=True, slots=True)
class NpyHeader:
    descr: object
    fortran_order: bool
    shape: tuple[int, ...]
    data_offset: int
    has_object: bool


class NpyError(Exception):
    """The .npy header is invalid (message says how)."""


def is_npy(buf: memoryview) -> bool:
    return bytes(buf[:6]) == MAGIC


def parse_header(buf: memoryview) -> NpyHeader:
    """Parse and validate the header without numpy's pickle-capable loader."""
    if len(buf) < 10 or not is_npy(buf):
        raise NpyError("no .npy magic")
    major = buf[6]
    if major == 1:
        (hlen,) = struct.unpack_from("<H", buf, 8)
        start = 10
    elif major in (2, 3):
        if len(buf) < 12:
            raise NpyError("truncated header")
        (hlen,) = struct.unpack_from("<I", buf, 8)
        start = 12
    else:
        raise NpyError(f"unknown .npy version {major}")
    if hlen > _MAX_HEADER or start + hlen > len(buf):
        raise NpyError(f"header of {hlen} bytes does not fit the file")
    text = bytes(buf[start : start + hlen]).decode("utf-8" if major == 3 else "latin-1", "replace")
    try:
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise NpyError(f"header is not a Python literal: {type(exc).__name__}") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise NpyError("header must be a dict with exactly descr, fortran_order and shape")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise NpyError(f"bad shape {shape!r}")
    if not isinstance(header["fortran_order"], bool):
        raise NpyError("fortran_order must be a bool")
    descr = header["descr"]
    return NpyHeader(descr, header["fortran_order"], shape, start + hlen, _has_object(descr, 0))


def _has_object(descr: object, depth: int) -> bool:
    if depth > 32:
        raise NpyError("dtype description nests too deep")
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, list):
        for field in descr:
            if not isinstance(field, tuple) or len(field) < 2:
                raise NpyError(f"bad structured dtype field {field!r}")
            if _has_object(field[1], depth + 1):
                return True
        return False
    if isinstance(descr, tuple) and len(descr) == 2:
        return _has_object(descr[0], depth + 1)
    raise NpyError(f"bad dtype description {descr!r}")


def _itemsize(descr: object) -> int | None:
    import numpy as np

    try:
        return int(np.dtype(descr).itemsize)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def inspect_npy(ctx: Ctx, buf: memoryview, member: str | None) -> list[PickleStream]:
    """Findings for one .npy (at `member` of the current container); its pickle if any."""
    try:
        head = parse_header(buf)
    except NpyError as exc:
        ctx.add("GG301", f"invalid .npy header: {exc}", member=member, offset=0)
        return []
    if head.has_object:
        ctx.add(
            "GG302",
            "object-dtype array: its data is a pickle",
            member=member,
            offset=head.data_offset,
        )
        return split_stream(ctx, buf, member=member, start=head.data_offset)
    size = _itemsize(head.descr)
    if size is None:
        ctx.add("GG301", f"unknown dtype {head.descr!r}", member=member, offset=0)
        return []
    need = math.prod(head.shape) * size
    have = len(buf) - head.data_offset
    if have < need:
        ctx.add(
            "GG301",
            f"array needs {need} data bytes, the file holds {have}",
            member=member,
            offset=head.data_offset,
        )
    elif have > need:
        ctx.add(
            "GG112",
            f"{have - need} bytes after the array data",
            member=member,
            offset=head.data_offset + need,
        )
    return []


def read_npy(ctx: Ctx, buf: memoryview) -> Container:
    pickles = inspect_npy(ctx, buf, None)
    return Container(path=ctx.path, format=Format.NUMPY, pickles=tuple(pickles), member=ctx.where)
