"""The registry as a TUF repository: what an administrator runs (init, publish, refresh, rotate).

`weights-registry.yaml` stays the file people edit; `publish` turns it into TUF metadata signed
with python-tuf (`tuf.api.metadata`): a targets role listing every pinned file (length, sha256
and gpenguard's fields as custom info), and snapshot and timestamp roles that make freshness
checkable. The key split is TUF's: root and targets keys are offline (they sign rarely, on an
administrator's machine), one online key signs snapshot and timestamp and may live in a cron
job, because a short timestamp expiry is what stops a mirror from freezing clients on an old
registry. Keys are gpenguard's own PEM key files (`gpenguard keys generate`), used through
securesystemslib's `CryptoSigner`, so one key file serves both formats.

The repository folder uses consistent snapshots (``N.root.json``, ``N.snapshot.json``,
``N.targets.json``, plus ``timestamp.json`` and the latest ``root.json``): a mirror that syncs
while a client reads never serves a mix of two publications.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError

from gpenguard.errors import InputError, RegistryError, UsageError
from gpenguard.fileio import read_regular, write_atomic
from gpenguard.trust import keys as keylib
from gpenguard.trust.model import Artifact, Registry, Status

CUSTOM = "gpenguard"
"""The key under a target's ``custom`` (and the targets role's extra field) for gpenguard's data."""
ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
ONLINE_ROLES = (Snapshot.type, Timestamp.type)
DEFAULT_EXPIRY = {
    Root.type: timedelta(days=365),
    Targets.type: timedelta(days=90),
    Snapshot.type: timedelta(days=7),
    Timestamp.type: timedelta(days=1),
}
MAX_METADATA_BYTES = 16 * 2**20
_DURATION = re.compile(r"([1-9][0-9]{0,5})([dhm])")


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h`` or ``30m``: expiry periods as administrators write them."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise UsageError(f"expiry {text!r} must be a number of days, hours or minutes such as 90d, 12h, 30m")
    n, unit = int(m.group(1)), m.group(2)
    return timedelta(days=n) if unit == "d" else timedelta(hours=n) if unit == "h" else timedelta(minutes=n)


# -- keys ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyFile:
    """A key named on the command line: always its public half, the private half if given."""

    path: Path
    public: SSlibKey
    signer: CryptoSigner | None

    @property
    def keyid(self) -> str:
        return self.public.keyid


def load_key(path: Path) -> KeyFile:
    """Read a gpenguard PEM key file, private (it can sign) or public (it can only be listed)."""
    try:
        head = read_regular(path, keylib.MAX_KEY_FILE_BYTES)
    except OSError as exc:
        raise InputError(f"cannot read key file: {exc.strerror or exc}", path=path) from exc
    if b"PRIVATE KEY" in head:
        private = keylib.load_private_key(path)
        public = SSlibKey.from_crypto(private.public_key())
        return KeyFile(path, public, CryptoSigner(private, public))
    return KeyFile(path, SSlibKey.from_crypto(keylib.load_public_key(path)), None)


def _signers(keys: Iterable[KeyFile]) -> dict[str, CryptoSigner]:
    return {k.keyid: k.signer for k in keys if k.signer is not None}


# -- the repository folder ----------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _read(repo: Path, filename: str) -> Metadata[Any]:
    path = repo / filename
    try:
        data = read_regular(path, MAX_METADATA_BYTES)
    except FileNotFoundError as exc:
        raise InputError(f"{filename} not found; is this a registry repository (gpenguard registry init)?", path=path) from exc
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=path) from exc
    try:
        return Metadata.from_bytes(data)
    except DeserializationError as exc:
        raise RegistryError(f"not TUF metadata: {exc}", path=path) from exc


def _write(repo: Path, md: Metadata[Any], *names: str) -> None:
    data = md.to_bytes()
    for name in names:
        write_atomic(repo / name, data, mode=0o644)


def _sign(md: Metadata[Any], signers: dict[str, CryptoSigner], role: str, delegator: Root) -> list[str]:
    """Sign `md` with every given key that `delegator` lists for `role`, then verify the threshold."""
    _require_signers(signers, role, delegator)
    md.signatures.clear()
    used = [kid for kid in signers if kid in delegator.get_delegated_role(role).keyids]
    for kid in used:
        md.sign(signers[kid], append=True)
    if not delegator.get_verification_result(role, _signed_bytes(md), md.signatures).verified:
        raise RegistryError(f"internal error: the {role} signatures just made do not verify")
    return used


