"""Input images: which decoders may run, by content; bombs and damage as clear per-image errors."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from gpenguard.decoders import decode, identify, inspect
from gpenguard.errors import InputError

SHOWN = Path("/home/user/photos/the-host-path.png")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` and whose pixel data is one tiny IDAT."""
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _chunk(b"IEND", b"")
    )


def _saved(fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        ("TIFF", _saved("TIFF")),
        ("ICO", _saved("ICO")),
        ("PSD", b"8BPS\x00\x01" + b"\x00" * 64),
        ("BMP", _saved("BMP")),
        ("GIF", _saved("GIF")),
    ],
)
def test_other_formats_named_png_are_refused_by_their_real_name(tmp_path: Path, fmt: str, data: bytes) -> None:
    disguised = tmp_path / "holiday.png"
    disguised.write_bytes(data)
    assert identify(disguised) == fmt
    for check in (inspect, decode):
        with pytest.raises(InputError, match=rf"^{SHOWN}: {fmt} is not an accepted input format") as caught:
            check(disguised, shown=SHOWN)
        assert caught.value.path == str(SHOWN)


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "a.jpg"), ("JPEG", "b.webp"), ("WEBP", "c.png")])
def test_accepted_formats_are_read_whatever_their_name(tmp_path: Path, fmt: str, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(_saved(fmt))
    header = inspect(path)
    assert (header.format, header.width, header.height) == (fmt, 16, 16)
    assert decode(path).size == (16, 16)


@pytest.mark.parametrize(("side", "why"), [(30_000, "exceeds limit"), (10_000, "could be decompression bomb")])
def test_decompression_bombs_are_refused_from_the_header(tmp_path: Path, side: int, why: str) -> None:
    """Above Pillow's limit (error) and above its warning threshold alike, before any pixel."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(side, side))
    with pytest.raises(InputError, match=f"too large to decode safely: .*{why}") as caught:
        inspect(bomb, shown=SHOWN)
    assert caught.value.path == str(SHOWN)


@pytest.mark.parametrize("kind", ["zTXt", "iTXt"])
def test_text_chunk_bombs_are_refused(tmp_path: Path, kind: str) -> None:
    info = PngImagePlugin.PngInfo()
    text = "A" * (PngImagePlugin.MAX_TEXT_CHUNK * 4)
    if kind == "zTXt":
        info.add_text("Comment", text, zip=True)
    else:
        info.add_itxt("Comment", text, zip=True)
    bomb = tmp_path / "text-bomb.png"
    bomb.write_bytes(_saved("PNG", pnginfo=info))
    assert bomb.stat().st_size < 64 * 1024  # small on disk, megabytes once inflated
    with pytest.raises(InputError, match=r"(?i)decompressed data too large") as caught:
        inspect(bomb, shown=SHOWN)
    assert caught.value.path == str(SHOWN)


def test_damage_past_the_header_fails_the_decode_naming_the_shown_path(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 64).convert("RGB").save(buffer, format="JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    inspect(cut)  # the header is fine: only the sandbox decodes the pixels
    with pytest.raises(InputError, match="cannot read image") as caught:
        decode(cut, shown=SHOWN)
    assert str(caught.value).startswith(f"{SHOWN}: ")
    assert str(tmp_path) not in str(caught.value)


def test_sixteen_bit_and_empty_images_are_refused(tmp_path: Path) -> None:
    deep = tmp_path / "deep.png"
    Image.new("I;16", (4, 4)).save(deep)
    with pytest.raises(InputError, match="unsupported image mode 'I;16'"):
        inspect(deep)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="not an image in an accepted format"):
        inspect(empty)
