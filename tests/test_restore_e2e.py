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
    tmp_path: Path, checkpoint: Path, faces: list[Path], sandbox_image: str, docker_runtime: str
) -> None:
    """Once per runtime: runc, and gVisor's runsc (CI requires it)."""
    out, store = tmp_path / "out", tmp_path / "store"
    extra = ("--backend", "docker", "--image", sandbox_image, "--runtime", docker_runtime)
    done = _gpenguard(*_restore_args(faces, out, checkpoint, store, *extra))
    assert done.returncode == 0, done.stderr
    assert f"runtime {docker_runtime}" in done.stderr
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


def test_the_gate_runs_before_the_image_is_looked_up(tmp_path: Path, faces: list[Path]) -> None:
    """A poisoned checkpoint is blocked with its reasons (1), whether or not the image exists."""
    poisoned = tmp_path / "gpen-bfr-256.pth"
    poisoned.write_bytes(pickle.dumps({"generator": _Payload()}, protocol=2))
    for backend in ("docker", "bwrap"):
        done = _gpenguard(*_restore_args(faces[:1], tmp_path / "out", poisoned, tmp_path / "store",
                                         "--image", "gpenguard-no-such-image:never", "--backend", backend))
        assert done.returncode == 1, done.stderr
        assert "posix.system" in done.stderr and "is not on this host" not in done.stderr
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.docker
def test_missing_image_is_exit_2_after_the_gate(tmp_path: Path, checkpoint: Path, faces: list[Path]) -> None:
    store = tmp_path / "store"
    done = _gpenguard(*_restore_args(faces[:1], tmp_path / "out", checkpoint, store, "--image", "gpenguard-no-such-image:never"))
    assert done.returncode == 2, done.stderr
    assert "is not on this host" in done.stderr and "sandbox/build.sh" in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("backend", [pytest.param("docker", marks=pytest.mark.docker), pytest.param("bwrap", marks=pytest.mark.bwrap)])
def test_bad_images_fail_alone_and_the_rest_is_published(
    tmp_path: Path, checkpoint: Path, faces: list[Path], backend: str, request: pytest.FixtureRequest
) -> None:
    """A TIFF named .png and a zTXt bomb are refused on the host, a JPEG cut short fails in the
    worker: each is named by its host path, the good photos are restored, and the exit code is 2."""
    from PIL import PngImagePlugin

    bad = tmp_path / "bad"
    bad.mkdir()
    Image.new("RGB", (32, 32)).save(bad / "scan.png", format="TIFF")
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "A" * (8 * PngImagePlugin.MAX_TEXT_CHUNK), zip=True)
    Image.new("RGB", (32, 32)).save(bad / "notes.png", pnginfo=text)
    noise = bad / "noise.jpg"
    Image.effect_noise((256, 256), 64).convert("RGB").save(noise)
    (bad / "cut.jpg").write_bytes(noise.read_bytes()[: noise.stat().st_size // 2])
    noise.unlink()
    extra = ("--image", request.getfixturevalue("sandbox_image")) if backend == "docker" else ()
    out, store = tmp_path / "out", tmp_path / "store"
    done = _gpenguard(*_restore_args([*faces, bad], out, checkpoint, store, "--backend", backend, *extra))
    assert done.returncode == 2, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["alice.png", "bob.png"]
    assert f"not restored: {bad / 'scan.png'}: TIFF is not an accepted input format" in done.stderr
    assert f"not restored: {bad / 'notes.png'}: cannot read image: Decompressed data too large" in done.stderr
    assert f"not restored: {bad / 'cut.jpg'}: cannot read image: image file is truncated" in done.stderr
    assert "/in/" not in done.stderr
    assert done.stdout.split() == [str(out / "alice.png"), str(out / "bob.png")]


@pytest.mark.bwrap
@pytest.mark.slow
def test_an_existing_result_is_replaced_only_with_overwrite(tmp_path: Path, checkpoint: Path, faces: list[Path]) -> None:
    """OUTDIR holds the user's photos: a run that would rewrite one is refused before the gate."""
    out, store = tmp_path / "photos", tmp_path / "store"
    out.mkdir()
    (out / "alice.png").write_bytes(b"the user's own alice.png")
    done = _gpenguard(*_restore_args(faces, out, checkpoint, store, "--backend", "bwrap"))
    assert done.returncode == 2, done.stderr
    assert "already has alice.png; restore never replaces a file unless asked" in done.stderr
    assert "--overwrite" in done.stderr
    assert not store.exists()  # refused before the gate
    assert sorted(p.name for p in out.iterdir()) == ["alice.png"]
    assert (out / "alice.png").read_bytes() == b"the user's own alice.png"
    done = _gpenguard(*_restore_args(faces, out, checkpoint, store, "--backend", "bwrap", "--overwrite"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["alice.png", "bob.png"]
    assert Image.open(out / "alice.png").size == (SIZE, SIZE)
