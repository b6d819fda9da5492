"""Image I/O for restoration: 8-bit JPEG, PNG and WebP through Pillow.

Reading honours EXIF orientation (pixels are turned upright, so faces are found the way a
viewer shows them) and splits off alpha; writing goes to a temporary file in the target
directory and is renamed into place, so a failed or interrupted write leaves nothing behind.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from gpenguard.errors import InputError, RestoreError
from gpenguard.fileio import atomic_output

#: Formats read and written, keyed by Pillow's format name, with their file suffixes.
FORMATS = {"JPEG": (".jpg", ".jpeg"), "PNG": (".png",), "WEBP": (".webp",)}
_SUFFIX_TO_FORMAT = {s: fmt for fmt, suffixes in FORMATS.items() for s in suffixes}
_ORIENTATION = 0x0112
#: Modes `SplitImage` keeps as they are; it converts the other 8-bit modes to RGB(A) first.
_MODES = {"RGB", "RGBA", "L", "LA"}
#: What Pillow's decoders raise on a damaged file; all of them mean "unreadable".
_DAMAGE = (OSError, ValueError, SyntaxError, EOFError, struct.error)


def _unreadable(exc: BaseException, path: str | Path | None) -> InputError:
    # an OSError's strerror ("No such file or directory") without the path repeated in it
    reason = getattr(exc, "strerror", None) or exc
    return InputError(f"cannot read image: {reason}", path=path)


def _unsupported_mode(mode: str) -> str:
    return (
        f"unsupported image mode {mode!r}: only 8-bit RGB, RGBA, grayscale "
        "and grayscale+alpha images are restored"
    )


@dataclass(frozen=True)
class SplitImage:
    """An upright image as RGB pixels plus what is needed to give it back its own mode:
    the alpha channel (if any) and whether it was grayscale."""

    rgb: Image.Image
    alpha: Image.Image | None
    grayscale: bool
    icc_profile: bytes | None = None

    @classmethod
    def of(cls, image: Image.Image) -> SplitImage:
        """Split a PIL image (any 8-bit mode) into RGB + alpha; rotated upright by its EXIF.

        An image opened lazily (``Image.open``) is decoded here; damage or an unsupported
        mode is an error naming its file.
        """
        source = getattr(image, "filename", None) or None
        try:
            image.load()
        except _DAMAGE as exc:
            raise _unreadable(exc, source) from exc
        if image.getexif().get(_ORIENTATION, 1) != 1:  # transposing copies: only when needed
            image = ImageOps.exif_transpose(image)
        if image.mode in ("P", "PA", "1"):
            has_alpha = image.mode == "PA" or "transparency" in image.info
            image = image.convert("RGBA" if has_alpha else "RGB")
        elif image.mode in ("CMYK", "YCbCr"):  # 8-bit, just not RGB: restored as RGB
            image = image.convert("RGB")
        if image.mode not in _MODES:
            raise RestoreError(_unsupported_mode(image.mode), path=source)
        alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        icc = image.info.get("icc_profile")
        return cls(rgb, alpha, image.mode in ("L", "LA"), icc if isinstance(icc, bytes) else None)

    def merge(self, restored: Image.Image) -> Image.Image:
        """Put ``restored`` (RGB) back into the original's mode, alpha resized if needed."""
        out = restored.convert("L") if self.grayscale else restored
        if self.alpha is not None:
            alpha = self.alpha
            if alpha.size != out.size:
                alpha = alpha.resize(out.size, Image.Resampling.BILINEAR)
            out = out.copy()
            out.putalpha(alpha)
        if self.icc_profile is not None:  # colours mean what they meant in the input
            out.info["icc_profile"] = self.icc_profile
        return out


def read_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image; any failure is an `InputError` naming the file.

    Only the PNG, JPEG and WebP decoders are reached, chosen by content, with Pillow's bomb
    limits as errors (`gpenguard.decoders`, the sandbox worker's rules too).
    """
    from gpenguard.decoders import decode

    return decode(path)


def output_format(path: str | Path) -> str:
    """Pillow format name for a target path, from its suffix."""
    suffix = Path(path).suffix.lower()
    try:
        return _SUFFIX_TO_FORMAT[suffix]
    except KeyError:
        raise InputError(
            f"cannot write {suffix or 'a file without suffix'}: use .jpg, .png or .webp",
            path=path,
        ) from None


def write_image(image: Image.Image, path: str | Path, *, quality: int = 95) -> Path:
    """Write atomically: encode into a temp file beside ``path``, fsync, rename over it."""
    path = Path(path)
    fmt = output_format(path)
    if fmt == "JPEG" and image.mode in ("RGBA", "LA"):
        raise RestoreError(
            "JPEG cannot store the image's alpha channel; write .png or .webp instead", path=path
        )
    options: dict[str, object] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if isinstance(image.info.get("icc_profile"), bytes):
        options["icc_profile"] = image.info["icc_profile"]
    with atomic_output(path) as fh:
        image.save(fh, format=fmt, **options)
    return path
