"""The results budget (RLIMIT_FSIZE and the host's read cap) follows the input's pixel count.

Attack: a hostile (or merely panoramic) input in full mode, 1,000,000 x 1 pixels: a valid PNG
of a few kilobytes, well under Pillow's pixel limit. If the budget is computed from the longer
side squared, the job may write terabytes into OUTDIR's staging folder (RLIMIT_FSIZE is the
budget) and the host reads a member of that size into memory. An honest result has the
input's own pixels: ``(4 * width + 1) * height`` bytes stored, at most.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from gpenguard.pipeline import prepare_inputs
from gpenguard.runner.publish import results_budget


def test_a_thin_panorama_gets_a_budget_for_its_own_pixels(tmp_path: Path) -> None:
    strip = tmp_path / "strip.png"
    Image.new("L", (1_000_000, 1), 7).save(strip)
    assert strip.stat().st_size < 10_000
    prepared = prepare_inputs([strip], tmp_path / "out", mode="full", size=512, overwrite=False)
    (planned,) = prepared.plan
    assert planned.sizes == ((1_000_000, 1),)
    honest = 4 * 1_000_000 + 1  # every pixel as 8-bit RGBA, one filter byte
    assert planned.max_bytes < 2 * honest + 128 * 1024
    assert results_budget(prepared.plan) < 16 * 2**20


def test_a_turned_photo_still_fits_its_budget(tmp_path: Path) -> None:
    """Both orientations are allowed; the budget covers the wider row layout of the two."""
    photo = tmp_path / "photo.png"
    Image.new("RGB", (300, 20), (1, 2, 3)).save(photo)
    (planned,) = prepare_inputs([photo], tmp_path / "out", mode="full", size=512, overwrite=False).plan
    from dataclasses import replace

    both = replace(planned, sizes=((300, 20), (20, 300)))
    assert both.max_bytes >= max((4 * w + 1) * h for w, h in both.sizes)
