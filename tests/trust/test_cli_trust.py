"""The trust commands as a user runs them: exit codes, files written, and what the messages say."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gpenguard.cli import app
from gpenguard.errors import InputError
from gpenguard.trust import keys as keylib
from gpenguard.trust.fingerprint import fingerprint_from_keys_file
from gpenguard.trust.registry import load_registry
from tests.trust.factory import (
    NOW,
    KeyPair,
    artifact,
    iso,
    new_key,
    registry_doc,
    write_trust_root,
    write_yaml,
)

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


# -- keys generate -----------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa-p256"])
def test_keys_generate_writes_a_private_key_only_the_owner_can_read(tmp_path: Path, key_type: str) -> None:
    code, out, err = run("keys", "generate", "--type", key_type, "--out", tmp_path / "alice", "--owner", "alice")
    assert code == 0, err
    priv, pub = tmp_path / "alice.key", tmp_path / "alice.pub"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    key = keylib.load_private_key(priv)
    assert keylib.key_type_of(key) == key_type
    kid = keylib.key_id(keylib.load_public_key(pub))
    assert kid == keylib.key_id(key.public_key())
    assert f"key id:      {kid}" in out and "owner: alice" in out
    assert "PRIVATE" not in out


def test_keys_show_prints_an_entry_that_loads(tmp_path: Path) -> None:
    """An existing key (say, one a team already uses with model-signing) becomes a registry entry."""
    kp = new_key("ecdsa-p256")
    _, pub = kp.write(tmp_path, "team")
    code, out, err = run("keys", "show", pub, "--owner", "team")
    assert code == 0, err
    assert f"OMS hint:    {keylib.oms_hint(keylib.load_public_key(pub))}" in out
    entry = out.split("entry for trust.keys (or a trust root's keys):\n", 1)[1]
    root = tmp_path / "root.yaml"
    root.write_text("schema_version: 1\nthreshold: 1\nkeys:\n" + entry)
    from gpenguard.trust.registry import load_trust_root

    assert list(load_trust_root(root).keys) == [kp.key_id]
    (tmp_path / "junk.pub").write_text("junk")
    code, _, err = run("keys", "show", tmp_path / "junk.pub")
    assert code == 2 and "junk.pub: not a PEM public key" in err
    (tmp_path / "bin.pub").write_bytes(b"\xe8\x00\xff")
    code, _, err = run("keys", "show", tmp_path / "bin.pub")
    assert code == 2 and "bin.pub: not a PEM public key: not ASCII text" in err


@pytest.mark.parametrize("prefix", ["", ".", "..", "keys/.."])
def test_keys_generate_refuses_a_prefix_that_is_no_file_name(prefix: str) -> None:
    code, _, err = run("keys", "generate", "--out", prefix)
    assert code == 2 and "--out must be a file name prefix" in err
    assert not list(Path().glob("..*"))

def test_keys_generate_leaves_no_half_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "k.pub").symlink_to(tmp_path / "missing")  # dangling: exists() is False
    code, _, err = run("keys", "generate", "--out", tmp_path / "k")
    assert code == 2 and "k.pub: already exists" in err
    assert not (tmp_path / "k.key").exists()
    (tmp_path / "k.pub").unlink()
    from gpenguard.cli import _keys

    real = _keys._write_new

    def fail_on_pub(path: Path, data: bytes, mode: int) -> None:
        if path.suffix == ".pub":
            raise InputError("cannot create: disk full", path=path)
        real(path, data, mode)
    monkeypatch.setattr(_keys, "_write_new", fail_on_pub)
    code, _, err = run("keys", "generate", "--out", tmp_path / "k")
    assert code == 2 and "disk full" in err
    assert not (tmp_path / "k.key").exists()

def test_keys_generate_never_overwrites(tmp_path: Path) -> None:
    assert run("keys", "generate", "--out", tmp_path / "k")[0] == 0
    before = (tmp_path / "k.key").read_bytes()
    code, _, err = run("keys", "generate", "--out", tmp_path / "k")
    assert code == 2 and "already exists; refusing to overwrite a key" in err
    assert (tmp_path / "k.key").read_bytes() == before


def test_keys_generate_unknown_type(tmp_path: Path) -> None:
    code, _, err = run("keys", "generate", "--type", "rsa", "--out", tmp_path / "k")
    assert code == 2 and "unknown key type 'rsa'" in err
    assert not (tmp_path / "k.key").exists()


# -- sign --------------------------------------------------------------------------------------


def test_sign_writes_bundle_next_to_the_file(tmp_path: Path) -> None:
    model = tmp_path / "m.pth"
    model.write_bytes(b"weights")
    priv, _ = new_key("ecdsa-p256").write(tmp_path, "k")
    code, out, err = run("sign", model, "--key", priv)
    assert code == 0, err
    assert "sha256 " + hashlib.sha256(b"weights").hexdigest() in out
    entry = out.split("(path relative to the registry file):\n", 1)[1]
    assert yaml.safe_load(entry) == [{"kind": "oms-bundle", "path": "m.pth.sig", "key_id": keylib.key_id(keylib.load_private_key(priv).public_key())}]
    bundle = json.loads((tmp_path / "m.pth.sig").read_text())
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    code, _, err = run("sign", model, "--key", priv, "-o", tmp_path / "custom.json")
    assert code == 0 and (tmp_path / "custom.json").is_file()


def test_sign_errors(tmp_path: Path) -> None:
    model = tmp_path / "m.pth"
    model.write_bytes(b"weights")
    ed, _ = new_key("ed25519").write(tmp_path, "ed")
    code, _, err = run("sign", model, "--key", ed)
    assert code == 2 and "ECDSA P-256" in err and "keys generate --type ecdsa-p256" in err
    ec, _ = new_key("ecdsa-p256").write(tmp_path, "ec")
    code, _, err = run("sign", tmp_path / "missing.pth", "--key", ec)
    assert code == 2 and "missing.pth" in err
    (tmp_path / "bad.key").write_text("not a key")
    code, _, err = run("sign", model, "--key", tmp_path / "bad.key")
    assert code == 2 and "bad.key: not a usable PEM private key" in err


# -- registry sign / show ----------------------------------------------------------------------


def _setup(tmp_path: Path, *, threshold: int = 1, n: int = 1, version: int = 1) -> tuple[Path, Path, list[Path], list[KeyPair]]:
    kps = [new_key("ed25519" if i % 2 == 0 else "ecdsa-p256") for i in range(n)]
    privs = [kp.write(tmp_path, f"k{i}")[0] for i, kp in enumerate(kps)]
    reg = write_yaml(tmp_path / "weights-registry.yaml", registry_doc(version=version))
    root = write_trust_root(tmp_path / "trust-root.yaml", kps, threshold)
    return reg, root, privs, kps


def test_registry_sign_then_show_verified(tmp_path: Path) -> None:
    reg, root, privs, kps = _setup(tmp_path)
    code, out, err = run("registry", "sign", reg, "--key", privs[0])
    assert code == 0, err
    assert f"signed by {kps[0].key_id}" in out
    code, out, err = run("registry", "show", reg, "--trust-root", root, "--require-signature", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["signed_by"] == [kps[0].key_id] and shown["artifacts"][0]["name"] == "demo-model"
    code, out, _ = run("registry", "show", reg)  # no trust root: nothing is claimed as verified
    assert code == 0 and "not verified: no trust root given (weights-registry.yaml.sig is present)" in out


def test_registry_threshold_reached_by_signing_in_turn(tmp_path: Path) -> None:
    reg, root, privs, kps = _setup(tmp_path, threshold=2, n=2)
    assert run("registry", "sign", reg, "--key", privs[0])[0] == 0
    code, _, err = run("registry", "show", reg, "--trust-root", root)
    assert code == 1 and "threshold not met: 1 of 2" in err
    assert run("registry", "sign", reg, "--key", privs[1])[0] == 0
    code, out, err = run("registry", "show", reg, "--trust-root", root)
    assert code == 0, err
    assert kps[0].key_id in out and kps[1].key_id in out


def test_registry_sign_twice_with_one_key_does_not_reach_two(tmp_path: Path) -> None:
    reg, root, privs, _ = _setup(tmp_path, threshold=2, n=2)
    assert run("registry", "sign", reg, "--key", privs[0], "--key", privs[0])[0] == 0
    assert run("registry", "sign", reg, "--key", privs[0])[0] == 0
    assert len(json.loads(reg.with_name(reg.name + ".sig").read_text())["signatures"]) == 1
    assert run("registry", "show", reg, "--trust-root", root)[0] == 1  # blocked, as verify says


def test_registry_show_unsigned_with_require_signature(tmp_path: Path) -> None:
    reg, root, _, _ = _setup(tmp_path)
    code, _, err = run("registry", "show", reg, "--trust-root", root, "--require-signature")
    assert code == 1 and "registry is unsigned" in err and "gpenguard registry sign" in err


def test_registry_show_signed_by_a_stranger(tmp_path: Path) -> None:
    reg, root, _, _ = _setup(tmp_path)
    stranger, _ = new_key().write(tmp_path, "stranger")
    assert run("registry", "sign", reg, "--key", stranger)[0] == 0
    code, _, err = run("registry", "show", reg, "--trust-root", root)
    assert code == 1 and "is not in the trust root" in err


def test_registry_show_rollback(tmp_path: Path) -> None:
    reg, root, privs, _ = _setup(tmp_path, version=7)
    run("registry", "sign", reg, "--key", privs[0])
    assert run("registry", "show", reg, "--trust-root", root)[0] == 0
    write_yaml(reg, registry_doc(version=6))
    run("registry", "sign", reg, "--key", privs[0])
    code, _, err = run("registry", "show", reg, "--trust-root", root)
    assert code == 1 and "rollback" in err and "version 6 is older than version 7" in err


def test_registry_show_expired(tmp_path: Path) -> None:
    reg = write_yaml(tmp_path / "r.yaml", registry_doc(expires=NOW - timedelta(days=1)))
    code, _, err = run("registry", "show", reg)
    assert code == 1 and "expired at" in err and "r.yaml" in err


def test_registry_show_names_the_line_of_a_duplicate_key(tmp_path: Path) -> None:
    reg = tmp_path / "r.yaml"
    reg.write_text(
        "schema_version: 1\nregistry:\n  name: x\n  version: 1\n  expires: 2099-01-01T00:00:00Z\n"
        "artifacts: []\nregistry:\n  name: y\n  version: 2\n  expires: 2099-01-01T00:00:00Z\n"
    )
    code, _, err = run("registry", "show", reg)
    assert code == 1 and f"{reg}: line 7: registry file: duplicate key 'registry' (first at line 2)" in err


def test_registry_sign_refuses_an_invalid_registry(tmp_path: Path) -> None:
    reg = write_yaml(tmp_path / "r.yaml", {**registry_doc(), "extra": 1})
    priv, _ = new_key().write(tmp_path, "k")
    code, _, err = run("registry", "sign", reg, "--key", priv)
    assert code == 2 and "unknown field 'extra'" in err
    assert not (tmp_path / "r.yaml.sig").exists()


def test_registry_sign_replaces_a_stale_envelope(tmp_path: Path) -> None:
    reg, root, privs, _ = _setup(tmp_path, threshold=2, n=2)
    run("registry", "sign", reg, "--key", privs[0])
    write_yaml(reg, registry_doc(artifacts=[artifact("changed")]))
    run("registry", "sign", reg, "--key", privs[1])
    env = json.loads(reg.with_name(reg.name + ".sig").read_text())
    assert len(env["signatures"]) == 1  # the old signature covered other bytes and was dropped
    assert run("registry", "show", reg, "--trust-root", root)[0] == 1  # blocked, as verify says


def test_registry_sign_reads_an_existing_signature_bounded_and_names_it(tmp_path: Path) -> None:
    reg = write_yaml(tmp_path / "r.yaml", registry_doc())
    priv, _ = new_key().write(tmp_path, "k")
    sig = tmp_path / "r.yaml.sig"
    sig.mkdir()
    code, _, err = run("registry", "sign", reg, "--key", priv)
    assert code == 2 and "r.yaml.sig: registry signature is a directory, not a file" in err
    sig.rmdir()
    with sig.open("wb") as fh:
        fh.truncate(33 * 2**20)  # larger than any envelope of a registry (sparse: no disk used)
    code, _, err = run("registry", "sign", reg, "--key", priv)
    assert code == 2 and "registry signature: larger than" in err

def test_trust_root_key_expired_through_cli(tmp_path: Path) -> None:
    kp = new_key()
    priv, _ = kp.write(tmp_path, "k")
    reg = write_yaml(tmp_path / "r.yaml", registry_doc())
    root = write_trust_root(tmp_path / "root.yaml", [kp], 1, expires=iso(NOW - timedelta(days=400)))
    run("registry", "sign", reg, "--key", priv)
    code, _, err = run("registry", "show", reg, "--trust-root", root)
    assert code == 1 and "expired at" in err


# -- the shipped registry ----------------------------------------------------------------------


def test_shipped_registry_loads_and_pins_published_hashes() -> None:
    reg = load_registry(REPO / "weights-registry.yaml", now=NOW)
    by_name = {a.name: a for a in reg.artifacts}
    assert set(by_name) == {"GPEN-BFR-2048", "GPEN-BFR-512", "GPEN-BFR-256", "RetinaFace-R50", "ParseNet-latest", "realesrnet_x2"}
    assert by_name["GPEN-BFR-512"].files[0].sha256 == "f1002c41add95b0decad69604d80455576f7187dd99ca16bd611bcfd44c10b51"
    assert by_name["GPEN-BFR-512"].files[0].size == 284_085_738
    assert all(f.sha256 and f.size for n, a in by_name.items() if n != "GPEN-BFR-2048" for f in a.files)
    assert reg.keys == {} and reg.signed_by == ()  # no project signing key is shipped


def test_shipped_gpen_2048_entry_has_no_hash_but_the_fingerprint_of_its_key_listing() -> None:
    reg = load_registry(REPO / "weights-registry.yaml", now=NOW)
    (art,) = [a for a in reg.artifacts if a.name == "GPEN-BFR-2048"]
    assert art.files[0].sha256 is None and art.files[0].size is None
    fp = fingerprint_from_keys_file(DATA / "gpen2048_keys.txt")
    assert art.architecture is not None
    assert (art.architecture.fingerprint, art.architecture.tensor_count, art.architecture.parameter_count) == (
        fp.digest, fp.tensor_count, fp.parameter_count,
    )


def test_registry_show_defaults_to_the_shipped_registry() -> None:
    code, out, err = run("registry", "show", "--json")
    assert code == 0, err
    assert json.loads(out)["name"] == "gpenguard-default"


@pytest.mark.parametrize(("name", "size"), [("GPEN-BFR-2048", 2048), ("GPEN-BFR-512", 512), ("GPEN-BFR-256", 256)])
def test_shipped_gpen_fingerprints_match_our_network(name: str, size: int) -> None:
    """The pinned structure is what gpenguard's own GPEN builds (on the meta device: no weights)."""
    torch = pytest.importorskip("torch")
    from gpenguard.nets.gpen import gpen_bfr
    from gpenguard.trust.fingerprint import TensorInfo, fingerprint

    with torch.device("meta"):
        net = gpen_bfr(size)
    fp = fingerprint(TensorInfo(k, str(v.dtype), tuple(v.shape)) for k, v in net.state_dict().items())
    reg = load_registry(REPO / "weights-registry.yaml", now=NOW)
    (art,) = [a for a in reg.artifacts if a.name == name]
    assert art.architecture is not None
    assert (art.architecture.fingerprint, art.architecture.tensor_count, art.architecture.parameter_count) == (
        fp.digest, fp.tensor_count, fp.parameter_count,
    )


def test_encrypted_private_key_needs_the_password_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives import serialization

    kp = new_key("ecdsa-p256")
    enc = tmp_path / "enc.key"
    enc.write_bytes(
        kp.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    model = tmp_path / "m.pth"
    model.write_bytes(b"weights")
    code, _, err = run("sign", model, "--key", enc)
    assert code == 2 and "encrypted" in err and "GPENGUARD_KEY_PASSWORD" in err
    monkeypatch.setenv("GPENGUARD_KEY_PASSWORD", "wrong")
    code, _, err = run("sign", model, "--key", enc)
    assert code == 2 and "enc.key" in err
    monkeypatch.setenv("GPENGUARD_KEY_PASSWORD", "s3cret")
    code, out, err = run("sign", model, "--key", enc)
    assert code == 0, err
    assert kp.key_id in out

    plain = tmp_path / "plain.key"  # a second, unencrypted key used while the variable is set
    plain.write_bytes(keylib.private_pem(new_key("ecdsa-p256").private))
    code, _, err = run("sign", model, "--key", plain, "-o", tmp_path / "m.sig2")
    assert code == 0, err
