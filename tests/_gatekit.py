"""Builders for gate tests: a real torch checkpoint, a registry that approves it, keys, bundles.

Every artifact is made per test: the checkpoint by `torch.save`, its architecture fingerprint
from the live state_dict (names, dtypes, shapes as torch reports them, an independent path from
the reader the gate uses), keys freshly generated, signatures made with trustsig's signing API.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gpenguard.trust import oms
from gpenguard.trust.fingerprint import TensorInfo, fingerprint
from gpenguard.trust.signatures import sign_registry
from tests.trust.factory import KeyPair, iso, new_key, registry_doc, write_trust_root, write_yaml

os.environ.setdefault("OMP_NUM_THREADS", "1")

NOW = datetime.now(UTC)
"""Real time: the CLI checks expiry against the clock, so the worlds are built around it."""
MODEL_NAME = "tinynet"
MODEL_FILE = "tinynet.pth"


def tiny_state_dict(channels: int = 4) -> dict[str, Any]:
    """A small GPEN-flavoured state_dict: weights, biases and one FIR-kernel buffer."""
    import torch

    g = torch.Generator().manual_seed(channels)
    return {
        "conv.weight": torch.randn(channels, 3, 3, 3, generator=g),
        "conv.bias": torch.zeros(channels),
        "conv.blur.kernel": torch.ones(4, 4) / 16,
        "to_rgb.weight": torch.randn(3, channels, 1, 1, generator=g),
        "noise.weight": torch.zeros(1),
    }


def save_checkpoint(path: Path, state_dict: dict[str, Any]) -> Path:
    import torch

    torch.save(state_dict, path)
    return path


def arch_of(state_dict: dict[str, Any]) -> dict[str, Any]:
    fp = fingerprint(TensorInfo(k, str(v.dtype), tuple(v.shape)) for k, v in state_dict.items())
    return {"family": "TinyNet", "fingerprint": fp.digest, "tensor_count": fp.tensor_count,
            "parameter_count": fp.parameter_count}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class World:
    """One registry, its keys and trust root, and the approved checkpoint, in a folder."""

    dir: Path
    model: Path
    registry: Path
    trust_root: Path
    registry_key: KeyPair
    artifact_keys: list[KeyPair]
    doc: dict[str, Any]
    state_dict: dict[str, Any] = field(repr=False)

    @property
    def entry(self) -> dict[str, Any]:
        return next(a for a in self.doc["artifacts"] if a["name"] == MODEL_NAME)

    def write(self, *, sign: bool = True, keys: list[KeyPair] | None = None) -> None:
        """Write the registry YAML (and sign it) after the test changed `doc`."""
        sig = self.registry.with_name(self.registry.name + ".sig")
        if sig.exists():
            sig.unlink()
        write_yaml(self.registry, self.doc)
        if sign:
            sign_registry(self.registry, [k.private for k in (keys or [self.registry_key])])

    def sign_artifact(self, key: KeyPair, *, name: str | None = None, sha256: str | None = None) -> dict[str, Any]:
        """Write an OMS bundle for the model with `key`; returns the registry reference."""
        bundle = oms.sign_file(self.model, key.private, sha256=sha256)
        bundle_name = name or f"{MODEL_FILE}.{key.key_id[7:15]}.sig"
        (self.dir / bundle_name).write_bytes(bundle)
        return {"kind": "oms-bundle", "path": bundle_name, "key_id": key.key_id}


def build_world(
    tmp_path: Path,
    *,
    artifact_signatures: int = 0,
    artifact_threshold: int = 1,
    pinned: bool = True,
    status: str = "approved",
    version: int = 1,
    expires: datetime | None = None,
    sign: bool = True,
    key_extra: dict[str, Any] | None = None,
) -> World:
    folder = tmp_path / "world"
    folder.mkdir()
    sd = tiny_state_dict()
    model = save_checkpoint(folder / MODEL_FILE, sd)
    reg_key = new_key("ed25519")
    art_keys = [new_key("ecdsa-p256") for _ in range(max(artifact_signatures, artifact_threshold))]
    spec: dict[str, Any] = {"path": MODEL_FILE, "format": "torch-zip"}
    if pinned:
        spec.update(size=model.stat().st_size, sha256=sha256_of(model))
    entry: dict[str, Any] = {
        "name": MODEL_NAME, "version": "1.0", "status": status,
        "source": {"url": "https://example.org/tinynet.pth"}, "license": "MIT",
        "files": [spec], "architecture": arch_of(sd),
    }
    doc = registry_doc(
        version=version, expires=expires or NOW + timedelta(days=365),
        keys=[k.entry(**(key_extra or {})) for k in art_keys],
        roles={"artifact": {"keyids": [k.key_id for k in art_keys], "threshold": artifact_threshold}} if art_keys else {},
        artifacts=[entry],
    )
    world = World(folder, model, folder / "weights-registry.yaml",
                  write_trust_root(folder / "trust-root.yaml", [reg_key]), reg_key, art_keys, doc, sd)
    if artifact_signatures:
        world.entry["signatures"] = [world.sign_artifact(k) for k in art_keys[:artifact_signatures]]
    world.write(sign=sign)
    return world


@pytest.fixture
def formats_available() -> Iterator[None]:
    """Kept for tests written while the formats branch was pending; the real reader is used."""
    yield


class Evil:
    """Pickles as a call to os.getpid: harmless if executed, and exactly what a scanner must flag."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.getpid, ())


def expired(days: int = 1) -> datetime:
    return NOW - timedelta(days=days)


__all__ = ["MODEL_FILE", "MODEL_NAME", "NOW", "Evil", "World", "arch_of", "build_world", "expired",
           "formats_available", "iso", "save_checkpoint", "sha256_of", "tiny_state_dict"]
