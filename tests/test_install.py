"""`pip install gpenguard` (the core a CI gate installs) works without torch, pillow or docker.

A wheel of this checkout goes into a fresh virtualenv with pip's real dependency resolution
(from the configured index), then the console script scans, verifies and converts real
`torch.save` checkpoints (made here, by the test's own torch) in that environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpenguard.demo import make_demo_pair

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str | Path], **kw: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env,
                          check=False, timeout=900, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh venv holding the core install of this checkout's wheel."""
    tmp = tmp_path_factory.mktemp("core")
    wheel_dir = tmp / "wheel"
    built = _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheel_dir, ROOT])
    assert built.returncode == 0, built.stderr
    (wheel,) = wheel_dir.glob("gpenguard-*.whl")
    venv = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", venv])
    assert made.returncode == 0, made.stderr
    installed = _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet",
                      "--disable-pip-version-check", wheel])
    assert installed.returncode == 0, installed.stderr
    return venv / "bin"


@pytest.mark.slow
def test_core_install_has_no_torch_pillow_or_docker(core: Path) -> None:
    probe = _run([core / "python", "-c",
                  "import importlib.util as u; print([m for m in ('torch', 'PIL', 'docker', 'fickling') if u.find_spec(m)])"])
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe.stdout + probe.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", ["scan", "verify", "convert", "sign", "audit", "restore"])
def test_every_command_answers_help_in_the_core(core: Path, command: str) -> None:
    done = _run([core / "gpenguard", command, "--help"])
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout or "usage" in done.stdout


@pytest.mark.slow
def test_core_scans_verifies_and_converts_real_checkpoints(core: Path, tmp_path: Path) -> None:
    benign, poisoned = make_demo_pair(tmp_path)
    assert _run([core / "gpenguard", "--version"]).stdout.strip()
    ok = _run([core / "gpenguard", "scan", benign])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = _run([core / "gpenguard", "scan", benign, poisoned])
    assert bad.returncode == 1 and "posix.system" in bad.stdout, bad.stdout + bad.stderr
    assert _run([core / "gpenguard", "verify", benign]).returncode == 0
    assert _run([core / "gpenguard", "verify", poisoned]).returncode == 1
    out = tmp_path / "benign.safetensors"
    converted = _run([core / "gpenguard", "convert", benign, "-o", out])
    assert converted.returncode == 0, converted.stderr
    assert out.is_file() and out.with_name(out.name + ".intoto.json").is_file()


@pytest.mark.slow
def test_restore_in_the_core_says_which_extra_it_needs(core: Path, tmp_path: Path) -> None:
    from PIL import Image

    benign, poisoned = make_demo_pair(tmp_path)
    face = tmp_path / "face.png"
    Image.new("RGB", (32, 32)).save(face)
    blocked = _run([core / "gpenguard", "verify", poisoned])
    assert blocked.returncode == 1, blocked.stderr  # the gate itself needs no extra
    for weights in (poisoned, benign):
        early = _run([core / "gpenguard", "restore", face, "-o", tmp_path / "out", "--weights", weights])
        assert early.returncode == 2 and "gpenguard[restore]" in early.stderr, early.stderr
        assert "Traceback" not in early.stderr and not (tmp_path / "out").exists()
    missing = _run([core / "gpenguard", "restore", face, "-o", tmp_path / "out", "--weights", benign,
                    "--backend", "docker"])
    assert missing.returncode == 2 and "gpenguard[restore]" in missing.stderr, missing.stderr
