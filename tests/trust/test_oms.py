"""OpenSSF Model Signing bundles: interop with sigstore's model-signing, both ways, and rejections."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpenguard.errors import SignatureError
from gpenguard.trust import keys as keylib
from gpenguard.trust import oms
from gpenguard.trust.dsse import pae
from gpenguard.trust.model import Key
from tests.trust.factory import KeyPair, new_key

model_signing = pytest.importorskip("model_signing", reason="model-signing is in the test extra")
from model_signing import signing as ms_signing  # noqa: E402
from model_signing import verifying as ms_verifying  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _key(kp: KeyPair) -> Key:
    return Key(key_id=kp.key_id, type=kp.type, public_key_pem=kp.pem, owner="tests")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "demo.pth"
    path.write_bytes(os.urandom(4096))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_gpenguard_bundle_verifies_with_model_signing(tmp_path: Path, model: Path) -> None:
    kp = new_key("ecdsa-p256")
    priv, pub = kp.write(tmp_path, "signer")
    bundle = tmp_path / "demo.pth.sig"
    bundle.write_bytes(oms.sign_file(model, keylib.load_private_key(priv)))
    ms_verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(model, bundle)  # raises if bad
    # ...and model-signing notices a changed byte, so the bundle really binds the content.
    model.write_bytes(b"x" + model.read_bytes()[1:])
    with pytest.raises(ValueError, match="mismatch"):
        ms_verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(model, bundle)


def test_model_signing_bundle_verifies_with_gpenguard(tmp_path: Path, model: Path) -> None:
    kp = new_key("ecdsa-p256")
    priv, _ = kp.write(tmp_path, "signer")
    bundle = tmp_path / "model.sig"
    ms_signing.Config().use_elliptic_key_signer(private_key=priv).sign(model, bundle)
    parsed = oms.parse_bundle(bundle.read_bytes(), str(bundle))
    assert oms.hint_matches(parsed, _key(kp))
    signed = oms.verify_bundle(parsed, _key(kp), sha256=_sha(model), file_name=model.name)
    assert signed.sha256 == _sha(model) and signed.subject_name == model.name
    with pytest.raises(SignatureError, match="bundle signs sha256"):
        oms.verify_bundle(parsed, _key(kp), sha256="0" * 64, file_name=model.name)


def test_model_signing_cli_verifies_gpenguard_sign_cli(tmp_path: Path, model: Path) -> None:
    """`gpenguard sign` then `model_signing verify key`, as two users on two machines would."""
    kp = new_key("ecdsa-p256")
    priv, pub = kp.write(tmp_path, "signer")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "gpenguard", "sign", str(model), "--key", str(priv)],
        capture_output=True, text=True, env=env, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert _sha(model) in done.stdout and kp.key_id in done.stdout
    check = subprocess.run(
        [sys.executable, "-m", "model_signing", "verify", "key", str(model),
         "--signature", str(tmp_path / "demo.pth.sig"), "--public_key", str(pub)],
        capture_output=True, text=True, check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Verification succeeded" in check.stdout


def test_bundle_from_other_key_is_refused(tmp_path: Path, model: Path) -> None:
    signer, other = new_key("ecdsa-p256"), new_key("ecdsa-p256")
    parsed = oms.parse_bundle(oms.sign_file(model, signer.private), "b.sig")
    assert not oms.hint_matches(parsed, _key(other))
    with pytest.raises(SignatureError, match="different key"):
        oms.verify_bundle(parsed, _key(other), sha256=_sha(model), file_name=model.name)


def test_ed25519_keys_cannot_make_oms_bundles(model: Path) -> None:
    with pytest.raises(SignatureError, match="ECDSA P-256"):
        oms.sign_file(model, new_key("ed25519").private)


def _resign(bundle: bytes, kp: KeyPair, edit: object) -> bytes:
    """Change the statement and sign it again properly: only the content checks can object."""
    obj = json.loads(bundle)
    statement = json.loads(base64.b64decode(obj["dsseEnvelope"]["payload"]))
    edit(statement)  # type: ignore[operator]
    payload = json.dumps(statement).encode()
    obj["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    sig = keylib.sign(kp.private, pae(oms.PAYLOAD_TYPE, payload))
    obj["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(sig).decode()
    return json.dumps(obj).encode()


def test_ignore_paths_of_a_single_file_bundle_are_model_signings_call(tmp_path: Path, model: Path) -> None:
    """An ignore path beside the file leaves it fully covered; one naming the file itself does not."""
    kp = new_key("ecdsa-p256")
    good = oms.sign_file(model, kp.private)

    def widen(st: dict) -> None:  # type: ignore[type-arg]
        st["predicate"]["serialization"]["ignore_paths"].append("extra_weights.bin")

    parsed = oms.parse_bundle(_resign(good, kp, widen), "b.sig")
    assert oms.verify_bundle(parsed, _key(kp), sha256=_sha(model), file_name=model.name).sha256 == _sha(model)

    def itself(st: dict) -> None:  # type: ignore[type-arg]
        st["predicate"]["serialization"]["ignore_paths"].append(".")

    parsed = oms.parse_bundle(_resign(good, kp, itself), "b.sig")
    with pytest.raises(SignatureError, match="model_signing refuses the bundle"):
        oms.verify_bundle(parsed, _key(kp), sha256=_sha(model), file_name=model.name)


def test_ignore_paths_from_model_signing_directory_signing_are_refused(tmp_path: Path) -> None:
    """model-signing adds user --ignore-paths to the signed predicate; gpenguard refuses them."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "demo.pth").write_bytes(b"weights")
    (folder / "notes.txt").write_bytes(b"unsigned")
    kp = new_key("ecdsa-p256")
    priv, _ = kp.write(tmp_path, "signer")
    from model_signing import hashing as ms_hashing

    bundle = tmp_path / "model.sig"
    (
        ms_signing.Config()
        .use_elliptic_key_signer(private_key=priv)
        .set_hashing_config(ms_hashing.Config().set_ignored_paths(paths=["notes.txt"]))
        .sign(folder, bundle)
    )
    parsed = oms.parse_bundle(bundle.read_bytes(), str(bundle))
    with pytest.raises(SignatureError, match=r"bundle signs 'demo\.pth' \(a file inside a signed folder\)"):
        oms.verify_bundle(parsed, _key(kp), sha256=hashlib.sha256(b"weights").hexdigest(), file_name="demo.pth")


