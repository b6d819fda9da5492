"""RetinaFace with a ResNet-50 body, state_dict-compatible with ``RetinaFace-R50.pth``.

That file is byte-identical to biubug6's ``Resnet50_Final.pth``: a torchvision ResNet-50 cut
after ``layer4`` (``body.*``), a three-level FPN (``fpn.*``), one SSH context module per level
(``ssh1..3``) and 1x1 heads with two anchors per location (``ClassHead``, ``BboxHead``,
``LandmarkHead``). Module and attribute names below exist only to reproduce those keys; the
maths follows the public description, written here without torchvision (no CPU wheel of it
is available to us). Prior boxes, decoding and NMS live in `gpenguard.restore.detect`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Channels of the three ResNet stages the FPN reads (layer2, layer3, layer4) and its width.
FPN_IN_CHANNELS = (512, 1024, 2048)
FPN_OUT_CHANNELS = 256
ANCHORS_PER_LOCATION = 2


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride sits on the 3x3 convolution."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity)


class ResNet50Body(nn.Module):
    """ResNet-50 up to ``layer4``, returning the outputs of layer2, layer3 and layer4."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        stages = []
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            layers = [Bottleneck(in_ch, width, stride)]
            in_ch = width * Bottleneck.expansion
            layers += [Bottleneck(in_ch, width) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return c2, c3, c4


def _conv_bn(in_ch: int, out_ch: int, kernel: int, *, leaky: float | None) -> nn.Sequential:
    """Conv (no bias) + BatchNorm, then LeakyReLU unless ``leaky`` is None."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if leaky is not None:
        layers.append(nn.LeakyReLU(leaky))
    return nn.Sequential(*layers)


def _leak(out_ch: int) -> float:
    # The published model uses a slope of 0.1 only for its narrow (<= 64 channel) variant.
    return 0.1 if out_ch <= 64 else 0.0


class FPN(nn.Module):
    """Top-down feature pyramid: 1x1 laterals, nearest upsampling, a 3x3 merge per level."""

    def __init__(self, in_channels: tuple[int, int, int], out_ch: int) -> None:
        super().__init__()
        leaky = _leak(out_ch)
        self.output1 = _conv_bn(in_channels[0], out_ch, 1, leaky=leaky)
        self.output2 = _conv_bn(in_channels[1], out_ch, 1, leaky=leaky)
        self.output3 = _conv_bn(in_channels[2], out_ch, 1, leaky=leaky)
        self.merge1 = _conv_bn(out_ch, out_ch, 3, leaky=leaky)
        self.merge2 = _conv_bn(out_ch, out_ch, 3, leaky=leaky)

    def forward(
        self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p1 = self.output1(feats[0])
        p2 = self.output2(feats[1])
        p3 = self.output3(feats[2])
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[-2:], mode="nearest"))
        return p1, p2, p3


class SSH(nn.Module):
    """Single-stage context module: 3x3, 5x5 and 7x7 receptive fields (stacked 3x3s), concatenated."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        leaky = _leak(out_ch)
        self.conv3X3 = _conv_bn(in_ch, out_ch // 2, 3, leaky=None)
        self.conv5X5_1 = _conv_bn(in_ch, out_ch // 4, 3, leaky=leaky)
        self.conv5X5_2 = _conv_bn(out_ch // 4, out_ch // 4, 3, leaky=None)
        self.conv7X7_2 = _conv_bn(out_ch // 4, out_ch // 4, 3, leaky=leaky)
        self.conv7x7_3 = _conv_bn(out_ch // 4, out_ch // 4, 3, leaky=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5 = self.conv5X5_1(x)
        out = torch.cat(
            [self.conv3X3(x), self.conv5X5_2(branch5), self.conv7x7_3(self.conv7X7_2(branch5))],
            dim=1,
        )
        return F.relu(out)


class _Head(nn.Module):
    """A 1x1 convolution whose output is flattened to ``[B, H*W*anchors, values]``."""

    def __init__(self, in_ch: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(in_ch, ANCHORS_PER_LOCATION * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    """RetinaFace-R50. ``forward`` takes a BGR image minus the mean (104, 117, 123), not scaled,
    and returns raw box offsets ``[B,N,4]``, face probabilities ``[B,N,2]`` (softmax) and
    landmark offsets ``[B,N,10]``, one row per prior box (see `restore.detect.prior_boxes`)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = ResNet50Body()
        self.fpn = FPN(FPN_IN_CHANNELS, FPN_OUT_CHANNELS)
        self.ssh1 = SSH(FPN_OUT_CHANNELS, FPN_OUT_CHANNELS)
        self.ssh2 = SSH(FPN_OUT_CHANNELS, FPN_OUT_CHANNELS)
        self.ssh3 = SSH(FPN_OUT_CHANNELS, FPN_OUT_CHANNELS)
        self.ClassHead = nn.ModuleList(_Head(FPN_OUT_CHANNELS, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(FPN_OUT_CHANNELS, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(FPN_OUT_CHANNELS, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p1, p2, p3 = self.fpn(self.body(x))
        feats = (self.ssh1(p1), self.ssh2(p2), self.ssh3(p3))
        boxes = torch.cat([h(f) for h, f in zip(self.BboxHead, feats, strict=True)], dim=1)
        logits = torch.cat([h(f) for h, f in zip(self.ClassHead, feats, strict=True)], dim=1)
        landmarks = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats, strict=True)], dim=1)
        return boxes, F.softmax(logits, dim=-1), landmarks
