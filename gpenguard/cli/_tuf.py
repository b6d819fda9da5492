"""The administrator's ``gpenguard registry`` commands for a TUF repository.

``init`` (root.json), ``publish`` (YAML -> signed targets, snapshot, timestamp), ``refresh``
(the online key's periodic re-signing), ``rotate`` (root N+1) and ``revoke``. They attach to
the one `registry_app` group that _keys owns; ``registry show --tuf-repo`` lives there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpenguard.cli._common import guarded, note
from gpenguard.cli._keys import console, registry_app
from gpenguard.errors import UsageError
from gpenguard.report.interface import printable

_KEY_HELP = "PEM key file from `gpenguard keys generate`: a .key signs, a .pub is only listed."


def init_command(
    repo: Annotated[Path, typer.Argument(help="Repository folder to create (root.json goes here).")],
    root_key: Annotated[list[Path], typer.Option("--root-key", help="Root key (offline); repeat. " + _KEY_HELP)],
    targets_key: Annotated[list[Path], typer.Option("--targets-key", help="Targets key (offline): approves weights. " + _KEY_HELP)],
    online_key: Annotated[list[Path], typer.Option("--online-key", help="Snapshot+timestamp key (online, re-signs daily). " + _KEY_HELP)],
    root_threshold: Annotated[int, typer.Option("--root-threshold", help="Root signatures needed.")] = 1,
    targets_threshold: Annotated[int, typer.Option("--targets-threshold", help="Targets signatures needed.")] = 1,
    expires: Annotated[str, typer.Option("--expires", help="Root expiry (e.g. 365d).")] = "365d",
) -> None:
    """Create version 1 of the repository's root.json, signed by the root keys given as .key."""
    from gpenguard.trust.tuf_repo import init_repository, load_key, parse_duration

    result = init_repository(
        repo, root_keys=[load_key(p) for p in root_key], root_threshold=root_threshold,
        targets_keys=[load_key(p) for p in targets_key], targets_threshold=targets_threshold,
        online_keys=[load_key(p) for p in online_key], root_expires=parse_duration(expires),
    )
    console.print(printable(f"wrote {result.root} (version {result.version})"), markup=False)
    for role, ids in result.keyids.items():
        console.print(f"  {role:<9} {', '.join(ids)}", markup=False)
    console.print("pin this root.json on every client (--trust-root); then `gpenguard registry publish`", markup=False)


def publish_command(
    registry: Annotated[Path, typer.Argument(help="The weights-registry.yaml to publish.")],
    repo: Annotated[Path, typer.Option("--repo", help="Repository folder (made by `registry init`).")],
    targets_key: Annotated[list[Path], typer.Option("--targets-key", help="Targets private key(s).")],
    online_key: Annotated[list[Path], typer.Option("--online-key", help="Snapshot+timestamp private key(s).")],
    targets_expires: Annotated[str, typer.Option("--targets-expires")] = "90d",
    snapshot_expires: Annotated[str, typer.Option("--snapshot-expires")] = "7d",
    timestamp_expires: Annotated[str, typer.Option("--timestamp-expires", help="Short: clients refuse the registry after it.")] = "1d",
    allow_unrevoke: Annotated[bool, typer.Option("--allow-unrevoke", help="Let this publication approve targets now revoked.")] = False,
) -> None:
    """Turn REGISTRY (parsed strictly) into signed TUF targets, snapshot and timestamp in --repo."""
    from gpenguard.trust.registry import MAX_REGISTRY_BYTES, parse_registry, read_bounded
    from gpenguard.trust.tuf_repo import load_key, parse_duration, publish

    reg = parse_registry(read_bounded(registry, MAX_REGISTRY_BYTES, "registry"), str(registry))
    result = publish(
        repo, reg, targets_keys=[load_key(p) for p in targets_key], online_keys=[load_key(p) for p in online_key],
        targets_expires=parse_duration(targets_expires), snapshot_expires=parse_duration(snapshot_expires),
        timestamp_expires=parse_duration(timestamp_expires), allow_unrevoke=allow_unrevoke,
    )
    for why in result.skipped:
        note("warning:", "yellow", why)
    state = " (unchanged)" if result.unchanged else ""
    console.print(f"published {result.published} target(s): targets v{result.targets_version}{state}, "
                  f"snapshot v{result.snapshot_version}, timestamp v{result.timestamp_version}", markup=False)