def test_inconsistent_or_foreign_statements_are_refused(model: Path) -> None:
    kp = new_key("ecdsa-p256")
    good = oms.sign_file(model, kp.private)
    digest = _sha(model)
    cases: list[tuple[object, str]] = [
        (lambda st: st["subject"][0]["digest"].update(sha256="0" * 64), "do not hash to the subject"),
        (lambda st: st.update(predicateType="https://model_signing/Digests/v0.1"), "legacy"),
        (lambda st: st.update(predicateType="https://slsa.dev/provenance/v1"), "predicateType"),
        (lambda st: st["predicate"]["serialization"].update(method="shards"), "serialization method"),
        (lambda st: st["predicate"]["serialization"].update(hash_type="blake2"), "hash_type"),
        (lambda st: st["predicate"]["resources"][0].update(name="other.pth"), "not 'demo.pth'"),
    ]
    for edit, words in cases:
        parsed = oms.parse_bundle(_resign(good, kp, edit), "b.sig")
        with pytest.raises(SignatureError, match=words):
            oms.verify_bundle(parsed, _key(kp), sha256=digest, file_name=model.name)


def test_tampered_payload_without_resigning_fails_signature(model: Path) -> None:
    kp = new_key("ecdsa-p256")
    obj = json.loads(oms.sign_file(model, kp.private))
    statement = json.loads(base64.b64decode(obj["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "1" * 64
    obj["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    parsed = oms.parse_bundle(json.dumps(obj).encode(), "b.sig")
    with pytest.raises(SignatureError, match="does not verify"):
        oms.verify_bundle(parsed, _key(kp), sha256="1" * 64, file_name=model.name)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"not json", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b"[]", "JSON object"),
        (json.dumps({"mediaType": "application/x"}).encode(), "mediaType"),
        (
            json.dumps(
                {"mediaType": oms.BUNDLE_MEDIA_TYPE, "verificationMaterial": {"x509CertificateChain": {}},
                 "dsseEnvelope": {}}
            ).encode(),
            "not signed with a bare public key",
        ),
    ],
)
def test_malformed_bundles(data: bytes, words: str) -> None:
    with pytest.raises(SignatureError, match=words):
        oms.parse_bundle(data, "b.sig")


_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.sampled_from([".", "sha256", "files", "demo.pth", "0" * 64, oms.PREDICATE_TYPE, oms.STATEMENT_TYPE]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(
        st.sampled_from(["_type", "subject", "predicateType", "predicate", "serialization", "resources",
                         "name", "digest", "sha256", "algorithm", "method", "hash_type", "ignore_paths"]),
        inner,
        max_size=5,
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(_json_value)
def test_any_signed_statement_is_accepted_or_refused_cleanly(statement: object) -> None:
    """A validly signed but arbitrary payload never escapes as anything but a SignatureError."""
    kp = new_key("ecdsa-p256")
    payload = json.dumps(statement).encode()
    sig = keylib.sign(kp.private, pae(oms.PAYLOAD_TYPE, payload))
    bundle = {
        "mediaType": oms.BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": keylib.oms_hint(kp.private.public_key())}},
        "dsseEnvelope": {"payloadType": oms.PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(),
                         "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}]},
    }
    parsed = oms.parse_bundle(json.dumps(bundle).encode(), "fuzz.sig")
    try:
        oms.verify_bundle(parsed, _key(kp), sha256="0" * 64, file_name="demo.pth")
    except SignatureError as exc:
        assert exc.path == "fuzz.sig"


def test_model_signing_itself_decides_signature_and_digest(tmp_path: Path, model: Path) -> None:
    """The library step on its own: the right key and digest pass; another key or digest does not."""
    kp, other = new_key("ecdsa-p256"), new_key("ecdsa-p256")
    parsed = oms.parse_bundle(oms.sign_file(model, kp.private), "b.sig")
    oms._library_verify(parsed, _key(kp), sha256=_sha(model), file_name=model.name)
    with pytest.raises(SignatureError, match=r"model_signing refuses the bundle.*mismatch"):
        oms._library_verify(parsed, _key(kp), sha256="0" * 64, file_name=model.name)
    with pytest.raises(SignatureError, match="model_signing refuses the bundle"):
        oms._library_verify(parsed, _key(other), sha256=_sha(model), file_name=model.name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.pth"]  # nothing left behind here
