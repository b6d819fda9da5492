"""The content-addressed store of converted weights: ``<root>/sha256/<hex>.safetensors``.

Weights are found by the digest of their bytes, never by a name a user or a checkpoint chose,
so whatever the runner mounts is exactly what the provenance record beside it describes
(DESIGN invariant 4). Entries are written through a temp file and renamed into place, and
`find` re-hashes on request before anything is handed out.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gpenguard.errors import InputError, UsageError, VerificationError

CACHE_ENV = "GPENGUARD_CACHE_DIR"
WEIGHTS_SUFFIX = ".safetensors"
PROVENANCE_SUFFIX = ".intoto.json"
_HEX = re.compile(r"[0-9a-f]{64}")
_CHUNK = 8 * 2**20


def default_root() -> Path:
    """``$GPENGUARD_CACHE_DIR``, else ``$XDG_CACHE_HOME/gpenguard``, else ``~/.cache/gpenguard``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "gpenguard"


def provenance_path(weights: Path) -> Path:
    """Where the provenance record of a weights file lives: beside it, same name plus suffix."""
    return weights.with_name(weights.name + PROVENANCE_SUFFIX)


def parse_digest(digest: str) -> str:
    """Accept ``sha256:<hex>`` or bare hex; return the lowercase hex."""
    hexpart = digest.removeprefix("sha256:").lower()
    if not _HEX.fullmatch(hexpart):
        raise UsageError(f"{digest!r} is not a sha256 digest (64 hex digits)")
    return hexpart


@dataclass(frozen=True)
class StoredWeights:
    """One entry of the store."""

    sha256: str
    path: Path
    provenance: Path | None
    """The provenance record beside the weights, if one was stored."""


class Store:
    """Converted weights kept by content digest under one root folder."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def path_for(self, digest: str) -> Path:
        return self.root / "sha256" / f"{parse_digest(digest)}{WEIGHTS_SUFFIX}"

    def find(self, digest: str, *, verify: bool = False) -> StoredWeights | None:
        """The entry with this digest, or None; `verify` re-hashes the file first."""
        hexdigest = parse_digest(digest)
        path = self.path_for(hexdigest)
        if not path.is_file():
            return None
        if verify:
            actual = sha256_file(path)
            if actual != hexdigest:
                raise VerificationError(
                    f"stored weights hash to {actual}, not the {hexdigest} they are filed under",
                    path=path,
                )
        prov = provenance_path(path)
        return StoredWeights(hexdigest, path, prov if prov.is_file() else None)

    def add(
        self, weights: Path, sha256: str, provenance: Path | None = None, *, move: bool = False
    ) -> StoredWeights:
        """Put `weights` (whose digest the caller computed) and its provenance into the store.

        A copy is hashed as it is written and refused if it differs from `sha256`, so an entry
        can never sit under a digest it does not have. `move` renames instead, for a file the
        caller has just written and verified inside the store's own folder (see `staging`).
        """
        hexdigest = parse_digest(sha256)
        dest = self.path_for(hexdigest)
        self.prepare()
        stored_prov = provenance_path(dest) if provenance is not None else None
        # The provenance goes in first and the weights last: an entry is its weights file
        # (`find`, `entries`), so it appears only complete, never without its record.
        had_prov = stored_prov is not None and stored_prov.exists()
        try:
            if provenance is not None and stored_prov is not None:
                if move:
                    _move(provenance, stored_prov)
                else:
                    _copy_checked(provenance, stored_prov, None)
            if move:
                _move(weights, dest, mode=0o444)
            else:
                _copy_checked(weights, dest, hexdigest)
        except BaseException:
            if stored_prov is not None and not had_prov:
                with contextlib.suppress(OSError):
                    stored_prov.unlink()
            raise
        return StoredWeights(hexdigest, dest, stored_prov)

    def prepare(self) -> Path:
        """Create the entries folder (callers check early that the store is writable)."""
        folder = self.root / "sha256"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the store: {exc.strerror or exc}", path=folder) from exc
        return folder

    def staging(self) -> Path:
        """A folder inside the store for outputs on their way in (same file system: renames)."""
        folder = self.root / "staging"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the store: {exc.strerror or exc}", path=folder) from exc
        return folder

    def entries(self) -> list[StoredWeights]:
        """Every entry, by digest."""
        folder = self.root / "sha256"
        if not folder.is_dir():
            return []
        out = []
        for path in sorted(folder.glob(f"*{WEIGHTS_SUFFIX}")):
            hexpart = path.name.removesuffix(WEIGHTS_SUFFIX)
            if _HEX.fullmatch(hexpart):
                prov = provenance_path(path)
                out.append(StoredWeights(hexpart, path, prov if prov.is_file() else None))
        return out


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file (`gpenguard.trust.hashing.hash_file`: one mapped read)."""
    from gpenguard.trust.hashing import hash_file

    return hash_file(path).sha256


def _move(src: Path, dest: Path, *, mode: int | None = None) -> None:
    try:
        if mode is not None:
            src.chmod(mode)
        src.replace(dest)
    except OSError as exc:
        raise InputError(f"cannot store: {exc.strerror or exc}", path=dest) from exc


def _copy_checked(src: Path, dest: Path, expect: str | None) -> None:
    try:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror or exc}", path=dest) from exc
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
            while chunk := inp.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if expect is not None and h.hexdigest() != expect:
            raise VerificationError(
                f"file hashes to {h.hexdigest()} while being stored, not {expect}", path=src
            )
        tmp.chmod(0o444)
        tmp.replace(dest)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise InputError(f"cannot store: {exc.strerror or exc}", path=dest) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
