"""The real worker (torch, safetensors, a GPEN forward) under bwrap, from a virtualenv in /tmp.

The no-Docker path must work for anyone who installs gpenguard in a virtualenv, wherever it
lives: before, `--tmpfs /tmp` hid a venv under /tmp, and the sandbox ran the venv's resolved
base interpreter, which knows nothing of the venv's packages.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.bwrap, pytest.mark.slow]


@pytest.fixture(scope="module")
def tmp_venv() -> Iterator[Path]:
    """A virtualenv under /tmp sharing this interpreter's packages (torch is not reinstalled),
    plus one module only it has, so the sandbox can prove which environment it ran."""
    folder = Path(tempfile.mkdtemp(prefix="gpenguard-venv-", dir="/tmp"))
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    purelib = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    assert purelib.is_relative_to(venv), purelib
    (purelib / "venv_marker.py").write_text("# only in the /tmp virtualenv\n")
    (purelib / "gpenguard-under-test.pth").write_text(f"{REPO}\n")
    yield venv
    shutil.rmtree(folder, ignore_errors=True)


def test_real_worker_runs_under_bwrap_from_a_venv_in_tmp(tmp_venv: Path, bwrap_available: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="gpenguard-venv-work-"))
    try:
        _check(tmp_venv, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check(tmp_venv: Path, work: Path) -> None:
    done = subprocess.run(
        [str(tmp_venv / "bin" / "python"), "-m", "tests.runner.venv_driver", str(work)],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(work), "GPENGUARD_CACHE_DIR": str(work / "cache"),
             "GPENGUARD_STATE_DIR": str(work / "state"), "OMP_NUM_THREADS": "2"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    (who,) = report["who"]
    # The virtualenv's own interpreter ran the job, with the venv's packages on its path.
    assert who["prefix"] == str(tmp_venv)
    assert who["executable"] == str(tmp_venv / "bin" / "python")
    assert who["marker"].startswith(str(tmp_venv) + "/")
    assert sysconfig.get_paths()["purelib"] != str(Path(who["marker"]).parent)
    # And the real worker: torch, safetensors, a GPEN-256 forward, one restored image.
    kinds = [e["event"] for e in report["events"]]
    assert "model-loaded" in kinds and kinds.count("image") == 1, kinds
    (output,) = report["outputs"]
    with Image.open(output) as restored:
        assert restored.format == "PNG"
        assert restored.size == (256, 256)
