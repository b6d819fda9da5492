"""Red-team regressions on `gpenguard scan DIR`'s content-based walk (gpenguard/discover.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
    # was "0 files scanned ... 2 skipped ... PASS", exit 0; now the file is judged and the gate fails
    # (a program this short reads as unrecognised content, exit 2: see formats/pickle.looks_like_pickle)
    assert proc.returncode != 0, proc.stdout
    assert "tokens.bin" in proc.stdout and "1 file scanned" in proc.stdout
