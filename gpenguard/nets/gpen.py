"""GPEN's blind-face-restoration generator (``FullGenerator``), written from its description.

An encoder pyramid feeds a StyleGAN2 generator twice: its deepest map becomes the latent,
and every level is concatenated, as the "noise" input, onto the generator layer of the same
resolution. Module and attribute names follow the original so that the released checkpoints'
state_dicts (e.g. GPEN-BFR-2048: 201 keys, 71,294,769 parameters) load with ``strict=True``.

Differences from the original that do not change the function computed:

* no compiled extensions: FIR resampling and the biased leaky ReLU are plain convolutions and
  in-place element-wise ops (see ``_ops``); CPU and CUDA, fp32/fp16/bf16;
* the sqrt(2) activation gain is folded into the convolution weights and biases, the layer
  bias is fused into the convolution where it commutes, and ``concat → bias → leaky ReLU`` is
  one pass over a preallocated buffer; a layer's input is released before its output buffer
  is allocated (or is itself reused), which bounds peak memory at about three
  full-resolution maps plus the encoder pyramid;
* demodulation is computed from per-filter weight energies (one read of the weight), and the
  modulated weights are written in the layout the convolution wants; all of it in float32
  whatever the activation dtype;
* on the CPU, activations are channels-last and a batch runs one sample at a time;
* the forward takes the image only and returns the image tensor (the original returns the
  tuple ``(image, None)`` and accepts unused truncation and style-mixing arguments);
* noise is never random: the generator requires the encoder features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpenguard.nets._ops import LRELU_GAIN, LRELU_SLOPE, fused_leaky_relu, make_kernel, upfirdn2d

BLUR_KERNEL: Final = (1, 3, 3, 1)


def channel_table(channel_multiplier: int, narrow: float) -> dict[int, int]:
    """Feature channels per resolution, shared by encoder and generator."""
    base = {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16, 2048: 8}
    table = {res: int(512 * narrow) for res in (4, 8, 16, 32)}
    table.update({res: int(b * channel_multiplier * narrow) for res, b in base.items()})
    return table


def _inference(x: Tensor) -> bool:
    """True where intermediate tensors may be overwritten: nothing will backpropagate."""
    return not (torch.is_grad_enabled() and x.requires_grad)


def _memory_format(x: Tensor) -> torch.memory_format:
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class PixelNorm(nn.Module):
    """Normalise each latent vector to unit root-mean-square."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with the equalised learning rate (runtime weight scale 1/sqrt(fan_in))."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.activation = activation
        self.lr_mul = lr_mul
        self.scale = lr_mul / math.sqrt(in_dim)

    def forward(self, x: Tensor) -> Tensor:
        gain = LRELU_GAIN if self.activation else 1.0
        weight = self.weight.to(x.dtype) * (self.scale * gain)
        bias = self.bias.to(x.dtype) * (self.lr_mul * gain)
        out = F.linear(x, weight, bias)
        return F.leaky_relu_(out, LRELU_SLOPE) if self.activation else out


class EqualConv2d(nn.Module):
    """Convolution with the equalised learning rate; GPEN's encoder uses it without bias."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: Tensor, *, gain: float = 1.0, bias: Tensor | None = None) -> Tensor:
        """`gain` scales the output; `bias` (if given) replaces the own bias, added after it."""
        weight = self.weight.to(x.dtype) * (self.scale * gain)
        b = bias if bias is not None else self.bias
        if b is not None:
            b = b.to(x.dtype) * gain
        return F.conv2d(x, weight, b, stride=self.stride, padding=self.padding)


class FusedLeakyReLU(nn.Module):
    """``sqrt(2) * leaky_relu(x + bias, 0.2)`` with a per-channel bias."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias, inplace=False)


