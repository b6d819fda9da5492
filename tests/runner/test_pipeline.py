"""`gpenguard.pipeline`: what `restore` refuses before the gate, and the re-check before start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpenguard.errors import InputError, UsageError
from gpenguard.pipeline import GPEN_SIZES, RestoreRequest, restore


def test_sizes_match_the_released_models() -> None:
    from gpenguard.nets.gpen import GPEN_BFR

    assert tuple(sorted(GPEN_BFR)) == GPEN_SIZES


def _request(tmp_path: Path, **changes: Any) -> RestoreRequest:
    face = tmp_path / "face.png"
    face.write_bytes(b"not decoded on the host")
    fields: dict[str, Any] = {
        "inputs": (face,), "output_dir": tmp_path / "out", "gpen": tmp_path / "never-read.pth",
        "backend": "bwrap", "store": tmp_path / "store", **changes,
    }  # fmt: skip
    return RestoreRequest(**fields)


def test_unknown_size_is_refused_before_the_gate(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--size must be one of 256, 512, 1024, 2048, not 300"):
        restore(_request(tmp_path, size=300))
    assert not (tmp_path / "store").exists()


def test_output_path_that_is_a_file_is_refused_before_the_gate(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    with pytest.raises(InputError, match="exists and is not a folder") as caught:
        restore(_request(tmp_path, output_dir=tmp_path / "taken"))
    assert caught.value.exit_code == 2
    assert not (tmp_path / "store").exists()
