"""``gpenguard dev-restore``: in-process restoration for development, loudly labelled so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from gpenguard.cli import app
from gpenguard.nets.parsenet import ParseNet
from gpenguard.restore import pipeline
from tests.restore.test_pipeline import Constant, rigged_retinaface, smooth_image


def _save(module: nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("weights")
    return {
        "gpen": _save(Constant(), root / "gpen.safetensors"),
        "retinaface": _save(rigged_retinaface(faces=False), root / "r50.safetensors"),
        "parsenet": _save(ParseNet(), root / "parse.safetensors"),
    }


@pytest.fixture
def weights(weight_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setattr(pipeline, "build_generator", lambda size, **_: Constant())
    return weight_files


def test_aligned_crops_are_restored_and_the_run_is_labelled(
    tmp_path: Path, weights: dict[str, Path]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    smooth_image(80, 80).save(src / "a.png")
    smooth_image(80, 80).convert("L").save(src / "b.jpg")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["dev-restore", str(src), "-o", str(out), "--gpen", str(weights["gpen"]),
         "--mode", "aligned", "--size", "64"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "development only" in result.stderr
    assert result.stdout.count("unsandboxed") == 2
    with Image.open(out / "a.png") as a, Image.open(out / "b.jpg") as b:
        assert a.size == (64, 64) and a.mode == "RGB"
        assert (np.asarray(a) == 255).all()  # the constant stand-in generator paints white
        assert b.mode == "L"


def test_full_mode_without_faces_keeps_the_image(tmp_path: Path, weights: dict[str, Path]) -> None:
    src = tmp_path / "photo.png"
    smooth_image(120, 90).save(src)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["dev-restore", str(src), "-o", str(out), "--size", "64",
         *(f"--{k}={v}" for k, v in weights.items())],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "0 face(s)" in result.stdout
    with Image.open(out / "photo.png") as restored, Image.open(src) as original:
        assert np.array_equal(np.asarray(restored), np.asarray(original))


def test_pickled_weights_are_refused_with_exit_2(tmp_path: Path, weights: dict[str, Path]) -> None:
    pth = tmp_path / "GPEN-BFR-2048.pth"
    pth.write_bytes(b"PK\x03\x04")
    img = tmp_path / "x.png"
    smooth_image(10, 10).save(img)
    result = CliRunner().invoke(
        app,
        [
            "dev-restore",
            str(img),
            "-o",
            str(tmp_path / "o"),
            "--gpen",
            str(pth),
            "--mode",
            "aligned",
        ],
    )
    assert result.exit_code == 2
    assert str(pth) in result.stderr and ".safetensors" in result.stderr


def test_output_may_not_overwrite_input(tmp_path: Path, weights: dict[str, Path]) -> None:
    img = tmp_path / "x.png"
    smooth_image(10, 10).save(img)
    result = CliRunner().invoke(
        app,
        ["dev-restore", str(img), "-o", str(tmp_path), "--gpen", str(weights["gpen"]),
         "--mode", "aligned", "--size", "64"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "overwrite" in result.stderr


def test_output_that_is_a_file_is_an_input_error(tmp_path: Path, weights: dict[str, Path]) -> None:
    img = tmp_path / "x.png"
    smooth_image(10, 10).save(img)
    result = CliRunner().invoke(
        app,
        ["dev-restore", str(img), "-o", str(img), "--gpen", str(weights["gpen"]),
         "--mode", "aligned", "--size", "64"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"{img}: cannot create the output directory" in result.stderr


def test_directories_named_like_images_are_skipped(
    tmp_path: Path, weights: dict[str, Path]
) -> None:
    src = tmp_path / "in"
    (src / "sub.png").mkdir(parents=True)
    smooth_image(20, 20).save(src / "a.png")
    result = CliRunner().invoke(
        app,
        ["dev-restore", str(src), "-o", str(tmp_path / "out"), "--gpen", str(weights["gpen"]),
         "--mode", "aligned", "--size", "64"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.count("unsandboxed") == 1


@pytest.mark.parametrize("device", ["bogus", "cuda:99"])
def test_unusable_device_is_exit_2(tmp_path: Path, weights: dict[str, Path], device: str) -> None:
    img = tmp_path / "x.png"
    smooth_image(10, 10).save(img)
    result = CliRunner().invoke(
        app,
        ["dev-restore", str(img), "-o", str(tmp_path / "o"), "--gpen", str(weights["gpen"]),
         "--mode", "aligned", "--size", "64", "--device", device],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert device in result.stderr and "Traceback" not in result.output


def test_two_inputs_with_one_name_are_refused_before_the_weights_load(tmp_path: Path) -> None:
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        smooth_image(10, 10).save(tmp_path / folder / "a.png")
    result = CliRunner().invoke(
        app,
        ["dev-restore", str(tmp_path / "one"), str(tmp_path / "two"), "-o", str(tmp_path / "o"),
         "--gpen", str(tmp_path / "absent.safetensors"), "--mode", "aligned"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "would both be written" in result.stderr and "absent" not in result.stderr
    assert not any((tmp_path / "o").iterdir())
