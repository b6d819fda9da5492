"""Paste-back: the soft face mask from a parse map, and compositing faces into the image.

GPEN's mask: every ParseNet class counts as face except background, hat and cloth (hair and
neck included); a 26-px border of the 512 map is cleared, then it is Gaussian-blurred twice
(101-tap window, sigma 4) so the seam fades out over ~20 px. Faces are merged by a per-pixel
max rule (where a later face's mask is higher, its pixels and mask win), then alpha-blended
over the base image. Everything here works on regions: nothing allocates at full image size.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

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
    return k / k.sum()


@functools.lru_cache(maxsize=8)
def blur_matrix(
    n: int, size: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA, passes: int = 1
) -> torch.Tensor:
    """``[n, n]`` matrix ``B`` with ``B @ x`` = ``passes`` 1-D Gaussian blurs of ``x`` along its
    first axis, each with mirrored borders (OpenCV's default, ``BORDER_REFLECT_101``).

    As a matrix, blurring twice is one product (each pass's borders included exactly), and a
    GEMM is far faster on CPU than a 101-tap convolution.
    """
    radius = size // 2
    if radius >= n:
        raise ValueError(f"a {size}-tap blur needs a side longer than {radius}, got {n}")
    idx = (torch.arange(n)[:, None] + torch.arange(size)[None, :] - radius).abs()
    idx = torch.where(idx > n - 1, 2 * (n - 1) - idx, idx)
    one = torch.zeros(n, n, dtype=torch.float64)
    one.scatter_add_(1, idx, _gaussian_kernel(size, sigma).expand(n, size).contiguous())
    out = one
    for _ in range(passes - 1):
        out = one @ out
    return out.to(torch.float32)


def gaussian_blur(mask: torch.Tensor, passes: int = 1) -> torch.Tensor:
    """Separable Gaussian blur (101 taps, sigma 4) of ``[H,W]``, ``passes`` times over."""
    h, w = mask.shape
    rows = blur_matrix(h, passes=passes).to(mask.device)
    cols = blur_matrix(w, passes=passes).to(mask.device)
    return rows @ mask.float() @ cols.T


def mask_from_parsing(logits: torch.Tensor) -> torch.Tensor:
    """ParseNet logits ``[19,H,W]`` -> soft paste mask ``[H,W]`` in [0, 1]."""
    # "argmax is a face class", without a slow channel-wise argmax: compare the best face
    # logit with the best non-face one (argmax breaks exact ties towards the lower index).
    face = [c for c in range(logits.shape[0]) if c not in NON_FACE_CLASSES]
    best_face = logits[face].amax(dim=0)
    best_other = logits[list(NON_FACE_CLASSES)].amax(dim=0)
    mask = (best_face > best_other).float()
    b = MASK_BORDER * mask.shape[0] // MASK_SIZE
    mask[:b] = 0
    mask[-b:] = 0
    mask[:, :b] = 0
    mask[:, -b:] = 0
    return gaussian_blur(mask, passes=2)


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


class Compositor:
    """Pastes faces one at a time into a copy of the image, with GPEN's merge rule.

    GPEN keeps a full-size mask and face canvas and blends once at the end. The same result
    comes from blending as faces arrive, given the *original* pixels as the base: where a new
    face's mask beats the running maximum, the pixel becomes ``base*(1-m) + face*m``. The
    running maximum is stored in tiles allocated only where faces land, and pixels are read
    and written by region, so beyond the input and the output image, memory follows the area
    the faces cover, not the photo's size; no restored face is held after its paste.
    """

    TILE = 256

    def __init__(self, image: Image.Image, device: torch.device | None = None) -> None:
        if image.mode != "RGB":
            raise ValueError(f"compositing needs an RGB image, got {image.mode}")
        self.base = image
        self.out = image.copy()
        self.device = device or torch.device("cpu")
        self._tiles: dict[tuple[int, int], torch.Tensor] = {}

    def _tile_spans(self, region: Region) -> list[tuple[tuple[int, int], Region]]:
        t = self.TILE
        spans = []
        for ty in range(region.y0 // t, (region.y1 - 1) // t + 1):
            for tx in range(region.x0 // t, (region.x1 - 1) // t + 1):
                cut = Region(
                    max(region.x0, tx * t), max(region.y0, ty * t),
                    min(region.x1, (tx + 1) * t), min(region.y1, (ty + 1) * t),
                )  # fmt: skip
                spans.append(((ty, tx), cut))
        return spans

    def _read_mask(self, region: Region) -> torch.Tensor:
        acc = torch.zeros((region.y1 - region.y0, region.x1 - region.x0), device=self.device)
        t = self.TILE
        for key, cut in self._tile_spans(region):
            tile = self._tiles.get(key)
            if tile is not None:
                acc[cut.y0 - region.y0 : cut.y1 - region.y0, cut.x0 - region.x0 : cut.x1 - region.x0] = (
                    tile[cut.y0 - key[0] * t : cut.y1 - key[0] * t, cut.x0 - key[1] * t : cut.x1 - key[1] * t]
                )  # fmt: skip
        return acc

    def _write_mask(self, region: Region, acc: torch.Tensor) -> None:
        t = self.TILE
        for key, cut in self._tile_spans(region):
            tile = self._tiles.get(key)
            if tile is None:
                tile = self._tiles[key] = torch.zeros((t, t), device=self.device)
            tile[cut.y0 - key[0] * t : cut.y1 - key[0] * t, cut.x0 - key[1] * t : cut.x1 - key[1] * t] = (
                acc[cut.y0 - region.y0 : cut.y1 - region.y0, cut.x0 - region.x0 : cut.x1 - region.x0]
            )  # fmt: skip

    def add(self, face: PastedFace) -> None:
        """Paste one face; earlier faces keep the pixels where their mask is at least as high."""
        width, height = self.base.size
        region = footprint(face.crop_to_image, face.face.shape[-1], width, height)
        if region.empty:
            return
        rh, rw = region.y1 - region.y0, region.x1 - region.x0
        m = align.translate(face.crop_to_image, -region.x0, -region.y0)
        stacked = torch.cat([face.face.float(), face.mask.float()[None]], dim=0)[None]
        warped = align.warp_affine(stacked.to(self.device), m, (rh, rw))[0]
        w_face, w_mask = warped[:3], warped[3]
        acc = self._read_mask(region)
        wins = w_mask > acc
        if not bool(wins.any()):
            return
        self._write_mask(region, torch.where(wins, w_mask, acc))
        box = (region.x0, region.y0, region.x1, region.y1)
        base = read_region(self.base, box, self.device)
        blended = (base * (1 - w_mask) + w_face * w_mask).round().clamp(0, 255)
        patch = blended.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        # Only pixels where this face won change; every other byte stays as it was.
        current = np.array(self.out.crop(box))
        hit = wins.cpu().numpy()
        current[hit] = patch[hit]
        self.out.paste(Image.fromarray(current, "RGB"), box[:2])

    def result(self) -> Image.Image:
        return self.out


def read_region(
    image: Image.Image, box: tuple[int, int, int, int], device: torch.device
) -> torch.Tensor:
    """``[3,h,w]`` float pixels of one box of an RGB image, without touching the rest."""
    arr = np.array(image.crop(box), dtype=np.uint8)
    return torch.from_numpy(arr).to(device).permute(2, 0, 1).float()


def composite(image: npt.NDArray[np.uint8], faces: list[PastedFace]) -> npt.NDArray[np.uint8]:
    """Blend ``faces`` into a copy of ``image`` (``[H,W,3]`` uint8); pixels outside every
    mask keep their exact values."""
    canvas = Compositor(Image.fromarray(image, "RGB"), faces[0].face.device if faces else None)
    for face in faces:
        canvas.add(face)
    return np.asarray(canvas.result())
