"""Low-level ops shared by the StyleGAN2-family networks, in plain PyTorch.

The official GPEN code ships CUDA extensions for these two ops and falls back to slow,
copy-heavy PyTorch code elsewhere. These versions compute the same functions with ordinary
(depthwise or transposed) convolutions, so they run on any device and dtype, need no
compiler, and do not materialise the permuted, padded copies the fallback makes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: Gain StyleGAN2 puts after every leaky ReLU so that activations keep unit variance.
LRELU_GAIN = math.sqrt(2.0)
LRELU_SLOPE = 0.2


def make_kernel(taps: Sequence[float]) -> Tensor:
    """The 2-D FIR kernel taps ⊗ taps, normalised to sum 1 (float32)."""
    k = torch.tensor(list(taps), dtype=torch.float32)
    kernel = k[None, :] * k[:, None] if k.ndim == 1 else k
    return kernel / kernel.sum()


def _depthwise(kernel: Tensor, channels: int, like: Tensor) -> Tensor:
    return kernel.to(dtype=like.dtype, device=like.device).expand(channels, 1, *kernel.shape)


def upfirdn2d(
    x: Tensor, kernel: Tensor, *, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> Tensor:
    """Upsample by zero insertion, pad, convolve with `kernel` per channel, then decimate.

    The same on both axes: ``up - 1`` zeros after each sample, ``pad[0]`` zeros before and
    ``pad[1]`` after (negative values crop), a true convolution with the 2-D `kernel`, and
    every ``down``-th sample kept starting at 0. Output side: ``(n*up + p0 + p1 - k) // down + 1``.
    """
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    channels = x.shape[1]
    kh, kw = kernel.shape
    p0, p1 = pad
    if up > 1:
        # A stride-`up` transposed convolution is zero insertion followed by a true
        # convolution with the unflipped kernel; what remains is a crop or pad by the
        # offset between its output grid and upfirdn's.
        lead_h, lead_w = p0 - kh + 1, p0 - kw + 1
        tail_h, tail_w = up + p1 - kh, up + p1 - kw
        crop = -lead_h if lead_h == lead_w == tail_h == tail_w and lead_h <= 0 else 0
        y = F.conv_transpose2d(
            x, _depthwise(kernel, channels, x), stride=up, padding=crop, groups=channels
        )
        if not crop and (lead_h, lead_w, tail_h, tail_w) != (0, 0, 0, 0):
            y = F.pad(y, (lead_w, tail_w, lead_h, tail_h))
        return y[:, :, ::down, ::down] if down > 1 else y
    weight = _depthwise(kernel.flip(0, 1), channels, x)
    if p0 == p1 and p0 >= 0:
        return F.conv2d(x, weight, stride=down, padding=p0, groups=channels)
    return F.conv2d(F.pad(x, (p0, p1, p0, p1)), weight, stride=down, groups=channels)


def fused_leaky_relu(
    x: Tensor, bias: Tensor, *, gain: float = LRELU_GAIN, inplace: bool = False
) -> Tensor:
    """``gain * leaky_relu(x + bias, 0.2)``, bias broadcast on dim 1.

    With ``inplace`` the result overwrites `x`, which must then be a fresh tensor the caller
    owns; that saves two full-size temporaries per layer at 2048 px.
    """
    shape = (1, -1) + (1,) * (x.ndim - 2)
    b = bias.to(x.dtype).view(shape)
    if not inplace:
        return F.leaky_relu(x + b, LRELU_SLOPE) * gain
    # leaky_relu is positively homogeneous, so the gain may be applied first and fused
    # with the bias add: gain*lrelu(x+b) == lrelu(gain*x + gain*b).
    if gain == 1.0:
        x.add_(b)
    else:
        x.mul_(gain).add_(b, alpha=gain)
    return F.leaky_relu_(x, LRELU_SLOPE)
