"""Key and signature commands: ``keys generate``, ``sign``, ``registry sign``, ``registry show``.

`registry_app` is the ``gpenguard registry`` group; other modules add their own subcommands to
it (``registry pin`` lives with the gate) instead of registering a second group of that name.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gpenguard.cli._common import guarded, report_error
from gpenguard.errors import ExitCode, InputError, TrustError, UsageError
from gpenguard.fileio import write_atomic
from gpenguard.report.interface import printable
from gpenguard.trust import keys as keylib
from gpenguard.trust import oms
from gpenguard.trust.model import Registry
from gpenguard.trust.registry import (
    default_registry_path,
    signature_path,
)
from gpenguard.trust.signatures import sign_registry

keys_app = typer.Typer(name="keys", help="Create signing keys.", no_args_is_help=True)
registry_app = typer.Typer(
    name="registry", help="Sign, inspect and maintain the weights registry.", no_args_is_help=True
)
console = Console(highlight=False, soft_wrap=True)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` exclusively with `mode` from the start (a private key is never world-readable)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        raise UsageError("already exists; refusing to overwrite a key", path=path) from exc
    except OSError as exc:
        raise InputError(f"cannot create: {exc.strerror or exc}", path=path) from exc
    with os.fdopen(fd, "wb") as out:
        out.write(data)


@keys_app.command("generate")
@guarded
def generate(
    out: Annotated[Path, typer.Option("--out", help="Prefix: writes PREFIX.key (0600) and PREFIX.pub.")],
    key_type: Annotated[str, typer.Option("--type", help="ed25519 or ecdsa-p256 (OMS bundles need ecdsa-p256).")] = "ecdsa-p256",
    owner: Annotated[str, typer.Option("--owner", help="Who holds the key, for the registry entry.")] = "unknown",
) -> None:
    """Generate a key pair and print its key id and a registry/trust-root entry for it."""
    if out.name in ("", ".", ".."):  # Path("") is "."; its prefix would make hidden "..key"
        raise UsageError(f"--out must be a file name prefix such as keys/registry, got {str(out)!r}")
    private = keylib.generate(key_type)
    public = private.public_key()
    priv_path, pub_path = Path(f"{out}.key"), Path(f"{out}.pub")
    for p in (priv_path, pub_path):
        if p.exists() or p.is_symlink():
            raise UsageError("already exists; refusing to overwrite a key", path=p)
    _write_new(priv_path, keylib.private_pem(private), 0o600)
    try:
        _write_new(pub_path, keylib.public_pem(public).encode("ascii"), 0o644)
    except BaseException:
        priv_path.unlink()  # no half pair: a private key without its public one is left behind unseen
        raise
    console.print(f"private key: {priv_path} (keep it secret; never commit it)", markup=False)
    console.print(f"public key:  {pub_path}", markup=False)
    _print_entry(public, owner)


def _print_entry(public: keylib.PublicKey, owner: str) -> None:
    kid = keylib.key_id(public)
    console.print(f"key id:      {kid}", markup=False)
    if keylib.key_type_of(public) == "ecdsa-p256":
        console.print(f"OMS hint:    {keylib.oms_hint(public)}", markup=False)
    pem = "\n".join("      " + line for line in keylib.public_pem(public).strip().splitlines())
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    console.print(
        "\nentry for trust.keys (or a trust root's keys):\n"
        f"  - key_id: {kid}\n    type: {keylib.key_type_of(public)}\n    owner: {owner}\n"
        f"    not_before: {now}\n    public_key_pem: |\n{pem}",
        markup=False,
    )


@keys_app.command("show")
@guarded
def show(
    public_key: Annotated[Path, typer.Argument(help="A PEM public key (e.g. one used with model-signing).")],
    owner: Annotated[str, typer.Option("--owner", help="Who holds the key, for the registry entry.")] = "unknown",
) -> None:
    """Print an existing public key's id, OMS hint and a registry/trust-root entry for it."""
    _print_entry(keylib.load_public_key(public_key), owner)


