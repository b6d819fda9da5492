"""safetensors header validation, stricter than the reference parser where it is lax.

Layout: u64 little-endian header length N, N bytes of JSON, then the data buffer. Every rule
the Rust validator applies is applied here, plus one it skips: duplicate JSON keys, which
the reference parser silently resolves to the last one (a parser-differential risk).
"""

from __future__ import annotations

import json
import math
import struct

from gpenguard.formats._context import Ctx
from gpenguard.formats.container import Container, Format

DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}  # fmt: skip


def looks_like(buf: memoryview) -> bool:
    """Framing only: a sane length followed by a JSON object."""
    if len(buf) < 10:
        return False
    (n,) = struct.unpack_from("<Q", buf, 0)
    return 2 <= n <= len(buf) - 8 and buf[8] == ord("{")


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen[key] = value
    return seen


def validate(ctx: Ctx, buf: memoryview) -> list[str]:
    """Every reason the header is invalid (empty when valid)."""
    (n,) = struct.unpack_from("<Q", buf, 0)
    if n > ctx.limits.max_safetensors_header:
        return [f"header of {n} bytes exceeds the {ctx.limits.max_safetensors_header}-byte bound"]
    raw = bytes(buf[8 : 8 + n])
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _Duplicate as exc:
        return [f"duplicate key {exc.args[0]!r} in the header"]
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return [f"header is not JSON: {exc}"]
    if not isinstance(header, dict):
        return ["header is not a JSON object"]
    problems: list[str] = []
    meta = header.pop("__metadata__", None)
    if meta is not None and (
        not isinstance(meta, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    ):
        problems.append("__metadata__ must map strings to strings")
    data_len = len(buf) - 8 - n
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        why = _check_entry(entry)
        if isinstance(why, str):
            problems.append(f"tensor {name!r}: {why}")
        else:
            spans.append((why[0], why[1], name))
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            kind = (
                "overlaps the previous tensor"
                if begin < pos
                else f"leaves a hole of {begin - pos} bytes"
            )
            problems.append(f"tensor {name!r} at {begin} {kind}")
        pos = max(pos, end)
    if pos != data_len:
        problems.append(f"tensors cover {pos} bytes of a {data_len}-byte data buffer")
    return problems


def _check_entry(entry: object) -> str | tuple[int, int]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        return "entry must have exactly dtype, shape and data_offsets"
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        return f"unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        return f"bad shape {shape!r}"
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
    ):
        return f"bad data_offsets {offsets!r}"
    begin, end = offsets
    if end < begin:
        return f"data_offsets end {end} before begin {begin}"
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8:
        return f"{dtype} tensor of shape {shape} does not fill whole bytes"
    if end - begin != bits // 8:
        return f"shape {shape} of {dtype} needs {bits // 8} bytes, data_offsets span {end - begin}"
    return begin, end


def read_safetensors(ctx: Ctx, buf: memoryview) -> Container:
    for problem in validate(ctx, buf):
        ctx.add("GG300", problem, offset=8)
    return Container(path=ctx.path, format=Format.SAFETENSORS, member=ctx.where)
