"""`gpenguard restore` end to end: a real torch.save checkpoint through the gate, the converter
and the store, then GPEN inside the real sandbox; and a poisoned checkpoint that never gets there.

GPEN-256 with random weights keeps this fast; the 2048 model differs only in size.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SIZE = 256


def _gpenguard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gpenguard", *args], capture_output=True, text=True, env=full_env, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GPEN-256 state_dict with random weights, written by torch.save."""
    import torch

    from gpenguard.nets.gpen import gpen_bfr

    torch.manual_seed(7)
    # Random weights: a name unlike the registry's GPEN-BFR-256.pth, which a look-alike name is held to.
    path = tmp_path_factory.mktemp("weights") / "synthetic-gpen-256.pth"
    torch.save(gpen_bfr(SIZE).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(3)
    paths = []
    for name, size in (("alice.png", 96), ("bob.jpg", 128)):
        path = folder / name
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def _in_process(stored: Path, image: Path) -> np.ndarray[Any, Any]:
    import torch

    from gpenguard.restore import Restorer

    torch.set_num_threads(1)
    restorer = Restorer({"gpen": stored}, size=SIZE, mode="aligned")
    with Image.open(image) as opened:
        return np.asarray(restorer.restore_image(opened.convert("RGB")))


def _restore_args(inputs: list[Path], out: Path, weights: Path, store: Path, *extra: str) -> list[str]:
    return ["restore", *map(str, inputs), "-o", str(out), "--weights", str(weights), "--size", str(SIZE),
            "--mode", "aligned", "--store", str(store), *extra]  # fmt: skip


def _check_outputs(out: Path, store: Path, faces: list[Path]) -> None:
    results = sorted(p.name for p in out.iterdir())
    assert results == ["alice.png", "bob.png"], results
    (stored,) = (store / "sha256").glob("*.safetensors")
    for face in faces:
        produced = np.asarray(Image.open(out / f"{face.stem}.png"))
        assert produced.shape == (SIZE, SIZE, 3)
        expected = _in_process(stored, face)
        # Same torch build inside and outside; only thread scheduling may differ.
        assert np.abs(produced.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.docker
@pytest.mark.slow
def test_restore_in_docker_matches_in_process_gpen(
    tmp_path: Path, checkpoint: Path, faces: list[Path], sandbox_image: str
) -> None:
    out, store = tmp_path / "out", tmp_path / "store"
    done = _gpenguard(*_restore_args(faces, out, checkpoint, store, "--backend", "docker", "--image", sandbox_image))
    assert done.returncode == 0, done.stderr
    assert "sandbox docker: " + sandbox_image in done.stderr
    assert "[2/2]" in done.stderr  # progress streamed from the worker inside the container
    _check_outputs(out, store, faces)
    assert not any(p.name.startswith(".gpenguard-run-") for p in out.iterdir())


@pytest.mark.bwrap
@pytest.mark.slow
def test_restore_under_bwrap_matches_in_process_gpen(tmp_path: Path, checkpoint: Path, faces: list[Path]) -> None:
    out, store = tmp_path / "out", tmp_path / "store"
    done = _gpenguard(*_restore_args(faces, out, checkpoint, store, "--backend", "bwrap"))
    assert done.returncode == 0, done.stderr
    assert "sandbox bwrap: " in done.stderr
    _check_outputs(out, store, faces)


class _Payload:
    """Unpickling this would run `true`; the gate must refuse it before anything unpickles."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("true",))


@pytest.mark.docker
def test_poisoned_checkpoint_never_reaches_the_container(
    tmp_path: Path, faces: list[Path], docker_engine: Any, sandbox_image: str
) -> None:
    poisoned = tmp_path / "gpen-bfr-256.pth"
    poisoned.write_bytes(pickle.dumps({"generator": _Payload()}, protocol=2))
    since = int(time.time()) - 1
    done = _gpenguard(*_restore_args(faces[:1], tmp_path / "out", poisoned, tmp_path / "store", "--image", sandbox_image))
    until = int(time.time()) + 1
    assert done.returncode == 1, done.stderr
    assert "system" in done.stderr  # the reason names the import the gate refused
    created = list(
        docker_engine.events(
            since=since, until=until, decode=True,
            filters={"type": "container", "event": "create", "label": "org.gpenguard.sandbox=1"},
        )
    )  # fmt: skip
    assert created == []
    assert not (tmp_path / "store" / "sha256").exists() or not any((tmp_path / "store" / "sha256").iterdir())
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_gpu_run_refused_by_policy_before_anything_starts(tmp_path: Path, checkpoint: Path, faces: list[Path]) -> None:
    policy = tmp_path / "nogpu.yaml"
    policy.write_text("name: nogpu\nsandbox:\n  allow_gpu: false\n")
    done = _gpenguard(*_restore_args(faces[:1], tmp_path / "out", checkpoint, tmp_path / "store", "--gpu", "0", "--policy", str(policy)))
    assert done.returncode == 2, done.stderr
    assert "forbids GPU runs" in done.stderr
    assert not (tmp_path / "store").exists()


@pytest.mark.docker
@pytest.mark.slow
def test_full_mode_gates_all_three_networks_and_runs_them_in_docker(
    tmp_path: Path, checkpoint: Path, faces: list[Path], sandbox_image: str
) -> None:
    """--detector and --parser go through the same gate and store; the worker builds all three."""
    import torch

    from gpenguard.nets.parsenet import ParseNet
    from gpenguard.nets.retinaface import RetinaFace
    from gpenguard.restore import Restorer

    torch.manual_seed(11)
    detector, parser = tmp_path / "synthetic-retinaface.pth", tmp_path / "synthetic-parsenet.pth"
    torch.save(RetinaFace().state_dict(), detector)
    torch.save(ParseNet().state_dict(), parser)
    out, store = tmp_path / "out", tmp_path / "store"
    args = [a for a in _restore_args(faces[:1], out, checkpoint, store, "--image", sandbox_image) if a != "aligned"]
    args.remove("--mode")
    done = _gpenguard(*args, "--detector", str(detector), "--parser", str(parser))
    assert done.returncode == 0, done.stderr
    for role in ("gpen", "detector", "parser"):
        assert f"convert {role}: sha256:" in done.stderr
    assert len(list((store / "sha256").glob("*.safetensors"))) == 3
    # Which stored file came from which checkpoint: the provenance record names the source digest.
    from gpenguard.convert import read_provenance
    from gpenguard.store import provenance_path, sha256_file

    by_source = {read_provenance(provenance_path(p)).source_sha256: p for p in (store / "sha256").glob("*.safetensors")}
    weights = {role: by_source[sha256_file(path)] for role, path in (("gpen", checkpoint), ("detector", detector), ("parser", parser))}
    torch.set_num_threads(1)
    expected = Restorer(weights, size=SIZE, mode="full").restore_image(Image.open(faces[0]).convert("RGB"))
    produced = np.asarray(Image.open(out / "alice.png"))
    assert produced.shape == np.asarray(expected).shape
    assert np.abs(produced.astype(int) - np.asarray(expected).astype(int)).max() <= 1


@pytest.mark.docker
def test_missing_image_fails_before_any_conversion(tmp_path: Path, checkpoint: Path, faces: list[Path]) -> None:
    store = tmp_path / "store"
    done = _gpenguard(*_restore_args(faces[:1], tmp_path / "out", checkpoint, store, "--image", "gpenguard-no-such-image:never"))
    assert done.returncode == 2, done.stderr
    assert "is not on this host" in done.stderr and "sandbox/build.sh" in done.stderr
    assert not store.exists()
