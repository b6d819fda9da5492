"""Load converted weights (.safetensors) into our networks, strictly.

Only safetensors files reach the networks: they hold raw tensors and a JSON header, so
reading them executes nothing. Every key, shape and dtype kind is checked against the module
before anything is copied, and a mismatch names the file and the key: a checkpoint for a
different architecture, or one with a key renamed or resized, is refused as a whole.

Files are read into memory once and the tensors copied out of those bytes, never mapped:
``safetensors.torch.load_file`` returns tensors backed by a mapping of the file, so a file
rewritten after it was checked would change the weights in use. Here the bytes that are
hashed (``sha256=``) are the bytes that are used.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, deserialize
from torch import Tensor, nn

from gpenguard.errors import FormatError, InputError, LimitExceeded, ModelError, VerificationError

#: Larger than any network gpenguard runs (GPEN-BFR-2048 is 285 MB); a bound, not a guess.
MAX_WEIGHTS_BYTES = 4 * 2**30

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_SHOWN = 5


def _names(keys: list[str]) -> str:
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def check_state_dict(
    module: nn.Module, tensors: Mapping[str, Tensor], *, source: str | Path
) -> None:
    """Raise ModelError unless `tensors` has exactly the module's keys, shapes and kinds."""
    expected = module.state_dict()
    name = type(module).__name__
    missing = [k for k in expected if k not in tensors]
    unexpected = sorted(k for k in tensors if k not in expected)
    if missing:
        raise ModelError(f"{len(missing)} key(s) of {name} missing: {_names(missing)}", path=source)
    if unexpected:
        raise ModelError(
            f"{len(unexpected)} unexpected key(s) for {name}: {_names(unexpected)}", path=source
        )
    for key, want in expected.items():
        got = tensors[key]
        if tuple(got.shape) != tuple(want.shape):
            raise ModelError(
                f"{key}: shape {list(got.shape)} in the file, {name} expects {list(want.shape)}",
                path=source,
            )
        if got.is_floating_point() != want.is_floating_point() or got.is_complex():
            raise ModelError(f"{key}: dtype {got.dtype} does not fit {want.dtype}", path=source)


def load_state_dict_strict(
    module: nn.Module, tensors: Mapping[str, Tensor], *, source: str | Path
) -> None:
    """Check, then load `tensors` into `module`, cast to the module's dtypes and device.

    A module built on the meta device (no random init to pay for) gets the tensors where
    they are, normally the CPU.
    """
    check_state_dict(module, tensors, source=source)
    current = module.state_dict()
    ready = {
        k: t.to(dtype=current[k].dtype, device=None if current[k].is_meta else current[k].device)
        for k, t in tensors.items()
    }
    # assign=True hands the (already converted) tensors to the module instead of copying them
    # into its own random init: one copy of the weights in memory, not two.
    module.load_state_dict(ready, strict=True, assign=True)


def read_safetensors(
    path: str | Path, *, sha256: str | None = None, max_bytes: int = MAX_WEIGHTS_BYTES
) -> dict[str, Tensor]:
    """All tensors of a .safetensors file, on the CPU, in memory this process owns.

    With `sha256` (hex), the bytes read are checked first and VerificationError raised on a
    mismatch; the tensors are then built from those same bytes.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise LimitExceeded(f"{size} bytes, more than the {max_bytes} allowed", path=p)
            data = fh.read(size + 1)
    except IsADirectoryError as exc:
        raise InputError("not a file", path=p) from exc
    except FileNotFoundError as exc:
        raise InputError("no such file", path=p) from exc
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=p) from exc
    if len(data) != size:
        raise InputError("the file changed size while it was read", path=p)
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(digest, sha256.lower()):
            raise VerificationError(f"sha256 {digest}, expected {sha256.lower()}", path=p)
    return tensors_from_bytes(data, source=p)


def tensors_from_bytes(data: bytes, *, source: str | Path) -> dict[str, Tensor]:
    """Parse safetensors bytes into tensors that own their memory (copied, never shared)."""
    if sys.byteorder != "little":
        raise FormatError("safetensors data is little-endian; this host is not", path=source)
    try:
        # a fresh bytearray per tensor: a copy this process alone owns
        views: list[tuple[str, dict[str, Any]]] = deserialize(data)  # type: ignore[no-untyped-call]
    except SafetensorError as exc:
        raise FormatError(f"not a valid safetensors file: {exc}", path=source) from exc
    tensors: dict[str, Tensor] = {}
    for name, view in views:
        dtype = _DTYPES.get(view["dtype"])
        if dtype is None:
            raise FormatError(f"{name}: unsupported dtype {view['dtype']}", path=source)
        if len(view["data"]) == 0:
            tensors[name] = torch.empty(view["shape"], dtype=dtype)
        else:
            tensors[name] = torch.frombuffer(view["data"], dtype=dtype).reshape(view["shape"])
    return tensors


def load_safetensors(
    module: nn.Module, path: str | Path, *, sha256: str | None = None
) -> nn.Module:
    """Load `path` into `module` with ``strict=True`` semantics; returns the module."""
    tensors = read_safetensors(path, sha256=sha256)
    load_state_dict_strict(module, tensors, source=path)
    return module


__all__ = [
    "MAX_WEIGHTS_BYTES",
    "check_state_dict",
    "load_safetensors",
    "load_state_dict_strict",
    "read_safetensors",
    "tensors_from_bytes",
]
