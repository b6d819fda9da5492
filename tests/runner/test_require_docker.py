"""Without an engine, docker tests skip and say why; with GPENGUARD_REQUIRE_DOCKER=1 they fail.

CI sets the variable, so a CI machine whose engine did not come up cannot pass by skipping.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = "tests/runner/test_check.py::test_check_reports_a_missing_image"


def _pytest(tmp_path: Path, require: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GPENGUARD_REQUIRE_DOCKER"}
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"  # nothing listens there
    if require:
        env["GPENGUARD_REQUIRE_DOCKER"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", TARGET, "-q", "-rs", "-p", "no:cacheprovider"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_docker_tests_skip_with_a_reason_without_an_engine(tmp_path: Path) -> None:
    done = _pytest(tmp_path, require=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout
    assert "no Docker engine answers" in done.stdout


@pytest.mark.slow
def test_docker_tests_fail_without_an_engine_when_required(tmp_path: Path) -> None:
    done = _pytest(tmp_path, require=True)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "GPENGUARD_REQUIRE_DOCKER=1, so this is a failure, not a skip" in done.stdout
