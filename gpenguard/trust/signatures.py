"""Threshold checks: registry signatures against the trust root, artifact signatures against the
registry's ``artifact`` role.

Both follow TUF's counting rule: a signature counts only from a key of the right role that is
valid now (not revoked, not expired, past ``not_before``), and each key counts once however many
signatures it made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from gpenguard.errors import RegistryError, SignatureError
from gpenguard.fileio import read_regular, write_atomic
from gpenguard.trust import keys as keylib
from gpenguard.trust import oms
from gpenguard.trust.dsse import DsseSignature, Envelope, pae, parse_envelope, serialize_envelope
from gpenguard.trust.model import (
    Artifact,
    Key,
    Registry,
    SignatureCheck,
    SignatureRejection,
    TrustRoot,
)

REGISTRY_PAYLOAD_TYPE = "application/vnd.gpenguard.registry+yaml"
MAX_BUNDLE_BYTES = 2**20
"""A single-file bundle is a few KiB (a keyless one with its certificate chain, ~10 KiB)."""
MAX_ARTIFACT_SIGNATURES = 32
"""Most bundles listed for one artifact that are read; more is refused before any is opened."""


def _count_envelope(
    envelope: Envelope, keys: dict[str, Key], now: datetime, source: str
) -> tuple[list[str], list[SignatureRejection]]:
    """Key ids whose signatures over the envelope verify (each once), and why others did not."""
    message = pae(envelope.payload_type, envelope.payload)
    valid: list[str] = []
    rejected: list[SignatureRejection] = []
    for n, sig in enumerate(envelope.signatures, start=1):
        label = f"signature {n}"
        if sig.keyid:
            key = keys.get(sig.keyid)
            if key is None:
                rejected.append(SignatureRejection(source, f"{label}: key {sig.keyid} is not in the trust root", sig.keyid))
                continue
            candidates = [key]
        else:
            candidates = list(keys.values())  # DSSE keyid is only a hint; try every trusted key
        verified = next(
            (k for k in candidates if keylib.verify(keylib.public_key_of(k), sig.sig, message)), None
        )
        if verified is None:
            rejected.append(SignatureRejection(source, f"{label}: signature does not verify", sig.keyid or None))
            continue
        why = keylib.unusable_reason(verified, now)
        if why is not None:
            rejected.append(SignatureRejection(source, f"{label}: {why}", verified.key_id))
        elif verified.key_id in valid:
            rejected.append(
                SignatureRejection(source, f"{label}: key {verified.key_id} already counted (each key counts once)", verified.key_id)
            )
        else:
            valid.append(verified.key_id)
    return valid, rejected


def count_envelope(
    envelope: Envelope, keys: dict[str, Key], now: datetime, source: str
) -> tuple[list[str], list[SignatureRejection]]:
    """`_count_envelope` for other signed documents (audit checkpoints): the same counting rule."""
    return _count_envelope(envelope, keys, now, source)


def verify_registry_envelope(
    envelope: Envelope, data: bytes, trust_root: TrustRoot, *, now: datetime, source: str
) -> tuple[str, ...]:
    """The trust-root key ids that signed exactly `data`; raises unless the threshold is met."""
    if envelope.payload_type != REGISTRY_PAYLOAD_TYPE:
        raise RegistryError(
            f"signature payloadType is {envelope.payload_type!r}, expected {REGISTRY_PAYLOAD_TYPE!r}", path=source
        )
    if envelope.payload != data:
        raise RegistryError(
            "signature covers different registry contents "
            f"(signed sha256 {hashlib.sha256(envelope.payload).hexdigest()}, file sha256 {hashlib.sha256(data).hexdigest()})",
            path=source,
            hint="the registry changed after signing; review the change and sign it again",
        )
    valid, rejected = _count_envelope(envelope, trust_root.keys, now, source)
    if len(valid) < trust_root.threshold:
        reasons = "; ".join(r.reason for r in rejected) or "no signatures"
        raise RegistryError(
            f"registry signature threshold not met: {len(valid)} of {trust_root.threshold} required "
            f"valid signature(s) from trust-root keys ({reasons})",
            path=source,
        )
    return tuple(valid)


def sign_registry(registry_path: Path, private_keys: Sequence[keylib.PrivateKey]) -> tuple[Path, tuple[str, ...]]:
    """Add signatures over the registry's exact bytes to ``<registry>.sig``, replacing it atomically.

    Signatures already there are kept if they cover the same bytes (so k signers can sign one
    after another); a stale envelope for older contents is replaced, not merged.
    """
    from gpenguard.trust.registry import (
        MAX_REGISTRY_BYTES,
        parse_registry,
        read_bounded,
        signature_path,
    )

    data = read_bounded(registry_path, MAX_REGISTRY_BYTES, "registry")
    parse_registry(data, str(registry_path))  # never sign a registry that would not load
    sig_path = signature_path(registry_path)
    existing: tuple[DsseSignature, ...] = ()
    if sig_path.exists():
        old = parse_envelope(read_bounded(sig_path, MAX_REGISTRY_BYTES * 2, "registry signature"), str(sig_path))
        if old.payload_type == REGISTRY_PAYLOAD_TYPE and old.payload == data:
            existing = old.signatures
    message = pae(REGISTRY_PAYLOAD_TYPE, data)
    signatures = list(existing)
    added: list[str] = []
    for private in private_keys:
        kid = keylib.key_id(private.public_key())
        signatures = [s for s in signatures if s.keyid != kid]  # re-signing replaces, never duplicates
        signatures.append(DsseSignature(keyid=kid, sig=keylib.sign(private, message)))
        added.append(kid)
    envelope = Envelope(REGISTRY_PAYLOAD_TYPE, data, tuple(signatures))
    write_atomic(sig_path, serialize_envelope(envelope))
    return sig_path, tuple(added)


def _read_bundle(path: Path) -> bytes:
    """A bundle's bytes: a FIFO, device or directory there is refused at once, never waited on."""
    try:
        return read_regular(path, MAX_BUNDLE_BYTES)
    except FileNotFoundError as exc:
        raise SignatureError("signature bundle not found", path=path) from exc
    except OSError as exc:
        raise SignatureError(f"cannot read signature bundle: {exc.strerror or exc}", path=path) from exc


