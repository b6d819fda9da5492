"""OMS bundles as a user meets them in `gpenguard verify`: model-signing's own bundles count,
and gpenguard covers what model-signing covers."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gpenguard.cli import app
from gpenguard.trust import keys as keylib
from gpenguard.trust import oms
from gpenguard.trust.dsse import pae
from tests._gatekit import build_world, formats_available

pytest.importorskip("model_signing", reason="model-signing is in the test extra")
pytestmark = pytest.mark.usefixtures("formats_available")
__all__ = ["formats_available"]


def _verify(w: Any, *extra: object) -> Any:
    return CliRunner().invoke(
        app,
        [str(a) for a in ("verify", w.model, "--registry", w.registry, "--trust-root", w.trust_root, *extra)],
        catch_exceptions=False,
    )


def test_bundle_made_by_model_signing_cli_passes_strict_verify(tmp_path: Path) -> None:
    w = build_world(tmp_path, artifact_threshold=1)
    (key,) = w.artifact_keys
    priv, _ = key.write(w.dir, "release")
    done = subprocess.run(
        [sys.executable, "-m", "model_signing", "sign", "key", str(w.model),
         "--private_key", str(priv), "--signature", str(w.dir / "ms.sig")],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    w.entry["signatures"] = [{"kind": "oms-bundle", "path": "ms.sig"}]  # found by its key hint
    w.write()
    r = _verify(w, "--policy", "strict", "--audit-log", tmp_path / "audit.jsonl")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "1 of 1 required valid signature" in r.stdout


def test_ignore_paths_beside_a_single_file_leave_nothing_unsigned(tmp_path: Path) -> None:
    """An ignore path in a single-file bundle cannot uncover the file: model_signing accepts
    it on the file, and so does gpenguard (they agree on what a bundle covers)."""
    from model_signing import verifying as ms_verifying

    w = build_world(tmp_path, artifact_threshold=1)
    (key,) = w.artifact_keys
    obj = json.loads(oms.sign_file(w.model, key.private))
    statement = json.loads(base64.b64decode(obj["dsseEnvelope"]["payload"]))
    statement["predicate"]["serialization"]["ignore_paths"].append("*.py")
    payload = json.dumps(statement).encode()
    obj["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    obj["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(
        keylib.sign(key.private, pae(oms.PAYLOAD_TYPE, payload))
    ).decode()
    (w.dir / "wide.sig").write_text(json.dumps(obj))
    _, pub = key.write(tmp_path, "k")
    ms_verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(w.model, w.dir / "wide.sig")
    w.entry["signatures"] = [{"kind": "oms-bundle", "path": "wide.sig", "key_id": key.key_id}]
    w.write()
    r = _verify(w)
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "1 of 1 required valid signature" in r.stdout
