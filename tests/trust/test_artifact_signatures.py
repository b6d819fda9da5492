"""Artifact signatures against the registry's artifact role: thresholds, roles, key validity."""

from __future__ import annotations

import hashlib
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gpenguard.trust import oms
from gpenguard.trust.model import Registry
from gpenguard.trust.registry import load_registry
from gpenguard.trust.signatures import verify_artifact_signatures
from tests.trust.factory import NOW, KeyPair, artifact, iso, new_key, registry_doc, write_yaml


class Setup:
    """A model file, its bundles next to a registry, and helpers to write the registry."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.model = tmp_path / "demo.pth"
        self.model.write_bytes(os.urandom(2048))
        self.sha = hashlib.sha256(self.model.read_bytes()).hexdigest()

    def bundle(self, kp: KeyPair, name: str) -> dict[str, Any]:
        (self.dir / name).write_bytes(oms.sign_file(self.model, kp.private))
        return {"kind": "oms-bundle", "path": name}

    def registry(
        self,
        keys: list[dict[str, Any]],
        artifact_ids: list[str],
        threshold: int,
        signatures: list[dict[str, Any]],
        registry_ids: list[str] | None = None,
    ) -> Registry:
        roles: dict[str, Any] = {"artifact": {"keyids": artifact_ids, "threshold": threshold}}
        if registry_ids:
            roles["registry"] = {"keyids": registry_ids, "threshold": 1}
        art = artifact(sha256=self.sha, size=2048, signatures=signatures)
        path = write_yaml(self.dir / "weights-registry.yaml", registry_doc(keys=keys, roles=roles, artifacts=[art]))
        return load_registry(path, now=NOW, state_dir=self.dir / "state")

    def check(self, reg: Registry, sha: str | None = None) -> Any:
        return verify_artifact_signatures(reg, reg.artifacts[0], self.model, sha256=sha or self.sha, now=NOW)


@pytest.fixture
def s(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def test_one_valid_signature_meets_threshold_one(s: Setup) -> None:
    a = new_key("ecdsa-p256")
    reg = s.registry([a.entry()], [a.key_id], 1, [s.bundle(a, "a.sig")])
    result = s.check(reg)
    assert result.passed and result.valid_key_ids == (a.key_id,) and result.rejected == ()


def test_digest_comes_from_the_caller_not_the_file(s: Setup) -> None:
    """The gate's digest of the scanned bytes is what counts; a different one fails."""
    a = new_key("ecdsa-p256")
    reg = s.registry([a.entry()], [a.key_id], 1, [s.bundle(a, "a.sig")])
    result = s.check(reg, sha="f" * 64)
    assert not result.passed and "bundle signs sha256" in result.rejected[0].reason


def test_two_of_two_and_below_threshold(s: Setup) -> None:
    a, b = new_key("ecdsa-p256"), new_key("ecdsa-p256")
    both = s.registry([a.entry(), b.entry()], [a.key_id, b.key_id], 2, [s.bundle(a, "a.sig"), s.bundle(b, "b.sig")])
    assert s.check(both).passed
    one = s.registry([a.entry(), b.entry()], [a.key_id, b.key_id], 2, [s.bundle(a, "a.sig")])
    result = s.check(one)
    assert not result.passed and len(result.valid_key_ids) == 1 and result.threshold == 2


def test_same_key_twice_counts_once(s: Setup) -> None:
    a, b = new_key("ecdsa-p256"), new_key("ecdsa-p256")
    reg = s.registry([a.entry(), b.entry()], [a.key_id, b.key_id], 2, [s.bundle(a, "a1.sig"), s.bundle(a, "a2.sig")])
    result = s.check(reg)
    assert not result.passed and result.valid_key_ids == (a.key_id,)
    assert "already counted" in result.rejected[0].reason


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"expires": iso(NOW - timedelta(days=1))}, "expired at"),
        ({"not_before": iso(NOW + timedelta(days=1))}, "not valid before"),
        ({"revoked": {"at": iso(NOW - timedelta(hours=1)), "reason": "laptop stolen"}}, "revoked at .*laptop stolen"),
    ],
)
def test_unusable_keys_do_not_count(s: Setup, extra: dict[str, Any], words: str) -> None:
    a = new_key("ecdsa-p256")
    reg = s.registry([a.entry(**extra)], [a.key_id], 1, [s.bundle(a, "a.sig")])
    result = s.check(reg)
    assert not result.passed
    assert result.rejected[0].key_id == a.key_id
    assert re.search(words, result.rejected[0].reason)


