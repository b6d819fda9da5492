"""Loading the pipeline's weights: only ``.safetensors`` files, strictly, into our own modules.

Safetensors cannot carry code, so reading one executes nothing. Every key and shape must
match the module exactly; the only tolerated differences are the ones the original loaders
tolerated by design: a DataParallel ``module.`` prefix (RetinaFace-R50 has one) and
BatchNorm ``num_batches_tracked`` counters, which older checkpoints lack and which inference
never reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from gpenguard.errors import InputError, ModelError

_PREFIX = "module."
_COUNTER = "num_batches_tracked"

M = TypeVar("M", bound=nn.Module)


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file, on CPU; errors name the file."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ModelError(
            "weights must be a .safetensors file (run `gpenguard convert` on the checkpoint)",
            path=path,
        )
    try:
        return load_file(str(path), device="cpu")
    except FileNotFoundError as exc:
        raise InputError("weights file not found", path=path) from exc
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"not a readable safetensors file: {exc}", path=path) from exc


def fit_state_dict(
    module: nn.Module, tensors: Mapping[str, torch.Tensor], *, source: str | Path
) -> dict[str, torch.Tensor]:
    """Check ``tensors`` against ``module``'s state_dict and return what to load.

    Raises `ModelError` listing missing, unexpected and mis-shaped keys (a few of each).
    """
    if tensors and all(k.startswith(_PREFIX) for k in tensors):
        tensors = {k[len(_PREFIX) :]: v for k, v in tensors.items()}
    expected = module.state_dict()
    fitted = dict(tensors)
    for key, value in expected.items():
        if key.endswith(_COUNTER) and key not in fitted:
            fitted[key] = torch.zeros_like(value)
    missing = [k for k in expected if k not in fitted]
    unexpected = [k for k in fitted if k not in expected]
    shapes = [
        f"{k} {tuple(fitted[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in fitted and fitted[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{label}: {', '.join(items[:3])}{more}")
        raise ModelError(
            f"weights do not fit {type(module).__name__}: " + "; ".join(parts), path=source
        )
    return fitted


def load_into(module: M, path: str | Path) -> M:
    """Strictly load a ``.safetensors`` file into ``module`` (in place) and return it."""
    fitted = fit_state_dict(module, read_safetensors(path), source=path)
    module.load_state_dict(fitted, strict=True)
    return module
