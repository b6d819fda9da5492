"""Signing keys: generation, loading, key ids, raw signatures, and whether a key may be used now.

Two key types: Ed25519 (registry signatures) and ECDSA P-256 (registry signatures and OpenSSF
Model Signing bundles, whose ``key`` method accepts elliptic-curve keys only). A key's id is
``sha256:<hex of its DER SubjectPublicKeyInfo>``: it names the key itself, not a file or PEM
spelling, so the same key always gets the same id.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gpenguard.errors import InputError, SignatureError, UsageError
from gpenguard.fileio import read_regular
from gpenguard.trust.model import Key

PublicKey: TypeAlias = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey: TypeAlias = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

KEY_TYPES = ("ed25519", "ecdsa-p256")
MAX_KEY_FILE_BYTES = 64 * 1024
PASSWORD_ENV = "GPENGUARD_KEY_PASSWORD"
"""An encrypted private key's password is read from here, never from the command line."""


def generate(key_type: str) -> PrivateKey:
    """Make a fresh private key of one of `KEY_TYPES`."""
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise UsageError(f"unknown key type {key_type!r}; expected one of {', '.join(KEY_TYPES)}")


def key_type_of(key: PublicKey | PrivateKey) -> str:
    """The registry's name for a key's type; other curves and algorithms are refused."""
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key.curve, ec.SECP256R1):
        return "ecdsa-p256"
    raise SignatureError(f"unsupported elliptic curve {key.curve.name}; use P-256 or Ed25519")


def public_pem(key: PublicKey) -> str:
    """The canonical PEM text of a public key (SubjectPublicKeyInfo)."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def key_id(key: PublicKey) -> str:
    """``sha256:<hex of the DER SubjectPublicKeyInfo>``."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def oms_hint(key: PublicKey) -> str:
    """The ``publicKey.hint`` an OpenSSF Model Signing bundle carries: sha256 of the PEM text."""
    return hashlib.sha256(public_pem(key).encode("ascii")).hexdigest()


def parse_public_pem(pem: str, *, expected_type: str | None = None) -> PublicKey:
    """Load a PEM public key and insist on a supported type (and the declared one, if given)."""
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
        raise SignatureError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise SignatureError(f"unsupported public key type {type(key).__name__}; use Ed25519 or ECDSA P-256")
    actual = key_type_of(key)
    if expected_type is not None and actual != expected_type:
        raise SignatureError(f"key is {actual}, but its entry says {expected_type}")
    return key


def public_key_of(key: Key) -> PublicKey:
    """The cryptographic key behind a registry `Key` entry (already validated on load)."""
    return parse_public_pem(key.public_key_pem, expected_type=key.type)


def _read_key_file(path: Path) -> bytes:
    try:
        return read_regular(path, MAX_KEY_FILE_BYTES)
    except OSError as exc:
        raise InputError(f"cannot read key file: {exc.strerror or exc}", path=path) from exc


def load_private_key(path: Path) -> PrivateKey:
    """Read a PEM private key; an encrypted one takes its password from `PASSWORD_ENV`."""
    data = _read_key_file(path)
    password = os.environ.get(PASSWORD_ENV)
    try:
        try:
            key = serialization.load_pem_private_key(data, password.encode() if password else None)
        except TypeError:
            if not password:
                raise
            # The variable is for encrypted keys; a plain key signing beside them still loads.
            key = serialization.load_pem_private_key(data, None)
    except TypeError as exc:
        raise SignatureError(
            "private key is encrypted and no password was given",
            path=path,
            hint=f"set {PASSWORD_ENV}",
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SignatureError(f"not a usable PEM private key: {exc}", path=path) from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise SignatureError(
            f"unsupported private key type {type(key).__name__}; use Ed25519 or ECDSA P-256", path=path
        )
    try:
        key_type_of(key)
    except SignatureError as exc:
        raise SignatureError(exc.message, path=path) from exc
    return key


def load_public_key(path: Path) -> PublicKey:
    """Read a PEM public key file."""
    data = _read_key_file(path)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise SignatureError("not a PEM public key: not ASCII text", path=path) from None
    try:
        return parse_public_pem(text)
    except SignatureError as exc:
        raise SignatureError(exc.message, path=path) from exc


def private_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM; the caller writes it with mode 0600."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def sign(key: PrivateKey, data: bytes) -> bytes:
    """Ed25519 signature, or DER-encoded ECDSA over SHA-256."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify(key: PublicKey, signature: bytes, data: bytes) -> bool:
    """True only for a valid signature; malformed signatures are simply invalid."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def as_utc(now: datetime | None) -> datetime:
    """The verification time: the clock when None; a naive time is taken as UTC."""
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now


def unusable_reason(key: Key, now: datetime) -> str | None:
    """Why `key` may not sign at `now` (revoked, expired, not yet valid), or None if it may."""
    if key.revoked_at is not None and key.revoked_at <= now:
        why = f" ({key.revoked_reason})" if key.revoked_reason else ""
        return f"key {key.key_id} was revoked at {key.revoked_at.isoformat()}{why}"
    if key.expires is not None and now >= key.expires:
        return f"key {key.key_id} expired at {key.expires.isoformat()}"
    if key.not_before is not None and now < key.not_before:
        return f"key {key.key_id} is not valid before {key.not_before.isoformat()}"
    return None
