"""OpenSSF Model Signing (OMS) bundles for single-file models, with a bare ECDSA P-256 key.

The layout matches sigstore's ``model-signing`` 1.x "key" method, so each side verifies the
other's bundles: a Sigstore bundle (v0.3 JSON) whose ``verificationMaterial.publicKey.hint`` is
sha256 of the signer's PEM public key, holding a DSSE envelope of an in-toto Statement v1 with
predicate ``https://model_signing/signature/v1.0``. For a single file the predicate lists one
resource named ``.`` with the file's sha256, and the subject digest is sha256 over the raw
resource digests. The bundle has no transparency-log entry or timestamp, so key validity is
decided by the registry at verification time.

Verification goes through sigstore's ``model_signing`` library (`_library_verify`): it checks
the signature, builds the signed manifest and decides which paths the bundle must cover, so
the two cannot disagree on that. The file is not re-read for it: the manifest it is compared
with carries the sha256 the gate computed from the bytes it checked (DESIGN invariant 2).
gpenguard's own reading of the statement stays on top, stricter where the registry needs it:
sha256 (the digest the registry pins), the ``files`` method, and one resource, the file itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from gpenguard.errors import SignatureError
from gpenguard.trust import keys as keylib
from gpenguard.trust.dsse import Envelope, envelope_from_obj, envelope_to_obj, pae
from gpenguard.trust.hashing import hash_file
from gpenguard.trust.model import Key

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
LEGACY_PREDICATE_TYPE = "https://model_signing/Digests/v0.1"
VCS_IGNORE_PATHS = frozenset({".git", ".gitattributes", ".github", ".gitignore"})
"""model-signing's default ignore paths (VCS metadata), written into bundles gpenguard makes."""
SINGLE_FILE_RESOURCE = "."


@dataclass(frozen=True)
class OmsBundle:
    """A parsed (not yet verified) bundle, with the exact bytes it was parsed from."""

    source: str
    key_hint: str | None
    envelope: Envelope
    raw: bytes = b""


@dataclass(frozen=True)
class SignedFile:
    """What a verified bundle says: the signed file's digest and the subject name given."""

    subject_name: str
    sha256: str


def _get(obj: dict[str, Any], key: str, kind: type, what: str, source: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind):
        raise SignatureError(f"{what}.{key} is missing or not a {kind.__name__}", path=source)
    return value