def sign_command(
    file: Annotated[Path, typer.Argument(help="The model file to sign.")],
    key: Annotated[Path, typer.Option("--key", help="ECDSA P-256 private key (PEM).")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Bundle path (default FILE.sig).")] = None,
) -> None:
    """Write an OpenSSF Model Signing bundle for FILE (verifiable with `model_signing verify key`)."""
    private = keylib.load_private_key(key)
    if not file.is_file():
        raise InputError("not a file; sign a single model file", path=file)
    digest = oms.file_sha256(file)
    bundle = oms.sign_file(file, private, sha256=digest)
    target = output or file.with_name(file.name + ".sig")
    write_atomic(target, bundle)
    kid = keylib.key_id(private.public_key())
    console.print(f"signed {file} (sha256 {digest})", markup=False)
    console.print(f"bundle: {target}", markup=False)
    console.print(f"key id: {kid}", markup=False)
    console.print(
        "\nentry for the artifact's signatures (path relative to the registry file):\n"
        f"  - {{kind: oms-bundle, path: {target.name}, key_id: {kid}}}",
        markup=False,
    )


@registry_app.command("sign")
@guarded
def registry_sign(
    registry: Annotated[Path, typer.Argument(help="The registry YAML file.")],
    key: Annotated[list[Path], typer.Option("--key", help="Private key (PEM); repeat for several signers.")],
) -> None:
    """Sign the registry's exact bytes, adding to (or starting) REGISTRY.sig."""
    private_keys = [keylib.load_private_key(k) for k in key]
    sig_path, added = sign_registry(registry, private_keys)
    for kid in added:
        console.print(f"signed by {kid}", markup=False)
    console.print(f"signatures: {sig_path}", markup=False)


def _when(t: datetime | None) -> str:
    return t.isoformat().replace("+00:00", "Z") if t is not None else "-"


def _as_json(reg: Registry) -> dict[str, Any]:
    return {
        "path": reg.path,
        "sha256": reg.sha256,
        "name": reg.name,
        "version": reg.version,
        "expires": _when(reg.expires),
        "signed_by": list(reg.signed_by),
        "keys": [
            {"key_id": k.key_id, "type": k.type, "owner": k.owner, "not_before": _when(k.not_before),
             "expires": _when(k.expires), "revoked_at": _when(k.revoked_at)}
            for k in reg.keys.values()
        ],
        "roles": {n: {"keyids": list(r.keyids), "threshold": r.threshold} for n, r in reg.roles.items()},
        "artifacts": [
            {
                "name": a.name,
                "version": a.version,
                "status": a.status.value,
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256, "format": f.format} for f in a.files],
                "fingerprint": a.architecture.fingerprint if a.architecture else None,
                "signatures": [{"path": s.path, "key_id": s.key_id} for s in a.signatures],
            }
            for a in reg.artifacts
        ],
    }


@registry_app.command("show")
@guarded
def registry_show(
    registry: Annotated[Path | None, typer.Argument(help="Registry file (default: the shipped one).")] = None,
    trust_root: Annotated[Path | None, typer.Option("--trust-root", help="Pinned registry keys; verifies REGISTRY.sig.")] = None,
    require_signature: Annotated[bool, typer.Option("--require-signature", help="Fail unless signed by the trust root.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    tuf_repo: Annotated[str | None, typer.Option("--tuf-repo", help="Show what a client trusts from this TUF repository (folder or URL) after the full update; --trust-root is its pinned root.json.")] = None,
) -> None:
    """Load the registry with every check (signature, schema, expiry, rollback) and list it.

    The checks are `verify`'s own (`trust.anchor.open_registry`): with --trust-root the
    signature is required, and a registry `verify` would block exits 1 here too.
    """
    from gpenguard.trust.anchor import open_registry

    try:
        if tuf_repo is not None:
            from gpenguard.trust.state import default_state_dir
            from gpenguard.trust.tuf_client import load_tuf_registry

            if trust_root is None or registry is not None:
                raise UsageError("--tuf-repo takes the pinned root.json as --trust-root, and no REGISTRY file")
            reg = load_tuf_registry(tuf_repo, trust_root, state_dir=default_state_dir())
        else:
            reg = open_registry(
                registry or default_registry_path(), trust_root=trust_root, require_signed=require_signature
            )
    except TrustError as exc:
        report_error(exc)
        raise typer.Exit(int(ExitCode.BLOCKED)) from None
    if as_json:
        typer.echo(json.dumps(_as_json(reg), indent=2))
        return
    # Digests are shortened here; `--json` prints them in full.
    if reg.signed_by:
        signed = ", ".join(reg.signed_by) + (" (TUF targets role; root, snapshot and timestamp verified)" if tuf_repo else "")
    else:
        sig = signature_path(Path(reg.path))
        signed = f"not verified: no trust root given ({sig.name} is present)" if sig.exists() else "unsigned"
    console.print(cell(f"registry {reg.name} version {reg.version}  ({reg.path})"))
    console.print(f"  sha256   {reg.sha256}", markup=False)
    console.print(f"  expires  {_when(reg.expires)}", markup=False)
    console.print(cell(f"  signed   {signed}"))
    if reg.keys:
        now = datetime.now(UTC)
        keys = Table("key id", "type", "owner", "state", title="artifact keys", title_justify="left")
        for k in reg.keys.values():
            keys.add_row(*map(cell, (k.key_id, k.type, k.owner, keylib.unusable_reason(k, now) or "valid")))
        console.print(keys)
    for name, role in reg.roles.items():
        console.print(cell(f"  role {name}: {role.threshold} of {len(role.keyids)} key(s)"))
    table = Table("artifact", "version", "status", "file", "size", "sha256", "fingerprint", "sigs", title_justify="left")
    table.columns[0].no_wrap = True
    for a in reg.artifacts:
        for f in a.files:
            table.add_row(*map(cell, (
                a.name,
                a.version,
                a.status.value,
                f.path,
                f"{f.size:,}" if f.size is not None else "-",
                f.sha256[:12] + "…" if f.sha256 else "not pinned",
                a.architecture.fingerprint[:12] + "…" if a.architecture else "-",
                str(len(a.signatures)),
            )))
    console.print(table)


def cell(value: str) -> Text:
    """Registry text as shown: never Rich markup (``[/]`` crashed show, ``[bold]`` restyled a
    name), control and bidi characters escaped (an ESC sequence could hide or overwrite a column)."""
    return Text(printable(value))


def register(app: typer.Typer) -> None:
    """Attach this group's commands to the app."""
    app.add_typer(keys_app)
    app.add_typer(registry_app)
    app.command("sign")(guarded(sign_command))
