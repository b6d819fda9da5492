"""The client side: TUF's update workflow (python-tuf's `ngclient.Updater`) into a `Registry`.

The anchor is a pinned root.json the user supplies (``--trust-root``). From it the updater walks
root versions one by one (each signed by the previous root's threshold and its own), then
timestamp, snapshot and targets, checking signatures, versions against what this machine
already trusted (rollback), expiry (freeze), the lengths and hashes each role pins for the next
(mix-and-match, endless data) and the bounds on every download. What it trusted is cached in
the state folder, one cache per pinned root: every mirror of one repository shares it, so a
stale mirror cannot roll a client back, while a different pinned root starts a chain of its own.

A repository is an ``http(s)://`` URL (ngclient's default urllib3 fetcher) or a local folder /
``file://`` URL (a fetcher that reads files, for air-gapped sites and removable media).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import urllib3
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import CanonicalJSONSerializer
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig, Urllib3Fetcher

from gpenguard.errors import InputError, RegistryError, SignatureError, UsageError
from gpenguard.fileio import read_regular
from gpenguard.trust import keys as keylib
from gpenguard.trust.model import (
    Architecture,
    Artifact,
    FileSpec,
    Key,
    Registry,
    Role,
    SignatureRef,
    Status,
)
from gpenguard.trust.tuf_repo import CUSTOM

MAX_ROOT_BYTES = 512 * 1024
MAX_TIMESTAMP_BYTES = 16 * 1024
MAX_SNAPSHOT_BYTES = 2 * 2**20
MAX_TARGETS_BYTES = 16 * 2**20
MAX_ROOT_ROTATIONS = 64
CHUNK = 64 * 1024
HTTP_TIMEOUT_S = 15
"""Longest wait for a connection or between two received bytes."""
HTTP_DEADLINE_S = 60.0
"""Longest time one metadata file may take in all: a mirror trickling bytes is cut off."""


class LocalFetcher(FetcherInterface):
    """Serve ``file://`` URLs from a folder: a missing file is HTTP 404 to the updater.

    The updater bounds every download (`FetcherInterface.download_bytes`), so a huge or endless
    file is cut at its role's limit; FIFOs and devices are refused without being opened for
    reading, so a FIFO on a mirror cannot hang the client.
    """

    def _fetch(self, url: str) -> Iterator[bytes]:
        parsed = urlparse(url)
        if parsed.scheme != "file":
            raise tuf_errors.DownloadError(f"not a file URL: {url}")
        path = unquote(parsed.path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        except FileNotFoundError:
            raise tuf_errors.DownloadHTTPError(f"{path} not found", 404) from None
        handle = os.fdopen(fd, "rb")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            handle.close()
            raise tuf_errors.DownloadError(f"{path} is not a regular file")
        return self._chunks(handle)

    @staticmethod
    def _chunks(handle: Any) -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(CHUNK):
                yield chunk


class _DeadlineFetcher(Urllib3Fetcher):
    """ngclient's default HTTP fetcher with a deadline per file (TUF's slow-retrieval attack).

    The socket timeout bounds only the gap between bytes; a mirror sending one byte every few
    seconds would otherwise hold a CI job for hours within the length bound. The body is read
    as bytes arrive (``read1``) so the deadline is checked between any two of them.
    """

    _deadline = 0.0

    def _fetch(self, url: str) -> Iterator[bytes]:
        """Connect and read the status line and headers within the deadline too.

        urllib3's timeouts are per socket read: a mirror dripping a header line a byte at a time
        (http.client takes 100 headers of 64 KiB) held the client for ever. The request runs in
        a daemon thread the caller stops waiting for; that thread ends when the mirror stops
        sending or goes quiet for the socket timeout (a CLI run simply exits).
        """
        self._deadline = time.monotonic() + HTTP_DEADLINE_S
        outcome: list[Any] = []

        def request() -> None:
            try:
                outcome.append(super(_DeadlineFetcher, self)._fetch(url))
            except BaseException as exc:  # handed over to the waiting thread
                outcome.append(exc)

        worker = threading.Thread(target=request, name="gpenguard-tuf-fetch", daemon=True)
        worker.start()
        worker.join(HTTP_DEADLINE_S)
        if not outcome:
            raise tuf_errors.SlowRetrievalError(f"no response within {HTTP_DEADLINE_S:g} s")
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        chunks: Iterator[bytes] = outcome[0]
        return chunks

    def _chunks(self, response: urllib3.response.BaseHTTPResponse) -> Iterator[bytes]:
        deadline = self._deadline or time.monotonic() + HTTP_DEADLINE_S
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        try:
            if encoding not in ("", "identity"):
                # Metadata lengths and hashes are of the stored bytes; a body the client would have
                # to inflate first is a decompression bomb under urllib3 < 2.6 (tuf allows ~=2.0).
                raise tuf_errors.DownloadError(f"the mirror sent {encoding}-encoded metadata; only the stored bytes are read")
            while chunk := response.read1(self.chunk_size, decode_content=False):
                if time.monotonic() > deadline:
                    raise tuf_errors.SlowRetrievalError(f"not received within {HTTP_DEADLINE_S:g} s")
                yield chunk
        except urllib3.exceptions.TimeoutError as exc:
            raise tuf_errors.SlowRetrievalError(f"no data for {HTTP_TIMEOUT_S} s") from exc
        finally:
            response.release_conn()


def repository_url(repo: str) -> tuple[str, FetcherInterface]:
    """The metadata base URL and the fetcher for a repository given as URL or folder."""
    if not repo.strip():  # Path("") is the working directory: an unset $TUF_REPO must not mean "here"
        raise UsageError("--tuf-repo is empty; give the repository's folder or http(s):// URL")
    if repo.startswith(("http://", "https://")):
        return repo, _DeadlineFetcher(socket_timeout=HTTP_TIMEOUT_S, app_user_agent="gpenguard")
    path = Path(unquote(urlparse(repo).path)) if repo.startswith("file://") else Path(repo)
    if not path.is_dir():
        raise InputError("the registry repository is not a folder or an http(s):// URL", path=repo)
    return path.resolve().as_uri() + "/", LocalFetcher()


def read_pinned_root(path: Path) -> bytes:
    """The pinned root.json's bytes, after checking it is TUF root metadata (a usage error if not)."""
    try:
        data = read_regular(path, MAX_ROOT_BYTES)
    except FileNotFoundError as exc:
        raise InputError("pinned root.json not found", path=path) from exc
    except OSError as exc:
        raise InputError(f"cannot read the pinned root.json: {exc.strerror or exc}", path=path) from exc
    try:
        md = Metadata.from_bytes(data)
    except DeserializationError as exc:
        why = f"{exc}: {exc.__cause__}" if exc.__cause__ is not None else str(exc)  # which rule broke
        raise UsageError(f"not a TUF root.json: {why}", path=path,
                         hint="with --tuf-repo, --trust-root names the repository's root.json") from exc
    if not isinstance(md.signed, Root):
        raise UsageError(f"holds TUF {md.signed.type} metadata, not root", path=path)
    payload = CanonicalJSONSerializer().serialize(md.signed)
    result = md.signed.get_verification_result(Root.type, payload, md.signatures)
    if not result.verified:
        # ngclient would refuse it too, but as the repository's fault (exit 1); the anchor is
        # this machine's own configuration, edited or corrupted, so say that and exit 2.
        raise UsageError(f"is not signed by its own root keys ({len(result.signed)} of {result.threshold} "
                         "signatures verify): an edited or corrupted anchor", path=path,
                         hint="pin the repository's root.json exactly as `gpenguard registry init` wrote it")
    return data


