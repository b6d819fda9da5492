"""Strict loading of weights-registry.yaml: schema, line numbers, signatures, expiry, rollback."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gpenguard.errors import ExitCode, InputError, RegistryError
from gpenguard.trust.model import Status
from gpenguard.trust.registry import find_artifact, load_registry, load_trust_root, parse_registry
from gpenguard.trust.signatures import sign_registry
from tests.trust.factory import (
    NOW,
    artifact,
    iso,
    new_key,
    registry_doc,
    write_trust_root,
    write_yaml,
)

REPO = Path(__file__).resolve().parents[2]


def _load_text(tmp_path: Path, text: str) -> RegistryError:
    path = tmp_path / "weights-registry.yaml"
    path.write_text(text)
    with pytest.raises(RegistryError) as info:
        load_registry(path, now=NOW, state_dir=tmp_path / "state")
    assert info.value.path == str(path)
    assert info.value.exit_code == ExitCode.ERROR
    return info.value


VALID = """\
schema_version: 1
registry:
  name: t
  version: 3
  expires: 2027-06-01T00:00:00Z
artifacts:
  - name: demo
    version: "1.0"
    status: approved
    files:
      - path: demo.pth
        format: torch-zip
        size: 10
        sha256: {sha}
"""


def test_valid_registry_loads_with_values(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(VALID.format(sha="0" * 64))
    reg = load_registry(path, now=NOW, state_dir=tmp_path / "state")
    assert (reg.name, reg.version, reg.signed_by) == ("t", 3, ())
    assert reg.expires is not None and reg.expires.year == 2027
    (art,) = reg.artifacts
    assert art.status is Status.APPROVED and art.line == 7
    assert art.files[0].sha256 == "0" * 64 and art.files[0].size == 10  # all-digit hex stays text


def test_unquoted_versions_are_read_as_written(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(VALID.format(sha="0" * 64).replace('version: "1.0"', "version: 1.10"))
    assert load_registry(path, now=NOW, state_dir=tmp_path / "s").artifacts[0].version == "1.10"


def test_duplicate_key_is_rejected_with_both_lines(tmp_path: Path) -> None:
    text = VALID.format(sha="0" * 64).replace("  version: 3\n", "  version: 3\n  version: 4\n")
    err = _load_text(tmp_path, text)
    assert "line 5" in err.message and "duplicate key 'version'" in err.message and "first at line 4" in err.message


def test_duplicate_key_deep_in_an_artifact(tmp_path: Path) -> None:
    text = VALID.format(sha="0" * 64) + "        sha256: " + "1" * 64 + "\n"
    err = _load_text(tmp_path, text)
    assert "line 15" in err.message and "'sha256'" in err.message


def test_unknown_field_is_rejected_naming_it_and_the_line(tmp_path: Path) -> None:
    text = VALID.format(sha="0" * 64).replace("    status: approved\n", "    status: approved\n    approved_by_everyone: true\n")
    err = _load_text(tmp_path, text)
    assert "line 10" in err.message and "unknown field 'approved_by_everyone'" in err.message


@pytest.mark.parametrize(
    ("old", "new", "line", "words"),
    [
        ("  version: 3\n", "  version: three\n", 4, "registry.version must be an integer"),
        ("  version: 3\n", "  version: true\n", 4, "registry.version must be an integer"),
        ("        size: 10\n", "        size: -1\n", 13, "at least 0"),
        ("        size: 10\n", "        size: [10]\n", 13, "single value"),
        ("    status: approved\n", "    status: blessed\n", 9, "status must be one of"),
        ("  expires: 2027-06-01T00:00:00Z\n", "  expires: soon\n", 5, "ISO 8601"),
        ("  expires: 2027-06-01T00:00:00Z\n", "  expires: 2027-06-01 00:00:00\n", 5, "timezone"),
        ("      - path: demo.pth\n", "      - path: ../../etc/passwd\n", 11, "relative path"),
        ("schema_version: 1\n", "schema_version: 2\n", 1, "not supported"),
    ],
)
def test_bad_types_name_the_line(tmp_path: Path, old: str, new: str, line: int, words: str) -> None:
    text = VALID.format(sha="0" * 64)
    assert old in text
    err = _load_text(tmp_path, text.replace(old, new))
    assert f"line {line}:" in err.message and words in err.message


def test_bad_sha256_is_rejected(tmp_path: Path) -> None:
    err = _load_text(tmp_path, VALID.format(sha="ABC"))
    assert "line 14" in err.message and "64 lowercase hex" in err.message


def test_missing_required_field(tmp_path: Path) -> None:
    err = _load_text(tmp_path, VALID.format(sha="0" * 64).replace("        format: torch-zip\n", ""))
    assert "missing required field 'format'" in err.message and "line 11" in err.message


def test_yaml_aliases_and_syntax_errors(tmp_path: Path) -> None:
    aliased = VALID.format(sha="0" * 64).replace("  name: t\n", "  name: &n t\n") + "extra: *n\n"
    assert "anchors and aliases" in _load_text(tmp_path, aliased).message
    broken = _load_text(tmp_path, "schema_version: 1\nregistry: [\n")
    assert "invalid YAML" in broken.message and "line" in broken.message


def test_deep_nesting_is_refused_not_a_crash(tmp_path: Path) -> None:
    err = _load_text(tmp_path, "schema_version: 1\nregistry: " + "[" * 50_000 + "\n")
    assert "line 2" in err.message and "nesting deeper than 32 levels" in err.message


def test_missing_registry_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_registry(tmp_path / "nope.yaml", now=NOW)


def test_key_id_must_match_its_public_key(tmp_path: Path) -> None:
    a, b = new_key(), new_key("ecdsa-p256")
    entry = a.entry()
    entry["key_id"] = b.key_id
    path = write_yaml(tmp_path / "r.yaml", registry_doc(keys=[entry]))
    with pytest.raises(RegistryError, match=r"does not match its public key"):
        load_registry(path, now=NOW)
    entry = a.entry()
    entry["type"] = "ecdsa-p256"
    write_yaml(path, registry_doc(keys=[entry]))
    with pytest.raises(RegistryError, match=r"key is ed25519, but its entry says ecdsa-p256"):
        load_registry(path, now=NOW)


def test_role_threshold_and_unknown_keyids(tmp_path: Path) -> None:
    a = new_key()
    path = write_yaml(
        tmp_path / "r.yaml", registry_doc(keys=[a.entry()], roles={"artifact": {"keyids": [a.key_id], "threshold": 2}})
    )
    with pytest.raises(RegistryError, match="could never be met"):
        load_registry(path, now=NOW)
    write_yaml(path, registry_doc(keys=[a.entry()], roles={"artifact": {"keyids": [new_key().key_id], "threshold": 1}}))
    with pytest.raises(RegistryError, match=r"is not in trust\.keys"):
        load_registry(path, now=NOW)


def test_expired_registry_is_refused(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "r.yaml", registry_doc(expires=NOW - timedelta(seconds=1)))
    with pytest.raises(RegistryError, match="expired at"):
        load_registry(path, now=NOW)


def test_find_artifact_by_digest_size_and_name(tmp_path: Path) -> None:
    doc = registry_doc(
        artifacts=[
            artifact("m", "1.0", sha256="1" * 64, size=5, status="revoked"),
            artifact("m", "2.0", sha256="2" * 64, size=6),
        ]
    )
    reg = parse_registry(yaml.safe_dump(doc).encode(), "r.yaml")
    assert find_artifact(reg, sha256="1" * 64) is reg.artifacts[0]
    assert find_artifact(reg, sha256="1" * 64, size=6) is None  # digest and size must fit one file
    assert find_artifact(reg, name="m") is reg.artifacts[1]  # approved preferred
    assert find_artifact(reg, sha256="9" * 64) is None


def test_find_artifact_by_digest_prefers_a_revocation() -> None:
    """The same bytes revoked under one name do not pass as approved under another."""
    doc = registry_doc(
        artifacts=[
            artifact("good-name", "1", sha256="3" * 64, size=7),
            artifact("bad-name", "1", sha256="3" * 64, size=7, status="revoked"),
        ]
    )
    reg = parse_registry(yaml.safe_dump(doc).encode(), "r.yaml")
    found = find_artifact(reg, sha256="3" * 64, size=7)
    assert found is not None and found.status is Status.REVOKED
    named = find_artifact(reg, name="good-name")
    assert named is not None and named.status is Status.APPROVED
    assert find_artifact(reg) is None


# -- signatures, trust root, rollback ---------------------------------------------------------


def _signed(tmp_path: Path, *signers: object, version: int = 1, threshold: int = 1, trust: list[object] | None = None):
    reg = write_yaml(tmp_path / "weights-registry.yaml", registry_doc(version=version))
    if signers:
        sign_registry(reg, [s.private for s in signers])  # type: ignore[attr-defined]
    root = write_trust_root(tmp_path / "trust-root.yaml", list(trust if trust is not None else signers), threshold)  # type: ignore[arg-type]
    return reg, load_trust_root(root)


def test_signed_registry_verifies_against_trust_root(tmp_path: Path) -> None:
    a = new_key()
    reg, root = _signed(tmp_path, a)
    loaded = load_registry(reg, trust_root=root, require_signature=True, state_dir=tmp_path / "s", now=NOW)
    assert loaded.signed_by == (a.key_id,)


def test_ecdsa_keys_sign_registries_too(tmp_path: Path) -> None:
    a = new_key("ecdsa-p256")
    reg, root = _signed(tmp_path, a)
    assert load_registry(reg, trust_root=root, require_signature=True, now=NOW).signed_by == (a.key_id,)


def test_unsigned_registry_with_require_signature(tmp_path: Path) -> None:
    a = new_key()
    reg, root = _signed(tmp_path, trust=[a])
    with pytest.raises(RegistryError, match=r"unsigned.*\.sig not found"):
        load_registry(reg, trust_root=root, require_signature=True, now=NOW)
    with pytest.raises(RegistryError, match="no trust root"):
        load_registry(reg, require_signature=True, now=NOW)
    assert load_registry(reg, now=NOW).signed_by == ()


def test_registry_signed_by_a_key_outside_the_trust_root(tmp_path: Path) -> None:
    a, stranger = new_key(), new_key()
    reg, root = _signed(tmp_path, stranger, trust=[a])
    with pytest.raises(RegistryError, match=r"0 of 1 required.*not in the trust root"):
        load_registry(reg, trust_root=root, now=NOW)


def test_registry_trust_keys_are_not_an_anchor_for_the_registry(tmp_path: Path) -> None:
    """A registry that lists its own signing key in trust.keys still needs the pinned root."""
    a, attacker = new_key(), new_key()
    reg = write_yaml(tmp_path / "r.yaml", registry_doc(keys=[attacker.entry()], roles={"registry": {"keyids": [attacker.key_id], "threshold": 1}}))
    sign_registry(reg, [attacker.private])
    root = load_trust_root(write_trust_root(tmp_path / "root.yaml", [a]))
    with pytest.raises(RegistryError, match="not in the trust root"):
        load_registry(reg, trust_root=root, now=NOW)


def test_below_threshold_and_same_key_twice(tmp_path: Path) -> None:
    a, b = new_key(), new_key("ecdsa-p256")
    reg, root = _signed(tmp_path, a, a, threshold=2, trust=[a, b])
    with pytest.raises(RegistryError, match=r"1 of 2 required"):
        load_registry(reg, trust_root=root, now=NOW)
    sign_registry(reg, [b.private])  # a second signer adds to the same envelope
    assert set(load_registry(reg, trust_root=root, now=NOW).signed_by) == {a.key_id, b.key_id}


def test_duplicated_signature_entries_count_once(tmp_path: Path) -> None:
    import json

    a, b = new_key(), new_key()
    reg, root = _signed(tmp_path, a, threshold=2, trust=[a, b])
    sig = reg.with_name(reg.name + ".sig")
    env = json.loads(sig.read_text())
    env["signatures"].append(dict(env["signatures"][0]))
    env["signatures"].append({**env["signatures"][0], "keyid": ""})
    sig.write_text(json.dumps(env))
    with pytest.raises(RegistryError, match=r"1 of 2 required.*already counted"):
        load_registry(reg, trust_root=root, now=NOW)


def test_changed_registry_invalidates_signature(tmp_path: Path) -> None:
    a = new_key()
    reg, root = _signed(tmp_path, a)
    reg.write_text(reg.read_text().replace("status: approved", "status: deprecated"))
    with pytest.raises(RegistryError, match="different registry contents"):
        load_registry(reg, trust_root=root, now=NOW)


def test_forged_signature_bytes_do_not_verify(tmp_path: Path) -> None:
    import base64
    import json

    a = new_key()
    reg, root = _signed(tmp_path, a)
    sig = reg.with_name(reg.name + ".sig")
    env = json.loads(sig.read_text())
    raw = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    raw[5] ^= 1
    env["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    sig.write_text(json.dumps(env))
    with pytest.raises(RegistryError, match="does not verify"):
        load_registry(reg, trust_root=root, now=NOW)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"expires": iso(NOW - timedelta(days=1))}, "expired at"),
        ({"not_before": iso(NOW + timedelta(days=1))}, "not valid before"),
        ({"revoked": {"at": iso(NOW - timedelta(days=1)), "reason": "key-compromise"}}, r"revoked at .*key-compromise"),
    ],
)
def test_trust_root_key_validity_is_checked_now(tmp_path: Path, extra: dict[str, object], words: str) -> None:
    a = new_key()
    reg = write_yaml(tmp_path / "r.yaml", registry_doc())
    sign_registry(reg, [a.private])
    root = load_trust_root(write_trust_root(tmp_path / "root.yaml", [a], **extra))
    with pytest.raises(RegistryError, match=words):
        load_registry(reg, trust_root=root, now=NOW)


def test_rollback_is_refused_after_a_newer_signed_version(tmp_path: Path) -> None:
    a = new_key()
    state = tmp_path / "state"
    reg, root = _signed(tmp_path, a, version=5)
    old = reg.read_bytes(), reg.with_name(reg.name + ".sig").read_bytes()
    assert load_registry(reg, trust_root=root, state_dir=state, now=NOW).version == 5
    reg2, _ = _signed(tmp_path, a, version=6)
    assert load_registry(reg2, trust_root=root, state_dir=state, now=NOW).version == 6
    reg.write_bytes(old[0])
    reg.with_name(reg.name + ".sig").write_bytes(old[1])
    with pytest.raises(RegistryError, match=r"rollback: .*version 5 is older than version 6"):
        load_registry(reg, trust_root=root, state_dir=state, now=NOW)


def test_same_version_with_other_signed_contents_is_refused(tmp_path: Path) -> None:
    a = new_key()
    state = tmp_path / "state"
    reg, root = _signed(tmp_path, a, version=2)
    load_registry(reg, trust_root=root, state_dir=state, now=NOW)
    write_yaml(reg, registry_doc(version=2, artifacts=[artifact("other")]))
    sign_registry(reg, [a.private])
    with pytest.raises(RegistryError, match="already accepted with different contents"):
        load_registry(reg, trust_root=root, state_dir=state, now=NOW)


def test_unsigned_loads_do_not_raise_the_rollback_floor(tmp_path: Path) -> None:
    state = tmp_path / "state"
    reg = write_yaml(tmp_path / "r.yaml", registry_doc(version=99))
    load_registry(reg, state_dir=state, now=NOW)
    write_yaml(reg, registry_doc(version=1))
    assert load_registry(reg, state_dir=state, now=NOW).version == 1


def test_unsigned_load_needs_no_writable_state_dir(tmp_path: Path) -> None:
    reg = write_yaml(tmp_path / "r.yaml", registry_doc())
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    assert load_registry(reg, state_dir=blocked / "state", now=NOW).version == 1
    a = new_key()
    sign_registry(reg, [a.private])
    root = load_trust_root(write_trust_root(tmp_path / "root.yaml", [a]))
    with pytest.raises(InputError, match="cannot use state directory"):  # a verified load must record
        load_registry(reg, trust_root=root, state_dir=blocked / "state", now=NOW)


def test_state_dir_defaults_to_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPENGUARD_STATE_DIR", str(tmp_path / "envstate"))
    a = new_key()
    reg, root = _signed(tmp_path, a, version=3)
    load_registry(reg, trust_root=root, now=NOW)
    assert '"version": 3' in (tmp_path / "envstate" / "registry-versions.json").read_text()


def test_trust_root_errors(tmp_path: Path) -> None:
    a = new_key()
    path = write_trust_root(tmp_path / "root.json", [a], threshold=2)
    with pytest.raises(RegistryError, match="threshold 2 exceeds"):
        load_trust_root(path)
    path.write_text('{"schema_version": 1, "threshold": 1, "keys": [], "keys": []}')
    with pytest.raises(RegistryError, match="duplicate key 'keys'"):
        load_trust_root(path)


def test_naive_verification_time_is_taken_as_utc(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "r.yaml", registry_doc(expires=NOW))
    with pytest.raises(RegistryError, match="expired at"):
        load_registry(path, now=NOW.replace(tzinfo=None), state_dir=tmp_path / "s")
    assert load_registry(path, now=(NOW - timedelta(seconds=1)).replace(tzinfo=None), state_dir=tmp_path / "s")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=3), st.text(": -\n[]{}&*!\"'#0a1.\t\\%@`|>", max_size=3)),
        min_size=1,
        max_size=4,
    )
)
def test_mangled_registries_fail_with_a_registry_error_or_load(edits: list[tuple[int, int, str]]) -> None:
    """Any edit of a valid registry either still validates or is refused with a RegistryError
    naming the file; no other exception escapes (fail closed, clear message)."""
    text = VALID.format(sha="0" * 64)
    for pos, cut, insert in edits:
        pos %= len(text) + 1
        text = text[:pos] + insert + text[pos + cut :]
    try:
        reg = parse_registry(text.encode(), "fuzz.yaml")
    except RegistryError as exc:
        assert exc.path == "fuzz.yaml" and exc.message
    else:
        assert reg.name and reg.artifacts is not None


def test_key_rotation_with_old_and_new_signatures(tmp_path: Path) -> None:
    """Sign with the outgoing and the incoming key; once the old one expires the new one carries it."""
    old, new = new_key(), new_key("ecdsa-p256")
    reg = write_yaml(tmp_path / "r.yaml", registry_doc())
    sign_registry(reg, [old.private, new.private])
    root_path = tmp_path / "root.yaml"
    root_path.write_text(
        yaml.safe_dump(
            {
                "schema_version": 1,
                "threshold": 1,
                "keys": [old.entry(expires=iso(NOW + timedelta(days=1))), new.entry()],
            }
        )
    )
    root = load_trust_root(root_path)
    assert set(load_registry(reg, trust_root=root, now=NOW, state_dir=tmp_path / "s").signed_by) == {old.key_id, new.key_id}
    later = load_registry(reg, trust_root=root, now=NOW + timedelta(days=2), state_dir=tmp_path / "s")
    assert later.signed_by == (new.key_id,)
