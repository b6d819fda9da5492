"""``gpenguard convert``: options in, one `gpenguard.convert.convert` call, a summary out."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gpenguard.cli._common import err_console, guarded, note

if TYPE_CHECKING:
    from gpenguard.convert import ConversionRecord


def _summary(record: ConversionRecord) -> dict[str, Any]:
    return {
        "source": record.source,
        "source_sha256": record.source_sha256,
        "output": str(record.output),
        "sha256": record.sha256,
        "size": record.size,
        "provenance": str(record.provenance),
        "signed_by": list(record.signed_by),
        "tensors": record.tensors,
        "elements": record.elements,
        "select": record.select,
        "strip_prefix": record.strip_prefix,
        "shared": [list(g) for g in record.shared],
        "materialised": list(record.materialised),
        "artifact": record.artifact,
        "registry_version": record.registry_version,
        "policy": record.policy,
        "stored": str(record.stored.path) if record.stored is not None else None,
    }


@guarded
def convert_command(
    file: Annotated[Path, typer.Argument(help="The checkpoint to convert.", show_default=False)],
    output: Annotated[Path | None, typer.Option("--output", "-o", metavar="OUT.safetensors", help="Required unless --store: where to write the .safetensors file (its provenance goes beside it).", show_default=False)] = None,
    registry: Annotated[Path | None, typer.Option("--registry", help="Registry file (default: the policy's, else the shipped one).")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Registry artifact the file claims to be.")] = None,
    policy: Annotated[str | None, typer.Option("--policy", "-p", help="Policy: default, strict, ci, or a YAML file.")] = None,
    select: Annotated[str | None, typer.Option("--select", help="Nested state_dict to convert (params_ema, model/state_dict); default: the registry entry's.")] = None,
    strip_prefix: Annotated[str | None, typer.Option("--strip-prefix", help="Drop this prefix (e.g. 'module.') from tensor names.")] = None,
    store: Annotated[Path | None, typer.Option("--store", help="Keep the result in this content-addressed store (as well as -o, or instead of it).")] = None,
    sign_key: Annotated[Path | None, typer.Option("--sign-key", help="Private key that signs the provenance (DSSE envelope).")] = None,
    trust_root: Annotated[Path | None, typer.Option("--trust-root", help="Pinned keys allowed to sign the registry.")] = None,
    audit_log: Annotated[Path | None, typer.Option("--audit-log", help="Append the gate's decision to this hash-chained log.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the conversion record as JSON.")] = False,
    tuf_repo: Annotated[str | None, typer.Option("--tuf-repo", help="TUF repository (folder or http(s) URL) to take the registry from; --trust-root is then its pinned root.json.")] = None,
) -> None:
    """Gate FILE, then convert its tensors to safetensors without running its pickle.

    The gate (scan + registry + policy) decides first on the same open file the converter then
    reads. Exit codes: 0 converted, 1 blocked by the gate (every reason printed), 2 usage, I/O
    or format error. No output file is left behind on any failure.
    """
    from gpenguard.convert import convert
    from gpenguard.errors import UsageError
    from gpenguard.store import Store

    if output is None and store is None:
        raise UsageError("name the file to write: -o OUT.safetensors (or --store DIR for a "
                         "content-addressed store)")
    the_store: Store | None = Store(store) if store is not None else None

    def run(progress: Callable[[int, int], None] | None = None) -> ConversionRecord:
        return convert(
            file, output, registry=registry, name=name, policy=policy, select=select,
            strip_prefix=strip_prefix, store=the_store, sign_key=sign_key, trust_root=trust_root,
            audit_log=audit_log, progress=progress, tuf_repo=tuf_repo,
        )

    if err_console.is_terminal:  # a bar for the gate's sha256 pass, only when someone watches
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task("sha256", total=None)
            record = run(lambda done, total: bar.update(task, completed=done, total=total))
    else:
        record = run()
    decision = record.decision
    for warning in getattr(decision, "warnings", ()):
        note("warning:", "yellow", str(warning))
    for skipped in getattr(decision, "not_checked", ()):
        note("not checked:", "yellow", str(skipped))
    if as_json:
        typer.echo(json.dumps(_summary(record), indent=2))
        return
    typer.echo(f"converted {record.source} -> {record.output}")
    typer.echo(f"  sha256      {record.sha256}")
    typer.echo(f"  tensors     {record.tensors} ({record.elements:,} elements, {record.size:,} bytes)")
    typer.echo(f"  source      sha256 {record.source_sha256}" + (f" ({record.artifact})" if record.artifact else ""))
    if record.select or record.strip_prefix:
        typer.echo(f"  selected    {record.select or '-'}; stripped {record.strip_prefix or '-'}")
    if record.shared:
        typer.echo(f"  shared      {len(record.shared)} storage group(s) split into separate tensors")
    if record.materialised:
        typer.echo(f"  copied      {len(record.materialised)} strided view(s) made contiguous")
    signed = f" (signed by {', '.join(record.signed_by)})" if record.signed_by else " (unsigned)"
    typer.echo(f"  provenance  {record.provenance}{signed}")
    if record.stored is not None:
        typer.echo(f"  stored      {record.stored.path}")


def register(app: typer.Typer) -> None:
    """Attach ``gpenguard convert``."""
    app.command("convert")(convert_command)
