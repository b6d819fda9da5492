"""Builders for trust tests: fresh keys, registries, trust roots (other trust tests may use them).

Keys are generated per test; no private key is ever committed.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from gpenguard.trust import keys as keylib

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class KeyPair:
    """A generated key pair with its registry entry."""

    private: keylib.PrivateKey
    key_id: str
    type: str
    pem: str

    def entry(self, owner: str = "tests", **extra: Any) -> dict[str, Any]:
        return {"key_id": self.key_id, "type": self.type, "public_key_pem": self.pem, "owner": owner, **extra}

    def write(self, folder: Path, name: str) -> tuple[Path, Path]:
        """Write PEM files (private, public) as `gpenguard keys generate` would."""
        priv = folder / f"{name}.key"
        pub = folder / f"{name}.pub"
        priv.write_bytes(keylib.private_pem(self.private))
        priv.chmod(0o600)
        pub.write_text(self.pem)
        return priv, pub


def new_key(key_type: str = "ed25519") -> KeyPair:
    private = keylib.generate(key_type)
    public = private.public_key()
    return KeyPair(private, keylib.key_id(public), key_type, keylib.public_pem(public))


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def registry_doc(
    *,
    name: str = "test-registry",
    version: int = 1,
    expires: datetime | None = None,
    keys: list[dict[str, Any]] | None = None,
    roles: dict[str, Any] | None = None,
    artifacts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 1,
        "registry": {"name": name, "version": version, "expires": iso(expires or NOW + timedelta(days=365))},
    }
    if keys is not None or roles is not None:
        doc["trust"] = {"keys": keys or [], "roles": roles or {}}
    doc["artifacts"] = copy.deepcopy(artifacts) if artifacts is not None else [artifact()]
    return doc


def artifact(
    name: str = "demo-model",
    version: str = "1.0",
    *,
    sha256: str | None = "ab" * 32,
    size: int | None = 1234,
    path: str = "demo.pth",
    status: str = "approved",
    signatures: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"path": path, "format": "torch-zip"}
    if size is not None:
        spec["size"] = size
    if sha256 is not None:
        spec["sha256"] = sha256
    art: dict[str, Any] = {
        "name": name,
        "version": version,
        "status": status,
        "source": {"url": "https://example.org/demo.pth"},
        "license": "MIT",
        "files": [spec],
    }
    if signatures is not None:
        art["signatures"] = signatures
    return art


def write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_trust_root(path: Path, keys: list[KeyPair], threshold: int = 1, **entry_extra: Any) -> Path:
    doc = {"schema_version": 1, "threshold": threshold, "keys": [k.entry(**entry_extra) for k in keys]}
    path.write_text(json.dumps(doc, indent=2) if path.suffix == ".json" else yaml.safe_dump(doc, sort_keys=False))
    return path
