"""The 5-point template, the similarity fit, and the warp onto the template."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gpenguard.restore import align


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (
            512,
            [
                (202.04, 242.88),
                (309.43, 242.29),
                (256.08, 303.96),
                (211.96, 366.83),
                (300.89, 366.34),
            ],
        ),
        (
            2048,
            [
                (808.16, 971.54),
                (1237.72, 969.16),
                (1024.31, 1215.84),
                (847.84, 1467.31),
                (1203.56, 1465.35),
            ],
        ),
    ],
)
def test_reference_points_match_gpen(size: int, expected: list[tuple[float, float]]) -> None:
    np.testing.assert_allclose(align.reference_points(size), expected, atol=0.006)


def _similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def test_fit_recovers_an_exact_similarity() -> None:
    src = np.array([[10.0, 20.0], [50.0, 22.0], [30.0, 40.0], [15.0, 60.0], [45.0, 61.0]])
    m = _similarity(2.5, 0.4, 100.0, -30.0)
    np.testing.assert_allclose(align.fit_similarity(src, align.apply(m, src)), m, atol=1e-9)


def test_fit_is_least_squares_and_never_mirrors() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    dst = src * [-1, 1]  # a mirror image: best *similarity* must still be a rotation
    m = align.fit_similarity(src, dst)
    assert np.linalg.det(m[:, :2]) > 0
    noisy = align.apply(_similarity(1.3, -0.2, 5, 7), src) + rng.normal(0, 0.5, (5, 2))
    fitted = align.fit_similarity(src, noisy)
    # Independent check: a similarity is linear in (a, b, tx, ty); solve that system directly.
    rows = []
    for x, y in src:
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
    (a, b, tx, ty), *_ = np.linalg.lstsq(np.array(rows), noisy.ravel(), rcond=None)
    np.testing.assert_allclose(fitted, [[a, -b, tx], [b, a, ty]], atol=1e-9)


def test_fit_rejects_degenerate_points() -> None:
    with pytest.raises(ValueError, match="identical"):
        align.fit_similarity(np.ones((5, 2)), np.zeros((5, 2)))


def test_invert_and_shift_source() -> None:
    m = _similarity(0.7, 1.1, 3, 4)
    pts = np.array([[1.0, 2.0], [30.0, -4.0]])
    np.testing.assert_allclose(align.apply(align.invert(m), align.apply(m, pts)), pts, atol=1e-12)
    shifted = align.shift_source(m, 10, 20)
    np.testing.assert_allclose(
        align.apply(shifted, pts - [10, 20]), align.apply(m, pts), atol=1e-12
    )


def test_warp_by_identity_and_integer_shift() -> None:
    img = torch.arange(48, dtype=torch.float32).reshape(1, 3, 4, 4)
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    torch.testing.assert_close(align.warp_affine(img, ident, (4, 4)), img)
    shifted = align.warp_affine(img, np.array([[1.0, 0, 1], [0, 1.0, 0]]), (4, 4))
    torch.testing.assert_close(shifted[..., 1:], img[..., :3])
    assert shifted[..., 0].abs().max() < 1e-5  # constant black border, like cv2.warpAffine


def _dots(points: np.ndarray, hw: tuple[int, int], sigma: float) -> torch.Tensor:
    """One Gaussian blob per point, each in its own channel."""
    ys, xs = np.mgrid[0 : hw[0], 0 : hw[1]]
    chans = [np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)) for x, y in points]
    return torch.tensor(np.stack(chans), dtype=torch.float32)[None]


def _centroids(img: torch.Tensor) -> np.ndarray:
    arr = img[0].numpy().astype(np.float64)
    ys, xs = np.mgrid[0 : arr.shape[1], 0 : arr.shape[2]]
    w = arr / arr.sum(axis=(1, 2), keepdims=True)
    return np.stack([(w * xs).sum(axis=(1, 2)), (w * ys).sum(axis=(1, 2))], axis=1)


@pytest.mark.parametrize("size", [128, 256])
def test_landmarks_land_on_the_template_within_half_a_pixel(size: int) -> None:
    # A tilted, off-centre face in a 300x240 image.
    template = align.reference_points(size)
    landmarks = align.apply(_similarity(0.8, -0.35, 40.0, 25.0), template)
    image = _dots(landmarks, (240, 300), sigma=3.0)
    crop = align.warp_affine(image, align.fit_similarity(landmarks, template), (size, size))
    assert np.abs(_centroids(crop) - template).max() < 0.5


def test_imperfect_landmarks_go_where_the_fit_sends_them() -> None:
    template = align.reference_points(192)
    jitter = [[1.3, -1.2], [-1.1, 1.25], [0, 0], [1.2, 1.1], [-1.2, -1.1]]
    landmarks = align.apply(_similarity(1.4, 0.5, 60.0, -20.0), template) + jitter
    image = _dots(landmarks, (400, 360), sigma=3.0)
    m = align.fit_similarity(landmarks, template)
    crop = align.warp_affine(image, m, (192, 192))
    assert np.abs(_centroids(crop) - align.apply(m, landmarks)).max() < 0.5
