"""Load converted weights (.safetensors) into our networks, strictly.

Only safetensors files reach the networks: they hold raw tensors and a JSON header, so
reading them executes nothing. Every key, shape and dtype kind is checked against the module
before anything is copied, and a mismatch names the file and the key: a checkpoint for a
different architecture, or one with a key renamed or resized, is refused as a whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from gpenguard.errors import FormatError, InputError, ModelError

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


def read_safetensors(path: str | Path) -> dict[str, Tensor]:
    """All tensors of a .safetensors file on CPU, with errors translated to ours."""
    p = Path(path)
    if not p.is_file():
        raise InputError("not a file" if p.exists() else "no such file", path=p)
    try:
        return load_file(str(p), device="cpu")
    except SafetensorError as exc:
        raise FormatError(f"not a valid safetensors file: {exc}", path=p) from exc
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=p) from exc


def load_safetensors(module: nn.Module, path: str | Path) -> nn.Module:
    """Load `path` into `module` with ``strict=True`` semantics; returns the module."""
    tensors = read_safetensors(path)
    load_state_dict_strict(module, tensors, source=path)
    return module


__all__ = ["check_state_dict", "load_safetensors", "load_state_dict_strict", "read_safetensors"]
