"""A benign checkpoint and a poisoned copy of it, to see the scanner block a real attack shape.

Both files are made by `torch.save` from the same small network with RANDOM weights (seeded;
they restore nothing and are not GPEN). The poisoned copy adds one extra entry whose pickle
reduces to ``os.system("true")`` — the classic "model file runs a shell command on load"
attack, with a payload that does nothing even if someone does load it with
``torch.load(weights_only=False)``. gpenguard itself never loads either file.
"""

from __future__ import annotations

import os
from pathlib import Path

BENIGN_NAME = "demo-random-weights-benign.pth"
POISONED_NAME = "demo-random-weights-POISONED-runs-os-system-true.pth"
PAYLOAD_COMMAND = "true"


class _RunsShellOnLoad:
    """Pickles as a call to ``os.system(PAYLOAD_COMMAND)``: what a loader would execute."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (PAYLOAD_COMMAND,))


def make_demo_pair(directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write the benign and the poisoned checkpoint into `directory`; return their paths."""
    import torch  # NOTE: only the demo needs torch to *write* checkpoints

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(2048)
    state_dict = {
        "conv1.weight": torch.randn(8, 3, 3, 3, generator=generator),
        "conv1.bias": torch.zeros(8),
        "conv2.weight": torch.randn(3, 8, 3, 3, generator=generator),
        "conv2.bias": torch.zeros(3),
    }
    benign = out / BENIGN_NAME
    poisoned = out / POISONED_NAME
    torch.save(state_dict, benign)
    torch.save({**state_dict, "_metadata_": _RunsShellOnLoad()}, poisoned)
    return benign, poisoned


GPEN_NAME = "GPEN-BFR-2048.pth"
"""Named like the official file, so the gate holds it to the registry's GPEN-BFR-2048 entry."""
GPEN_POISONED_NAME = "GPEN-BFR-2048-POISONED.pth"
SAMPLE_NAME = "sample-face-crop.png"


def make_gpen_demo(directory: str | os.PathLike[str], size: int = 2048) -> tuple[Path, Path, Path]:
    """Write a GPEN-BFR-`size` checkpoint, a poisoned copy and an aligned sample image.

    They are written into `directory`/RANDOM-WEIGHTS/. The checkpoint has the real architecture (GPEN-BFR-2048: 201 tensors, the keys and shapes
    of the official file) but RANDOM weights: no official weights can be downloaded here, so
    the restored image is noise-like. It exercises the whole pipeline (scan, verify against
    the shipped registry's architecture fingerprint, convert, sandboxed restoration), not
    GPEN's quality. The poisoned copy adds one entry whose pickle calls ``os.system('true')``.
    """
    import numpy as np
    import torch
    from PIL import Image

    from gpenguard.nets.gpen import gpen_bfr

    out = Path(directory) / "RANDOM-WEIGHTS"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(size)
    state_dict = gpen_bfr(size).state_dict()
    name = GPEN_NAME.replace("2048", str(size))
    clean = out / name
    poisoned = out / GPEN_POISONED_NAME.replace("2048", str(size))
    torch.save(state_dict, clean)
    torch.save({**state_dict, "_metadata_": _RunsShellOnLoad()}, poisoned)

    # A synthetic, face-like aligned crop (an oval with eyes and a mouth), so no photo of a
    # real person is needed.
    side = 512
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    img = np.stack([0.35 + 0.3 * yy, 0.3 + 0.2 * xx, 0.45 - 0.1 * yy], axis=-1)
    face = ((xx - 0.5) / 0.33) ** 2 + ((yy - 0.52) / 0.42) ** 2 < 1.0
    img[face] = (0.86, 0.68, 0.58)
    for cx in (0.38, 0.62):
        img[((xx - cx) / 0.05) ** 2 + ((yy - 0.45) / 0.03) ** 2 < 1.0] = (0.15, 0.1, 0.08)
    img[((xx - 0.5) / 0.1) ** 2 + ((yy - 0.7) / 0.025) ** 2 < 1.0] = (0.6, 0.25, 0.25)
    sample = Path(directory) / SAMPLE_NAME
    Image.fromarray((img * 255).astype(np.uint8)).save(sample)
    return clean, poisoned, sample
