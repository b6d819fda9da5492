"""Loading the pipeline's weights: only ``.safetensors`` files, strictly, into our own modules.

The strict check and the copy are `gpenguard.nets.loading`'s; this adds the two differences
the original loaders tolerated by design, and nothing else: a DataParallel ``module.`` prefix
on every key (RetinaFace-R50 has one), and missing BatchNorm ``num_batches_tracked`` counters
(older checkpoints lack them; inference never reads them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from gpenguard.errors import ModelError
from gpenguard.nets import loading

_PREFIX = "module."
_COUNTER = "num_batches_tracked"

M = TypeVar("M", bound=nn.Module)
#: Where a network's weights come from: a ``.safetensors`` path, or tensors already read (and
#: verified) by the caller, so the bytes that were hashed are the bytes that are used.
WeightSource = Path | Mapping[str, torch.Tensor]


def normalise_keys(
    module: nn.Module, tensors: Mapping[str, torch.Tensor], *, nested: str | None = None
) -> dict[str, torch.Tensor]:
    """Strip a ``module.`` prefix carried by every key; add absent BatchNorm counters as 0.

    ``nested`` names a sub-dict flattened into the keys (``params_ema`` in BasicSR files that
    hold both ``params`` and ``params_ema``): only its entries are kept, without the prefix.
    """
    if nested is not None and any(k.startswith(f"{nested}.") for k in tensors):
        cut = len(nested) + 1
        tensors = {k[cut:]: v for k, v in tensors.items() if k.startswith(f"{nested}.")}
    if tensors and all(k.startswith(_PREFIX) for k in tensors):
        tensors = {k[len(_PREFIX) :]: v for k, v in tensors.items()}
    fitted = dict(tensors)
    for key, value in module.state_dict().items():
        if key.rsplit(".", 1)[-1] == _COUNTER and key not in fitted:
            fitted[key] = torch.zeros(value.shape, dtype=value.dtype)
    return fitted


def load_into(
    module: M, source: str | WeightSource, *, role: str = "weights", nested: str | None = None
) -> M:
    """Strictly load a ``.safetensors`` file, or tensors already in memory, into ``module``
    (in place) and return it.

    ``module`` may live on the meta device; it then receives the tensors directly.
    """
    if isinstance(source, Mapping):
        tensors = normalise_keys(module, source, nested=nested)
        loading.load_state_dict_strict(module, tensors, source=f"<{role} tensors>")
        return module
    path = Path(source)
    if path.suffix != ".safetensors":
        raise ModelError(
            "weights must be a .safetensors file (run `gpenguard convert` on the checkpoint)",
            path=path,
        )
    tensors = normalise_keys(module, loading.read_safetensors(path), nested=nested)
    loading.load_state_dict_strict(module, tensors, source=path)
    return module
