"""Rollback protection: the highest registry version seen, per registry name, kept on disk.

Only registries whose signature verified against the trust root are recorded, so an unsigned
file with a huge version cannot lock a user out of the genuine one. The record is one small
JSON file, updated under a lock and replaced atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gpenguard.errors import InputError, RegistryError
from gpenguard.fileio import read_regular, write_atomic

STATE_ENV = "GPENGUARD_STATE_DIR"
STATE_FILE = "registry-versions.json"
MAX_STATE_BYTES = 16 * 2**20


def default_state_dir() -> Path:
    """``$GPENGUARD_STATE_DIR``, else ``$XDG_STATE_HOME/gpenguard``, else ``~/.local/state/gpenguard``."""
    env = os.environ.get(STATE_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "gpenguard"


@dataclass(frozen=True)
class SeenVersion:
    """The highest version of one registry accepted so far."""

    version: int
    sha256: str
    seen_at: str


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[Path]:
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = os.open(state_dir / (STATE_FILE + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise InputError(f"cannot use state directory: {exc.strerror or exc}", path=state_dir) from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield state_dir / STATE_FILE
    finally:
        os.close(lock)


def _read(file: Path) -> dict[str, SeenVersion]:
    """The recorded versions. A state file that cannot be read or parsed is an `InputError`
    (exit 2), the same class as one that cannot be written: the local state is broken, which
    says nothing about the registry, and it must not silently disable rollback protection."""
    try:
        raw = json.loads(read_regular(file, MAX_STATE_BYTES))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InputError(f"rollback state is unreadable: {exc.strerror or exc}", path=file) from exc
    except (ValueError, RecursionError) as exc:
        raise InputError(f"rollback state is corrupt (not JSON: {exc})", path=file,
                         hint="restore it from a backup; deleting it forgets every version seen") from exc
    seen: dict[str, SeenVersion] = {}
    if not isinstance(raw, dict):
        raise InputError("rollback state is corrupt (not a JSON object)", path=file)
    for name, entry in raw.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("version"), int)):
            raise InputError(f"rollback state is corrupt (entry {name!r} is malformed)", path=file)
        seen[name] = SeenVersion(int(entry["version"]), str(entry.get("sha256", "")), str(entry.get("seen_at", "")))
    return seen


def _write(file: Path, seen: dict[str, SeenVersion]) -> None:
    text = json.dumps(
        {n: {"version": s.version, "sha256": s.sha256, "seen_at": s.seen_at} for n, s in sorted(seen.items())},
        indent=2,
    )
    write_atomic(file, (text + "\n").encode("utf-8"))


def check_version(
    name: str,
    version: int,
    sha256: str,
    *,
    state_dir: Path,
    record: bool,
    now: datetime,
    source: str,
) -> None:
    """Refuse a version below the highest seen; record a verified one that is new or higher.

    A verified registry that reuses the highest seen version with different bytes is refused
    too: its signers produced two different registries under one version number.
    """
    if not record and not (state_dir / STATE_FILE).exists():
        return  # nothing recorded yet, nothing to record: leave a read-only home untouched
    with _locked(state_dir) as file:
        seen = _read(file)
        prior = seen.get(name)
        if prior is not None and version < prior.version:
            raise RegistryError(
                f"rollback: registry {name!r} version {version} is older than version "
                f"{prior.version}, which was already accepted",
                path=source,
                hint="use the current registry; an old one may approve artifacts since revoked",
            )
        if not record:
            return
        if prior is not None and version == prior.version:
            if prior.sha256 and prior.sha256 != sha256:
                raise RegistryError(
                    f"registry {name!r} version {version} was already accepted with different "
                    "contents; a changed registry must carry a higher version",
                    path=source,
                )
            return
        seen[name] = SeenVersion(version, sha256, now.isoformat())
        try:
            _write(file, seen)
        except OSError as exc:
            raise InputError(f"cannot record registry version: {exc.strerror or exc}", path=file) from exc