def _signed_bytes(md: Metadata[Any]) -> bytes:
    from tuf.api.serialization.json import CanonicalJSONSerializer

    return CanonicalJSONSerializer().serialize(md.signed)


@dataclass(frozen=True)
class InitResult:
    root: Path
    version: int
    keyids: dict[str, tuple[str, ...]]


def init_repository(
    repo: Path,
    *,
    root_keys: Sequence[KeyFile],
    root_threshold: int,
    targets_keys: Sequence[KeyFile],
    online_keys: Sequence[KeyFile],
    targets_threshold: int = 1,
    online_threshold: int = 1,
    root_expires: timedelta = DEFAULT_EXPIRY[Root.type],
) -> InitResult:
    """Write version 1 of root.json: who may sign each role, how many must, until when."""
    if (repo / "root.json").exists():
        raise UsageError("already holds root.json; rotate keys with `gpenguard registry rotate`", path=repo)
    for role, given, threshold in (("root", root_keys, root_threshold), ("targets", targets_keys, targets_threshold),
                                   ("online", online_keys, online_threshold)):
        ids = {k.keyid for k in given}
        if not ids:
            raise UsageError(f"give at least one {role} key")
        if len(ids) != len(given):
            raise UsageError(f"the same {role} key is given twice")
        if not 1 <= threshold <= len(ids):
            raise UsageError(f"{role} threshold {threshold} must be between 1 and its {len(ids)} key(s)")
    offline = {k.keyid for k in (*root_keys, *targets_keys)}
    if offline & {k.keyid for k in online_keys}:
        raise UsageError("an online key must not also be a root or targets key: a machine that "
                         "re-signs the timestamp daily must not hold the keys that approve weights")
    root = Root(expires=_now() + root_expires, consistent_snapshot=True)
    for role, given, threshold in ((Root.type, root_keys, root_threshold), (Targets.type, targets_keys, targets_threshold),
                                   (Snapshot.type, online_keys, online_threshold), (Timestamp.type, online_keys, online_threshold)):
        for k in given:
            root.add_key(k.public, role)
        root.roles[role].threshold = threshold
    md = Metadata(root)
    _sign(md, _signers(root_keys), Root.type, root)
    try:
        repo.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the repository folder: {exc.strerror or exc}", path=repo) from exc
    _write(repo, md, "1.root.json", "root.json")
    return InitResult(repo / "root.json", 1, {r: tuple(root.roles[r].keyids) for r in ROLES})


# -- publish ------------------------------------------------------------------------------------


def target_path(art: Artifact, file_path: str) -> str:
    """A target's name in the repository: ``<artifact>/<version>/<file>``, unique per file."""
    return f"{art.name}/{art.version}/{file_path}"


