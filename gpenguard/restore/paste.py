"""Paste-back: the soft face mask from a parse map, and compositing faces into the image.

GPEN's mask: every ParseNet class counts as face except background, hat and cloth (hair and
neck included); a 26-px border of the 512 map is cleared, then it is Gaussian-blurred twice
(101-tap window, sigma 4) so the seam fades out over ~20 px. Faces are merged by a per-pixel
max rule (where a later face's mask is higher, its pixels and mask win), then alpha-blended
over the base image. Everything here works on regions: nothing allocates at full image size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional

from gpenguard.restore import align

#: Parse classes that are *not* pasted: background (0), hat (14), cloth (18).
NON_FACE_CLASSES = (0, 14, 18)
MASK_SIZE = 512
MASK_BORDER = 26
BLUR_KERNEL = 101
BLUR_SIGMA = 4.0


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return (k / k.sum()).to(torch.float32)


def gaussian_blur(
    mask: torch.Tensor, size: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA
) -> torch.Tensor:
    """Separable Gaussian blur of ``[H,W]`` with mirrored borders (OpenCV's default,
    ``BORDER_REFLECT_101``, which is torch's ``reflect``)."""
    k = _gaussian_kernel(size, sigma).to(mask.device)
    pad = size // 2
    x = mask[None, None].float()
    x = functional.conv2d(functional.pad(x, (pad, pad, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    x = functional.conv2d(functional.pad(x, (0, 0, pad, pad), mode="reflect"), k.view(1, 1, -1, 1))
    return x[0, 0]


def mask_from_parsing(logits: torch.Tensor) -> torch.Tensor:
    """ParseNet logits ``[19,H,W]`` -> soft paste mask ``[H,W]`` in [0, 1]."""
    labels = logits.argmax(dim=0)
    keep = torch.ones_like(labels, dtype=torch.bool)
    for cls in NON_FACE_CLASSES:
        keep &= labels != cls
    mask = keep.float()
    b = MASK_BORDER * mask.shape[0] // MASK_SIZE
    mask[:b] = 0
    mask[-b:] = 0
    mask[:, :b] = 0
    mask[:, -b:] = 0
    return gaussian_blur(gaussian_blur(mask))


@dataclass(frozen=True)
class Region:
    """An integer box [x0, x1) x [y0, y1) of the full image."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def empty(self) -> bool:
        return self.x1 <= self.x0 or self.y1 <= self.y0

    def union(self, other: Region) -> Region:
        return Region(
            min(self.x0, other.x0), min(self.y0, other.y0),
            max(self.x1, other.x1), max(self.y1, other.y1),
        )  # fmt: skip

    def overlaps(self, other: Region) -> bool:
        return not (
            self.x1 <= other.x0 or other.x1 <= self.x0 or self.y1 <= other.y0 or other.y1 <= self.y0
        )


def footprint(crop_to_image: align.Matrix, crop_size: int, width: int, height: int) -> Region:
    """The image region a ``crop_size`` square covers once mapped back, clipped to the image
    (one pixel of margin for bilinear spill)."""
    s = crop_size - 1
    corners = align.apply(crop_to_image, [[0, 0], [s, 0], [0, s], [s, s]])
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 2
    return Region(max(0, x0), max(0, y0), min(width, x1), min(height, y1))


@dataclass(frozen=True)
class PastedFace:
    """A restored face (``[3,S,S]`` float 0..255) and its mask (``[S,S]``, 0..1), with the map
    from crop pixels to image pixels."""

    face: torch.Tensor
    mask: torch.Tensor
    crop_to_image: align.Matrix


def group_regions(regions: list[Region]) -> list[tuple[Region, list[int]]]:
    """Merge overlapping regions into clusters so each cluster is composited once."""
    clusters: list[tuple[Region, list[int]]] = []
    for idx, region in enumerate(regions):
        box, members = region, [idx]
        merged = True
        while merged:
            merged = False
            for other in list(clusters):
                if other[0].overlaps(box):
                    clusters.remove(other)
                    box = box.union(other[0])
                    members = sorted(members + other[1])
                    merged = True
        clusters.append((box, members))
    return clusters


def composite(image: npt.NDArray[np.uint8], faces: list[PastedFace]) -> npt.NDArray[np.uint8]:
    """Blend ``faces`` into a copy of ``image`` (``[H,W,3]`` uint8), touching only the regions
    the faces cover; every pixel outside all masks keeps its exact value."""
    out = image.copy()
    height, width = image.shape[:2]
    regions = [footprint(f.crop_to_image, f.face.shape[-1], width, height) for f in faces]
    for region, members in group_regions(regions):
        if region.empty:
            continue
        rh, rw = region.y1 - region.y0, region.x1 - region.x0
        device = faces[members[0]].face.device
        acc_mask = torch.zeros((rh, rw), device=device)
        acc_face = torch.zeros((3, rh, rw), device=device)
        for idx in members:  # detection order, as in GPEN: ties keep the earlier face
            f = faces[idx]
            m = align.translate(f.crop_to_image, -region.x0, -region.y0)
            stacked = torch.cat([f.face.float(), f.mask.float()[None]], dim=0)[None]
            warped = align.warp_affine(stacked, m, (rh, rw))[0]
            w_face, w_mask = warped[:3], warped[3]
            wins = w_mask > acc_mask
            acc_mask = torch.where(wins, w_mask, acc_mask)
            acc_face = torch.where(wins, w_face, acc_face)
        base = torch.from_numpy(out[region.y0 : region.y1, region.x0 : region.x1]).to(device)
        base = base.permute(2, 0, 1).float()
        blended = base * (1 - acc_mask) + acc_face * acc_mask
        patch = blended.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        # Only pixels some mask touched change; the rest keep their bytes exactly.
        touched = (acc_mask > 0).cpu().numpy()
        view = out[region.y0 : region.y1, region.x0 : region.x1]
        view[touched] = patch[touched]
    return out
