"""``gpenguard verify`` and ``gpenguard registry pin``: options in, one gate call, a report out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from gpenguard.cli._common import err_console, guarded, note, stdout_is_terminal
from gpenguard.errors import UsageError

FORMATS = ("text", "json", "sarif")


def _progress_bar() -> Progress | None:
    """A hashing progress bar on stderr, only when a person is watching it."""
    if not err_console.is_terminal:
        return None
    return Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
        TransferSpeedColumn(), TimeRemainingColumn(), console=err_console, transient=True,
    )


def verify_command(
    file: Annotated[Path, typer.Argument(help="The checkpoint to check.", show_default=False)],
    registry: Annotated[Path | None, typer.Option("--registry", help="Registry file (default: the policy's, else the shipped one).")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Registry artifact the file claims to be; it must then match that entry.")] = None,
    policy: Annotated[str | None, typer.Option("--policy", "-p", help="Policy: default, strict, ci, or a YAML file.")] = None,
    trust_root: Annotated[Path | None, typer.Option("--trust-root", help="Pinned keys allowed to sign the registry.")] = None,
    output_format: Annotated[str | None, typer.Option("--format", "-f", help="text, json or sarif (default: the policy's).")] = None,
    audit_log: Annotated[Path | None, typer.Option("--audit-log", help="Append the decision to this hash-chained log.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here (atomically) instead of stdout.")] = None,
    tuf_repo: Annotated[str | None, typer.Option("--tuf-repo", help="TUF repository (folder or http(s) URL) to take the registry from; --trust-root is then its pinned root.json.")] = None,
) -> None:
    """Scan FILE and verify it against the registry under a policy; print every reason.

    Exit codes: 0 the file may be used, 1 blocked, 2 could not decide (usage or I/O).
    """
    from gpenguard.gate import verify
    from gpenguard.policy import OUTPUT_FORMATS, load_policy
    from gpenguard.report.decision import (
        exit_code_for_decision,
        render_json,
        render_sarif,
        render_text,
    )

    pol = load_policy(policy)
    fmt = output_format or pol.output_format
    if fmt not in OUTPUT_FORMATS:
        raise UsageError(f"--format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
    bar = _progress_bar()
    if bar is None:
        decision = verify(file, registry=registry, name=name, policy=pol, trust_root=trust_root, audit_log=audit_log,
                          tuf_repo=tuf_repo)
    else:
        with bar:
            task = bar.add_task("sha256", total=None)
            decision = verify(
                file, registry=registry, name=name, policy=pol, trust_root=trust_root, audit_log=audit_log,
                tuf_repo=tuf_repo, progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    if fmt == "json":
        text = render_json(decision)
    elif fmt == "sarif":
        text = render_sarif(decision, fail_on=pol.fail_on)
    else:
        text = render_text(decision, color=output is None and stdout_is_terminal())
    if output is not None:
        from gpenguard.fileio import write_atomic

        write_atomic(output, text.encode())
    else:
        typer.echo(text, nl=False)
    raise typer.Exit(int(exit_code_for_decision(decision)))


def pin_command(
    name: Annotated[str, typer.Argument(help="The registry artifact to pin.", show_default=False)],
    file: Annotated[Path, typer.Argument(help="The downloaded file, as approved.", show_default=False)],
    registry: Annotated[Path | None, typer.Option("--registry", help="Registry file (default: the shipped one).")] = None,
    key: Annotated[list[Path] | None, typer.Option("--key", "-k", help="Private key to re-sign the registry with (repeatable).")] = None,
    policy: Annotated[str | None, typer.Option("--policy", "-p", help="Policy whose scan rules the file must pass (default: default).")] = None,
) -> None:
    """Record FILE's size and sha256 in NAME's registry entry, after checking it.

    FILE must scan clean and match the entry's architecture fingerprint. The registry's
    version is bumped, the file is rewritten atomically (comments and layout kept), and it is
    re-signed with every --key; without a key it is left unsigned, with a warning.
    """
    from gpenguard.gate import default_registry_path
    from gpenguard.pin import pin_artifact
    from gpenguard.policy import load_policy

    reg = registry or default_registry_path()
    if reg is None:
        raise UsageError("no registry given and no shipped weights-registry.yaml found; pass --registry")
    result = pin_artifact(reg, name, file, keys=tuple(key or ()), policy=load_policy(policy))
    typer.echo(f"pinned {result.artifact} file {result.file}: size {result.size}, sha256 {result.sha256}")
    typer.echo(f"registry {result.registry} is now version {result.version}")
    if result.signed_by:
        typer.echo(f"signed by {', '.join(result.signed_by)} -> {result.signature}")
    for warning in result.warnings:
        note("warning:", "yellow", str(warning))


def register(app: typer.Typer) -> None:
    """Attach ``verify`` and ``registry pin``."""
    from gpenguard.cli._keys import registry_app  # the one `registry` group, owned by _keys

    app.command("verify")(guarded(verify_command))
    if not any(c.name == "pin" for c in registry_app.registered_commands):
        registry_app.command("pin")(guarded(pin_command))
