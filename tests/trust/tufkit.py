"""A TUF registry world for tests: keys, a repository made through the CLI, an attacker's tools.

The administrator's side runs the real commands (`registry init`, `publish`, `rotate`). The
attacker's side uses python-tuf's metadata API directly, as an attacker with some key (or none)
would: re-signing, replaying, renaming and truncating files on a mirror.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import Metadata
from typer.testing import CliRunner

from gpenguard.cli import app
from tests._gatekit import MODEL_FILE, World, build_world
from tests.trust.factory import KeyPair, new_key

runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str]:
    """Run the CLI in-process; returns (exit code, stdout and stderr together)."""
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout + result.stderr


def signer(key: KeyPair) -> CryptoSigner:
    return CryptoSigner(key.private, SSlibKey.from_crypto(key.private.public_key()))  # type: ignore[arg-type]


@dataclass
class TufWorld:
    """A gate world (model + YAML) plus a TUF repository, its keys and a pinned root.json."""

    gate: World
    repo: Path
    pinned: Path
    keys: dict[str, KeyPair]
    files: dict[str, tuple[Path, Path]]

    @property
    def model(self) -> Path:
        return self.gate.model

    @property
    def registry(self) -> Path:
        return self.gate.registry

    def key(self, name: str) -> Path:
        return self.files[name][0]

    def pub(self, name: str) -> Path:
        return self.files[name][1]

    def publish(self, *extra: str) -> tuple[int, str]:
        return run("registry", "publish", self.registry, "--repo", self.repo,
                   "--targets-key", self.key("targets"), "--online-key", self.key("online"), *extra)

    def verify(self, *extra: str | Path, repo: str | Path | None = None, model: Path | None = None) -> tuple[int, str]:
        return run("verify", model or self.model, "--tuf-repo", repo or self.repo, "--trust-root", self.pinned, *extra)

    def snapshot_of_repo(self, name: str) -> Path:
        """A copy of the repository as it is now (what a stale mirror would keep serving)."""
        copy = self.repo.parent / name
        shutil.copytree(self.repo, copy)
        return copy

    def resign(self, filename: str, key: str | list[str], change: Callable[[Any], None], *, repo: Path | None = None,
               rename: str | None = None) -> Metadata[Any]:
        """Load a metadata file, `change` its signed part, sign with `key`(s) and write it back."""
        folder = repo or self.repo
        md = Metadata.from_file(str(folder / filename))
        change(md.signed)
        md.signatures.clear()
        for k in [key] if isinstance(key, str) else key:
            md.sign(signer(self.keys[k]), append=True)
        md.to_file(str(folder / (rename or filename)))
        return md


def sign_online(world: TufWorld, targets_version: int, *, key: str = "online", repo: Path | None = None) -> None:
    """New snapshot and timestamp over `targets_version`, as whoever holds `key` would make them."""
    from gpenguard.trust import tuf_repo

    folder = repo or world.repo
    root, ts, snap, _ = tuf_repo._current(folder)
    sig = signer(world.keys[key])
    day = timedelta(days=1)
    tuf_repo._online(folder, root, {sig.public_key.keyid: sig}, targets_version, snap, ts, day, day)


def later(**delta: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(**delta)


def build_tuf_world(tmp_path: Path, *, root_threshold: int = 2) -> TufWorld:
    """Root keys r1, r2 (threshold 2), an offline targets key, an online snapshot+timestamp key."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    gate = build_world(tmp_path, sign=False)
    keydir = tmp_path / "keys"
    keydir.mkdir()
    keys = {"r1": new_key("ed25519"), "r2": new_key("ecdsa-p256"), "targets": new_key("ed25519"),
            "online": new_key("ecdsa-p256")}
    files = {name: k.write(keydir, name) for name, k in keys.items()}
    repo = tmp_path / "repo"
    code, out = run("registry", "init", repo, "--root-key", files["r1"][0], "--root-key", files["r2"][0],
                    "--root-threshold", str(root_threshold), "--targets-key", files["targets"][1],
                    "--online-key", files["online"][1])
    assert code == 0, out
    pinned = tmp_path / "pinned-root.json"
    shutil.copyfile(repo / "root.json", pinned)
    world = TufWorld(gate, repo, pinned, keys, files)
    code, out = world.publish()
    assert code == 0, out
    return world


def add_key(world: TufWorld, name: str, key_type: str = "ed25519") -> None:
    k = new_key(key_type)
    world.keys[name] = k
    world.files[name] = k.write(world.key("r1").parent, name)


__all__ = ["MODEL_FILE", "TufWorld", "add_key", "build_tuf_world", "later", "run", "sign_online", "signer"]
