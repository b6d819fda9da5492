"""The registry's DSSE envelope against an independent DSSE implementation (securesystemslib),
both ways, for both key types; and the envelope parser against arbitrary bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpenguard.errors import SignatureError
from gpenguard.trust.dsse import Envelope, pae, parse_envelope, serialize_envelope
from gpenguard.trust.registry import load_registry, load_trust_root, signature_path
from gpenguard.trust.signatures import REGISTRY_PAYLOAD_TYPE, sign_registry
from tests.trust.factory import NOW, new_key, registry_doc, write_trust_root, write_yaml

dsse = pytest.importorskip("securesystemslib.dsse", reason="securesystemslib comes with the test extra")
signer_mod = pytest.importorskip("securesystemslib.signer")


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa-p256"])
def test_our_registry_signature_verifies_with_securesystemslib(tmp_path: Path, key_type: str) -> None:
    kp = new_key(key_type)
    reg = write_yaml(tmp_path / "r.yaml", registry_doc())
    sign_registry(reg, [kp.private])
    env = dsse.Envelope.from_dict(json.loads(signature_path(reg).read_text()))
    key = signer_mod.SSlibKey.from_crypto(kp.private.public_key(), keyid=kp.key_id)
    accepted = env.verify([key], 1)
    assert list(accepted) == [kp.key_id]
    assert env.payload == reg.read_bytes() and env.payload_type == REGISTRY_PAYLOAD_TYPE


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa-p256"])
def test_securesystemslib_signature_verifies_with_gpenguard(tmp_path: Path, key_type: str) -> None:
    kp = new_key(key_type)
    reg = write_yaml(tmp_path / "r.yaml", registry_doc())
    key = signer_mod.SSlibKey.from_crypto(kp.private.public_key(), keyid=kp.key_id)
    signer = signer_mod.CryptoSigner(kp.private, key)
    env = dsse.Envelope(payload=reg.read_bytes(), payload_type=REGISTRY_PAYLOAD_TYPE, signatures={})
    env.sign(signer)
    signature_path(reg).write_text(json.dumps(env.to_dict()))
    root = load_trust_root(write_trust_root(tmp_path / "root.yaml", [kp]))
    assert load_registry(reg, trust_root=root, require_signature=True, now=NOW).signed_by == (kp.key_id,)


def test_pae_matches_the_dsse_spec_example() -> None:
    """The worked example in secure-systems-lab/dsse protocol.md."""
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_deeply_nested_json_is_an_error_not_a_crash() -> None:
    with pytest.raises(SignatureError, match="not valid JSON"):
        parse_envelope(b"[" * 100_000, "deep.sig")


def test_envelope_round_trips() -> None:
    env = Envelope("text/plain", b"\x00payload\xff", ())
    again = parse_envelope(serialize_envelope(Envelope(env.payload_type, env.payload, ())).replace(
        b'"signatures": []', b'"signatures": [{"keyid": "k", "sig": "AAEC"}]'), "x.sig")
    assert again.payload == env.payload and again.signatures[0].sig == b"\x00\x01\x02"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["AAEC", "", "a-_b", "==", "text/plain"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["payloadType", "payload", "signatures", "keyid", "sig"]), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256) | _json.map(lambda v: json.dumps(v).encode()))
def test_envelope_parser_only_raises_signature_errors(data: bytes) -> None:
    """Whatever the bytes, the parser returns an envelope or a SignatureError naming the file."""
    try:
        parse_envelope(data, "fuzz.sig")
    except SignatureError as exc:
        assert exc.path == "fuzz.sig"
