"""The Restorer end to end, on synthetic images with random or rigged weights.

GPEN itself is stood in for by tiny generators (identity, constant, a random conv): the
pipeline around it is what is tested here; the real ``FullGenerator`` has its own tests.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from gpenguard.errors import ModelError, UsageError
from gpenguard.nets.parsenet import ParseNet
from gpenguard.nets.retinaface import RetinaFace
from gpenguard.restore import Face, Restorer, RestorerWeights, paste, pipeline
from gpenguard.restore.weights import load_into

torch.set_num_threads(1)
SIZE = 64
# Landmarks of the rigged detector, relative to its anchor centre, in px: a ~40 px wide face.
LAYOUT = np.array([[-20.0, -15.0], [20.0, -16.0], [0.0, 5.0], [-15.0, 25.0], [15.0, 24.0]])


class Identity(nn.Module):
    """'Restores' a face by returning it: the paste-back must then give the input back."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x * self.scale, None  # the reference generator's (image, latents) tuple


class Constant(Identity):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.ones_like(x) * self.scale, None


class AllFace(nn.Module):
    """A parser that calls every pixel skin."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.zeros(x.shape[0], 19, *x.shape[2:])
        logits[:, 1] = 10
        return logits, x


def rigged_retinaface(faces: bool = True, spread: float = 1.0) -> RetinaFace:
    """Random backbone; heads set so the 256-px anchors (stride 32, first anchor) are faces
    with the `LAYOUT` landmarks, and nothing else is. (A copy: callers may move it.)"""
    return copy.deepcopy(_rigged(faces, spread))


@functools.cache
def _rigged(faces: bool, spread: float) -> RetinaFace:
    torch.manual_seed(0)
    net = RetinaFace().eval()
    with torch.no_grad():
        for heads in (net.ClassHead, net.BboxHead, net.LandmarkHead):
            for head in heads:
                head.conv1x1.weight.zero_()
                head.conv1x1.bias.zero_()
        for head in net.ClassHead:
            head.conv1x1.bias.copy_(torch.tensor([8.0, -8.0, 8.0, -8.0]))
        if faces:
            net.ClassHead[2].conv1x1.bias[:2] = torch.tensor([-8.0, 8.0])
            net.LandmarkHead[2].conv1x1.bias[:10] = torch.from_numpy(LAYOUT.ravel() * spread / 25.6)
    return net


def smooth_image(w: int = 160, h: int = 160) -> Image.Image:
    ys, xs = np.mgrid[0:h, 0:w]
    arr = np.stack([xs * 200 / w + 20, ys * 200 / h + 30, (xs + ys) * 100 / (w + h) + 60], axis=-1)
    return Image.fromarray(arr.round().astype(np.uint8), "RGB")


def make(
    generator: nn.Module,
    *,
    faces: bool = True,
    spread: float = 1.0,
    parser: nn.Module | None = None,
    **kw: object,
) -> Restorer:
    return Restorer.from_modules(
        generator,
        detector=rigged_retinaface(faces, spread),
        parser=parser if parser is not None else AllFace(),  # type: ignore[arg-type]
        size=SIZE,
        **kw,  # type: ignore[arg-type]
    )


def _footprints(faces: tuple[object, ...], w: int, h: int, size: int = SIZE) -> np.ndarray:
    from gpenguard.restore import align

    touched = np.zeros((h, w), dtype=bool)
    for face in faces:
        m = align.invert(align.fit_similarity(face.landmark_array, align.reference_points(size)))  # type: ignore[attr-defined]
        r = paste.footprint(m, size, w, h)
        touched[r.y0 : r.y1, r.x0 : r.x1] = True
    return touched


def test_no_faces_returns_the_image_unchanged() -> None:
    image = smooth_image()
    result = make(Constant(), faces=False).restore(image)
    assert result.faces == ()
    assert np.array_equal(np.asarray(result.image), np.asarray(image))


def test_identity_restorer_gives_the_input_back() -> None:
    image = smooth_image(200, 160)
    restorer = make(Identity())
    result = restorer.restore(image)
    assert len(result.faces) >= 2  # several 256-px anchors survive NMS: overlapping pastes
    out, src = np.asarray(result.image).astype(int), np.asarray(image).astype(int)
    assert result.image.size == image.size
    # Crops that run off the image are black there (GPEN's constant border); each 64-px crop
    # pixel spans ~3 image pixels here, so the image's outer 4 px can blend with that black.
    inner = np.zeros(src.shape[:2], dtype=bool)
    inner[4:-4, 4:-4] = True
    assert np.abs(out - src)[inner].max() <= 2


def test_faces_change_and_the_background_does_not() -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    image = Image.fromarray(noise, "RGB")
    # Small landmark spread: each face covers ~50 px, anchors survive NMS >= 128 px apart.
    result = make(Constant(), spread=0.25).restore(image)  # paints every face white
    assert len(result.faces) >= 2
    out = np.asarray(result.image)
    touched = _footprints(result.faces, 400, 300)
    assert touched.mean() < 0.5
    assert np.array_equal(out[~touched], noise[~touched])
    noses = 0
    for face in result.faces:
        x, y = (round(v) for v in face.landmark_array[2])
        if 0 <= x < 400 and 0 <= y < 300:
            assert (out[y, x] == 255).all()
            noses += 1
    assert noses >= 1


def test_alpha_and_grayscale_survive_full_mode() -> None:
    rgba = smooth_image().convert("RGBA")
    alpha = Image.fromarray(np.tile(np.arange(160, dtype=np.uint8), (160, 1)), "L")
    rgba.putalpha(alpha)
    out = make(Constant()).restore_image(rgba)
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out.getchannel("A")), np.asarray(alpha))
    gray = make(Constant()).restore_image(smooth_image().convert("L"))
    assert gray.mode == "L" and gray.size == (160, 160)


def test_small_faces_are_smoothed_and_alpha_blends() -> None:
    # The rigged boxes are 256 px: not "small". Blending half the original back in halves
    # the change a white face makes.
    image = Image.new("RGB", (160, 160), (100, 100, 100))
    full = np.asarray(make(Constant()).restore_image(image)).astype(int)
    half = np.asarray(make(Constant(), face_alpha=0.5).restore_image(image)).astype(int)
    centre = full[80, 80, 0], half[80, 80, 0]
    assert centre[0] == 255
    assert abs(centre[1] - (255 + 100) / 2) <= 1


def test_real_parsenet_runs_in_the_pipeline() -> None:
    narrow = ParseNet(base_ch=8, res_depth=1, ch_range=(8, 16)).eval()
    result = make(Identity(), parser=narrow).restore(smooth_image())
    assert result.image.size == (160, 160) and len(result.faces) >= 2


def test_aligned_mode_resizes_and_restores() -> None:
    restorer = Restorer.from_modules(Identity(), size=SIZE, mode="aligned")
    crop = smooth_image(100, 100)
    out = restorer.restore_image(crop)
    assert out.size == (SIZE, SIZE)
    expected = np.asarray(crop.resize((SIZE, SIZE), Image.Resampling.BILINEAR)).astype(int)
    assert np.abs(np.asarray(out).astype(int) - expected).max() <= 1
    batch = restorer.restore_batch([crop, crop.convert("L")])
    assert [im.mode for im in batch] == ["RGB", "L"]


def test_generator_in_half_precision_keeps_the_contract() -> None:
    restorer = Restorer.from_modules(Identity(), size=SIZE, mode="aligned", dtype=torch.bfloat16)
    out = restorer.restore_image(smooth_image(SIZE, SIZE))
    assert out.size == (SIZE, SIZE)
    assert (
        np.abs(np.asarray(out).astype(int) - np.asarray(smooth_image(SIZE, SIZE)).astype(int)).max()
        <= 2
    )


def test_bad_settings_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="mode"):
        Restorer.from_modules(Identity(), size=SIZE, mode="both")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="detector"):
        Restorer.from_modules(Identity(), size=SIZE)
    with pytest.raises(UsageError, match="face_alpha"):
        Restorer.from_modules(Identity(), size=SIZE, mode="aligned", face_alpha=2.0)
    with pytest.raises(UsageError, match="retinaface"):
        Restorer({"gpen": "g.safetensors"}, size=512)
    with pytest.raises(UsageError, match="unknown"):
        RestorerWeights.from_mapping({"gpen": "a", "esrgan": "b"})
    with pytest.raises(UsageError, match="size 300"):
        pipeline.build_generator(300)


def test_unusable_devices_are_usage_errors_before_any_weights_load() -> None:
    # the weights path does not exist: the device is refused first, with a UsageError
    with pytest.raises(UsageError, match="not a torch device: 'bogus'"):
        Restorer({"gpen": "missing.safetensors"}, device="bogus", mode="aligned")
    with pytest.raises(UsageError, match="not a torch device"):
        Restorer.from_modules(Identity(), size=SIZE, mode="aligned", device="gpu")
    with pytest.raises(UsageError, match="cuda:99"):
        Restorer({"gpen": "missing.safetensors"}, device="cuda:99", mode="aligned")
    assert pipeline.resolve_device("cpu") == torch.device("cpu")


def _save(module: nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


def test_constructor_loads_everything_from_safetensors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "build_generator", lambda size, **_: Identity())
    weights = RestorerWeights(
        gpen=_save(Identity(), tmp_path / "gpen.safetensors"),
        retinaface=_save(rigged_retinaface(faces=False), tmp_path / "r50.safetensors"),
        parsenet=_save(ParseNet(), tmp_path / "parse.safetensors"),
    )
    restorer = Restorer(weights, size=SIZE)
    assert restorer.restore(smooth_image()).faces == ()  # the rigged heads were loaded
    aligned = Restorer({"gpen": weights.gpen}, size=SIZE, mode="aligned")
    assert aligned.restore_image(smooth_image()).size == (SIZE, SIZE)


def test_constructor_refuses_pickles_and_mismatched_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "build_generator", lambda size, **_: Identity())
    pth = tmp_path / "GPEN-BFR-2048.pth"
    pth.write_bytes(b"PK\x03\x04")
    with pytest.raises(ModelError, match="safetensors"):
        Restorer({"gpen": pth}, size=SIZE, mode="aligned")
    wrong = _save(AllFaceWithWeights(), tmp_path / "wrong.safetensors")
    with pytest.raises(ModelError, match="missing: scale"):
        Restorer({"gpen": wrong}, size=SIZE, mode="aligned")


class AllFaceWithWeights(AllFace):
    def __init__(self) -> None:
        super().__init__()
        self.other = nn.Parameter(torch.zeros(2))


def test_in_memory_tensors_under_the_worker_role_names(monkeypatch: pytest.MonkeyPatch) -> None:
    # The sandbox worker hashes the bytes, parses them once, and hands over the tensors.
    monkeypatch.setattr(pipeline, "build_generator", lambda size, **_: Constant())
    restorer = Restorer(
        {
            "gpen": Constant().state_dict(),
            "detector": {f"module.{k}": v for k, v in rigged_retinaface().state_dict().items()},
            "parser": ParseNet().state_dict(),
        },
        size=SIZE,
    )
    assert restorer.detector is not None
    torch.testing.assert_close(
        restorer.detector.net.ClassHead[2].conv1x1.bias, torch.tensor([-8.0, 8.0, 8.0, -8.0])
    )
    with pytest.raises(UsageError, match="twice"):
        RestorerWeights.from_mapping({"gpen": "a", "parser": "b", "parsenet": "c"})
    with pytest.raises(ModelError, match="<gpen tensors>"):
        Restorer({"gpen": {"nope": torch.zeros(1)}}, size=SIZE, mode="aligned")


def test_real_gpen_generator_end_to_end() -> None:
    from gpenguard.nets.gpen import FullGenerator

    torch.manual_seed(0)
    gen = FullGenerator(SIZE, style_dim=32, n_mlp=2, channel_multiplier=1, narrow=1 / 32)
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    result = make(gen, spread=0.25).restore(Image.fromarray(noise, "RGB"))
    out = np.asarray(result.image)
    assert out.shape == noise.shape and len(result.faces) >= 2
    touched = _footprints(result.faces, 400, 300)
    assert np.array_equal(out[~touched], noise[~touched])
    assert not np.array_equal(out[touched], noise[touched])


def test_tensors_in_memory_are_normalised_and_strictly_checked() -> None:
    # What the sandbox worker hands over: a DataParallel prefix, no BatchNorm counters.
    net = rigged_retinaface()
    sd = {f"module.{k}": v for k, v in net.state_dict().items() if "num_batches" not in k}
    fresh = load_into(RetinaFace(), sd, role="retinaface")
    torch.testing.assert_close(fresh.ClassHead[2].conv1x1.bias, net.ClassHead[2].conv1x1.bias)
    with pytest.raises(ModelError, match="<retinaface tensors>"):
        load_into(RetinaFace(), {"x": torch.zeros(1)}, role="retinaface")


def test_build_generator_is_real_unless_asked_for_meta() -> None:
    assert not next(pipeline.build_generator(256).parameters()).is_meta
    assert next(pipeline.build_generator(256, meta=True).parameters()).is_meta


@pytest.mark.slow
def test_released_gpen_256_with_the_full_parsenet(tmp_path: Path) -> None:
    """Every network at its released shape (GPEN-BFR-256, ParseNet at 512, RetinaFace-R50),
    random weights, loaded from safetensors through the public constructor."""
    torch.manual_seed(0)
    gen = pipeline.build_generator(256)
    weights = RestorerWeights(
        gpen=_save(gen, tmp_path / "gpen.safetensors"),
        retinaface=_save(rigged_retinaface(spread=0.5), tmp_path / "r50.safetensors"),
        parsenet=_save(ParseNet(), tmp_path / "parse.safetensors"),
    )
    restorer = Restorer(weights, size=256)
    noise = np.random.default_rng(2).integers(0, 256, (200, 260, 3), dtype=np.uint8)
    restorer.detector.detect = lambda img, d=restorer.detector.detect: d(img)[:2]  # type: ignore[union-attr, method-assign, misc]
    result = restorer.restore(Image.fromarray(noise, "RGB"))
    assert result.image.size == (260, 200) and len(result.faces) == 2
    out = np.asarray(result.image)
    touched = _footprints(result.faces, 260, 200, size=256)
    assert np.array_equal(out[~touched], noise[~touched])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_matches_cpu(dtype: torch.dtype) -> None:
    from gpenguard.nets.gpen import FullGenerator

    torch.manual_seed(0)
    gen = FullGenerator(SIZE, style_dim=32, n_mlp=2, channel_multiplier=1, narrow=1 / 32)
    image = smooth_image(200, 160)
    cpu = np.asarray(make(gen, spread=0.5).restore_image(image)).astype(int)
    cuda = np.asarray(
        make(gen, spread=0.5, device="cuda", dtype=dtype).restore_image(image)
    ).astype(int)
    assert np.abs(cpu - cuda).max() <= (2 if dtype == torch.float32 else 8)


def test_faces_below_the_score_threshold_are_left_alone() -> None:
    # The rigged faces score sigmoid(16) ~ 0.99999989; demand more and none qualify.
    image = smooth_image()
    assert make(Constant()).restore(image).faces
    strict = make(Constant(), score_threshold=0.9999999)
    result = strict.restore(image)
    assert result.faces == ()
    assert np.array_equal(np.asarray(result.image), np.asarray(image))


def test_background_super_resolution_doubles_the_output() -> None:
    from gpenguard.nets.rrdbnet import RRDBNet
    from gpenguard.restore.upscale import upscale

    torch.manual_seed(0)
    sr = RRDBNet(scale=2, num_feat=8, num_block=1, num_grow_ch=4).eval()
    image = smooth_image(90, 70)
    none = make(Constant(), faces=False, upscaler=sr).restore(image)
    assert none.faces == ()
    expected = upscale(image, sr, device=torch.device("cpu"))
    assert np.array_equal(np.asarray(none.image), np.asarray(expected))
    found = make(Constant(), upscaler=sr).restore(image)
    assert found.image.size == (180, 140) and found.faces
    aligned = Restorer.from_modules(Identity(), size=SIZE, mode="aligned", upscaler=sr)
    assert aligned.restore_image(image).size == (2 * SIZE, 2 * SIZE)


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (33, 17)])
def test_tiny_images(size: tuple[int, int]) -> None:
    out = make(Constant()).restore_image(smooth_image(*size))
    assert out.size == size


def test_faces_with_degenerate_or_outside_landmarks_are_skipped() -> None:
    restorer = make(Constant())
    image = smooth_image(120, 100)
    outside = Face(
        box=(500, 500, 600, 600),
        score=0.99,
        landmarks=tuple((x + 900.0, y + 900.0) for x, y in LAYOUT),
    )
    collapsed = Face(box=(0, 0, 50, 50), score=0.99, landmarks=((20.0, 20.0),) * 5)
    assert restorer.detector is not None
    restorer.detector.detect = lambda img: [outside, collapsed]  # type: ignore[method-assign]
    result = restorer.restore(image)
    assert result.faces == ()
    assert np.array_equal(np.asarray(result.image), np.asarray(image))


def test_exif_rotated_photos_come_back_upright(tmp_path: Path) -> None:
    from gpenguard.restore.images import read_image

    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated: viewers turn it 90 degrees counter-clockwise
    path = tmp_path / "rotated.jpg"
    smooth_image(160, 120).save(path, exif=exif.tobytes(), quality=95)
    out = make(Constant(), faces=False).restore_image(read_image(path))
    assert out.size == (120, 160)
    with Image.open(path) as stored:
        upright = np.asarray(stored.transpose(Image.Transpose.ROTATE_90)).astype(int)
    assert np.abs(np.asarray(out).astype(int) - upright).max() <= 1
