"""Holes found by attacking the trust layer (issue 10), each as the CLI meets it.

Every test here failed on the code before its fix: a shipped policy shadowed by a file in the
working directory, revocations that a name, a missing size or a renamed file escaped, a torn
audit log, unbounded inputs, and exit codes that broke the 0/1/2 contract.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gpenguard.cli import app
from tests._gatekit import MODEL_FILE, MODEL_NAME, World, build_world, save_checkpoint, sha256_of, tiny_state_dict


def run(*args: object) -> Any:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    result.all = result.stdout + result.stderr
    return result


def verify(w: World, *extra: object, policy: str = "default", model: Path | None = None) -> Any:
    return run("verify", model or w.model, "--registry", w.registry, "--trust-root", w.trust_root,
               "--policy", policy, *extra)


# -- 1. a shipped policy name is never a file in the working directory ----------------------------

LAX = "name: shadow\nscan:\n  fail_on: critical\nverify:\n  require_registry_entry: false\n"


@pytest.mark.parametrize("name", ["default", "strict", "ci"])
def test_a_file_named_like_a_shipped_policy_does_not_replace_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A pull request that adds `./strict` to the checkout must not switch the CI gate off."""
    w = build_world(tmp_path)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for shadow in ("default", "strict", "ci"):
        (checkout / shadow).write_text(LAX)
    monkeypatch.chdir(checkout)
    r = verify(w, "--format", "json", "--audit-log", tmp_path / "a.jsonl", policy=name)
    assert r.exit_code in (0, 1), r.all
    decision = json.loads(r.stdout)
    assert decision["policy"] == name, "the file in the working directory was used"


def test_a_policy_file_is_named_by_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = build_world(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ours").write_text(LAX)
    (tmp_path / "ours.yaml").write_text(LAX)
    r = verify(w, policy="ours")  # a bare name that is no shipped policy: usage error, exit 2
    assert r.exit_code == 2, r.all
    assert "no shipped policy named 'ours'" in r.stderr and "./ours" in r.stderr
    for spec in ("./ours", "ours.yaml"):
        r = verify(w, "--format", "json", policy=spec)
        assert r.exit_code == 0, r.all
        assert json.loads(r.stdout)["policy"] == "shadow"
