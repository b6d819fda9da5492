"""``gpenguard audit verify`` and ``gpenguard audit show``: check and read the decision log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gpenguard.cli._common import err_console, guarded
from gpenguard.errors import ExitCode

audit_app = typer.Typer(
    name="audit",
    help="Check and read the hash-chained audit log of gate decisions.",
    no_args_is_help=True,
)


@audit_app.command("verify")
@guarded
def audit_verify(
    log: Annotated[Path, typer.Argument(help="The audit log (JSONL).", show_default=False)],
    expect_head: Annotated[str | None, typer.Option("--expect-head", help="sha256 of a record noted earlier (audit show --head); the log must still contain it.")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="A signed checkpoint (audit checkpoint); the log must still hold the lines it signed.")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="Public key (PEM) the checkpoint must be signed with.")] = None,
    trust_root: Annotated[Path | None, typer.Option("--trust-root", help="Trust root whose threshold of keys must have signed the checkpoint.")] = None,
    output_format: Annotated[str, typer.Option("--format", "-f", help="text or json.")] = "text",
) -> None:
    """Check every record's hash, the chain and the sequence; name the line of each break.

    Exit 0 when the log is intact, 1 when it was edited, cut, reordered, shortened or rewritten
    (or its last line is torn by an interrupted write, reported as such), 2 when it or the
    checkpoint cannot be read.
    """
    from gpenguard.audit import verify_log
    from gpenguard.errors import UsageError
    from gpenguard.trust.hashing import parse_sha256

    if output_format not in ("text", "json"):
        raise UsageError(f"--format must be text or json, got {output_format!r}")
    if checkpoint is None and (key is not None or trust_root is not None):
        raise UsageError("--key and --trust-root verify a --checkpoint; give one")
    point = None
    if checkpoint is not None:
        from gpenguard.trust.checkpoint import anchor_of, read_checkpoint

        point = read_checkpoint(checkpoint, anchor_of(key=key, trust_root=trust_root))
    head = parse_sha256(expect_head, what="--expect-head") if expect_head else None
    check = verify_log(log, expect_head=head)
    if point is not None:
        from gpenguard.trust.checkpoint import check_against

        check = check_against(check, point)
    if output_format == "json":
        typer.echo(json.dumps({
            "log": check.path, "ok": check.ok, "records": check.records, "head": check.head,
            "torn_tail": check.torn_tail,
            "checkpoint": None if point is None else {"seq": point.seq, "head": point.head, "time": point.time,
                                                      "signed_by": list(point.signed_by)},
            "problems": [{"line": p.line, "message": p.message} for p in check.problems],
            "notes": [{"line": p.line, "message": p.message} for p in check.notes],
        }, indent=2))
    elif check.ok:
        anchored = f"; checkpoint of {point.time} (record {point.seq}) holds" if point is not None else ""
        typer.echo(f"{log}: OK, {check.records} record(s), chain intact; head {check.head}{anchored}")
    else:
        torn_only = check.torn_tail and len(check.problems) == 1
        state = "INCOMPLETE (torn last line, not tampering)" if torn_only else "FAILED"
        typer.echo(f"{log}: {state}, {len(check.problems)} problem(s) in {check.records} record(s)")
        for p in check.problems:
            typer.echo(f"  line {p.line}: {p.message}")
    if output_format != "json":
        for p in check.notes:
            typer.echo(f"  note, line {p.line}: {p.message}")
    raise typer.Exit(int(ExitCode.PASS if check.ok else ExitCode.BLOCKED))


@audit_app.command("checkpoint")
@guarded
def audit_checkpoint(
    log: Annotated[Path, typer.Argument(help="The audit log (JSONL).", show_default=False)],
    key: Annotated[Path, typer.Option("--key", help="Private key (PEM) to sign the head with; not one the log's writer holds.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Where to write it (default LOG.checkpoint).")] = None,
) -> None:
    """Sign the log's current head (first line, seq, last line) so a later rewrite is caught.

    Keep the checkpoint where the log's writer cannot change it, or not: it is signed. Then
    `gpenguard audit verify LOG --checkpoint F --key PUB` proves the log still holds those lines.
    """
    from gpenguard.fileio import write_atomic
    from gpenguard.trust import keys as keylib
    from gpenguard.trust.checkpoint import make_checkpoint
    from gpenguard.trust.dsse import parse_envelope

    data = make_checkpoint(log, keylib.load_private_key(key))
    target = output or log.with_name(log.name + ".checkpoint")
    write_atomic(target, data)
    body = json.loads(parse_envelope(data, str(target)).payload)
    typer.echo(f"{target}: checkpoint of {log}, record {body['seq']}, head {body['head']}")


@audit_app.command("show")
@guarded
def audit_show(
    log: Annotated[Path, typer.Argument(help="The audit log (JSONL).", show_default=False)],
    last: Annotated[int, typer.Option("--last", "-n", min=0, help="Show only the last N records (0: all).")] = 0,
    head: Annotated[bool, typer.Option("--head", help="Print only the head (sha256 of the last line) and its seq, to note elsewhere.")] = False,
) -> None:
    """List the decisions in the log (time, verdict, file, reasons), oldest first."""
    from gpenguard.audit import parse_records, read_log, verify_log
    from gpenguard.report.interface import printable

    if head:
        check = verify_log(log)
        if check.head is None:
            what = "has no intact record; see `gpenguard audit verify`" if check.problems else "is empty"
            err_console.print(f"{log}: the log {what}", markup=False)
            raise typer.Exit(int(ExitCode.BLOCKED))
        typer.echo(f"{check.head} {check.records}")
        raise typer.Exit(int(ExitCode.PASS if check.ok else ExitCode.BLOCKED))
    records = parse_records(read_log(log))
    shown = records[-last:] if last else records
    for number, rec in shown:
        if rec is None:
            typer.echo(f"{number:>6}  (unreadable line)")
            continue
        artifact = f" [{rec.get('artifact')}]" if rec.get("artifact") else ""
        line = (f"{number:>6}  {rec.get('time')}  {str(rec.get('verdict')).upper():<5}  "
                f"{rec.get('policy')}  {rec.get('file')}{artifact}")
        typer.echo(printable(line))
        reasons = rec.get("reasons")
        for reason in reasons if isinstance(reasons, list) else ():
            typer.echo(printable(f"        - {reason}"))


def register(app: typer.Typer) -> None:
    """Attach the ``audit`` group."""
    app.add_typer(audit_app, name="audit")
