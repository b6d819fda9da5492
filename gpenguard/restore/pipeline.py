"""The restoration pipeline: detect, align, restore with GPEN, parse, paste back.

`Restorer` is the library entry point and what the sandbox worker runs inside the container.
Its constructor loads every network once, from ``.safetensors`` files only; after that
`restore_image` is a pure function of the image. Two modes:

- ``"full"``: find faces with RetinaFace (score >= 0.9), align each to GPEN's 5-point template
  at the model size, restore it, and paste it back through ParseNet's soft face mask. Pixels
  outside every mask keep their exact values; an image without faces comes back unchanged.
- ``"aligned"``: the input already is an aligned face crop; it is resized to the model size and
  restored, and the restored crop is returned.

With Real-ESRNet weights the background (or, in aligned mode, the restored crop) is also
upscaled 2x, as GPEN's ``--use_sr`` does.

Deliberate differences from GPEN's demo, each small: the restored face is rounded to 8 bits
rather than truncated; grayscale, alpha and ICC profiles are kept instead of dropped; faces
whose landmarks cannot be aligned are skipped rather than failing the photo; and pixels are
read and written by face region, so a 100-megapixel photo costs little beyond its own bytes
(bench/restore_large_image.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional

from gpenguard.errors import RestoreError, UsageError
from gpenguard.nets.gpen import gpen_bfr
from gpenguard.nets.parsenet import ParseNet
from gpenguard.nets.retinaface import RetinaFace
from gpenguard.nets.rrdbnet import RRDBNet
from gpenguard.restore import align, paste
from gpenguard.restore.detect import Face, FaceDetector
from gpenguard.restore.images import SplitImage
from gpenguard.restore.upscale import upscale
from gpenguard.restore.weights import WeightSource, load_into

Mode = Literal["full", "aligned"]

PARSE_SIZE = 512
#: Faces whose detector box is smaller than this (px, either side) are smoothed after GPEN.
SMALL_FACE = 100
_SMOOTH = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16


#: Accepted names for each role: ours, and the sandbox worker's.
_ROLES = {"gpen": "gpen", "retinaface": "retinaface", "detector": "retinaface",
          "parsenet": "parsenet", "parser": "parsenet", "realesrnet": "realesrnet"}  # fmt: skip


@dataclass(frozen=True, eq=False)
class RestorerWeights:
    """Where each network's weights come from: a ``.safetensors`` path, or a mapping of
    tensors the caller has already read and verified. ``aligned`` mode needs only ``gpen``."""

    gpen: WeightSource
    retinaface: WeightSource | None = None
    parsenet: WeightSource | None = None
    #: Optional Real-ESRNet x2 (``realesrnet_x2``): the background is upscaled 2x with it,
    #: as GPEN's ``--use_sr`` does; the output is then twice the input's size.
    realesrnet: WeightSource | None = None

    @classmethod
    def from_mapping(
        cls, sources: Mapping[str, str | Path | Mapping[str, torch.Tensor]]
    ) -> RestorerWeights:
        """Roles: ``gpen``, ``retinaface`` (alias ``detector``), ``parsenet`` (alias ``parser``)."""
        unknown = set(sources) - set(_ROLES)
        if unknown:
            raise UsageError(f"unknown weight roles: {', '.join(sorted(unknown))}")
        resolved: dict[str, WeightSource] = {}
        for role, source in sources.items():
            name = _ROLES[role]
            if name in resolved:
                raise UsageError(f"weights for {name} given twice")
            resolved[name] = source if isinstance(source, Mapping) else Path(source)
        if "gpen" not in resolved:
            raise UsageError("weights need a 'gpen' entry")
        return cls(**resolved)


@dataclass(frozen=True)
class Restoration:
    """One restored image and the faces that were restored in it (empty in aligned mode)."""

    image: Image.Image
    faces: tuple[Face, ...] = field(default=())


def build_generator(size: int, *, meta: bool = False) -> nn.Module:
    """GPEN-BFR-``size`` with the released settings. With ``meta=True`` it is built on the
    meta device (no random init to pay for; only `load_into` can then fill it)."""
    try:
        if meta:
            with torch.device("meta"):
                return gpen_bfr(size)
        return gpen_bfr(size)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


class Restorer:
    """GPEN face restoration; networks are built and loaded once, at construction.

    ``weights``: a `RestorerWeights` or a mapping with keys ``gpen``, ``retinaface`` (or
    ``detector``) and ``parsenet`` (or ``parser``), the last two only for ``mode="full"``, and
    optionally ``realesrnet``; each value a ``.safetensors`` path or a mapping of tensors the
    caller has already read and verified. Nothing is ever unpickled.
    ``size`` picks the GPEN-BFR model (256, 512, 1024 or 2048) and its released settings.
    ``dtype`` applies to GPEN (and Real-ESRNet); the detector and parser run in float32.
    ``face_alpha`` blends the restored face with the original crop (GPEN's ``--alpha``).
    Errors: `UsageError` for bad settings, `ModelError`/`FormatError`/`InputError` for
    weights that are missing or do not fit, `RestoreError` for an image that cannot be used.

    Example::

        restorer = Restorer(
            {"gpen": "GPEN-BFR-2048.safetensors", "retinaface": "RetinaFace-R50.safetensors",
             "parsenet": "ParseNet-latest.safetensors"},
            device="cuda", dtype=torch.float16,
        )
        restored = restorer.restore_image(Image.open("photo.jpg"))
    """

    def __init__(
        self,
        weights: RestorerWeights | Mapping[str, str | Path | Mapping[str, torch.Tensor]],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        size: int = 2048,
        mode: Mode = "full",
        *,
        face_alpha: float = 1.0,
        score_threshold: float = 0.9,
    ) -> None:
        if not isinstance(weights, RestorerWeights):
            weights = RestorerWeights.from_mapping(weights)
        _check_mode(mode)
        device = resolve_device(device)  # before the (slow) weight loading
        detector = parser = None
        if mode == "full":
            if weights.retinaface is None or weights.parsenet is None:
                raise UsageError("full mode needs 'retinaface' and 'parsenet' weights as well")
            with torch.device("meta"):
                detector, parser = RetinaFace(), ParseNet()
            load_into(detector, weights.retinaface, role="retinaface")
            load_into(parser, weights.parsenet, role="parsenet")
        generator = load_into(build_generator(size, meta=True), weights.gpen, role="gpen")
        upscaler = None
        if weights.realesrnet is not None:
            with torch.device("meta"):
                upscaler = RRDBNet(scale=2)
            load_into(upscaler, weights.realesrnet, role="realesrnet", nested="params_ema")
        self._setup(
            generator, detector, parser, upscaler, device, dtype, size, mode, face_alpha,
            score_threshold,
        )  # fmt: skip

    @classmethod
    def from_modules(
        cls,
        generator: nn.Module,
        *,
        detector: RetinaFace | None = None,
        parser: ParseNet | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        size: int = 2048,
        mode: Mode = "full",
        face_alpha: float = 1.0,
        score_threshold: float = 0.9,
        upscaler: RRDBNet | None = None,
    ) -> Restorer:
        """A restorer around networks that are already built and loaded (tests, benchmarks)."""
        _check_mode(mode)
        if mode == "full" and (detector is None or parser is None):
            raise UsageError("full mode needs a detector and a parser")
        self = cls.__new__(cls)
        self._setup(
            generator, detector, parser, upscaler, device, dtype, size, mode, face_alpha,
            score_threshold,
        )  # fmt: skip
        return self

    def _setup(
        self,
        generator: nn.Module,
        detector: RetinaFace | None,
        parser: ParseNet | None,
        upscaler: RRDBNet | None,
        device: str | torch.device,
        dtype: torch.dtype,
        size: int,
        mode: Mode,
        face_alpha: float,
        score_threshold: float,
    ) -> None:
        if not 0.0 <= face_alpha <= 1.0:
            raise UsageError(f"face_alpha must be within [0, 1], got {face_alpha}")
        self.device = resolve_device(device)
        self.dtype = dtype
        self.size = size
        self.mode: Mode = mode
        self.face_alpha = face_alpha
        self.generator = generator.to(self.device, dtype).eval()
        self.detector = (
            FaceDetector(
                detector.to(self.device).eval(), device=self.device, score_threshold=score_threshold
            )
            if detector is not None
            else None
        )
        self.parser = parser.to(self.device).eval() if parser is not None else None
        self.upscaler = upscaler.to(self.device, dtype).eval() if upscaler is not None else None

    # -- public API --------------------------------------------------------------------

    def restore_image(self, image: Image.Image) -> Image.Image:
        """Restore one image; the result has the input's mode (alpha and grayscale kept)."""
        return self.restore(image).image

    def restore_batch(self, images: Iterable[Image.Image]) -> list[Image.Image]:
        """Restore several images with the networks loaded once."""
        return [self.restore_image(img) for img in images]

    @torch.inference_mode()
    def restore(self, image: Image.Image) -> Restoration:
        """Restore one image and say which faces were restored."""
        split = SplitImage.of(image)
        if self.mode == "aligned":
            crop = np.array(
                split.rgb.resize((self.size, self.size), Image.Resampling.BILINEAR), dtype=np.uint8
            )
            restored = self._run_gpen(
                torch.from_numpy(crop).to(self.device).permute(2, 0, 1).float()
            )
            out = _to_pil(restored)
            if self.upscaler is not None:
                out = upscale(out, self.upscaler, device=self.device)
            return Restoration(split.merge(out))
        assert self.detector is not None
        # With background SR, faces are found and cropped on the input resized (bilinear) to
        # the SR size and pasted onto the SR output, as GPEN does.
        work, base = split.rgb, split.rgb
        if self.upscaler is not None:
            base = upscale(split.rgb, self.upscaler, device=self.device)
            work = split.rgb.resize(base.size, Image.Resampling.BILINEAR)
        faces = self.detector.detect(work)
        if not faces:
            return Restoration(split.merge(base), ())
        canvas = paste.Compositor(base, self.device)
        done: list[Face] = []
        for face in faces:  # one restored face in memory at a time
            pasted = self._restore_face(work, face)
            if pasted is not None:
                canvas.add(pasted)
                done.append(face)
        return Restoration(split.merge(canvas.result()), tuple(done))

    # -- steps -------------------------------------------------------------------------

    def _restore_face(self, image: Image.Image, face: Face) -> paste.PastedFace | None:
        """Align, restore and mask one face; only the face's region of the image is read."""
        width, height = image.size
        try:
            image_to_crop = align.fit_similarity(
                face.landmark_array, align.reference_points(self.size)
            )
        except ValueError:  # all five landmarks on one point: no transform to fit
            return None
        crop_to_image = align.invert(image_to_crop)
        region = paste.footprint(crop_to_image, self.size, width, height)
        if region.empty:  # landmarks can extrapolate past the border: nothing to restore
            return None
        box = (region.x0, region.y0, region.x1, region.y1)
        src = paste.read_region(image, box, self.device)[None]
        m = align.shift_source(image_to_crop, region.x0, region.y0)
        crop = align.warp_affine(src, m, (self.size, self.size))[0].round().clamp(0, 255)
        restored = self._run_gpen(crop)
        mask = self._face_mask(restored)
        x1, y1, x2, y2 = face.box
        if min(x2 - x1, y2 - y1) < SMALL_FACE:
            restored = _smooth(restored)
        if self.face_alpha < 1.0:
            restored = (self.face_alpha * restored + (1 - self.face_alpha) * crop).round()
        return paste.PastedFace(restored, mask, crop_to_image)

    def _run_gpen(self, crop: torch.Tensor) -> torch.Tensor:
        """``[3,S,S]`` 0..255 RGB -> restored ``[3,S,S]`` 0..255 (rounded), model-size input."""
        if crop.shape[-2:] != (self.size, self.size):
            raise RestoreError(f"face crop is {tuple(crop.shape[-2:])}, expected {self.size}px")
        x = (crop / 255.0 - 0.5) / 0.5
        out = self.generator(x[None].to(self.dtype))
        if isinstance(out, tuple):  # the reference FullGenerator returns (image, latents)
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.shape != (1, 3, self.size, self.size):
            raise RestoreError("the generator returned an unexpected output")
        return ((out[0].float() * 0.5 + 0.5).clamp(0, 1) * 255).round()

    def _face_mask(self, restored: torch.Tensor) -> torch.Tensor:
        """Soft paste mask ``[S,S]`` from ParseNet's parse of the restored face."""
        assert self.parser is not None
        x = restored[None] / 255.0 * 2 - 1
        if x.shape[-1] != PARSE_SIZE:
            x = functional.interpolate(
                x, size=(PARSE_SIZE, PARSE_SIZE), mode="bilinear", align_corners=False
            )
        logits, _ = self.parser(x)
        mask = paste.mask_from_parsing(logits[0].float())
        if mask.shape[-1] != self.size:
            mask = functional.interpolate(
                mask[None, None], size=(self.size, self.size), mode="bilinear", align_corners=False
            )[0, 0]
        return mask


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device this process can use; `UsageError` if it is not one."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"not a torch device: {device!r}") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r}: CUDA is not available to this process")
        if (resolved.index or 0) >= torch.cuda.device_count():
            raise UsageError(
                f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
    return resolved


def _check_mode(mode: str) -> None:
    if mode not in ("full", "aligned"):
        raise UsageError(f"mode must be 'full' or 'aligned', got {mode!r}")


def _smooth(face: torch.Tensor) -> torch.Tensor:
    k = _SMOOTH.to(face.device, face.dtype).expand(3, 1, 3, 3)
    padded = functional.pad(face[None], (1, 1, 1, 1), mode="reflect")
    return functional.conv2d(padded, k, groups=3)[0].round()


def _to_pil(face: torch.Tensor) -> Image.Image:
    arr = face.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")
