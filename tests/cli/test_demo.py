"""The demo pair is what it says, and scripts/demo.sh checks the verdicts it shows."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from gpenguard.demo import BENIGN_NAME, POISONED_NAME, make_demo_pair

ROOT = Path(__file__).resolve().parents[2]


def test_pair_is_real_torch_save_output_with_one_extra_payload(tmp_path: Path) -> None:
    benign, poisoned = make_demo_pair(tmp_path)
    assert (benign.name, poisoned.name) == (BENIGN_NAME, POISONED_NAME)
    assert "random-weights" in benign.name and "POISONED" in poisoned.name
    # Tests may load files they made themselves; the benign one is a plain state_dict.
    state = torch.load(benign, weights_only=True)
    assert sorted(state) == ["conv1.bias", "conv1.weight", "conv2.bias", "conv2.weight"]
    with zipfile.ZipFile(poisoned) as archive:
        (pkl,) = (n for n in archive.namelist() if n.endswith("/data.pkl"))
        program = archive.read(pkl)
    assert b"system" in program and b"true" in program
    # Deterministic: the same seed gives the same bytes, so the demo output is reproducible.
    again, _ = make_demo_pair(tmp_path / "again")
    assert again.read_bytes() == benign.read_bytes()


def test_gpen_demo_has_the_official_architecture_and_a_payload(tmp_path: Path) -> None:
    from gpenguard.demo import make_gpen_demo
    from gpenguard.formats import Source, read_container
    from gpenguard.formats.weights import read_tensors
    from gpenguard.trust.fingerprint import fingerprint
    from gpenguard.trust.registry import default_registry_path, find_artifact, load_registry

    clean, poisoned, sample = make_gpen_demo(tmp_path, size=256)
    assert "RANDOM-WEIGHTS" in str(clean.parent) and "POISONED" in poisoned.name
    state = torch.load(clean, weights_only=True)
    assert len(state) > 100 and all(isinstance(t, torch.Tensor) for t in state.values())
    with zipfile.ZipFile(poisoned) as archive:
        (pkl,) = (n for n in archive.namelist() if n.endswith("/data.pkl"))
        assert b"system" in archive.read(pkl)
    assert sample.is_file()
    # the random checkpoint has exactly the architecture the shipped registry approves
    entry = find_artifact(load_registry(default_registry_path()), name="GPEN-BFR-256")
    assert entry is not None and entry.architecture is not None
    with Source.open(clean) as src:
        got = fingerprint(read_tensors(read_container(src)))
    assert got.digest == entry.architecture.fingerprint


@pytest.mark.slow
@pytest.mark.bwrap
def test_demo_script_runs_the_whole_pipeline(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        # this interpreter as it is (a venv's python keeps its venv; a symlinked shim did not)
        "GPENGUARD_PYTHON": sys.executable,
        "GPENGUARD_DEMO_DIR": str(tmp_path / "demo"),
        "GPENGUARD_DEMO_BACKEND": "bwrap",
    }
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo OK" in proc.stdout and "BLOCK" in proc.stdout and "PASS" in proc.stdout
    assert "would call: posix.system('true')" in proc.stdout
    assert (tmp_path / "demo" / "out" / "sample-face-crop.png").is_file()
    assert not (tmp_path / "demo" / "out-poisoned").exists()
