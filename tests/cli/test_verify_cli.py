"""`gpenguard verify`, `registry pin` and `audit`: every rejection path, its exit code and message."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gpenguard.cli import app
from tests._gatekit import (
    MODEL_FILE,
    MODEL_NAME,
    NOW,
    Evil,
    World,
    build_world,
    iso,
    save_checkpoint,
    sha256_of,
    tiny_state_dict,
)
from tests.trust.factory import new_key, write_trust_root


def run(*args: object) -> Any:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    result.all = result.stdout + result.stderr
    return result


def verify(w: World, *extra: object, policy: str = "default", model: Path | None = None) -> Any:
    return run("verify", model or w.model, "--registry", w.registry, "--trust-root", w.trust_root,
               "--policy", policy, *extra)


# -- the file ------------------------------------------------------------------------------------


def test_an_approved_file_passes_with_exit_0(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    r = verify(w)
    assert r.exit_code == 0, r.all
    assert "PASS" in r.stdout and f"{MODEL_NAME}@1.0" in r.stdout


def test_tampered_bytes_after_pinning_block(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    data = bytearray(w.model.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside the tensor data: same size, same structure
    w.model.write_bytes(bytes(data))
    r = verify(w)
    assert r.exit_code == 1, r.all
    assert "sha256:" in r.stdout and "does not match the pinned" in r.stdout


def test_wrong_size_blocks_before_hashing(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    w.entry["files"][0]["size"] += 1
    w.write()
    r = verify(w, "--name", MODEL_NAME)
    assert r.exit_code == 1, r.all
    assert "size:" in r.stdout and "the registry expects" in r.stdout
    assert "not hashed: the size is already wrong" in r.stdout


def test_wrong_pinned_sha256_blocks(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    w.entry["files"][0]["sha256"] = "0" * 64
    w.write()
    r = verify(w, "--name", MODEL_NAME)
    assert r.exit_code == 1, r.all
    assert f"does not match the pinned {'0' * 64}" in r.stdout


def test_wrong_architecture_blocks(tmp_path: Path) -> None:
    w = build_world(tmp_path, pinned=False)
    save_checkpoint(w.model, tiny_state_dict(channels=8))  # another network of the same family
    r = verify(w, "--name", MODEL_NAME)
    assert r.exit_code == 1, r.all
    assert "architecture:" in r.stdout and "is not TinyNet's" in r.stdout


def test_a_malicious_pickle_under_the_approved_name_blocks(tmp_path: Path) -> None:
    w = build_world(tmp_path, pinned=False)
    sd = tiny_state_dict()
    sd["extra"] = Evil()
    save_checkpoint(w.model, sd)
    r = verify(w)
    assert r.exit_code == 1, r.all
    assert "scan:" in r.stdout


# -- registry entries ------------------------------------------------------------------------------


def test_unknown_artifact_passes_with_a_warning_under_default(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    other = save_checkpoint(tmp_path / "other.pth", tiny_state_dict(5))
    r = verify(w, model=other)
    assert r.exit_code == 0, r.all
    assert "not in registry test-registry" in r.stdout and "nobody approved it" in r.stdout


def test_unknown_artifact_blocks_under_strict(tmp_path: Path) -> None:
    w = build_world(tmp_path, artifact_signatures=1)
    other = save_checkpoint(tmp_path / "other.pth", tiny_state_dict(5))
    r = verify(w, "--audit-log", tmp_path / "a.jsonl", policy="strict", model=other)
    assert r.exit_code == 1, r.all
    assert "policy 'strict' requires an entry" in r.stdout


def test_unknown_name_blocks(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    r = verify(w, "--name", "no-such-model")
    assert r.exit_code == 1 and "has no artifact named 'no-such-model'" in r.stdout


def test_revoked_artifact_blocks(tmp_path: Path) -> None:
    w = build_world(tmp_path, status="revoked")
    r = verify(w)
    assert r.exit_code == 1, r.all
    assert f"{MODEL_NAME}@1.0 is revoked" in r.stdout


# -- artifact signatures -----------------------------------------------------------------------------


def test_valid_artifact_signature_passes_strict(tmp_path: Path) -> None:
    w = build_world(tmp_path, artifact_signatures=1)
    r = verify(w, "--audit-log", tmp_path / "a.jsonl", policy="strict")
    assert r.exit_code == 0, r.all
    assert "1 of 1 required valid signature" in r.stdout


def test_signatures_below_threshold_block(tmp_path: Path) -> None:
    w = build_world(tmp_path, artifact_signatures=1, artifact_threshold=2)
    r = verify(w)
    assert r.exit_code == 1, r.all
    assert "signatures: 1 of 2 required valid signature(s)" in r.stdout


def test_expired_artifact_key_blocks(tmp_path: Path) -> None:
    w = build_world(tmp_path, artifact_signatures=1, key_extra={"expires": iso(NOW - timedelta(days=1))})
    r = verify(w)
    assert r.exit_code == 1, r.all
    assert "expired at" in r.stdout


def test_revoked_artifact_key_blocks(tmp_path: Path) -> None:
    w = build_world(tmp_path, artifact_signatures=1,
                    key_extra={"revoked": {"at": iso(NOW - timedelta(days=1)), "reason": "key-compromise"}})
    r = verify(w)
    assert r.exit_code == 1, r.all
    assert "was revoked at" in r.stdout and "key-compromise" in r.stdout


def test_a_key_outside_the_artifact_role_does_not_count(tmp_path: Path) -> None:
    w = build_world(tmp_path, artifact_signatures=1)
    outsider = new_key("ecdsa-p256")
    w.doc["trust"]["keys"].append(outsider.entry())
    w.entry["signatures"] = [w.sign_artifact(outsider)]
    w.write()
    r = verify(w)
    assert r.exit_code == 1, r.all
    assert "is not an artifact-role key" in r.stdout


def test_a_signature_over_other_bytes_does_not_count(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    w.doc["trust"] = {"keys": [], "roles": {}}
    key = new_key("ecdsa-p256")
    w.doc["trust"] = {"keys": [key.entry()], "roles": {"artifact": {"keyids": [key.key_id], "threshold": 1}}}
    w.entry["signatures"] = [w.sign_artifact(key, sha256="ab" * 32)]
    w.write()
    r = verify(w)
    assert r.exit_code == 1, r.all
    assert "signatures: 0 of 1" in r.stdout


def test_strict_requires_artifact_signatures(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    r = verify(w, "--audit-log", tmp_path / "a.jsonl", policy="strict")
    assert r.exit_code == 1, r.all
    assert "lists no artifact signatures" in r.stdout and "policy requires it" in r.stdout


# -- the registry itself ---------------------------------------------------------------------------------


def test_registry_rollback_blocks(tmp_path: Path) -> None:
    w = build_world(tmp_path, version=2)
    assert verify(w).exit_code == 0  # version 2 seen and recorded (signed, verified)
    w.doc["registry"]["version"] = 1
    w.write()
    r = verify(w)
    assert r.exit_code == 1, r.all
    assert "rollback" in r.stdout


def test_expired_registry_blocks(tmp_path: Path) -> None:
    w = build_world(tmp_path, expires=NOW - timedelta(hours=1))
    r = verify(w)
    assert r.exit_code == 1, r.all
    assert "expired at" in r.stdout


def test_unsigned_registry_blocks_under_strict(tmp_path: Path) -> None:
    w = build_world(tmp_path, artifact_signatures=1, sign=False)
    r = verify(w, "--audit-log", tmp_path / "a.jsonl", policy="strict")
    assert r.exit_code == 1, r.all
    assert "registry is unsigned" in r.stdout


def test_strict_without_a_trust_root_is_an_error(tmp_path: Path) -> None:
    w = build_world(tmp_path, artifact_signatures=1)
    r = run("verify", w.model, "--registry", w.registry, "--policy", "strict", "--audit-log", tmp_path / "a.jsonl")
    assert r.exit_code == 2, r.all
    assert "requires a signed registry, but no trust root" in r.stdout


def test_registry_signed_by_a_key_outside_the_trust_root_blocks(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    stranger = new_key("ed25519")
    w.write(keys=[stranger])
    r = verify(w)
    assert r.exit_code == 1, r.all
    assert "threshold not met" in r.stdout


def test_a_trust_root_with_another_key_rejects_the_registry(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    other_root = write_trust_root(tmp_path / "other-root.yaml", [new_key("ed25519")])
    r = run("verify", w.model, "--registry", w.registry, "--trust-root", other_root)
    assert r.exit_code == 1, r.all
    assert "registry:" in r.stdout


def test_registry_signed_by_an_expired_trust_root_key_blocks(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    write_trust_root(w.trust_root, [w.registry_key], expires=iso(NOW - timedelta(days=1)))
    r = verify(w)
    assert r.exit_code == 1, r.all
    assert "expired at" in r.stdout


def test_registry_signed_by_a_revoked_trust_root_key_blocks(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    write_trust_root(w.trust_root, [w.registry_key],
                     revoked={"at": iso(NOW - timedelta(days=1)), "reason": "stolen laptop"})
    r = verify(w)
    assert r.exit_code == 1, r.all
    assert "revoked" in r.stdout and "stolen laptop" in r.stdout


def test_policy_file_supplies_registry_trust_root_and_audit_log(tmp_path: Path) -> None:
    w = build_world(tmp_path, artifact_signatures=1)
    p = w.dir / "site.yaml"
    p.write_text(
        "name: site-strict\nscan: {fail_on: low, profile: strict}\n"
        "verify: {registry: weights-registry.yaml, trust_root: trust-root.yaml, require_registry_entry: true,"
        " require_signed_registry: true, require_pinned_sha256: true, require_artifact_signatures: true}\n"
        "audit: {log: logs/audit.jsonl, required: true}\n"
    )
    (w.dir / "logs").mkdir()
    r = run("verify", w.model, "--policy", p)
    assert r.exit_code == 0, r.all
    rec = json.loads((w.dir / "logs" / "audit.jsonl").read_text())
    assert rec["policy"] == "site-strict" and rec["verdict"] == "pass"


def test_the_installed_entry_point_returns_the_exit_codes(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    w = build_world(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    base = [sys.executable, "-m", "gpenguard", "verify", "--registry", str(w.registry), "--trust-root", str(w.trust_root)]
    ok = subprocess.run([*base, str(w.model)], env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    data = bytearray(w.model.read_bytes())
    data[-200] ^= 0xFF
    w.model.write_bytes(bytes(data))
    bad = subprocess.run([*base, str(w.model)], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "BLOCK" in bad.stdout
    missing = subprocess.run([*base, str(tmp_path / "nope.pth")], env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no such file" in missing.stdout


# -- policies -----------------------------------------------------------------------------------------------


def test_duplicate_keys_in_a_policy_are_a_usage_error_naming_the_line(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    p = tmp_path / "p.yaml"
    p.write_text("name: mine\nscan:\n  fail_on: high\n  fail_on: critical\n")
    r = verify(w, policy=str(p))
    assert r.exit_code == 2
    assert f"{p}:4: duplicate key 'fail_on'" in r.stderr


def test_unknown_fields_in_a_policy_are_a_usage_error_naming_the_line(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    p = tmp_path / "p.yaml"
    p.write_text("name: mine\nverify:\n  require_signed_registy: true\n")
    r = verify(w, policy=str(p))
    assert r.exit_code == 2
    assert f"{p}:3: unknown field verify.'require_signed_registy'" in r.stderr


# -- output formats ---------------------------------------------------------------------------------------------


def test_json_output_carries_every_reason(tmp_path: Path) -> None:
    w = build_world(tmp_path, status="revoked")
    w.entry["files"][0]["sha256"] = "0" * 64
    w.write()
    r = verify(w, "--format", "json", "--name", MODEL_NAME)
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["verdict"] == "block" and doc["exit_code"] == 1
    assert len(doc["reasons"]) >= 2
    assert {c["name"] for c in doc["checks"] if c["outcome"] == "fail"} >= {"status", "sha256"}


def test_sarif_output_lists_gate_failures_next_to_scan_results(tmp_path: Path) -> None:
    w = build_world(tmp_path, status="revoked")
    r = verify(w, "--format", "sarif")
    assert r.exit_code == 1
    log = json.loads(r.stdout)
    run_ = log["runs"][0]
    results = run_["results"]
    assert any(res["ruleId"] == "verify/status" and "revoked" in res["message"]["text"] for res in results)
    rule_ids = [rule["id"] for rule in run_["tool"]["driver"]["rules"]]
    assert all(rule_ids[res["ruleIndex"]] == res["ruleId"] for res in results)
    assert run_["invocations"][0]["exitCode"] == 1


def test_sarif_output_validates_against_the_official_schema(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from tests.report import sarif_schema

    schema = sarif_schema.load()  # skips without the schema; fails under REQUIRE_SARIF_SCHEMA=1
    w = build_world(tmp_path, status="revoked")
    sd = tiny_state_dict()
    sd["x"] = Evil()
    save_checkpoint(w.model, sd)
    r = verify(w, "--format", "sarif")
    assert r.exit_code == 1
    jsonschema.Draft4Validator(schema).validate(json.loads(r.stdout))


def test_audit_log_option_appends_and_audit_verify_accepts_it(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    log = tmp_path / "audit.jsonl"
    assert verify(w, "--audit-log", log).exit_code == 0
    assert verify(w, "--audit-log", log, "--name", "nope").exit_code == 1
    r = run("audit", "verify", log)
    assert r.exit_code == 0 and "2 record(s), chain intact" in r.stdout
    shown = run("audit", "show", log)
    assert "PASS" in shown.stdout and "BLOCK" in shown.stdout and "has no artifact named 'nope'" in shown.stdout


# -- audit log tampering, through the CLI ------------------------------------------------------------------------


@pytest.fixture
def audit_log(tmp_path: Path) -> Path:
    w = build_world(tmp_path)
    log = tmp_path / "audit.jsonl"
    for _ in range(4):
        assert verify(w, "--audit-log", log).exit_code == 0
    return log


def _rewrite(log: Path, edit: Any) -> None:
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(edit(lines)))


@pytest.mark.parametrize(
    ("edit", "line", "words"),
    [
        (lambda ls: [*ls[:1], ls[1].replace(b'"verdict":"pass"', b'"verdict":"xass"'), *ls[2:]], 2, "modified"),
        (lambda ls: [ls[0], *ls[2:]], 2, "removed, inserted or reordered"),
        (lambda ls: [ls[0], ls[2], ls[1], ls[3]], 2, "removed, inserted or reordered"),
        (lambda ls: [*ls[:3], ls[3][:50]], 4, "truncated"),
        (lambda ls: ls[1:], 1, "sequence number"),
    ],
    ids=["edited", "removed", "reordered", "cut-mid-line", "first-removed"],
)
def test_audit_verify_names_each_kind_of_tampering(audit_log: Path, edit: Any, line: int, words: str) -> None:
    _rewrite(audit_log, edit)
    r = run("audit", "verify", audit_log)
    assert r.exit_code == 1, r.all
    assert f"line {line}: " in r.stdout and words in r.stdout


def test_trailing_records_removed_are_caught_with_expect_head(audit_log: Path) -> None:
    head = run("audit", "show", "--head", audit_log).stdout.split()[0]
    _rewrite(audit_log, lambda ls: ls[:-1])
    assert run("audit", "verify", audit_log).exit_code == 0  # undetectable without an anchor
    r = run("audit", "verify", "--expect-head", head, audit_log)
    assert r.exit_code == 1 and "removed from its end" in r.stdout


def test_audit_verify_of_a_missing_log_is_exit_2(tmp_path: Path) -> None:
    r = run("audit", "verify", tmp_path / "none.jsonl")
    assert r.exit_code == 2 and "no such audit log" in r.stderr



def test_audit_show_skips_reasons_of_the_wrong_type(tmp_path: Path) -> None:
    log = tmp_path / "odd.jsonl"
    log.write_text('{"seq":1,"verdict":"pass","reasons":5}\n{"seq":2,"verdict":"block","reasons":["r"]}\n')
    r = run("audit", "show", log)
    assert r.exit_code == 0, r.all
    assert "PASS" in r.stdout and "- r" in r.stdout


def test_audit_show_head_of_a_log_without_intact_records_says_so(tmp_path: Path) -> None:
    log = tmp_path / "junk.jsonl"
    log.write_bytes(b"\xff\xfe garbage\n")
    r = run("audit", "show", "--head", log)
    assert r.exit_code == 1 and "no intact record" in r.stderr
    (tmp_path / "empty.jsonl").write_bytes(b"")
    r = run("audit", "show", "--head", tmp_path / "empty.jsonl")
    assert r.exit_code == 1 and "is empty" in r.stderr

# -- registry pin -------------------------------------------------------------------------------------------------


def test_pin_writes_size_and_sha256_bumps_version_and_signs(tmp_path: Path) -> None:
    w = build_world(tmp_path, pinned=False)
    text = w.registry.read_text()
    w.registry.write_text("# maintained by the ML platform team\n" + text)
    priv, _ = w.registry_key.write(tmp_path, "reg")
    r = run("registry", "pin", MODEL_NAME, w.model, "--registry", w.registry, "--key", priv)
    assert r.exit_code == 0, r.all
    after = w.registry.read_text()
    assert after.startswith("# maintained by the ML platform team\n")
    doc = yaml.safe_load(after)
    spec = doc["artifacts"][0]["files"][0]
    assert spec["sha256"] == sha256_of(w.model) and spec["size"] == w.model.stat().st_size
    assert doc["registry"]["version"] == 2
    # The pinned, re-signed registry now verifies under the trust root, by content alone.
    assert verify(w, "--name", MODEL_NAME).exit_code == 0


def test_pin_refuses_a_file_of_another_architecture(tmp_path: Path) -> None:
    w = build_world(tmp_path, pinned=False)
    save_checkpoint(w.model, tiny_state_dict(channels=8))
    before = w.registry.read_bytes()
    r = run("registry", "pin", MODEL_NAME, w.model, "--registry", w.registry)
    assert r.exit_code == 1 and "architecture fingerprint" in r.stderr
    assert w.registry.read_bytes() == before


def test_pin_refuses_a_file_that_does_not_scan_clean(tmp_path: Path) -> None:
    w = build_world(tmp_path, pinned=False)
    sd = tiny_state_dict()
    sd["x"] = Evil()
    save_checkpoint(w.model, sd)
    r = run("registry", "pin", MODEL_NAME, w.model, "--registry", w.registry)
    assert r.exit_code == 1 and "scan is not clean" in r.stderr


def test_pin_without_a_key_leaves_the_registry_unsigned_with_a_warning(tmp_path: Path) -> None:
    w = build_world(tmp_path, pinned=False)
    r = run("registry", "pin", MODEL_NAME, w.model, "--registry", w.registry)
    assert r.exit_code == 0, r.all
    assert "unsigned" in r.stderr
    assert not w.registry.with_name(w.registry.name + ".sig").exists()
    assert MODEL_FILE in r.stdout


def test_pin_refuses_to_overwrite_a_different_pinned_digest(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    w.entry["files"][0]["sha256"] = "0" * 64
    w.write(sign=False)
    before = w.registry.read_bytes()
    r = run("registry", "pin", MODEL_NAME, w.model, "--registry", w.registry)
    assert r.exit_code == 1 and "already pins sha256" in r.stderr and "new artifact version" in r.stderr
    assert w.registry.read_bytes() == before


def test_pin_with_an_unusable_key_leaves_the_registry_and_its_signature_untouched(tmp_path: Path) -> None:
    w = build_world(tmp_path, pinned=False)
    sig = w.registry.with_name(w.registry.name + ".sig")
    before, sig_before = w.registry.read_bytes(), sig.read_bytes()
    (tmp_path / "bad.key").write_bytes(b"not a key")
    r = run("registry", "pin", MODEL_NAME, w.model, "--registry", w.registry, "--key", tmp_path / "bad.key")
    assert r.exit_code == 2 and "bad.key: not a usable PEM private key" in r.stderr
    assert w.registry.read_bytes() == before and sig.read_bytes() == sig_before


def test_pin_of_a_registry_that_is_a_directory_is_exit_2(tmp_path: Path) -> None:
    w = build_world(tmp_path, pinned=False)
    r = run("registry", "pin", MODEL_NAME, w.model, "--registry", tmp_path)
    assert r.exit_code == 2 and "registry is a directory, not a file" in r.stderr

def test_pin_of_an_unknown_name_is_refused(tmp_path: Path) -> None:
    w = build_world(tmp_path, pinned=False)
    r = run("registry", "pin", "nope", w.model, "--registry", w.registry)
    assert r.exit_code == 2 and "no artifact named 'nope'" in r.stderr


def test_usage_and_io_problems_exit_2(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    missing_reg = run("verify", w.model, "--registry", tmp_path / "none.yaml")
    assert missing_reg.exit_code == 2 and "registry not found" in missing_reg.stdout
    bad_format = run("verify", w.model, "--registry", w.registry, "--format", "html")
    assert bad_format.exit_code == 2 and "--format must be one of text, json, sarif" in bad_format.stderr
    a_dir = run("verify", tmp_path, "--registry", w.registry)
    assert a_dir.exit_code == 2 and "file: not a regular file" in a_dir.stdout