def _check_private(folder: Path) -> None:
    """Refuse a cache folder someone else could write: a symlink, another owner, or g/o-writable.

    What the cache holds decides rollback protection, and the trusted metadata is read back
    from it after the update; another local user able to swap its files (a shared or
    pre-created state folder) must not get to choose them.
    """
    st = os.lstat(folder)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise InputError("the TUF metadata cache is a symlink or not a folder; remove it", path=folder)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise InputError("the TUF metadata cache can be written by another user (owner "
                         f"uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}); remove it or make it private",
                         path=folder)


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        cache.mkdir(exist_ok=True, mode=0o700)
        (cache / "root_history").mkdir(exist_ok=True, mode=0o700)  # before ngclient makes it under the umask
        for folder in (cache.parent, cache, cache / "root_history"):
            _check_private(folder)
        fd = os.open(cache / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise InputError(f"cannot use the TUF metadata cache: {exc.strerror or exc}", path=cache) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def cache_dir(state_dir: Path, pinned_root: bytes) -> Path:
    """Where this machine keeps what it trusted from the repository that `pinned_root` anchors."""
    return state_dir / "tuf" / hashlib.sha256(pinned_root).hexdigest()[:32]


def _refused(exc: Exception, repo: str) -> RegistryError:
    kinds: dict[type[Exception], str] = {
        tuf_errors.ExpiredMetadataError: "expired metadata (a frozen or stale registry is refused)",
        tuf_errors.EqualVersionNumberError: "a changed file reuses a trusted version number",
        tuf_errors.BadVersionNumberError: "rollback or mix-and-match: a version older than, or different from, what is trusted",
        tuf_errors.UnsignedMetadataError: "signatures do not meet the role's threshold of trusted keys",
        tuf_errors.LengthOrHashMismatchError: "metadata does not match the length or hash its parent role pins",
        tuf_errors.DownloadLengthMismatchError: "metadata exceeds the length its parent role or gpenguard's bound allows",
    }
    for kind, what in kinds.items():
        if isinstance(exc, kind):
            return RegistryError(f"TUF update refused: {what}: {exc}", path=repo)
    return RegistryError(f"TUF update refused: {exc}", path=repo)


def _verified_top(cache: Path) -> tuple[Root, Timestamp, Snapshot, Metadata[Targets], bytes]:
    """Re-read what `Updater.refresh` persisted (under our lock) and re-check how it chains."""
    def load(name: str) -> tuple[Metadata[Any], bytes]:
        data = read_regular(cache / name, MAX_TARGETS_BYTES)
        return Metadata.from_bytes(data), data

    root_md, _ = load("root.json")
    ts_md, _ = load("timestamp.json")
    snap_md, _ = load("snapshot.json")
    tgt_md, tgt_bytes = load("targets.json")
    root, ts, snap, tgt = root_md.signed, ts_md.signed, snap_md.signed, tgt_md.signed
    if not (isinstance(root, Root) and isinstance(ts, Timestamp) and isinstance(snap, Snapshot) and isinstance(tgt, Targets)):
        raise RegistryError("the TUF cache holds the wrong roles", path=cache)
    payload = CanonicalJSONSerializer().serialize(tgt)
    if not root.get_verification_result(Targets.type, payload, tgt_md.signatures).verified:
        raise RegistryError("the cached targets are not signed by the trusted targets keys", path=cache)
    if ts.snapshot_meta.version != snap.version or snap.meta["targets.json"].version != tgt.version:
        raise RegistryError("the cached timestamp, snapshot and targets do not chain", path=cache)
    return root, ts, snap, tgt_md, tgt_bytes


def update(repo: str, pinned_root: Path, *, state_dir: Path) -> tuple[Root, Timestamp, Snapshot, Metadata[Targets], bytes]:
    """Run TUF's client workflow against `repo`; raise `RegistryError` when it refuses."""
    bootstrap = read_pinned_root(pinned_root)
    url, fetcher = repository_url(repo)
    cache = cache_dir(state_dir, bootstrap)
    config = UpdaterConfig(
        max_root_rotations=MAX_ROOT_ROTATIONS, max_delegations=1, root_max_length=MAX_ROOT_BYTES,
        timestamp_max_length=MAX_TIMESTAMP_BYTES, snapshot_max_length=MAX_SNAPSHOT_BYTES,
        targets_max_length=MAX_TARGETS_BYTES,
    )
    with _locked(cache):
        try:
            updater = Updater(str(cache), url, fetcher=fetcher, config=config, bootstrap=bootstrap)
            updater.refresh()
        except (tuf_errors.RepositoryError, tuf_errors.DownloadLengthMismatchError) as exc:
            raise _refused(exc, repo) from exc
        except tuf_errors.SlowRetrievalError as exc:
            raise InputError(f"the registry's TUF metadata came too slowly: {str(exc) or 'timed out'}", path=repo) from exc
        except tuf_errors.DownloadError as exc:
            raise InputError(f"cannot fetch the registry's TUF metadata: {exc}", path=repo) from exc
        except OSError as exc:
            raise InputError(f"cannot write the TUF metadata cache: {exc.strerror or exc}", path=cache) from exc
        try:
            return _verified_top(cache)
        except (OSError, DeserializationError, KeyError) as exc:
            raise RegistryError(f"the TUF cache cannot be read back: {exc}", path=cache) from exc


# -- targets -> Registry ------------------------------------------------------------------------


def _time(value: object, what: str, source: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RegistryError(f"{what} must be a time string", path=source)
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError as exc:
        raise RegistryError(f"{what} {value!r} is not an ISO 8601 time", path=source) from exc


def _str(d: dict[str, Any], key: str, what: str, source: str, *, optional: bool = False) -> str | None:
    value = d.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise RegistryError(f"{what}.{key} must be a non-empty string", path=source)
    return value


def _int(d: dict[str, Any], key: str, what: str, source: str) -> int:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RegistryError(f"{what}.{key} must be a non-negative integer", path=source)
    return value


def _relative(d: dict[str, Any], key: str, what: str, source: str) -> str:
    """A path the YAML schema would accept: relative, inside the registry's folder."""
    value = _str(d, key, what, source) or ""
    p = PurePosixPath(value)
    if p.is_absolute() or ".." in p.parts or "\\" in value or value.startswith("~"):
        raise RegistryError(f"{what}.{key} {value!r} must be a relative path inside the registry's folder", path=source)
    return value


def _keys(info: dict[str, Any], source: str) -> tuple[dict[str, Key], dict[str, Role]]:
    keys: dict[str, Key] = {}
    for i, k in enumerate(info.get("keys") or []):
        what = f"trust.keys[{i}]"
        if not isinstance(k, dict):
            raise RegistryError(f"{what} must be an object", path=source)
        pem = _str(k, "public_key_pem", what, source) or ""
        kid = _str(k, "key_id", what, source) or ""
        try:
            actual = keylib.key_id(keylib.parse_public_pem(pem, expected_type=_str(k, "type", what, source)))
        except SignatureError as exc:
            raise RegistryError(f"{what}: {exc.message}", path=source) from exc
        if actual != kid:
            raise RegistryError(f"{what}.key_id does not match its public key", path=source)
        keys[kid] = Key(key_id=kid, type=str(k["type"]), public_key_pem=pem, owner=_str(k, "owner", what, source) or "",
                        not_before=_time(k.get("not_before"), f"{what}.not_before", source),
                        expires=_time(k.get("expires"), f"{what}.expires", source),
                        revoked_at=_time(k.get("revoked_at"), f"{what}.revoked_at", source),
                        revoked_reason=_str(k, "revoked_reason", what, source, optional=True))
    roles: dict[str, Role] = {}
    raw_roles = info.get("roles") or {}
    if not isinstance(raw_roles, dict):
        raise RegistryError("trust.roles must be an object", path=source)
    for name, r in raw_roles.items():
        if not (isinstance(r, dict) and isinstance(r.get("keyids"), list)
                and all(isinstance(x, str) and x in keys for x in r["keyids"])):
            raise RegistryError(f"trust.roles.{name} is malformed or names unknown keys", path=source)
        threshold = _int(r, "threshold", f"trust.roles.{name}", source)
        if not 1 <= threshold <= len(r["keyids"]):
            raise RegistryError(f"trust.roles.{name}.threshold can never be met", path=source)
        roles[str(name)] = Role(keyids=tuple(r["keyids"]), threshold=threshold)
    return keys, roles


def _artifacts(targets: Targets, source: str) -> tuple[Artifact, ...]:
    """Group target files back into artifacts; the length and sha256 come from TUF, not custom."""
    grouped: dict[tuple[str, str], tuple[dict[str, Any], list[FileSpec]]] = {}
    for tpath, tf in targets.targets.items():
        custom = tf.custom.get(CUSTOM) if isinstance(tf.custom, dict) else None
        what = f"target {tpath!r}"
        if not isinstance(custom, dict):
            raise RegistryError(f"{what} carries no gpenguard entry (custom.{CUSTOM})", path=source)
        sha256 = tf.hashes.get("sha256")
        if not isinstance(sha256, str) or len(sha256) != 64:
            raise RegistryError(f"{what} lists no sha256", path=source)
        name = _str(custom, "name", what, source) or ""
        version = _str(custom, "version", what, source) or ""
        spec = FileSpec(path=_relative(custom, "path", what, source), format=_str(custom, "format", what, source) or "",
                        size=tf.length, sha256=sha256.lower())
        if tpath != f"{name}/{version}/{spec.path}":
            # The path is what TUF signs as the target's identity; fields that name another
            # artifact would let one target stand for two (or hide behind another's name).
            raise RegistryError(f"{what} claims to be {name}@{version} file {spec.path}", path=source)
        entry = grouped.setdefault((name, version), (custom, []))
        # One artifact's files carry its fields once each; read from the first file only, a
        # second file's other fingerprint or signatures would be dropped without a word.
        differ = sorted(k for k in {*entry[0], *custom} - {"path", "format"} if entry[0].get(k) != custom.get(k))
        if differ:
            raise RegistryError(f"{what}: the files of {name}@{version} disagree on {', '.join(differ)}", path=source)
        entry[1].append(spec)
    out = []
    for (name, version), (custom, files) in grouped.items():
        what = f"artifact {name}@{version}"
        try:
            status = Status(str(custom.get("status")))
        except ValueError:
            raise RegistryError(f"{what}.status {custom.get('status')!r} is not known", path=source) from None
        arch = None
        if custom.get("architecture") is not None:
            a = custom["architecture"]
            if not isinstance(a, dict):  # not silently "no fingerprint", which skips the check
                raise RegistryError(f"{what}.architecture must be an object", path=source)
            arch = Architecture(family=_str(a, "family", what, source) or "", fingerprint=_str(a, "fingerprint", what, source) or "",
                                tensor_count=_int(a, "tensor_count", what, source),
                                parameter_count=_int(a, "parameter_count", what, source),
                                state_dict_key=_str(a, "state_dict_key", what, source, optional=True))
        raw_sigs = custom.get("signatures") or []
        if not (isinstance(raw_sigs, list) and all(isinstance(s, dict) for s in raw_sigs)):
            # Dropping what cannot be read would turn "must verify" into "lists none".
            raise RegistryError(f"{what}.signatures must be a list of objects", path=source)
        sigs = tuple(SignatureRef(kind=_str(s, "kind", what, source) or "", path=_relative(s, "path", what, source),
                                  key_id=_str(s, "key_id", what, source, optional=True))
                     for s in raw_sigs)
        out.append(Artifact(name=name, version=version, status=status, files=tuple(files),
                            source_url=_str(custom, "source", what, source, optional=True),
                            license=_str(custom, "license", what, source, optional=True),
                            architecture=arch, signatures=sigs))
    return tuple(out)


def load_tuf_registry(repo: str, pinned_root: Path, *, state_dir: Path) -> Registry:
    """The registry a client trusts after TUF's full update from `repo`, anchored in `pinned_root`.

    `Registry.signed_by` holds the TUF key ids of the targets signatures that counted (as
    ``tuf:<keyid>``); `Registry.path` is the folder's ``targets.json`` for a local repository;
    `expires` is the earliest expiry of the four roles (the registry is stale from then on).
    """
    root, ts, snap, tgt_md, tgt_bytes = update(repo, pinned_root, state_dir=state_dir)
    targets = tgt_md.signed
    if targets.delegations is not None:
        # gpenguard publishes none; a role the client does not walk must not hide approvals.
        raise RegistryError("the targets role delegates to other roles, which gpenguard does not follow", path=repo)
    info = targets.unrecognized_fields.get(CUSTOM, {})
    if not isinstance(info, dict):
        raise RegistryError(f"targets field {CUSTOM!r} must be an object", path=repo)
    keys, roles = _keys(info, repo)
    result = root.get_verification_result(Targets.type, CanonicalJSONSerializer().serialize(targets), tgt_md.signatures)
    # Artifact signature bundles are looked up beside `path`: in a local repository's folder.
    local = not repo.startswith(("http://", "https://"))
    return Registry(
        path=str(Path(unquote(urlparse(repo).path) if repo.startswith("file://") else repo) / "targets.json") if local else repo,
        sha256=hashlib.sha256(tgt_bytes).hexdigest(),
        name=str(info.get("registry") or "tuf"),
        version=targets.version,
        expires=min(root.expires, ts.expires, snap.expires, targets.expires),
        keys=keys,
        roles=roles,
        artifacts=_artifacts(targets, repo),
        signed_by=tuple(f"tuf:{kid}" for kid in sorted(result.signed)),
    )
