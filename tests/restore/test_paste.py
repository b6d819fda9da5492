"""The paste mask and compositing restored faces back into the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpenguard.restore import align, paste


def _logits(labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, 19).permute(2, 0, 1).float() * 10


def test_face_classes_make_a_feathered_mask() -> None:
    mask = paste.mask_from_parsing(_logits(torch.full((512, 512), 1)))  # all skin
    assert mask.shape == (512, 512)
    assert mask[256, 256] == pytest.approx(1.0, abs=1e-6)
    assert mask[0, 256] < 1e-3  # the 26-px border is cleared, then blurred
    assert mask[26 + 40, 256] > 0.99  # full strength ~40 px inside the border
    # The feather is smooth: monotone from the edge inwards.
    edge = mask[256, :80].numpy()
    assert np.all(np.diff(edge) >= -1e-7)


@pytest.mark.parametrize("cls", [0, 14, 18])
def test_background_hat_and_cloth_are_never_pasted(cls: int) -> None:
    assert paste.mask_from_parsing(_logits(torch.full((512, 512), cls))).max() == 0


@pytest.mark.parametrize("cls", [13, 17])  # hair and neck are pasted, as in GPEN
def test_hair_and_neck_are_pasted(cls: int) -> None:
    assert paste.mask_from_parsing(_logits(torch.full((512, 512), cls)))[256, 256] > 0.99


def test_blur_keeps_constants_and_mass() -> None:
    torch.testing.assert_close(paste.gaussian_blur(torch.ones(200, 200)), torch.ones(200, 200))
    spike = torch.zeros(301, 301)
    spike[150, 150] = 1
    blurred = paste.gaussian_blur(spike)
    assert blurred.sum() == pytest.approx(1.0, abs=1e-5)
    assert blurred[150, 150] == pytest.approx(1 / (2 * np.pi * 16), rel=1e-3)


def test_tiled_mask_canvas_matches_one_big_canvas(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same overlapping faces, pasted with tiny tiles (many boundaries) and with one tile.
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (120, 150, 3), dtype=np.uint8)
    faces = []
    for dx, dy, angle in ((10, 5, 0.2), (40, 30, -0.4), (60, 10, 0.0)):
        m = align.fit_similarity(
            align.reference_points(48) * 1.2 + [dx, dy], align.reference_points(48)
        )
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        m[:, :2] = m[:, :2] @ rot
        face = _face(image, m, 48)
        faces.append(paste.PastedFace(torch.rand(3, 48, 48) * 255, face.mask, face.crop_to_image))
    monkeypatch.setattr(paste.Compositor, "TILE", 7)
    tiled = paste.composite(image, faces)
    monkeypatch.setattr(paste.Compositor, "TILE", 4096)
    whole = paste.composite(image, faces)
    assert np.array_equal(tiled, whole)
    assert not np.array_equal(whole, image)


def _gradient(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    img = np.stack([xs * 1.0, ys * 1.2, (xs + ys) * 0.5], axis=-1) + 10
    return img.clip(0, 255).astype(np.uint8)


def _face(image: np.ndarray, m_img_to_crop: np.ndarray, size: int) -> paste.PastedFace:
    """An 'identity restorer': the crop itself is the restored face, under an all-face mask."""
    src = torch.from_numpy(image).permute(2, 0, 1).float()[None]
    crop = align.warp_affine(src, m_img_to_crop, (size, size))[0].round()
    mask = torch.nn.functional.interpolate(
        paste.mask_from_parsing(_logits(torch.full((512, 512), 1)))[None, None],
        size=(size, size),
        mode="bilinear",
    )[0, 0]
    return paste.PastedFace(crop, mask, align.invert(m_img_to_crop))


def test_identity_restorer_reproduces_the_input_inside_the_mask() -> None:
    image = _gradient(180, 200)
    m = align.fit_similarity(
        align.reference_points(128) * 0.6 + [40, 30], align.reference_points(128)
    )
    m = np.vstack([m, [0, 0, 1]])[:2]
    rot = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    m[:, :2] = m[:, :2] @ rot  # tilt it so the warps resample
    face = _face(image, m, 128)
    out = paste.composite(image, [face])
    inside = align.warp_affine(face.mask[None, None], align.invert(m), image.shape[:2])[0, 0] > 0.5
    # The crop runs off the top edge; there the outermost image row blends with the warp's black
    # border (as in GPEN), so the check stays one pixel inside the image.
    inside[0, :], inside[-1, :], inside[:, 0], inside[:, -1] = False, False, False, False
    assert inside.sum() > 1000
    diff = np.abs(out.astype(int) - image.astype(int))
    # Bilinear resampling reproduces a linear image; rounding twice costs at most a level or two.
    assert diff[inside.numpy()].max() <= 2


def test_pixels_outside_every_face_keep_their_exact_bytes() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    faces = []
    for dx, dy in ((20, 20), (230, 150)):
        m = align.fit_similarity(
            align.reference_points(64) * 1.5 + [dx, dy], align.reference_points(64)
        )
        face = _face(image, m, 64)
        faces.append(paste.PastedFace(255 - face.face, face.mask, face.crop_to_image))
    out = paste.composite(image, faces)
    touched = np.zeros(image.shape[:2], dtype=bool)
    for f in faces:
        r = paste.footprint(f.crop_to_image, 64, 400, 300)
        touched[r.y0 : r.y1, r.x0 : r.x1] = True
    assert touched.mean() < 0.5
    assert np.array_equal(out[~touched], image[~touched])
    assert not np.array_equal(out[touched], image[touched])  # the faces did change something


def test_later_faces_win_only_where_their_mask_is_higher() -> None:
    image = np.full((100, 100, 3), 100, dtype=np.uint8)
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    ramp = torch.linspace(0, 1, 100).expand(100, 100)
    dark = paste.PastedFace(torch.zeros(3, 100, 100), ramp.clone(), ident)
    light = paste.PastedFace(torch.full((3, 100, 100), 200.0), ramp.flip(1).clone(), ident)
    out = paste.composite(image, [dark, light]).astype(int)
    # Left: the light face's mask is higher; right: the dark one's.
    assert out[50, 10, 0] == round(100 * (1 - ramp[50, 89].item()) + 200 * ramp[50, 89].item())
    assert out[50, 90, 0] == round(100 * (1 - ramp[50, 90].item()))


def _blur_by_convolution(x: torch.Tensor) -> torch.Tensor:
    """Reference: pad by mirroring (reflect-101) and convolve, rows then columns."""
    t = torch.arange(101, dtype=torch.float64) - 50
    k = torch.exp(-(t**2) / 32)
    k = (k / k.sum()).float()
    y = torch.nn.functional.pad(x[None, None], (50, 50, 0, 0), mode="reflect")
    y = torch.nn.functional.conv2d(y, k.view(1, 1, 1, -1))
    y = torch.nn.functional.pad(y, (0, 0, 50, 50), mode="reflect")
    return torch.nn.functional.conv2d(y, k.view(1, 1, -1, 1))[0, 0]


def test_matrix_blur_equals_blurring_twice_by_convolution() -> None:
    x = (torch.rand(128, 96) > 0.5).float()
    twice = _blur_by_convolution(_blur_by_convolution(x))
    torch.testing.assert_close(paste.gaussian_blur(x, passes=2), twice, atol=1e-5, rtol=0)
    torch.testing.assert_close(paste.gaussian_blur(x), _blur_by_convolution(x), atol=1e-5, rtol=0)


def test_mask_follows_argmax_of_the_parse() -> None:
    torch.manual_seed(0)
    logits = torch.randn(19, 512, 512)
    labels = logits.argmax(dim=0)
    hard = torch.ones(512, 512)
    for cls in (0, 14, 18):
        hard[labels == cls] = 0
    hard[:26], hard[-26:], hard[:, :26], hard[:, -26:] = 0, 0, 0, 0
    torch.testing.assert_close(
        paste.mask_from_parsing(logits), paste.gaussian_blur(hard, passes=2), atol=1e-5, rtol=0
    )
