"""The pre-commit hook and the GitHub Action run a real, valid `gpenguard scan` command."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gpenguard.cli import app
from gpenguard.demo import make_demo_pair

ROOT = Path(__file__).resolve().parents[2]

@pytest.fixture(scope="module")
def hook() -> dict[str, Any]:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert isinstance(hooks, list)
    (found,) = (h for h in hooks if h["id"] == "gpenguard-scan")
    return dict(found)


@pytest.fixture(scope="module")
def action() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "action.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_demo_pair(tmp_path_factory.mktemp("demo"))


# --- pre-commit ------------------------------------------------------------------------------


def test_hook_passes_every_file_to_the_content_probe(hook: dict[str, Any]) -> None:
    """Names decide nothing (a pickle may be called notes.txt): no `files` filter, the probe sorts."""
    assert hook["pass_filenames"] is True and hook["language"] == "python"
    assert "files" not in hook and hook["types"] == ["file"]
    assert "--skip-non-models" in shlex.split(hook["entry"])


def test_hook_entry_is_the_scan_command(hook: dict[str, Any]) -> None:
    assert shlex.split(hook["entry"])[:2] == ["gpenguard", "scan"]


def test_hook_entry_runs_and_blocks_a_poisoned_staged_file(
    hook: dict[str, Any], pair: tuple[Path, Path]
) -> None:
    argv = [*shlex.split(hook["entry"])[1:], *hook.get("args", [])]
    runner = CliRunner()
    assert runner.invoke(app, [*argv, str(pair[0])]).exit_code == 0
    result = runner.invoke(app, [*argv, *map(str, pair)])
    assert result.exit_code == 1, result.output


# --- GitHub Action -----------------------------------------------------------------------------


def _step(action: dict[str, Any], name: str) -> dict[str, Any]:
    (step,) = (s for s in action["runs"]["steps"] if s.get("name") == name)
    return dict(step)


def test_action_is_composite_and_pins_its_actions_by_version(action: dict[str, Any]) -> None:
    assert action["runs"]["using"] == "composite"
    uses = [s["uses"] for s in action["runs"]["steps"] if "uses" in s]
    assert any(u.startswith("actions/setup-python@") for u in uses)
    assert any(u.startswith("github/codeql-action/upload-sarif@") for u in uses)
    for ref in uses:
        assert re.search(r"@(v\d+(\.\d+)*|[0-9a-f]{40})$", ref), ref


def test_action_installs_itself_and_uploads_before_failing(action: dict[str, Any]) -> None:
    steps = [s.get("name") for s in action["runs"]["steps"]]
    install = _step(action, "Install gpenguard")
    assert "GITHUB_ACTION_PATH" in install["run"] and "pip install" in install["run"]
    upload = _step(action, "Upload SARIF to code scanning")
    assert "always()" in upload["if"]
    assert upload["with"]["sarif_file"] == "${{ inputs.sarif-file }}"
    assert steps.index("Upload SARIF to code scanning") < steps.index("Fail on the scan's verdict")
    assert "exit 1" in _step(action, "Fail on the scan's verdict")["run"]


def test_action_scripts_never_interpolate_inputs(action: dict[str, Any]) -> None:
    """`${{ inputs.* }}` inside `run:` is script injection; inputs go through env instead."""
    for step in action["runs"]["steps"]:
        assert "${{" not in step.get("run", ""), step.get("name")


@pytest.mark.parametrize(("blocked", "expected"), [(False, "0"), (True, "1")])
def test_action_scan_script_writes_sarif_and_reports_the_exit_code(
    action: dict[str, Any], pair: tuple[Path, Path], tmp_path: Path, blocked: bool, expected: str
) -> None:
    """Run the action's own scan script in bash, as the runner would, on a workspace."""
    workspace = tmp_path / "ws"
    (workspace / "models").mkdir(parents=True)
    for source in pair if blocked else pair[:1]:
        (workspace / "models" / source.name).write_bytes(source.read_bytes())
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python").write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")  # keeps a venv
    (shim / "python").chmod(0o755)
    github_output = tmp_path / "github_output"
    step = _step(action, "Scan")
    inputs = {k: v.get("default", "") for k, v in action["inputs"].items()}
    inputs["paths"] = "models/\n"
    env = {
        **os.environ,
        "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "GITHUB_OUTPUT": str(github_output),
    }
    for key, value in step["env"].items():
        match = re.fullmatch(r"\$\{\{ inputs\.([\w-]+) \}\}", value)
        assert match, value
        env[key] = str(inputs[match.group(1)])
    proc = subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr  # the script itself must not fail the step
    assert f"exit-code={expected}" in github_output.read_text()
    log = json.loads((workspace / inputs["sarif-file"]).read_text())
    uris = {a["location"]["uri"] for a in log["runs"][0]["artifacts"]}
    assert all(u.startswith("models/") for u in uris)