def parse_bundle(data: bytes, source: str) -> OmsBundle:
    """Parse a bundle's JSON; only the public-key form is accepted (no certificates, no Sigstore)."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise SignatureError(f"signature bundle is not valid JSON: {exc}", path=source) from exc
    if not isinstance(obj, dict):
        raise SignatureError("signature bundle must be a JSON object", path=source)
    media_type = obj.get("mediaType")
    if media_type != BUNDLE_MEDIA_TYPE:
        raise SignatureError(f"bundle mediaType is {media_type!r}, expected {BUNDLE_MEDIA_TYPE!r}", path=source)
    material = _get(obj, "verificationMaterial", dict, "bundle", source)
    if "publicKey" not in material:
        found = ", ".join(sorted(k for k in material if k != "tlogEntries")) or "nothing"
        raise SignatureError(
            f"bundle is not signed with a bare public key (verificationMaterial has {found}); "
            "only model-signing's `key` method is supported",
            path=source,
        )
    public = material["publicKey"]
    hint = public.get("hint") if isinstance(public, dict) else None
    if hint is not None and not isinstance(hint, str):
        raise SignatureError("bundle verificationMaterial.publicKey.hint must be a string", path=source)
    envelope = envelope_from_obj(_get(obj, "dsseEnvelope", dict, "bundle", source), source)
    if len(envelope.signatures) != 1:
        raise SignatureError(f"bundle must hold exactly one signature, found {len(envelope.signatures)}", path=source)
    return OmsBundle(source=source, key_hint=hint or None, envelope=envelope, raw=data)


def hint_matches(bundle: OmsBundle, key: Key) -> bool:
    """Whether the bundle names `key` (ECDSA keys only: model-signing signs with EC keys)."""
    if key.type != "ecdsa-p256" or bundle.key_hint is None:
        return False
    return bundle.key_hint == keylib.oms_hint(keylib.public_key_of(key))


def _statement(bundle: OmsBundle) -> dict[str, Any]:
    src = bundle.source
    if bundle.envelope.payload_type != PAYLOAD_TYPE:
        raise SignatureError(f"bundle payloadType is {bundle.envelope.payload_type!r}, expected {PAYLOAD_TYPE!r}", path=src)
    try:
        statement = json.loads(bundle.envelope.payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise SignatureError(f"bundle payload is not JSON: {exc}", path=src) from exc
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise SignatureError(f"bundle payload is not an in-toto {STATEMENT_TYPE} statement", path=src)
    predicate_type = statement.get("predicateType")
    if predicate_type == LEGACY_PREDICATE_TYPE:
        raise SignatureError("legacy model-signing v0.2 bundles are not accepted; re-sign with model-signing >= 1.0", path=src)
    if predicate_type != PREDICATE_TYPE:
        raise SignatureError(f"bundle predicateType is {predicate_type!r}, expected {PREDICATE_TYPE!r}", path=src)
    return statement


def _signed_file(statement: dict[str, Any], file_name: str, source: str) -> SignedFile:
    """Check the predicate describes exactly one sha256-hashed file and return its digest."""
    subjects = _get(statement, "subject", list, "statement", source)
    if len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise SignatureError(f"statement must have exactly one subject, found {len(subjects)}", path=source)
    subject_name = subjects[0].get("name")
    digest = subjects[0].get("digest")
    root = digest.get("sha256") if isinstance(digest, dict) else None
    if not isinstance(root, str):
        raise SignatureError("statement subject has no sha256 digest", path=source)
    predicate = _get(statement, "predicate", dict, "statement", source)
    serialization = _get(predicate, "serialization", dict, "predicate", source)
    if serialization.get("method") != "files":
        raise SignatureError(
            f"serialization method {serialization.get('method')!r} is not supported; sign with the `files` method",
            path=source,
        )
    if serialization.get("hash_type") != "sha256":
        raise SignatureError(f"hash_type {serialization.get('hash_type')!r} is not supported; sign with sha256", path=source)
    ignore = serialization.get("ignore_paths", [])
    if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
        raise SignatureError("serialization.ignore_paths must be a list of strings", path=source)
    # Which paths the ignore list leaves out of the bundle is model_signing's call
    # (`_library_verify`): for a single file it can only matter if it names the file itself.
    resources = _get(predicate, "resources", list, "predicate", source)
    hasher = hashlib.sha256()
    for i, res in enumerate(resources):
        hex_digest = res.get("digest") if isinstance(res, dict) else None
        try:
            hasher.update(bytes.fromhex(hex_digest if isinstance(hex_digest, str) else ""))
        except ValueError as exc:
            raise SignatureError(f"predicate resources[{i}].digest is not hex", path=source) from exc
        if not hex_digest:
            raise SignatureError(f"predicate resources[{i}] has no digest", path=source)
    if hasher.hexdigest() != root.lower():
        raise SignatureError("statement is inconsistent: the resources do not hash to the subject digest", path=source)
    if len(resources) != 1:
        raise SignatureError(
            f"bundle covers {len(resources)} files; gpenguard checks single-file bundles "
            "(sign the file itself, not its folder)",
            path=source,
        )
    res = resources[0]
    if res.get("name") != SINGLE_FILE_RESOURCE:
        # A resource named after the file comes from signing a folder that holds it: model_signing
        # verifying the file itself refuses that bundle, and so does gpenguard.
        raise SignatureError(
            f"bundle signs {res.get('name')!r} (a file inside a signed folder), not {file_name!r} itself", path=source
        )
    if res.get("algorithm") != "sha256":
        raise SignatureError(f"resource algorithm {res.get('algorithm')!r} is not sha256", path=source)
    return SignedFile(subject_name=str(subject_name), sha256=str(res["digest"]).lower())


def verify_bundle(bundle: OmsBundle, key: Key, *, sha256: str, file_name: str) -> SignedFile:
    """Verify the bundle's signature with `key` and that it signs a file with digest `sha256`.

    `sha256` comes from the caller's own hash of the bytes it will use; the file is not re-read.
    The signature and the file coverage are model_signing's verdict (`_library_verify`); the
    statement is then read by gpenguard too, for its stricter rules and clearer messages.
    """
    src = bundle.source
    if key.type != "ecdsa-p256":
        raise SignatureError(f"key {key.key_id} is {key.type}; OMS bundles are verified with ECDSA P-256 keys", path=src)
    public = keylib.public_key_of(key)
    if bundle.key_hint is not None and bundle.key_hint != keylib.oms_hint(public):
        raise SignatureError(f"bundle was made with a different key than {key.key_id} (publicKey.hint differs)", path=src)
    sig = bundle.envelope.signatures[0].sig
    if not keylib.verify(public, sig, pae(bundle.envelope.payload_type, bundle.envelope.payload)):
        raise SignatureError(f"bundle signature does not verify with key {key.key_id}", path=src)
    signed = _signed_file(_statement(bundle), file_name, src)
    if signed.sha256 != sha256.lower():
        raise SignatureError(f"bundle signs sha256 {signed.sha256}, but the file's sha256 is {sha256.lower()}", path=src)
    _library_verify(bundle, key, sha256=sha256.lower(), file_name=file_name)
    return signed


def _library_verify(bundle: OmsBundle, key: Key, *, sha256: str, file_name: str) -> None:
    """model_signing's own verification of `bundle` for a file whose sha256 is `sha256`.

    The library reads the bundle and key from files, so the exact bytes already parsed (and
    bounded) are written to a private temporary folder: nothing at the original paths can have
    changed in between, and nothing there can block. Its hashing step runs on an empty
    stand-in with the file's name, so the library alone decides which paths the bundle must
    cover (its ignore paths, symlink and naming rules), and each digest is then replaced by the
    sha256 the gate computed from the bytes it checked: the file is never read a second time.
    """
    from model_signing import hashing as ms_hashing
    from model_signing import manifest as ms_manifest
    from model_signing import verifying as ms_verifying
    from model_signing._hashing.hashing import Digest  # model-signing 1.x: see pyproject's pin

    class _Hashed(ms_hashing.Config):  # type: ignore[misc,unused-ignore]  # an untyped base class
        def hash(self, model_path: Any, *, files_to_hash: Any = None) -> Any:
            # The library's own serializer decides what the bundle must cover (ignore paths,
            # symlinks, names) on an empty stand-in of the same name; only the digests are ours.
            covered = super().hash(model_path, files_to_hash=files_to_hash)
            items = [
                ms_manifest.FileManifestItem(
                    path=PurePosixPath(rd.identifier), digest=Digest("sha256", bytes.fromhex(sha256))
                )
                for rd in covered.resource_descriptors()
            ]
            return ms_manifest.Manifest(covered.model_name, items, ms_manifest._FileSerialization("sha256"))

    with tempfile.TemporaryDirectory(prefix="gpenguard-oms-") as tmp:
        folder = Path(tmp)
        (folder / "bundle.sig").write_bytes(bundle.raw)
        (folder / "key.pub").write_text(key.public_key_pem)
        (folder / "model").mkdir()
        (folder / "model" / file_name).write_bytes(b"")  # the stand-in: hashed by the library, digest replaced
        config = (
            ms_verifying.Config()  # type: ignore[no-untyped-call]
            .use_elliptic_key_verifier(public_key=folder / "key.pub")
            .set_hashing_config(_Hashed())  # type: ignore[no-untyped-call]
        )
        try:
            config.verify(folder / "model" / file_name, folder / "bundle.sig")
        except Exception as exc:  # the library raises ValueError and others; any failure refuses
            raise SignatureError(
                f"model_signing refuses the bundle with key {key.key_id}: {exc}", path=bundle.source
            ) from exc


def file_sha256(path: Path) -> str:
    """A file's sha256 (for signing, where no scan has hashed it already): `hashing.hash_file`."""
    return hash_file(path).sha256


