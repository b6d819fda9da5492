"""Image I/O: modes, EXIF orientation, alpha, and atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gpenguard.errors import InputError, RestoreError
from gpenguard.restore.images import SplitImage, read_image, write_image


def _pattern(w: int, h: int) -> Image.Image:
    ys, xs = np.mgrid[0:h, 0:w]
    arr = np.stack([xs * 255 // w, ys * 255 // h, np.full_like(xs, 90)], axis=-1)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_exif_orientation_is_applied(tmp_path: Path, suffix: str) -> None:
    img = _pattern(60, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate 90 degrees clockwise
    path = tmp_path / f"sideways{suffix}"
    img.save(path, exif=exif.tobytes())
    split = SplitImage.of(read_image(path))
    assert split.rgb.size == (40, 60)
    # Rotating clockwise brings the stored bottom-left corner to the top-left.
    top_left = np.asarray(split.rgb)[2, 2].astype(int)
    assert abs(top_left[1] - 255 * 37 // 40) < 12  # green encodes the stored row (y)
    assert top_left[0] < 12


def test_rgba_keeps_its_alpha(tmp_path: Path) -> None:
    img = _pattern(32, 24).convert("RGBA")
    alpha = Image.fromarray(np.tile(np.arange(32, dtype=np.uint8) * 8, (24, 1)), "L")
    img.putalpha(alpha)
    split = SplitImage.of(img)
    assert split.rgb.mode == "RGB" and split.alpha is not None
    back = split.merge(split.rgb)
    assert back.mode == "RGBA"
    assert np.array_equal(np.asarray(back), np.asarray(img))
    resized = split.merge(split.rgb.resize((64, 48)))
    assert resized.size == (64, 48) and resized.mode == "RGBA"


@pytest.mark.parametrize("mode", ["L", "LA", "P", "CMYK"])
def test_grayscale_and_palette_images(mode: str) -> None:
    img = _pattern(16, 16).convert(mode)
    split = SplitImage.of(img)
    assert split.rgb.mode == "RGB"
    assert split.merge(split.rgb).mode == {"L": "L", "LA": "LA", "P": "RGB", "CMYK": "RGB"}[mode]
    if mode == "L":
        assert np.array_equal(np.asarray(split.merge(split.rgb)), np.asarray(img))


def test_sixteen_bit_images_are_refused() -> None:
    with pytest.raises(RestoreError, match="8-bit"):
        SplitImage.of(Image.new("I;16", (4, 4)))


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    write_image(_pattern(8, 8), target)
    with Image.open(target) as written:
        assert written.size == (8, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_jpeg_cannot_take_alpha_and_nothing_is_written(tmp_path: Path) -> None:
    target = tmp_path / "out.jpg"
    with pytest.raises(RestoreError, match="alpha") as info:
        write_image(_pattern(8, 8).convert("RGBA"), target)
    assert str(target) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_failed_encode_keeps_the_old_file_and_removes_the_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.webp"
    target.write_bytes(b"previous result")

    def broken_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        fp.write(b"half an image")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(InputError, match="disk full"):
        write_image(_pattern(4, 4), target)
    assert [p.name for p in tmp_path.iterdir()] == ["out.webp"]
    assert target.read_bytes() == b"previous result"


def test_unknown_suffix_and_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"\.tiff"):
        write_image(_pattern(4, 4), tmp_path / "x.tiff")
    with pytest.raises(InputError, match="cannot write") as info:
        write_image(_pattern(4, 4), tmp_path / "nope" / "x.png")
    assert info.value.path == str(tmp_path / "nope" / "x.png")


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(InputError, match="not an image") as info:
        read_image(junk)
    assert str(junk) in str(info.value)
    with pytest.raises(InputError):
        read_image(tmp_path / "missing.png")
    gif = tmp_path / "anim.gif"
    _pattern(4, 4).save(gif)
    with pytest.raises(InputError, match="GIF"):
        read_image(gif)


def test_truncated_image_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="cannot read"):
        read_image(path)


def test_decompression_bombs_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    _pattern(64, 64).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputError, match="too large"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_icc_profile_is_carried_to_the_output(tmp_path: Path, suffix: str) -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = tmp_path / f"in{suffix}"
    _pattern(16, 16).save(src, icc_profile=icc)
    split = SplitImage.of(read_image(src))
    out = write_image(split.merge(split.rgb.copy()), tmp_path / f"out{suffix}")
    with Image.open(out) as written:
        assert written.info.get("icc_profile") == icc


def test_odd_files_name_the_file_and_say_why(tmp_path: Path) -> None:
    sixteen = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(sixteen)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    cases = {
        sixteen: "unsupported image mode 'I;16'",
        empty: "not an image",
        folder: "cannot read image: Is a directory",
        tmp_path / "missing.png": "cannot read image: No such file or directory$",
    }
    for path, why in cases.items():
        with pytest.raises(InputError, match=why) as info:
            read_image(path)
        assert info.value.path is not None and Path(info.value.path) == path
    cmyk = tmp_path / "print.jpg"
    _pattern(8, 8).convert("CMYK").save(cmyk)
    assert SplitImage.of(read_image(cmyk)).rgb.mode == "RGB"


def test_lazily_opened_images_name_their_file_when_split(tmp_path: Path) -> None:
    cut = tmp_path / "cut.png"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(cut)
    cut.write_bytes(cut.read_bytes()[:200])
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(deep)
    with Image.open(cut) as img, pytest.raises(InputError, match="cannot read") as info:
        SplitImage.of(img)
    assert str(cut) in str(info.value)
    with Image.open(deep) as img, pytest.raises(RestoreError, match="8-bit") as err:
        SplitImage.of(img)
    assert str(deep) in str(err.value)
