"""ParseNet, state_dict-compatible with GPEN's ``ParseNet-latest.pth`` (= facexlib's
``parsing_parsenet.pth``): the 19-class face parser whose map becomes the paste-back mask.

GPEN builds it as ``ParseNet(in_size=512, out_size=512, min_feat_size=32, base_ch=64,
parsing_ch=19, res_depth=10, norm 'bn', LeakyReLU(0.2), ch_range=(32, 256))``. The layout:
an encoder (one plain conv, then 4 downsampling residual blocks), 10 residual blocks with an
outer skip, 4 upsampling residual blocks, and two 3x3 output convs (19-class logits and an
auxiliary RGB image). Every conv is reflection-padded. Names mirror the checkpoint's keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: The 19 classes of the CelebAMask-HQ labelling that ParseNet predicts, by index.
CLASSES = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear",
    "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)  # fmt: skip


class ConvLayer(nn.Module):
    """Optional nearest x2 upsampling, reflection pad, conv (stride 2 to go down),
    then optional BatchNorm and LeakyReLU(0.2). Conv bias only when there is no norm."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        scale: str = "none",
        *,
        norm: bool = False,
        act: bool = False,
    ) -> None:
        super().__init__()
        self.upsample = scale == "up"
        self.reflection_pad = nn.ReflectionPad2d(math.ceil((kernel - 1) / 2))
        self.conv2d = nn.Conv2d(
            in_ch, out_ch, kernel, stride=2 if scale == "down" else 1, bias=not norm
        )
        self.norm = _Norm(out_ch) if norm else None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv2d(self.reflection_pad(x))
        if self.norm is not None:
            x = self.norm.norm(x)
        return F.leaky_relu(x, 0.2) if self.act else x


class _Norm(nn.Module):
    """Holds the BatchNorm one level down, as the checkpoint's ``.norm.norm.`` keys expect."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)


class ResidualBlock(nn.Module):
    """conv-bn-lrelu, conv-bn, plus a shortcut; the shortcut is a plain conv whenever the
    block changes scale or width (``shortcut_func``), and the identity otherwise."""

    def __init__(self, in_ch: int, out_ch: int, scale: str = "none") -> None:
        super().__init__()
        self.shortcut_func: ConvLayer | None = None
        if scale != "none" or in_ch != out_ch:
            self.shortcut_func = ConvLayer(in_ch, out_ch, 3, scale)
        first, second = {"down": ("none", "down"), "up": ("up", "none")}.get(
            scale, ("none", "none")
        )
        self.conv1 = ConvLayer(in_ch, out_ch, 3, first, norm=True, act=True)
        self.conv2 = ConvLayer(out_ch, out_ch, 3, second, norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut_func is None else self.shortcut_func(x)
        out: torch.Tensor = identity + self.conv2(self.conv1(x))
        return out


class ParseNet(nn.Module):
    """Face parser. Input: RGB in [-1, 1], ``[B,3,in,in]``. Output: (19-class logits,
    auxiliary RGB image), both at ``out_size``."""

    def __init__(
        self,
        in_size: int = 512,
        out_size: int = 512,
        min_feat_size: int = 32,
        base_ch: int = 64,
        parsing_ch: int = 19,
        res_depth: int = 10,
        ch_range: tuple[int, int] = (32, 256),
    ) -> None:
        super().__init__()
        lo, hi = ch_range

        def clip(ch: int) -> int:
            return max(lo, min(ch, hi))

        min_feat_size = min(in_size, min_feat_size)
        down_steps = int(math.log2(in_size // min_feat_size))
        up_steps = int(math.log2(out_size // min_feat_size))

        encoder: list[nn.Module] = [ConvLayer(3, base_ch, 3)]
        head = base_ch
        for _ in range(down_steps):
            encoder.append(ResidualBlock(clip(head), clip(head * 2), "down"))
            head *= 2
        body = [ResidualBlock(clip(head), clip(head)) for _ in range(res_depth)]
        decoder: list[nn.Module] = []
        for _ in range(up_steps):
            decoder.append(ResidualBlock(clip(head), clip(head // 2), "up"))
            head //= 2
        self.encoder = nn.Sequential(*encoder)
        self.body = nn.Sequential(*body)
        self.decoder = nn.Sequential(*decoder)
        self.out_img_conv = ConvLayer(clip(head), 3)
        self.out_mask_conv = ConvLayer(clip(head), parsing_ch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.encoder(x)
        x = self.decoder(feat + self.body(feat))
        return self.out_mask_conv(x), self.out_img_conv(x)
