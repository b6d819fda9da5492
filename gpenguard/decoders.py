"""Which input images may be decoded, checked on the host before a job and again in the worker.

Pillow can read some forty formats, each its own parser of untrusted bytes; a photo restorer
needs three. Every input is identified by its content (never its name) and only the PNG, JPEG
and WebP decoders may open it: a TIFF, ICO or PSD named ``.png`` is refused by its real name.
Pillow's decompression-bomb limit is an error here, not a warning, and its limits on PNG text
chunks (``PngImagePlugin.MAX_TEXT_CHUNK``, ``MAX_TEXT_MEMORY``) apply as they are. Every failure
is an `InputError` naming the path the caller chose to show (the host's path, never a path
inside the sandbox), so one bad photo becomes one clear line and the rest of a batch goes on.

The host only reads headers (`inspect`): decoding pixels is the sandbox's job. The worker
decodes (`decode`) under the same rules.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from gpenguard.errors import InputError

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
"""The decoders an input may reach, by Pillow's format name."""
_OPENED_AS = {"PNG", "JPEG", "MPO", "WEBP"}
"""What those decoders report: a camera JPEG with a multi-picture index opens as MPO."""
ACCEPTED_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
LISTED_SUFFIXES = (*ACCEPTED_SUFFIXES, ".bmp", ".gif", ".tif", ".tiff", ".ico", ".psd", ".jp2", ".heic", ".avif")
"""Files a folder contributes: the accepted ones, plus image types refused by name rather than
skipped in silence, so the summary says why a photo was not restored."""
MODES = ("RGB", "RGBA", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr")
"""8-bit modes the restorer reads (the last five are converted to RGB or RGBA first)."""
ORIENTATION = 0x0112
_PREFIX = 16
"""Bytes Pillow's format sniffers look at (what `Image.open` reads before choosing a plugin)."""
_DAMAGE = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, IndexError, TypeError)
"""What Pillow's parsers raise on damaged or hostile bytes."""


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What the host learns about an input from its header alone (no pixel is decoded)."""

    format: str
    width: int
    height: int
    mode: str
    turned: bool
    """EXIF orientation 5-8: the upright image is `height` wide and `width` high."""
    icc_profile: bytes | None


def identify(path: str | Path) -> str | None:
    """The format Pillow's own sniffers see in the first bytes, without opening a decoder."""
    with Path(path).open("rb") as handle:
        prefix = handle.read(_PREFIX)
    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        try:
            if accept is not None and accept(prefix):
                return str(name)
        except Exception:  # a sniffer that chokes on 16 bytes has not recognised them
            continue
    return None


@contextmanager
def open_checked(path: str | Path, *, shown: str | Path | None = None) -> Iterator[Image.Image]:
    """`Image.open` restricted to the accepted decoders and bomb limits; errors name `shown`.

    The image is open lazily (headers read); `load()` inside the block decodes it, and any
    failure there becomes the same `InputError`.
    """
    shown = path if shown is None else shown
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image = Image.open(path, formats=list(ACCEPTED_FORMATS))
            except UnidentifiedImageError:
                raise _refused(path, shown) from None
            with image:
                if image.format not in _OPENED_AS:
                    raise InputError(f"{image.format} is not an accepted input format (use PNG, JPEG or WebP)", path=shown)
                if image.mode not in MODES:
                    raise InputError(
                        f"unsupported image mode {image.mode!r}: only 8-bit RGB, RGBA, grayscale and palette images are restored",
                        path=shown,
                    )
                yield image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"image is too large to decode safely: {exc}", path=shown) from exc
    except InputError:
        raise
    except _DAMAGE as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise InputError(f"cannot read image: {reason}", path=shown) from exc


def _refused(path: str | Path, shown: str | Path) -> InputError:
    try:
        found = identify(path)
    except OSError as exc:
        return InputError(f"cannot read image: {exc.strerror or exc}", path=shown)
    if found is not None and found not in _OPENED_AS:
        return InputError(f"{found} is not an accepted input format (use PNG, JPEG or WebP)", path=shown)
    return InputError("not an image in an accepted format (PNG, JPEG or WebP)", path=shown)


def inspect(path: str | Path, *, shown: str | Path | None = None) -> ImageHeader:
    """Format, size, orientation and colour profile from the header; the host's early check."""
    with open_checked(path, shown=shown) as image:
        width, height = image.size
        if width < 1 or height < 1:
            raise InputError("image has no pixels", path=shown or path)
        turned = image.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)
        icc = image.info.get("icc_profile")
        return ImageHeader(
            format=str(image.format),
            width=width,
            height=height,
            mode=image.mode,
            turned=turned,
            icc_profile=icc if isinstance(icc, bytes) and icc else None,
        )


def decode(path: str | Path, *, shown: str | Path | None = None) -> Image.Image:
    """The fully decoded image (``info``, EXIF included, kept), under the same rules."""
    with open_checked(path, shown=shown) as image:
        image.load()
        return image.copy()
