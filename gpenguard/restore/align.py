"""Face alignment: GPEN's 5-point template, a least-squares similarity fit, and affine warps.

Coordinates are in pixels with a pixel's centre at its integer index (OpenCV's convention,
which GPEN's numbers assume). A 2x3 matrix ``M`` maps source (x, y, 1) to destination.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional

Matrix = npt.NDArray[np.float64]

#: The 5-point template on its 96x112 crop: left eye, right eye, nose, mouth corners.
_BASE_POINTS = np.array(
    [
        [30.29459953, 51.69630051],
        [65.53179932, 51.50139999],
        [48.02519989, 71.73660278],
        [33.54930115, 92.3655014],
        [62.72990036, 92.20410156],
    ]
)


def reference_points(size: int) -> Matrix:
    """The template for a ``size`` x ``size`` crop, as GPEN lays it out.

    The 96x112 crop is made square (x + 8), padded by a quarter on each side (+28 on both
    axes, 168x168), then scaled by ``size / 168``.
    """
    points: Matrix = (_BASE_POINTS + np.array([36.0, 28.0])) * (size / 168)
    return points


def fit_similarity(src: npt.ArrayLike, dst: npt.ArrayLike) -> Matrix:
    """Least-squares similarity (rotation, uniform scale, translation) taking ``src`` to ``dst``.

    Closed form (Umeyama 1991) with a reflection guard, so it never mirrors a face.
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.shape != d.shape or s.ndim != 2 or s.shape[1] != 2 or s.shape[0] < 2:
        raise ValueError(f"need matching (N>=2, 2) point sets, got {s.shape} and {d.shape}")
    s_mean, d_mean = s.mean(axis=0), d.mean(axis=0)
    s_c, d_c = s - s_mean, d - d_mean
    cov = d_c.T @ s_c / len(s)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1] = -1.0
    rot = u @ np.diag(sign) @ vt
    var = s_c.var(axis=0).sum()
    if var <= 0:
        raise ValueError("source points are all identical")
    scale = float(sigma @ sign) / var
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = d_mean - m[:, :2] @ s_mean
    return m


def invert(m: Matrix) -> Matrix:
    """The inverse of a 2x3 affine map."""
    full = np.vstack([m, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def apply(m: Matrix, points: npt.ArrayLike) -> Matrix:
    """Map (N, 2) points through ``m``."""
    p = np.asarray(points, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def translate(m: Matrix, dx: float, dy: float) -> Matrix:
    """``m`` followed by a shift of the destination by (dx, dy)."""
    out = m.copy()
    out[:, 2] += (dx, dy)
    return out


def warp_affine(image: torch.Tensor, m: Matrix, out_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear warp of ``image`` ``[B,C,H,W]`` by ``m`` (source -> destination) into an
    ``out_hw`` canvas; samples outside the source are 0 (a constant border, like GPEN's)."""
    h_in, w_in = image.shape[-2:]
    h_out, w_out = out_hw
    inv = invert(m).tolist()
    # Float32 is exact enough here: coordinates are local to the output canvas (a face's
    # region), so even on huge photos they stay within a few thousand pixels.
    ys = torch.arange(h_out, dtype=torch.float32, device=image.device)[:, None]
    xs = torch.arange(w_out, dtype=torch.float32, device=image.device)[None, :]
    # align_corners=True: -1 and 1 are the centres of the first and last pixels.
    sx_scale, sy_scale = 2 / max(w_in - 1, 1), 2 / max(h_in - 1, 1)
    nx = (inv[0][0] * sx_scale) * xs + (inv[0][1] * sx_scale) * ys + (inv[0][2] * sx_scale - 1)
    ny = (inv[1][0] * sy_scale) * xs + (inv[1][1] * sy_scale) * ys + (inv[1][2] * sy_scale - 1)
    grid = torch.stack([nx, ny], dim=-1).to(image.dtype).unsqueeze(0)
    grid = grid.expand(image.shape[0], -1, -1, -1)
    return functional.grid_sample(
        image, grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )


def shift_source(m: Matrix, dx: float, dy: float) -> Matrix:
    """``m`` for a source cropped at (dx, dy): a point at p in the crop is p + (dx, dy) in the
    original, so the new map is ``m(p + (dx, dy))``."""
    out = m.copy()
    out[:, 2] += m[:, :2] @ np.array([dx, dy], dtype=np.float64)
    return out