def _verifies(bundle: oms.OmsBundle, key: Key, sha256: str, file_path: Path) -> bool:
    try:
        oms.verify_bundle(bundle, key, sha256=sha256, file_name=file_path.name)
    except SignatureError:
        return False
    return True


def verify_artifact_signatures(
    registry: Registry,
    artifact: Artifact,
    file_path: Path,
    *,
    sha256: str,
    now: datetime | None = None,
) -> SignatureCheck:
    """Check an artifact's OMS bundles against the registry's artifact role, for one file.

    `sha256` is the digest the caller computed from the bytes it scanned; the bundles' subject
    digests are compared with it, so the file is never re-read here (what was hashed is what is
    used). Bundle paths are relative to the registry file.
    """
    now = keylib.as_utc(now)
    role = registry.roles.get("artifact")
    threshold = role.threshold if role is not None else 0
    role_ids = role.keyids if role is not None else ()
    base = Path(registry.path).parent
    valid: list[str] = []
    rejected: list[SignatureRejection] = []

    def reject(ref_path: str, reason: str, kid: str | None = None) -> None:
        rejected.append(SignatureRejection(ref_path, reason, kid))

    if role is None and artifact.signatures:
        reject(registry.path, "the registry defines no artifact role, so no artifact signature can count")
    if len(artifact.signatures) > MAX_ARTIFACT_SIGNATURES:
        reject(registry.path, f"{artifact.name}@{artifact.version} lists {len(artifact.signatures)} signatures; "
               f"at most {MAX_ARTIFACT_SIGNATURES} are read, so none was")
        return SignatureCheck(valid_key_ids=(), threshold=threshold, rejected=tuple(rejected))
    for ref in artifact.signatures if role is not None else ():
        bundle_path = base / ref.path
        try:
            bundle = oms.parse_bundle(_read_bundle(bundle_path), str(bundle_path))
        except SignatureError as exc:
            reject(ref.path, exc.message, ref.key_id)
            continue
        if ref.key_id is not None:
            key = registry.keys.get(ref.key_id)
        elif bundle.key_hint is not None:  # the role key the bundle's publicKey.hint names
            key = next(
                (registry.keys[k] for k in role_ids if oms.hint_matches(bundle, registry.keys[k])), None
            )
        else:  # pre-hint model-signing bundles: the role key whose signature verifies
            key = next((registry.keys[k] for k in role_ids if _verifies(bundle, registry.keys[k], sha256, file_path)), None)
        if key is None:
            unmatched = (
                f"no artifact-role key matches the bundle's key hint {bundle.key_hint}"
                if bundle.key_hint is not None
                else "the bundle names no key, and no artifact-role key verifies it"
            )
            reject(ref.path, unmatched, ref.key_id)
            continue
        if key.key_id not in role_ids:
            reject(ref.path, f"key {key.key_id} ({key.owner}) is not an artifact-role key", key.key_id)
            continue
        why = keylib.unusable_reason(key, now)
        if why is not None:
            reject(ref.path, why, key.key_id)
            continue
        try:
            oms.verify_bundle(bundle, key, sha256=sha256, file_name=file_path.name)
        except SignatureError as exc:
            reject(ref.path, exc.message, key.key_id)
            continue
        if key.key_id in valid:
            reject(ref.path, f"key {key.key_id} already counted (each key counts once)", key.key_id)
            continue
        valid.append(key.key_id)
    return SignatureCheck(valid_key_ids=tuple(valid), threshold=threshold, rejected=tuple(rejected))