class Blur(nn.Module):
    """FIR low-pass filter (no resampling); the kernel is a buffer, stored in checkpoints."""

    kernel: Tensor

    def __init__(
        self, kernel: Sequence[int], pad: tuple[int, int], upsample_factor: int = 1
    ) -> None:
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * upsample_factor**2
        self.register_buffer("kernel", k)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling of the RGB skip path."""

    kernel: Tensor

    def __init__(self, kernel: Sequence[int], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor**2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 convolution whose weight is scaled per input channel by the style.

    With ``demodulate`` each output filter is renormalised to unit norm; with ``upsample`` the
    convolution is transposed with stride 2 and followed by a FIR blur (2H+1 → 2H).
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        *,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[int] = BLUR_KERNEL,
    ) -> None:
        super().__init__()
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.kernel_size = kernel_size
        self.upsample = upsample
        self.demodulate = demodulate
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(
                blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor
            )
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(
            torch.randn(1, out_channel, in_channel, kernel_size, kernel_size)
        )
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)

    def modulated_weight(
        self,
        style: Tensor,
        *,
        gain: float = 1.0,
        transposed: bool = False,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> Tensor:
        """Per-sample weights times `gain`, stacked for a convolution grouped by sample.

        Shape [B*out, in, k, k], or [B*in, out, k, k] if `transposed` (conv_transpose2d's
        layout); float32, or float64 for float64 styles. Written straight into
        `memory_format`, so the convolution need not reorder them.
        """
        dtype = torch.promote_types(style.dtype, torch.float32)
        s: Tensor = self.modulation(style.to(dtype)) * self.scale  # [B, in]
        w = self.weight[0].to(dtype)  # [out, in, k, k]
        if self.demodulate:
            # sum over (in, k, k) of (w*s)^2 == s^2 @ (sum over (k, k) of w^2): one read of
            # the weight and no weight-sized temporary.
            energy = torch.linalg.vector_norm(w, dim=(2, 3)).square()  # [out, in]
            demod = torch.rsqrt(s.square() @ energy.T + 1e-8)  # [B, out]
            coef = s[:, None, :] * (demod * gain)[:, :, None]  # [B, out, in]
        else:
            coef = (s * gain)[:, None, :].expand(-1, self.out_channel, -1)
        if transposed:
            w, coef = w.transpose(0, 1), coef.transpose(1, 2)
        batch, (rows, cols, kh, kw) = s.shape[0], w.shape
        if not (_inference(w) and _inference(coef)):
            stacked = (w[None] * coef[..., None, None]).reshape(batch * rows, cols, kh, kw)
            return stacked.contiguous(memory_format=memory_format)
        out = torch.empty(
            (batch * rows, cols, kh, kw),
            dtype=w.dtype,
            device=w.device,
            memory_format=memory_format,
        )
        torch.mul(w[None], coef[..., None, None], out=out.view(batch, rows, cols, kh, kw))
        return out

    def forward(
        self, x: Tensor, style: Tensor, *, gain: float = 1.0, bias: Tensor | None = None
    ) -> Tensor:
        """Convolve; the output is scaled by `gain`, and `bias` [out] added (unscaled)."""
        batch, _, height, width = x.shape
        # One sample is a plain convolution; a batch is a grouped one, a group per sample.
        x = x if batch == 1 else x.reshape(1, batch * self.in_channel, height, width)
        weight = self.modulated_weight(
            style, gain=gain, transposed=self.upsample, memory_format=_memory_format(x)
        ).to(x.dtype)
        b = None if bias is None else bias.to(x.dtype).repeat(batch)
        if self.upsample:
            out = F.conv_transpose2d(x, weight, stride=2, groups=batch)
            out = self.blur(out)
            if b is not None:
                b = b.view(1, -1, 1, 1)
                out = out.add_(b) if _inference(out) else out + b
        else:
            out = F.conv2d(x, weight, b, padding=self.padding, groups=batch)
        return out if batch == 1 else out.reshape(batch, self.out_channel, *out.shape[2:])


class NoiseInjection(nn.Module):
    """Concatenate ``weight * noise`` after the features (GPEN's ``isconcat`` variant).

    In the BFR generator `noise` is the encoder's feature map of the same resolution, so the
    output is deterministic. Given `bias` (the activation bias of the noise half), the layer's
    bias + leaky ReLU is fused in: the result is ``leaky_relu(cat(image, gain * (weight *
    noise + bias)))``, where `image` must already carry its own bias and gain.
    """

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(
        self,
        image: Tensor,
        noise: Tensor,
        *,
        bias: Tensor | None = None,
        gain: float = 1.0,
        out: Tensor | None = None,
    ) -> Tensor:
        """`out`, if given, is a tensor nobody needs any more, of the result's shape and
        layout; the fused path writes into it rather than allocating (no page faults)."""
        if noise.shape[0] != image.shape[0] or noise.shape[2:] != image.shape[2:]:
            raise ValueError(
                f"noise {tuple(noise.shape)} does not fit features {tuple(image.shape)}"
            )
        weight = self.weight.to(image.dtype)
        noise = noise.to(image.dtype)
        if bias is None:
            return torch.cat((image, weight * noise), dim=1)
        b = bias.to(image.dtype).view(1, -1, 1, 1) * gain
        if not (_inference(image) and _inference(noise) and _inference(weight)):
            out = torch.cat((image, torch.addcmul(b, noise, weight * gain)), dim=1)
            return F.leaky_relu(out, LRELU_SLOPE)
        c = image.shape[1]
        shape = (image.shape[0], c + noise.shape[1], *image.shape[2:])
        fmt = _memory_format(image)
        reusable = (
            out is not None
            and out.shape == shape
            and out.dtype == image.dtype
            and out.device == image.device
            and _memory_format(out) == fmt
            and _inference(out)
        )
        if not reusable or out is None:
            out = torch.empty(shape, dtype=image.dtype, device=image.device, memory_format=fmt)
        out[:, :c].copy_(image)
        torch.addcmul(b, noise, weight * gain, out=out[:, c:])
        return F.leaky_relu_(out, LRELU_SLOPE)


class ConstantInput(nn.Module):
    """The learned 4x4 starting map, repeated over the batch."""

    def __init__(self, channel: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int, dtype: torch.dtype) -> Tensor:
        return self.input.to(dtype).expand(batch, -1, -1, -1).contiguous()


class StyledConv(nn.Module):
    """Modulated conv → concatenated encoder features → bias + leaky ReLU (2·out channels)."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        *,
        upsample: bool = False,
        blur_kernel: Sequence[int] = BLUR_KERNEL,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel,
            out_channel,
            kernel_size,
            style_dim,
            upsample=upsample,
            blur_kernel=blur_kernel,
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(2 * out_channel)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor) -> Tensor:
        return self.inject(self.convolve(x, style), noise)

    def convolve(self, x: Tensor, style: Tensor) -> Tensor:
        """First half of the layer; `inject` finishes it. Split so a caller can drop `x`."""
        c = self.conv.out_channel
        out: Tensor = self.conv(x, style, gain=LRELU_GAIN, bias=self.activate.bias[:c] * LRELU_GAIN)
        return out

    def inject(self, conv_out: Tensor, noise: Tensor, *, out: Tensor | None = None) -> Tensor:
        """Second half of the layer; `out` may be a dead buffer to reuse (see NoiseInjection)."""
        c = self.conv.out_channel
        result: Tensor = self.noise(
            conv_out, noise, bias=self.activate.bias[c:], gain=LRELU_GAIN, out=out
        )
        return result


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation), added to the upsampled skip image."""

    def __init__(
        self,
        in_channel: int,
        style_dim: int,
        *,
        upsample: bool = True,
        blur_kernel: Sequence[int] = BLUR_KERNEL,
    ) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out: Tensor = self.conv(x, style, bias=self.bias.view(3))
        if skip is not None:
            up = self.upsample(skip)
            out = out.add_(up) if _inference(out) else out + up
        return out


class Generator(nn.Module):
    """StyleGAN2 synthesis network with concatenated noise, as GPEN uses it.

    ``forward(z, noise)`` maps `z` through the MLP (a single style for all layers, no
    truncation) and takes one feature map per styled conv, coarsest first.
    """

    def __init__(
        self,
        size: int,
        style_dim: int,
        n_mlp: int,
        *,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[int] = BLUR_KERNEL,
        lr_mlp: float = 0.01,
        narrow: float = 1.0,
    ) -> None:
        super().__init__()
        self.size = size
        self.style_dim = style_dim
        self.log_size = int(math.log2(size))
        channels = channel_table(channel_multiplier, narrow)
        self.style = nn.Sequential(
            PixelNorm(),
            *(
                EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True)
                for _ in range(n_mlp)
            ),
        )
        self.input = ConstantInput(channels[4])
        self.conv1 = StyledConv(channels[4], channels[4], 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(2 * channels[4], style_dim, upsample=False, blur_kernel=blur_kernel)
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty; kept because the original has it
        self.to_rgbs = nn.ModuleList()
        in_channel = channels[4]
        for i in range(3, self.log_size + 1):
            out_channel = channels[2**i]
            self.convs.append(
                StyledConv(
                    2 * in_channel,
                    out_channel,
                    3,
                    style_dim,
                    upsample=True,
                    blur_kernel=blur_kernel,
                )
            )
            self.convs.append(
                StyledConv(2 * out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel)
            )
            self.to_rgbs.append(ToRGB(2 * out_channel, style_dim, blur_kernel=blur_kernel))
            in_channel = out_channel
        self.n_latent = 2 * self.log_size - 2

    def forward(self, z: Tensor, noise: Sequence[Tensor]) -> Tensor:
        expected = 2 * self.log_size - 3
        if len(noise) != expected:
            raise ValueError(f"expected {expected} noise maps, got {len(noise)}")
        dtype = noise[0].dtype
        w = self.style(z.to(torch.promote_types(z.dtype, torch.float32)))
        out = self.input(z.shape[0], dtype).contiguous(memory_format=_memory_format(noise[-1]))
        out = self.conv1.inject(self.conv1.convolve(out, w), noise[0])
        skip: Tensor = self.to_rgb1(out, w)
        for k, to_rgb in enumerate(self.to_rgbs):
            up, same = self.convs[2 * k], self.convs[2 * k + 1]
            assert isinstance(up, StyledConv) and isinstance(same, StyledConv)
            # Rebinding `out` frees each layer's input before its output buffer exists; the
            # second layer's input has its output's shape, so its buffer is reused outright.
            out = up.convolve(out, w)
            out = up.inject(out, noise[2 * k + 1])
            conv_out = same.convolve(out, w)
            out = same.inject(conv_out, noise[2 * k + 2], out=out)
            del conv_out
            skip = to_rgb(out, w, skip)
        return skip


class ConvLayer(nn.Sequential):
    """Encoder block: [Blur →] EqualConv2d (no bias) → FusedLeakyReLU."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        *,
        downsample: bool = False,
        blur_kernel: Sequence[int] = BLUR_KERNEL,
    ) -> None:
        layers: list[nn.Module] = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(
            EqualConv2d(
                in_channel, out_channel, kernel_size, stride=stride, padding=padding, bias=False
            )
        )
        layers.append(FusedLeakyReLU(out_channel))
        super().__init__(*layers)

    def forward(self, x: Tensor) -> Tensor:
        *pre, conv, act = list(self)
        assert isinstance(conv, EqualConv2d) and isinstance(act, FusedLeakyReLU)
        for layer in pre:
            x = layer(x)
        out = conv(x, gain=LRELU_GAIN, bias=act.bias)
        return (
            F.leaky_relu_(out, LRELU_SLOPE) if _inference(out) else F.leaky_relu(out, LRELU_SLOPE)
        )