def sign_file(path: Path, private_key: keylib.PrivateKey, *, sha256: str | None = None) -> bytes:
    """A bundle JSON signing the single file at `path`, verifiable by ``model_signing verify key``."""
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or keylib.key_type_of(private_key) != "ecdsa-p256":
        raise SignatureError(
            "OMS bundles need an ECDSA P-256 key (model-signing's key method is elliptic-curve only)",
            hint="gpenguard keys generate --type ecdsa-p256",
        )
    digest = sha256 or file_sha256(path)
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": path.name, "digest": {"sha256": hashlib.sha256(bytes.fromhex(digest)).hexdigest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                "ignore_paths": sorted(VCS_IGNORE_PATHS),
            },
            "resources": [{"name": SINGLE_FILE_RESOURCE, "algorithm": "sha256", "digest": digest}],
        },
    }
    payload = json.dumps(statement, indent=2).encode("utf-8")
    signature = keylib.sign(private_key, pae(PAYLOAD_TYPE, payload))
    envelope = envelope_to_obj(Envelope(PAYLOAD_TYPE, payload, ()))
    envelope["signatures"] = [{"sig": base64.b64encode(signature).decode("ascii"), "keyid": ""}]
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": keylib.oms_hint(private_key.public_key())}, "tlogEntries": []},
        "dsseEnvelope": envelope,
    }
    return (json.dumps(bundle, indent=2) + "\n").encode("utf-8")