def test_revocation_in_the_future_does_not_apply_yet(s: Setup) -> None:
    a = new_key("ecdsa-p256")
    reg = s.registry([a.entry(revoked={"at": iso(NOW + timedelta(days=3))})], [a.key_id], 1, [s.bundle(a, "a.sig")])
    assert s.check(reg).passed


def test_wrong_role_key_does_not_count(s: Setup) -> None:
    """A registry-role key is trusted for the registry only, not for artifacts."""
    art_key, reg_key = new_key("ecdsa-p256"), new_key("ecdsa-p256")
    keys = [art_key.entry(), reg_key.entry()]
    named = s.registry(keys, [art_key.key_id], 1, [{**s.bundle(reg_key, "r.sig"), "key_id": reg_key.key_id}], [reg_key.key_id])
    result = s.check(named)
    assert not result.passed and "not an artifact-role key" in result.rejected[0].reason
    unnamed = s.registry(keys, [art_key.key_id], 1, [s.bundle(reg_key, "r.sig")], [reg_key.key_id])
    result = s.check(unnamed)
    assert not result.passed and "no artifact-role key matches" in result.rejected[0].reason


def test_bundle_without_key_hint_is_matched_by_signature(s: Setup) -> None:
    """model-signing before 1.0 wrote no publicKey.hint; the role key that verifies it counts."""
    import json

    a, b = new_key("ecdsa-p256"), new_key("ecdsa-p256")
    ref = s.bundle(b, "b.sig")
    obj = json.loads((s.dir / "b.sig").read_text())
    del obj["verificationMaterial"]["publicKey"]["hint"]
    (s.dir / "b.sig").write_text(json.dumps(obj))
    reg = s.registry([a.entry(), b.entry()], [a.key_id, b.key_id], 1, [ref])
    assert s.check(reg).valid_key_ids == (b.key_id,)
    stranger = new_key("ecdsa-p256")
    (s.dir / "b.sig").write_bytes(oms.sign_file(s.model, stranger.private).replace(b'"hint"', b'"nohint"'))
    result = s.check(reg)
    assert not result.passed and "names no key, and no artifact-role key verifies it" in result.rejected[0].reason


def test_bad_and_missing_bundles_are_reported_not_raised(s: Setup) -> None:
    a, b = new_key("ecdsa-p256"), new_key("ecdsa-p256")
    (s.dir / "garbage.sig").write_text("{not json")
    reg = s.registry(
        [a.entry(), b.entry()],
        [a.key_id, b.key_id],
        1,
        [{"kind": "oms-bundle", "path": "missing.sig"}, {"kind": "oms-bundle", "path": "garbage.sig"}, s.bundle(b, "b.sig")],
    )
    result = s.check(reg)
    assert result.passed and result.valid_key_ids == (b.key_id,)
    reasons = [r.reason for r in result.rejected]
    assert any("not found" in r for r in reasons) and any("not valid JSON" in r for r in reasons)


def test_bundle_of_another_file_fails(s: Setup, tmp_path: Path) -> None:
    a = new_key("ecdsa-p256")
    other = tmp_path / "other.pth"
    other.write_bytes(b"other weights")
    (tmp_path / "a.sig").write_bytes(oms.sign_file(other, a.private))
    reg = s.registry([a.entry()], [a.key_id], 1, [{"kind": "oms-bundle", "path": "a.sig"}])
    result = s.check(reg)
    assert not result.passed and "bundle signs sha256" in result.rejected[0].reason


def test_no_artifact_role_never_passes(s: Setup, tmp_path: Path) -> None:
    a = new_key("ecdsa-p256")
    doc = registry_doc(keys=[a.entry()], roles={}, artifacts=[artifact(sha256=s.sha, signatures=[s.bundle(a, "a.sig")])])
    reg = load_registry(write_yaml(tmp_path / "r.yaml", doc), now=NOW, state_dir=tmp_path / "st")
    result = verify_artifact_signatures(reg, reg.artifacts[0], s.model, sha256=s.sha, now=NOW)
    assert not result.passed and result.threshold == 0 and "no artifact role" in result.rejected[0].reason
