"""Face detection around RetinaFace: prior boxes, decoding, score threshold and NMS, in torch.

Settings are RetinaFace-R50's published ones (biubug6 ``cfg_re50``, used unchanged by GPEN):
anchors of 16/32, 64/128 and 256/512 px on strides 8, 16 and 32, variances (0.1, 0.2), no
clipping, IoU 0.4. Images whose long side exceeds 1500 px are detected on a copy scaled to
1000 px and the results scaled back, as GPEN does; that also bounds the detector's memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from gpenguard.nets.retinaface import RetinaFace

MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCE = (0.1, 0.2)
#: BGR channel means subtracted from 0..255 pixels before the network.
BGR_MEAN = (104.0, 117.0, 123.0)
DETECT_MAX_SIDE = 1500
DETECT_DOWNSCALED_SIDE = 1000


@dataclass(frozen=True)
class Face:
    """One detection in image pixel coordinates.

    ``landmarks`` are 5 (x, y) points: left eye, right eye, nose, left and right mouth corner.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...]

    @property
    def landmark_array(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.landmarks, dtype=np.float64)


def prior_boxes(height: int, width: int) -> torch.Tensor:
    """Anchors ``[N, 4]`` as (cx, cy, w, h) normalised by the image size.

    Order matters (it must match the heads' flattening): level, then row, then column, then
    anchor size.
    """
    levels = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height
        cx = (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width
        gy, gx = torch.meshgrid(cy, cx, indexing="ij")
        per_size = [
            torch.stack(
                [gx, gy, torch.full_like(gx, size / width), torch.full_like(gy, size / height)],
                dim=-1,
            )
            for size in sizes
        ]
        levels.append(torch.stack(per_size, dim=2).reshape(-1, 4))
    return torch.cat(levels).to(torch.float32)


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Regression offsets -> (x1, y1, x2, y2), normalised like ``priors``."""
    centre = priors[:, :2] + loc[:, :2] * VARIANCE[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[:, 2:] * VARIANCE[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def decode_landmarks(pre: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Landmark offsets ``[N, 10]`` -> ``[N, 5, 2]`` points, normalised like ``priors``."""
    offsets = pre.reshape(-1, 5, 2)
    return priors[:, None, :2] + offsets * VARIANCE[0] * priors[:, None, 2:]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    Areas use the inclusive-pixel convention (``x2 - x1 + 1``) of the reference detector so
    that the same boxes survive.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    keep: list[int] = []
    while order.numel() > 0:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        w = (torch.minimum(x2[best], x2[rest]) - torch.maximum(x1[best], x1[rest]) + 1).clamp(min=0)
        h = (torch.minimum(y2[best], y2[rest]) - torch.maximum(y1[best], y1[rest]) + 1).clamp(min=0)
        inter = w * h
        iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return torch.tensor(keep, dtype=torch.long)


def postprocess(
    loc: torch.Tensor,
    conf: torch.Tensor,
    landms: torch.Tensor,
    height: int,
    width: int,
    *,
    score_threshold: float,
    iou_threshold: float = 0.4,
    top_k: int = 5000,
    keep_top_k: int = 750,
    scale: float | tuple[float, float] = 1.0,
) -> list[Face]:
    """Turn one image's raw network outputs into faces, in pixels of the image the network's
    input was scaled from by ``scale`` (one factor, or (x, y) factors)."""
    priors = prior_boxes(height, width).to(loc.device)
    loc, conf, landms = loc.float(), conf.float(), landms.float()
    size = torch.tensor([width, height], dtype=torch.float32, device=loc.device)
    boxes = decode_boxes(loc, priors) * size.repeat(2)
    points = decode_landmarks(landms, priors) * size
    scores = conf[:, 1]
    hit = scores > score_threshold
    boxes, points, scores = boxes[hit], points[hit], scores[hit]
    order = torch.argsort(scores, descending=True, stable=True)[:top_k]
    boxes, points, scores = boxes[order], points[order], scores[order]
    keep = nms(boxes, scores, iou_threshold)[:keep_top_k]
    sx, sy = scale if isinstance(scale, tuple) else (scale, scale)
    factor = torch.tensor([sx, sy], dtype=torch.float32, device=loc.device)
    faces = []
    for i in keep.tolist():
        box = (boxes[i] / factor.repeat(2)).tolist()
        pts = (points[i] / factor).tolist()
        faces.append(
            Face(
                box=(box[0], box[1], box[2], box[3]),
                score=float(scores[i]),
                landmarks=tuple((p[0], p[1]) for p in pts),
            )
        )
    return faces


class FaceDetector:
    """RetinaFace-R50 plus its post-processing, for RGB PIL images of any size."""

    def __init__(
        self, net: RetinaFace, *, device: torch.device, score_threshold: float = 0.9
    ) -> None:
        self.net = net.eval()
        self.device = device
        self.score_threshold = score_threshold

    @torch.inference_mode()
    def detect(self, image: Image.Image) -> list[Face]:
        scale = 1.0
        width, height = image.size
        if max(width, height) > DETECT_MAX_SIDE:
            scale = DETECT_DOWNSCALED_SIDE / max(width, height)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR)
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
        bgr = torch.from_numpy(rgb[..., ::-1].copy()).to(self.device)
        bgr = bgr - torch.tensor(BGR_MEAN, device=self.device)
        x = bgr.permute(2, 0, 1).unsqueeze(0)
        dtype = next(self.net.parameters()).dtype
        loc, conf, landms = self.net(x.to(dtype))
        h, w = rgb.shape[:2]
        # Map back by the exact per-axis ratios applied (sizes were rounded), not the nominal one.
        return postprocess(
            loc[0], conf[0], landms[0], h, w,
            score_threshold=self.score_threshold,
            scale=(w / width, h / height),
        )  # fmt: skip
