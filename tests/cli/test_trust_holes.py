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
from tests._gatekit import (
    MODEL_FILE,
    MODEL_NAME,
    World,
    build_world,
    save_checkpoint,
    sha256_of,
    tiny_state_dict,
)


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


# -- 2. a revocation is about bytes, whatever name, size or file name they come with -------------


def _revoked_copy(w: World, *, size: bool = True) -> dict[str, Any]:
    """An entry `evil` that revokes exactly the model's bytes, under another name and path."""
    spec: dict[str, Any] = {"path": "evil.pth", "format": "torch-zip", "sha256": sha256_of(w.model)}
    if size:
        spec["size"] = w.model.stat().st_size
    return {"name": "evil", "version": "1.0", "status": "revoked", "files": [spec]}


def test_name_of_an_approved_entry_does_not_pass_bytes_another_entry_revokes(tmp_path: Path) -> None:
    w = build_world(tmp_path, pinned=False)  # the named entry pins nothing, so nothing else fails
    w.doc["artifacts"].append(_revoked_copy(w))
    w.write()
    r = verify(w, "--name", MODEL_NAME)
    assert r.exit_code == 1, r.all
    assert "revoked as evil@1.0" in r.stdout


def test_a_revocation_that_pins_only_the_sha256_is_enforced(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    w.doc["artifacts"] = [_revoked_copy(w, size=False)]
    w.write()
    r = verify(w)
    assert r.exit_code == 1, r.all
    assert "evil@1.0 is revoked" in r.stdout


@pytest.mark.parametrize("renamed", ["TinyNet.pth", "tinyn\u0435t.pth", "tinynet (1).pth", "tinynet.pth.bak",
                                     "\uff54inynet.pth", "tiny\u200bnet.pth"])
def test_a_tampered_file_renamed_to_a_look_alike_is_still_held_to_its_entry(tmp_path: Path, renamed: str) -> None:
    """Case, a Cyrillic е, a suffix, full width, a zero-width space: still the approved file's name."""
    w = build_world(tmp_path)
    data = bytearray(w.model.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered = w.dir / renamed
    tampered.write_bytes(bytes(data))
    r = verify(w, model=tampered)
    assert r.exit_code == 1, r.all
    assert f"{MODEL_NAME}@1.0 (matched by a file name resembling '{MODEL_FILE}'" in r.stdout
    assert "does not match the pinned" in r.stdout


def test_an_unrelated_file_name_is_still_unknown(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    other = save_checkpoint(tmp_path / "resnet.pth", tiny_state_dict(5))
    r = verify(w, model=other)
    assert r.exit_code == 0, r.all
    assert "nobody approved it" in r.stdout


# -- 5. the exit-code contract: 0 pass, 1 blocked, 2 usage or I/O ---------------------------------


def test_a_malformed_trust_root_is_exit_2_in_verify_and_registry_show(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    w.trust_root.write_text("schema_version: 1\nthreshold: 1\nkeys: []\n")
    r = verify(w)
    assert r.exit_code == 2, r.all
    assert "invalid trust root" in r.stdout and "at least one key" in r.stdout
    r = run("registry", "show", w.registry, "--trust-root", w.trust_root)
    assert r.exit_code == 2, r.all
    assert "invalid trust root" in r.stderr


def test_a_corrupt_and_an_unwritable_state_file_are_both_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = build_world(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    (state / "registry-versions.json").write_text("{not json")
    monkeypatch.setenv("GPENGUARD_STATE_DIR", str(state))
    r = verify(w)
    assert r.exit_code == 2, r.all
    assert "rollback state is corrupt" in r.stdout
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("GPENGUARD_STATE_DIR", str(blocker / "state"))  # cannot be created
    r = verify(w)
    assert r.exit_code == 2, r.all
    assert "cannot use state directory" in r.stdout


def test_a_signature_that_is_a_directory_is_an_error_not_unsigned(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    sig = w.registry.with_name(w.registry.name + ".sig")
    sig.unlink()
    sig.mkdir()
    for r in (verify(w), run("registry", "show", w.registry, "--trust-root", w.trust_root)):
        assert r.exit_code == 2, r.all
        assert "registry signature is a directory" in r.all and "unsigned" not in r.all


def _stranger_signed(w: World) -> None:
    from tests.trust.factory import new_key

    w.write(keys=[new_key()])


def _unsigned(w: World) -> None:
    w.write(sign=False)


def _expired(w: World) -> None:
    from datetime import UTC, datetime

    w.doc["registry"]["expires"] = "2020-01-01T00:00:00Z"
    assert datetime.now(UTC).year > 2020
    w.write()


@pytest.mark.parametrize("damage", [_stranger_signed, _unsigned, _expired])
def test_registry_show_and_verify_agree(tmp_path: Path, damage: Any) -> None:
    w = build_world(tmp_path)
    damage(w)
    v = verify(w)
    s = run("registry", "show", w.registry, "--trust-root", w.trust_root)
    assert v.exit_code == s.exit_code == 1, (v.all, s.all)


@pytest.mark.parametrize("form", ["010", "1:20", "0x10", "1_000", "0b10"])
def test_yaml_1_1_integer_forms_are_refused_in_signed_fields(tmp_path: Path, form: str) -> None:
    """`010` is 8 and `1:20` is 80 to PyYAML; a reviewer reads neither so, even when it is signed."""
    from gpenguard.trust import keys as keylib
    from gpenguard.trust.dsse import DsseSignature, Envelope, pae, serialize_envelope
    from gpenguard.trust.signatures import REGISTRY_PAYLOAD_TYPE

    w = build_world(tmp_path)
    text = w.registry.read_text()
    assert "\n  version: 1\n" in text
    data = text.replace("\n  version: 1\n", f"\n  version: {form}\n", 1).encode()
    w.registry.write_bytes(data)
    # signed over the exact bytes, as an older gpenguard (or another tool) would have signed them
    sig = keylib.sign(w.registry_key.private, pae(REGISTRY_PAYLOAD_TYPE, data))
    envelope = Envelope(REGISTRY_PAYLOAD_TYPE, data, (DsseSignature(w.registry_key.key_id, sig),))
    w.registry.with_name(w.registry.name + ".sig").write_bytes(serialize_envelope(envelope))
    r = verify(w)
    assert r.exit_code == 1, r.all
    assert f"registry.version must be an integer, got {form!r}" in r.stdout
    r = run("registry", "show", w.registry, "--trust-root", w.trust_root)
    assert r.exit_code == 1 and f"registry.version must be an integer, got {form!r}" in r.stderr, r.all
    r = run("registry", "sign", w.registry, "--key", w.registry_key.write(tmp_path, "rk")[0])
    assert r.exit_code == 2 and "registry.version must be an integer" in r.stderr, r.all


@pytest.mark.parametrize("form", ["010", "0x10", "1_000"])
def test_yaml_1_1_integer_forms_are_refused_in_policies(tmp_path: Path, form: str) -> None:
    w = build_world(tmp_path)
    pol = tmp_path / "p.yaml"
    pol.write_text(f"name: p\nsandbox:\n  pids_limit: {form}\n")
    r = verify(w, policy=str(pol))
    assert r.exit_code == 2 and "p.yaml:3" in r.stderr and "pids_limit" in r.stderr, r.all


# -- 4. bounds: nothing an input names can hang the gate or make it parse without limit ------------


def test_a_fifo_at_the_bundle_path_does_not_hang_verify(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    w = build_world(tmp_path, artifact_signatures=1)
    bundle = w.dir / w.entry["signatures"][0]["path"]
    bundle.unlink()
    os.mkfifo(bundle)
    args = [sys.executable, "-m", "gpenguard", "verify", w.model, "--registry", w.registry,
            "--trust-root", w.trust_root]
    env = {**os.environ, "GPENGUARD_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60, env=env,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "not a regular file" in done.stdout


def test_more_signatures_than_any_threshold_needs_are_refused_unread(tmp_path: Path) -> None:
    """33 signatures, one of them valid: refused before any is verified (each keyless one would
    be tried against every trust-root key)."""
    w = build_world(tmp_path)
    sig = w.registry.with_name(w.registry.name + ".sig")
    envelope = json.loads(sig.read_text())
    valid = envelope["signatures"][0]
    envelope["signatures"] = [{"keyid": "", "sig": valid["sig"]}] * 32 + [valid]
    sig.write_text(json.dumps(envelope))
    r = verify(w)
    assert r.exit_code == 1, r.all
    assert "holds 33 signatures; at most 32 are read" in r.stdout


def test_an_artifact_listing_too_many_bundles_is_refused_unread(tmp_path: Path) -> None:
    w = build_world(tmp_path, artifact_signatures=1)
    good = w.entry["signatures"][0]
    w.entry["signatures"] = [good] + [{**good, "path": f"missing-{i}.sig"} for i in range(32)]
    w.write()
    r = verify(w)
    assert r.exit_code == 1, r.all
    assert "lists 33 signatures; at most 32 are read" in r.stdout


def test_an_oversized_registry_is_refused_under_the_default_policy(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    w.write(sign=False)
    with w.registry.open("a") as fh:
        fh.write(("# " + "x" * 1022 + "\n") * 1100)  # 1.1 MiB of comment: valid YAML, too big
    r = run("verify", w.model, "--registry", w.registry, "--policy", "default")
    assert r.exit_code == 2, r.all
    assert "larger than 1048576 bytes" in r.stdout


def test_a_registry_of_too_many_values_is_refused_before_its_tree_is_built(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    doc = w.registry.read_text().replace("artifacts:\n", "artifacts:\n" + "- a\n" * 100_001, 1)
    w.registry.write_text(doc)
    assert len(doc) < 2**20
    r = run("verify", w.model, "--registry", w.registry, "--policy", "default")
    assert r.exit_code == 1, r.all
    assert "more than 100000 values" in r.stdout


# -- 3. the audit log: a full disk or a crash leaves it valid; a signed checkpoint anchors it -----


def _log_with(w: World, log: Path, n: int) -> None:
    for _ in range(n):
        assert verify(w, "--audit-log", log).exit_code == 0


def test_a_short_write_on_a_full_disk_is_cut_back_and_the_log_stays_valid(tmp_path: Path) -> None:
    """A real short write: the child may not grow any file past RLIMIT_FSIZE (SIGXFSZ ignored,
    so write() returns what fitted, then EFBIG, as on a full disk)."""
    import os
    import resource
    import signal
    import subprocess
    import sys

    w = build_world(tmp_path)
    log = tmp_path / "audit.jsonl"
    _log_with(w, log, 2)
    before = log.read_bytes()
    limit = len(before) + 300  # a record is ~1 KiB: 300 bytes of it fit, the rest does not

    def cramped() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "GPENGUARD_STATE_DIR": str(tmp_path / "state"), "PYTHONDONTWRITEBYTECODE": "1"}
    args = [sys.executable, "-m", "gpenguard", "verify", str(w.model), "--registry", str(w.registry),
            "--trust-root", str(w.trust_root), "--audit-log", str(log)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, preexec_fn=cramped,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the partial record was cut away" in done.stdout
    assert log.read_bytes() == before  # cut back to the byte
    assert run("audit", "verify", log).exit_code == 0
    _log_with(w, log, 1)  # later runs are not locked out
    r = run("audit", "verify", log)
    assert r.exit_code == 0 and "3 record(s), chain intact" in r.stdout


def test_a_torn_last_line_from_a_crash_is_reported_apart_then_repaired(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    log = tmp_path / "audit.jsonl"
    _log_with(w, log, 2)
    with log.open("ab") as fh:  # what a writer killed mid-write leaves
        fh.write(log.read_bytes().splitlines()[-1][:100])
    r = run("audit", "verify", log)
    assert r.exit_code == 1, r.all
    assert "INCOMPLETE (torn last line, not tampering)" in r.stdout and "FAILED" not in r.stdout
    assert "line 3: torn" in r.stdout
    assert verify(w, "--audit-log", log).exit_code == 0  # the next decision is logged
    r = run("audit", "verify", log)
    assert r.exit_code == 0 and "3 record(s), chain intact" in r.stdout, r.all
    assert "note, line 3: this record's writer cut away a torn last line of 100 byte(s)" in r.stdout


def _rehash_from(log: Path, index: int, edit: Any) -> None:
    """A consistent rewrite: edit record `index` and recompute every hash and prev after it."""
    import hashlib

    from gpenguard.audit import canonical, record_hash

    lines = log.read_bytes().splitlines()
    records = [json.loads(line) for line in lines]
    edit(records[index])
    prev = hashlib.sha256(lines[index - 1]).hexdigest() if index else "0" * 64
    out = lines[:index]
    for rec in records[index:]:
        rec["prev"] = prev
        rec["hash"] = record_hash(rec)
        line = canonical(rec)
        out.append(line)
        prev = hashlib.sha256(line).hexdigest()
    log.write_bytes(b"".join(line + b"\n" for line in out))


def test_a_signed_checkpoint_catches_a_consistent_rewrite(tmp_path: Path) -> None:
    from tests.trust.factory import new_key

    w = build_world(tmp_path)
    log = tmp_path / "audit.jsonl"
    _log_with(w, log, 3)
    auditor = new_key("ed25519")
    priv, pub = auditor.write(tmp_path, "auditor")
    cp = tmp_path / "audit.checkpoint"
    r = run("audit", "checkpoint", log, "--key", priv, "-o", cp)
    assert r.exit_code == 0, r.all
    _log_with(w, log, 1)  # the log goes on growing after the checkpoint
    r = run("audit", "verify", log, "--checkpoint", cp, "--key", pub)
    assert r.exit_code == 0 and "checkpoint of" in r.stdout and "(record 3) holds" in r.stdout, r.all

    _rehash_from(log, 1, lambda rec: rec.update(verdict="block"))
    assert run("audit", "verify", log).exit_code == 0  # the chain alone cannot tell
    r = run("audit", "verify", log, "--checkpoint", cp, "--key", pub)
    assert r.exit_code == 1 and "line 3 is not the one checkpointed" in r.stdout, r.all


def test_a_checkpoint_catches_records_cut_from_the_end_and_needs_its_key(tmp_path: Path) -> None:
    from tests.trust.factory import new_key, write_trust_root

    w = build_world(tmp_path)
    log = tmp_path / "audit.jsonl"
    _log_with(w, log, 3)
    auditors = [new_key("ed25519"), new_key("ecdsa-p256")]
    priv, pub = auditors[0].write(tmp_path, "a0")
    cp = tmp_path / "cp"
    assert run("audit", "checkpoint", log, "--key", priv, "-o", cp).exit_code == 0
    root = write_trust_root(tmp_path / "root.yaml", auditors, threshold=1)
    assert run("audit", "verify", log, "--checkpoint", cp, "--trust-root", root).exit_code == 0
    strict_root = write_trust_root(tmp_path / "root2.yaml", auditors, threshold=2)
    r = run("audit", "verify", log, "--checkpoint", cp, "--trust-root", strict_root)
    assert r.exit_code == 2 and "threshold not met: 1 of 2" in r.stderr, r.all
    _, other_pub = new_key().write(tmp_path, "stranger")
    r = run("audit", "verify", log, "--checkpoint", cp, "--key", other_pub)
    assert r.exit_code == 2 and "threshold not met: 0 of 1" in r.stderr, r.all
    r = run("audit", "verify", log, "--checkpoint", cp)
    assert r.exit_code == 2 and "exactly one of --key PUB or --trust-root" in r.stderr

    log.write_bytes(b"".join(line + b"\n" for line in log.read_bytes().splitlines()[:2]))
    assert run("audit", "verify", log).exit_code == 0
    r = run("audit", "verify", log, "--checkpoint", cp, "--key", pub)
    assert r.exit_code == 1 and "removed from its end" in r.stdout, r.all
    log.write_bytes(b"")
    r = run("audit", "checkpoint", log, "--key", priv, "-o", cp)
    assert r.exit_code == 1 and "empty" in r.stderr


# -- 6. OMS bundles: gpenguard and model_signing agree on which files a bundle covers --------------


def _ms_sign(priv: Path, target: Path, bundle: Path, ignore: list[str] | None = None) -> Path:
    from model_signing import hashing as ms_hashing
    from model_signing import signing as ms_signing

    config = ms_signing.Config().use_elliptic_key_signer(private_key=priv)
    if ignore:
        config = config.set_hashing_config(ms_hashing.Config().set_ignored_paths(paths=ignore))
    config.sign(target, bundle)
    return bundle


def _bundle_variant(w: World, priv: Path, case: str) -> Path:
    out = w.dir / f"{case}.sig"
    folder = w.dir.parent / f"folder-{case}"
    if case == "the-file":
        return _ms_sign(priv, w.model, out)
    if case == "another-model-name":  # the same bytes signed under another name
        twin = w.dir.parent / "renamed-twin.pth"
        twin.write_bytes(w.model.read_bytes())
        return _ms_sign(priv, twin, out)
    if case == "ignore-paths-beside-the-file":
        return _ms_sign(priv, w.model, out, ignore=["notes.txt", "extra/"])
    folder.mkdir()
    (folder / MODEL_FILE).write_bytes(w.model.read_bytes())
    if case == "extra-files":
        (folder / "extra.bin").write_bytes(b"more weights")
    elif case == "fewer-files":  # a folder bundle that holds only the model: a different cover
        pass
    elif case == "folder-with-ignore-paths":
        (folder / "notes.txt").write_bytes(b"left out")
        return _ms_sign(priv, folder, out, ignore=["notes.txt"])
    elif case == "other-files-only":
        (folder / MODEL_FILE).unlink()
        (folder / "other.bin").write_bytes(b"other")
    return _ms_sign(priv, folder, out)


@pytest.mark.parametrize("case", ["the-file", "another-model-name", "ignore-paths-beside-the-file",
                                  "extra-files", "fewer-files", "folder-with-ignore-paths", "other-files-only"])
def test_gpenguard_and_model_signing_agree_on_what_a_bundle_covers(tmp_path: Path, case: str) -> None:
    pytest.importorskip("model_signing")
    from model_signing import verifying as ms_verifying

    w = build_world(tmp_path, artifact_threshold=1)
    (key,) = w.artifact_keys
    priv, pub = key.write(tmp_path, "release")
    bundle = _bundle_variant(w, priv, case)
    try:
        ms_verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(w.model, bundle)
        library_accepts = True
    except ValueError:
        library_accepts = False
    w.entry["signatures"] = [{"kind": "oms-bundle", "path": bundle.name, "key_id": key.key_id}]
    w.write()
    r = verify(w)
    assert r.exit_code in (0, 1), r.all
    assert (r.exit_code == 0) == library_accepts, (case, library_accepts, r.stdout)
    expected = {"the-file": True, "another-model-name": True, "ignore-paths-beside-the-file": True}
    assert library_accepts == expected.get(case, False)