def refresh_command(
    repo: Annotated[Path, typer.Option("--repo", help="Repository folder.")],
    online_key: Annotated[list[Path], typer.Option("--online-key", help="Snapshot+timestamp private key(s).")],
    snapshot_expires: Annotated[str, typer.Option("--snapshot-expires")] = "7d",
    timestamp_expires: Annotated[str, typer.Option("--timestamp-expires")] = "1d",
) -> None:
    """Re-sign snapshot and timestamp (run it more often than the timestamp expires)."""
    from gpenguard.trust.tuf_repo import load_key, parse_duration, refresh

    snap, ts = refresh(repo, online_keys=[load_key(p) for p in online_key],
                       snapshot_expires=parse_duration(snapshot_expires), timestamp_expires=parse_duration(timestamp_expires))
    console.print(f"snapshot v{snap}, timestamp v{ts}", markup=False)


def rotate_command(
    repo: Annotated[Path, typer.Option("--repo", help="Repository folder.")],
    role: Annotated[str, typer.Option("--role", help="root, targets, snapshot or timestamp (the last two share the online key).")],
    sign_key: Annotated[list[Path], typer.Option("--sign-key", help="Root private keys, old and new: the old root's threshold and the new one's must sign.")],
    add: Annotated[list[Path] | None, typer.Option("--add", help="Key file to add to the role.")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="TUF key id or key file to remove from the role.")] = None,
    threshold: Annotated[int | None, typer.Option("--threshold", help="The role's new threshold.")] = None,
    expires: Annotated[str, typer.Option("--expires", help="The new root's expiry.")] = "365d",
) -> None:
    """Write root version N+1 with a role's keys changed (clients follow the chain)."""
    from gpenguard.trust.tuf_repo import load_key, parse_duration, rotate

    if not add and not remove and threshold is None:
        raise UsageError("nothing to change: give --add, --remove or --threshold")
    result = rotate(repo, role=role, add=[load_key(p) for p in add or ()], remove=list(remove or ()),
                    threshold=threshold, signing_keys=[load_key(p) for p in sign_key], root_expires=parse_duration(expires))
    console.print(f"root version {result.version}: added {', '.join(result.added) or '-'}; "
                  f"removed {', '.join(result.removed) or '-'}", markup=False)
    console.print(f"  signed by {', '.join(result.signed_by)}", markup=False)
    if role != "root":
        console.print(f"next: publish (targets) or refresh (online) with the new {role} key", markup=False)


def revoke_command(
    name: Annotated[str, typer.Argument(help="Artifact name.")],
    registry: Annotated[Path, typer.Option("--registry", "-r", help="The weights-registry.yaml to edit.")],
    version: Annotated[str | None, typer.Option("--version", help="Only this version (default: every version).")] = None,
    repo: Annotated[Path | None, typer.Option("--repo", help="Also publish to this TUF repository.")] = None,
    targets_key: Annotated[list[Path] | None, typer.Option("--targets-key")] = None,
    online_key: Annotated[list[Path] | None, typer.Option("--online-key")] = None,
) -> None:
    """Mark NAME revoked in the YAML (version bumped) and, with --repo, publish at once."""
    from gpenguard.trust.registry import signature_path
    from gpenguard.trust.tuf_repo import load_key, publish, revoke_in_yaml

    if repo is not None and not (targets_key and online_key):
        raise UsageError("publishing a revocation needs --targets-key and --online-key")
    reg, revoked = revoke_in_yaml(registry, name, version)
    console.print(printable(f"revoked {', '.join(revoked)}; {registry} is now version {reg.version}"), markup=False)
    sig = signature_path(registry)
    if sig.exists():
        sig.unlink()
        note("warning:", "yellow", f"removed {sig.name}: it signed the previous bytes (re-sign with `gpenguard registry sign`)")
    if repo is not None:
        result = publish(repo, reg, targets_keys=[load_key(p) for p in targets_key or ()],
                         online_keys=[load_key(p) for p in online_key or ()])
        console.print(f"published: targets v{result.targets_version}, timestamp v{result.timestamp_version}", markup=False)


def register(app: typer.Typer) -> None:
    """Attach the TUF administration commands to the ``registry`` group."""
    names = {c.name for c in registry_app.registered_commands}
    for name, func in (("init", init_command), ("publish", publish_command), ("refresh", refresh_command),
                       ("rotate", rotate_command), ("revoke", revoke_command)):
        if name not in names:
            registry_app.command(name)(guarded(func))
