"""Red-team regressions on `gpenguard scan DIR`'s content-based walk (gpenguard/discover.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.xfail(strict=True, reason=(
    "discover.could_be_model skips a pickle that imports a module and then breaks off, on the "
    "premise that an import alone cannot act; but importing runs the module's top-level code, "
    "so pickle.load (or torch.load(weights_only=False), joblib) of the skipped file runs a "
    "module the same change adds. Counting imports as acting would also scan word lists such "
    "as 'cat\\ndog\\n' (scan then errors on them), a trade-off for the walk's owner to make."))
def test_a_skipped_file_must_not_import_a_module_the_checkout_adds(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    marker = tmp_path / "ran"
    # A helper nobody imports, and a "token list" that is a pickle program importing it.
    (repo / "tokenizer_helpers.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (repo / "tokens.bin").write_bytes(b"ctokenizer_helpers\nvocab\n\xff")
    # The oracle: CPython's unpickler, as an application would load the file.
    probe = subprocess.run([sys.executable, "-c", "import pickle\ntry:\n pickle.load(open('tokens.bin','rb'))\n"
                            "except Exception:\n pass\n"], cwd=repo, capture_output=True, timeout=60, check=False)
    assert probe.returncode == 0 and marker.exists(), "the load ran the helper's code"
    marker.unlink()
    proc = subprocess.run([sys.executable, "-m", "gpenguard", "scan", str(repo)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120, check=False)
    assert not marker.exists()  # the scan itself never imports anything
    assert proc.returncode != 0, proc.stdout  # today: "0 files scanned ... 2 skipped ... PASS", exit 0