class FullGenerator(nn.Module):
    """GPEN's BFR network: RGB face in [-1, 1] (NCHW, ``size``²) → restored RGB face.

    The output is not clamped; it is nominally in [-1, 1]. Published settings: 256 uses
    ``channel_multiplier=1, narrow=0.5``; 512, 1024 and 2048 use ``channel_multiplier=2,
    narrow=1``; all use ``style_dim=512, n_mlp=8`` (see `gpen_bfr`).
    """

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[int] = BLUR_KERNEL,
        lr_mlp: float = 0.01,
        narrow: float = 1.0,
        isconcat: bool = True,
    ) -> None:
        super().__init__()
        if size < 8 or size & (size - 1) or size > 2048:
            raise ValueError(f"size must be a power of two from 8 to 2048, got {size}")
        if not isconcat:
            raise ValueError("only the concatenating variant (isconcat=True) is used by GPEN-BFR")
        channels = channel_table(channel_multiplier, narrow)
        self.size = size
        self.log_size = int(math.log2(size))
        #: Activation layout: None picks channels-last on the CPU and for half precision.
        self.channels_last: bool | None = None
        self.generator = Generator(
            size,
            style_dim,
            n_mlp,
            channel_multiplier=channel_multiplier,
            blur_kernel=blur_kernel,
            lr_mlp=lr_mlp,
            narrow=narrow,
        )
        self.ecd0 = nn.Sequential(ConvLayer(3, channels[size], 1))
        in_channel = channels[size]
        for i in range(self.log_size, 2, -1):
            out_channel = channels[2 ** (i - 1)]
            block = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
            self.add_module(f"ecd{self.log_size - i + 1}", nn.Sequential(block))
            in_channel = out_channel
        self.final_linear = nn.Sequential(EqualLinear(channels[4] * 16, style_dim, activation=True))

    def encoders(self) -> list[nn.Module]:
        """``ecd0`` (full resolution) … ``ecd{L-2}`` (4x4), in forward order."""
        return [getattr(self, f"ecd{i}") for i in range(self.log_size - 1)]

    def forward(self, x: Tensor) -> Tensor:
        """Restore a batch; returns the image tensor [B, 3, size, size] (not a tuple).

        On the CPU, samples run one at a time (peak memory is that of one sample; one image
        already keeps the cores busy) and activations are kept channels-last, which oneDNN
        convolves without reordering (measured about 2x faster than NCHW on CPU).
        """
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2:] != (self.size, self.size):
            raise ValueError(
                f"expected input [B, 3, {self.size}, {self.size}], got {tuple(x.shape)}"
            )
        if x.device.type == "cpu" and x.shape[0] > 1:
            return torch.cat([self._forward(x[i : i + 1]) for i in range(x.shape[0])])
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        channels_last = self.channels_last
        if channels_last is None:
            channels_last = x.device.type == "cpu" or x.dtype in (torch.float16, torch.bfloat16)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats: list[Tensor] = []
        for ecd in self.encoders():
            x = ecd(x)
            feats.append(x)
        flat = x.reshape(x.shape[0], -1)  # C, H, W order whatever the memory format
        z = self.final_linear(flat.to(torch.promote_types(flat.dtype, torch.float32)))
        # Each generator level takes the encoder map of its own resolution, twice (once per
        # styled conv), except 4x4, which only has conv1: [f_last, f_{last-1}, f_{last-1}, ...].
        noise = [feats[-1]] + [f for f in reversed(feats[:-1]) for _ in range(2)]
        del feats, x
        image: Tensor = self.generator(z, noise)
        return image.contiguous()


#: Constructor settings of the released GPEN-BFR models, by input size.
GPEN_BFR: Final[dict[int, dict[str, float]]] = {
    256: {"channel_multiplier": 1, "narrow": 0.5},
    512: {"channel_multiplier": 2, "narrow": 1.0},
    1024: {"channel_multiplier": 2, "narrow": 1.0},
    2048: {"channel_multiplier": 2, "narrow": 1.0},
}


def gpen_bfr(size: int) -> FullGenerator:
    """The GPEN-BFR-`size` architecture (random weights; load a checkpoint into it)."""
    try:
        cfg = GPEN_BFR[size]
    except KeyError:
        raise ValueError(
            f"no released GPEN-BFR model for size {size}; known: {sorted(GPEN_BFR)}"
        ) from None
    return FullGenerator(
        size, 512, 8, channel_multiplier=int(cfg["channel_multiplier"]), narrow=cfg["narrow"]
    )