def _when(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t is not None else None


def _trust_fields(reg: Registry) -> dict[str, Any]:
    return {
        "keys": [
            {"key_id": k.key_id, "type": k.type, "public_key_pem": k.public_key_pem, "owner": k.owner,
             "not_before": _when(k.not_before), "expires": _when(k.expires),
             "revoked_at": _when(k.revoked_at), "revoked_reason": k.revoked_reason}
            for k in reg.keys.values()
        ],
        "roles": {n: {"keyids": list(r.keyids), "threshold": r.threshold} for n, r in reg.roles.items()},
    }


def targets_from_registry(reg: Registry) -> tuple[dict[str, TargetFile], list[str]]:
    """The TUF targets of a parsed registry, and why any file was left out."""
    targets: dict[str, TargetFile] = {}
    skipped: list[str] = []
    for art in reg.artifacts:
        for spec in art.files:
            if spec.sha256 is None or spec.size is None:
                skipped.append(f"{art.name}@{art.version} {spec.path}: not published, its size and sha256 "
                               "are not pinned (gpenguard registry pin)")
                continue
            custom: dict[str, Any] = {
                "name": art.name, "version": art.version, "status": art.status.value,
                "path": spec.path, "format": spec.format,
                "source": art.source_url, "license": art.license,
                "signatures": [{"kind": s.kind, "path": s.path, "key_id": s.key_id} for s in art.signatures],
            }
            if art.architecture is not None:
                a = art.architecture
                custom["architecture"] = {"family": a.family, "fingerprint": a.fingerprint,
                                          "tensor_count": a.tensor_count, "parameter_count": a.parameter_count,
                                          "state_dict_key": a.state_dict_key}
            tpath = target_path(art, spec.path)
            if tpath in targets:
                # Names and versions may hold "/": two entries can spell one path, and the later
                # would silently replace the earlier (a revoked entry by an approved one).
                first = targets[tpath].custom[CUSTOM]
                raise RegistryError(
                    f"{art.name}@{art.version} file {spec.path} and {first['name']}@{first['version']} file "
                    f"{first['path']} are both target path {tpath!r}", path=reg.path,
                    hint="rename one of them: a TUF target path names one file",
                )
            targets[tpath] = TargetFile(
                length=spec.size, hashes={"sha256": spec.sha256}, path=tpath,
                unrecognized_fields={"custom": {CUSTOM: custom}},
            )
    return targets, skipped


@dataclass(frozen=True)
class PublishResult:
    targets_version: int
    snapshot_version: int
    timestamp_version: int
    published: int
    skipped: tuple[str, ...] = ()
    unchanged: bool = False


def _current(repo: Path) -> tuple[Root, Metadata[Timestamp] | None, Metadata[Snapshot] | None, Metadata[Targets] | None]:
    root_md = _read(repo, "root.json")
    if not isinstance(root_md.signed, Root):
        raise RegistryError("root.json does not hold root metadata", path=repo / "root.json")
    if not (repo / "timestamp.json").exists():
        return root_md.signed, None, None, None
    ts = _read(repo, "timestamp.json")
    snap = _read(repo, f"{ts.signed.snapshot_meta.version}.snapshot.json")
    tgt = _read(repo, f"{snap.signed.meta['targets.json'].version}.targets.json")
    return root_md.signed, ts, snap, tgt


def _revoked(tf: TargetFile) -> bool:
    info = tf.custom.get(CUSTOM, {}) if isinstance(tf.custom, dict) else {}
    return isinstance(info, dict) and info.get("status") == Status.REVOKED.value


def _revocations_undone(old: Targets, new: dict[str, TargetFile]) -> list[str]:
    """Targets revoked in the published metadata that the new publication would let through.

    By path and by content: the revoked bytes listed again, not revoked, under another name or
    version (a YAML edit adding ``model-fixed`` with the old sha256) undo the revocation too.
    """
    undone = []
    revoked_digests = set()
    for path, tf in old.targets.items():
        if not _revoked(tf):
            continue
        revoked_digests.add((tf.length, tf.hashes.get("sha256")))
        now = new.get(path)
        if now is None or not _revoked(now):
            undone.append(path)
    undone.extend(path for path, tf in new.items() if path not in undone and not _revoked(tf)
                  and (tf.length, tf.hashes.get("sha256")) in revoked_digests)
    return undone


def _online(repo: Path, root: Root, signers: dict[str, CryptoSigner], targets_version: int,
            snap_old: Metadata[Snapshot] | None, ts_old: Metadata[Timestamp] | None,
            snapshot_expires: timedelta, timestamp_expires: timedelta) -> tuple[int, int]:
    snap_version = (snap_old.signed.version + 1) if snap_old is not None else 1
    # Length and hash, not only the version: a targets file of the same version from another
    # repository signed by the same keys cannot be swapped in (mix-and-match across registries).
    targets_bytes = read_regular(repo / f"{targets_version}.targets.json", MAX_METADATA_BYTES)
    snap = Metadata(Snapshot(version=snap_version, expires=_now() + snapshot_expires,
                             meta={"targets.json": MetaFile(version=targets_version, length=len(targets_bytes),
                                                            hashes=_sha256(targets_bytes))}))
    _sign(snap, signers, Snapshot.type, root)
    snap_bytes = snap.to_bytes()
    ts_version = (ts_old.signed.version + 1) if ts_old is not None else 1
    ts = Metadata(Timestamp(version=ts_version, expires=_now() + timestamp_expires,
                            snapshot_meta=MetaFile(version=snap_version, length=len(snap_bytes),
                                                   hashes=_sha256(snap_bytes))))
    _sign(ts, signers, Timestamp.type, root)
    write_atomic(repo / f"{snap_version}.snapshot.json", snap_bytes, mode=0o644)
    _write(repo, ts, "timestamp.json")  # last: until it is replaced, clients see the previous set
    return snap_version, ts_version


def _sha256(data: bytes) -> dict[str, str]:
    import hashlib

    return {"sha256": hashlib.sha256(data).hexdigest()}


def publish(
    repo: Path,
    registry: Registry,
    *,
    targets_keys: Sequence[KeyFile],
    online_keys: Sequence[KeyFile],
    targets_expires: timedelta = DEFAULT_EXPIRY[Targets.type],
    snapshot_expires: timedelta = DEFAULT_EXPIRY[Snapshot.type],
    timestamp_expires: timedelta = DEFAULT_EXPIRY[Timestamp.type],
    allow_unrevoke: bool = False,
) -> PublishResult:
    """Sign `registry` (already parsed strictly) as the repository's next targets, snapshot, timestamp.

    A publication never silently undoes a revocation already published: an old copy of the YAML
    would otherwise re-approve what was revoked. `allow_unrevoke` is the explicit way to do it.
    """
    root, ts_old, snap_old, tgt_old = _current(repo)
    targets, skipped = targets_from_registry(registry)
    if tgt_old is not None and not allow_unrevoke:
        undone = _revocations_undone(tgt_old.signed, targets)
        if undone:
            raise RegistryError(
                f"publishing would undo the published revocation of {', '.join(undone)}",
                path=registry.path,
                hint="mark them revoked in the YAML too (gpenguard registry revoke), or pass --allow-unrevoke",
            )
    extra = {CUSTOM: {"registry": registry.name, "source_version": registry.version,
                      "source_sha256": registry.sha256, **_trust_fields(registry)}}
    online = _signers(online_keys)
    for role in ONLINE_ROLES:  # refuse before anything is written, not between two files
        _require_signers(online, role, root)
    if tgt_old is not None and _still_good(tgt_old, targets, extra, root, targets_expires):
        new, unchanged = tgt_old.signed, True  # refresh only the online roles
    else:
        version = (tgt_old.signed.version + 1) if tgt_old is not None else 1
        new, unchanged = Targets(version=version, expires=_now() + targets_expires, targets=targets,
                                 unrecognized_fields=extra), False
        md = Metadata(new)
        _sign(md, _signers(targets_keys), Targets.type, root)
        _write(repo, md, f"{new.version}.targets.json")
    snap_version, ts_version = _online(repo, root, online, new.version, snap_old, ts_old, snapshot_expires, timestamp_expires)
    return PublishResult(new.version, snap_version, ts_version, len(targets), tuple(skipped), unchanged=unchanged)


def _still_good(old: Metadata[Targets], targets: dict[str, TargetFile], extra: dict[str, Any], root: Root,
                lifetime: timedelta) -> bool:
    """Whether the published targets can stay: same content, signed by today's keys, not near expiry."""
    return (old.signed.targets == targets and old.signed.unrecognized_fields == extra
            and old.signed.expires > _now() + lifetime / 2
            and root.get_verification_result(Targets.type, _signed_bytes(old), old.signatures).verified)


def _require_signers(signers: dict[str, CryptoSigner], role: str, root: Root) -> None:
    r = root.get_delegated_role(role)
    have = sum(1 for kid in signers if kid in r.keyids)
    if have < r.threshold:
        raise UsageError(f"the {role} role needs {r.threshold} signature(s) from its keys, only {have} of the "
                         "given private keys belong to it", hint=f"pass the private key(s) listed for {role} in root.json")


def refresh(repo: Path, *, online_keys: Sequence[KeyFile],
            snapshot_expires: timedelta = DEFAULT_EXPIRY[Snapshot.type],
            timestamp_expires: timedelta = DEFAULT_EXPIRY[Timestamp.type]) -> tuple[int, int]:
    """Re-sign snapshot and timestamp with the online key: the periodic job that keeps clients fresh."""
    root, ts_old, snap_old, tgt_old = _current(repo)
    if tgt_old is None:
        raise UsageError("nothing published yet; run `gpenguard registry publish` first", path=repo)
    return _online(repo, root, _signers(online_keys), tgt_old.signed.version, snap_old, ts_old,
                   snapshot_expires, timestamp_expires)


# -- rotate -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RotateResult:
    version: int
    added: tuple[str, ...]
    removed: tuple[str, ...]
    signed_by: tuple[str, ...]


def rotate(
    repo: Path,
    *,
    role: str,
    add: Sequence[KeyFile] = (),
    remove: Sequence[str] = (),
    threshold: int | None = None,
    signing_keys: Sequence[KeyFile] = (),
    root_expires: timedelta = DEFAULT_EXPIRY[Root.type],
) -> RotateResult:
    """Write root version N+1 with `role`'s keys changed, signed by root N's threshold and its own.

    `remove` names keys by TUF key id or by a key file. Clients walk the root chain one version
    at a time, so every new root must carry enough signatures of the previous root's keys; a
    client that trusted the old root then trusts the new one, and nothing else.
    """
    if role not in ROLES:
        raise UsageError(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    old_md = _read(repo, "root.json")
    old = old_md.signed
    if not isinstance(old, Root):
        raise RegistryError("root.json does not hold root metadata", path=repo / "root.json")
    new = copy.deepcopy(old)  # Root.from_dict(old.to_dict()) would share the keyid lists
    new.version = old.version + 1
    new.expires = _now() + root_expires
    roles = (Snapshot.type, Timestamp.type) if role in ONLINE_ROLES else (role,)
    removed: list[str] = []
    for ref in remove:
        kid = load_key(Path(ref)).keyid if Path(ref).is_file() else ref
        if kid not in new.roles[role].keyids:
            raise UsageError(f"key {kid} is not a {role} key in root version {old.version}")
        for r in roles:
            new.revoke_key(kid, r)
        removed.append(kid)
    for k in add:
        for r in roles:
            new.add_key(k.public, r)
    for r in roles:
        if threshold is not None:
            new.roles[r].threshold = threshold
        if not 1 <= new.roles[r].threshold <= len(new.roles[r].keyids):
            raise UsageError(f"{r} would need {new.roles[r].threshold} signature(s) from "
                             f"{len(new.roles[r].keyids)} key(s); it could never be met")
    md = Metadata(new)
    signers = _signers(signing_keys)
    used = [kid for kid in signers if kid in old.roles[Root.type].keyids or kid in new.roles[Root.type].keyids]
    for kid in used:
        md.sign(signers[kid], append=True)
    payload = _signed_bytes(md)
    for who, verifier in ((f"the previous root (version {old.version})", old), ("the new root itself", new)):
        result = verifier.get_verification_result(Root.type, payload, md.signatures)
        if not result.verified:
            raise UsageError(
                f"root version {new.version} needs {result.threshold} signature(s) of {who}'s root keys; "
                f"the given private keys give {len(result.signed)}",
                hint="pass --sign-key for enough old and new root keys",
            )
    _write(repo, md, f"{new.version}.root.json", "root.json")
    return RotateResult(new.version, tuple(k.keyid for k in add), tuple(removed), tuple(used))


# -- revoke -------------------------------------------------------------------------------------


def revoke_in_yaml(registry_path: Path, name: str, version: str | None = None) -> tuple[Registry, list[str]]:
    """Mark artifact `name` (one `version`, or every version) revoked in the YAML, bumping its version.

    The YAML is edited as text where PyYAML places each node (comments stay), then parsed again
    strictly before it replaces the file. Returns the new registry and the entries revoked.
    """
    import yaml

    from gpenguard.trust.registry import MAX_REGISTRY_BYTES, parse_registry, read_bounded
    from gpenguard.trust.yamledit import apply_edits, mapping_items, scalar_edit

    source = str(registry_path)
    raw = read_bounded(registry_path, MAX_REGISTRY_BYTES, "registry")
    before = parse_registry(raw, source)
    hits = [a for a in before.artifacts if a.name == name and (version is None or a.version == version)]
    if not hits:
        which = f"{name}@{version}" if version else name
        raise UsageError(f"no artifact {which} in registry {before.name}", path=registry_path)
    text = raw.decode("utf-8")
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    assert root is not None  # parse_registry refused an empty file
    items = mapping_items(root, "the registry", source)
    meta = mapping_items(items["registry"][1], "registry", source)
    edits = [scalar_edit(meta["version"][1], str(before.version + 1))]
    # By position, not line: flow style puts several entries on one line, and a line match
    # revoked every entry sharing the line with the one asked for.
    nodes = items["artifacts"][1].value
    if len(nodes) != len(before.artifacts):
        raise RegistryError("internal error: the registry's artifacts do not line up with its YAML", path=registry_path)
    edits.extend(scalar_edit(mapping_items(node, "artifact", source)["status"][1], Status.REVOKED.value)
                 for node, art in zip(nodes, before.artifacts, strict=True) if art in hits)
    expected = {(a.name, a.version) for a in hits}
    new_text = apply_edits(text, edits)
    after = parse_registry(new_text.encode("utf-8"), source)
    revoked = [f"{a.name}@{a.version}" for a in after.artifacts
               if a.name == name and (version is None or a.version == version) and a.status is Status.REVOKED]
    changed = {(a.name, a.version) for a, b in zip(before.artifacts, after.artifacts, strict=True) if a.status != b.status}
    if after.version != before.version + 1 or len(revoked) != len(hits) or not changed <= expected:
        raise RegistryError("internal error: the edited registry does not say what was revoked", path=registry_path)
    write_atomic(registry_path, new_text.encode("utf-8"), mode=registry_path.stat().st_mode & 0o777)
    return after, revoked
