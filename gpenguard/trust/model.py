"""Values of the trust stage: the registry, its keys and roles, and artifact entries.

OWNER: trust/signatures helper (registry.py fills these from YAML). A contract for gate.py and
convert.py: extend compatibly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Status(StrEnum):
    """An artifact's approval status in the registry."""

    APPROVED = "approved"
    DEPRECATED = "deprecated"
    REVOKED = "revoked"


@dataclass(frozen=True)
class Key:
    """A public key the registry or an artifact may be signed with."""

    key_id: str
    """``sha256:<hex of DER SubjectPublicKeyInfo>``."""
    type: str
    """``ed25519`` or ``ecdsa-p256`` (more may follow)."""
    public_key_pem: str
    owner: str
    not_before: datetime | None = None
    expires: datetime | None = None
    revoked_at: datetime | None = None
    revoked_reason: str | None = None


@dataclass(frozen=True)
class Role:
    """Which keys may sign for a role, and how many distinct ones must."""

    keyids: tuple[str, ...]
    threshold: int


@dataclass(frozen=True)
class FileSpec:
    """One file of an artifact, as approved."""

    path: str
    format: str
    size: int | None = None
    sha256: str | None = None
    """None until an administrator pins a downloaded file (``gpenguard registry pin``)."""


@dataclass(frozen=True)
class Architecture:
    """The shape of the state_dict an artifact must have (see trust/fingerprint.py)."""

    family: str
    fingerprint: str
    """sha256 over the sorted ``name|dtype|shape`` lines plus the counts."""
    tensor_count: int
    parameter_count: int
    state_dict_key: str | None = None
    """Where the weights sit inside the checkpoint (``params_ema``...); None for a bare state_dict."""


@dataclass(frozen=True)
class SignatureRef:
    """Where an artifact's signature lives, relative to the registry file."""

    kind: str
    """``oms-bundle``."""
    path: str
    key_id: str | None = None


@dataclass(frozen=True)
class Artifact:
    """An approved (or deprecated, or revoked) model artifact."""

    name: str
    version: str
    status: Status
    files: tuple[FileSpec, ...]
    source_url: str | None = None
    license: str | None = None
    architecture: Architecture | None = None
    signatures: tuple[SignatureRef, ...] = ()
    line: int | None = None
    """Line of the entry in the registry file, for messages."""


@dataclass(frozen=True)
class Registry:
    """A loaded, validated registry; `signed_by` is empty when no signature was verified."""

    path: str
    sha256: str
    """Digest of the exact file bytes that were parsed and whose signature was checked."""
    name: str
    version: int
    expires: datetime | None
    keys: dict[str, Key] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)
    artifacts: tuple[Artifact, ...] = ()
    signed_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrustRoot:
    """The keys allowed to sign the registry, pinned outside it (see registry.load_trust_root)."""

    path: str
    keys: dict[str, Key]
    threshold: int


@dataclass(frozen=True)
class SignatureRejection:
    """One signature that did not count, and why."""

    path: str
    reason: str
    key_id: str | None = None


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome of checking an artifact's signatures against the registry's artifact role."""

    valid_key_ids: tuple[str, ...]
    """Distinct artifact-role keys whose signatures verified, in the order the entry lists them."""
    threshold: int
    rejected: tuple[SignatureRejection, ...] = ()

    @property
    def passed(self) -> bool:
        """Enough distinct, valid keys signed (a threshold of 0 never passes)."""
        return self.threshold > 0 and len(self.valid_key_ids) >= self.threshold
