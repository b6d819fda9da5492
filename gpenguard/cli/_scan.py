"""``gpenguard scan``: options in, one `scan_paths` call, a rendered report, the exit code.

stdout carries only the report (so ``--format json | jq`` works); progress goes to stderr and
only when a person is watching it. ``--output`` is written atomically: a CI job never sees a
half-written SARIF file, and a failed write leaves the previous file untouched.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gpenguard.cli._common import guarded
from gpenguard.errors import UsageError
from gpenguard.fileio import write_atomic
from gpenguard.findings import FileReport, ScanReport, Severity, Verdict
from gpenguard.policy import Policy, load_policy, with_overrides
from gpenguard.report import ReportFormat, exit_code_for
from gpenguard.report.interface import printable

_SEVERITIES = ", ".join(s.name.lower() for s in Severity)


def register(app: typer.Typer) -> None:
    """Attach ``scan`` to the app."""
    app.command(
        "scan",
        epilog="Exit codes: 0 every file passed; 1 at least one file is blocked; "
        "2 a file could not be scanned, or a usage or I/O error.",
    )(scan)


@guarded
def scan(
    paths: Annotated[
        list[Path],
        typer.Argument(metavar="PATH", show_default=False,
                       help="Checkpoint files, or directories: the files in them "
                       "(and in subdirectories with --recursive)."),
    ],
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Descend into subdirectories.")
    ] = False,
    fmt: Annotated[
        ReportFormat | None,
        typer.Option("--format", "-f", help="Report format (default: the policy's, else text).",
                     case_sensitive=False, show_default=False),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the report here (atomically) instead of stdout.",
                     dir_okay=False, show_default=False),
    ] = None,
    fail_on: Annotated[
        str | None,
        typer.Option("--fail-on", metavar="SEVERITY",
                     help=f"Block on findings at or above this severity ({_SEVERITIES}) "
                     "(default: the policy's, else high).", show_default=False),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option("--policy", metavar="FILE|NAME",
                     help="Gate policy: a YAML file, or a shipped one (default, strict, ci) "
                     "(default: default).", show_default=False),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", min=1, help="Files scanned in parallel (default: CPU count).",
                     show_default=False),
    ] = None,
) -> None:
    """Statically scan checkpoints for code they would run when loaded. Nothing is executed."""
    from gpenguard.scan import scan_paths  # NOTE: deferred so `gpenguard --help` stays fast

    threshold = _parse_severity(fail_on)
    chosen = with_overrides(load_policy(policy), fail_on=threshold)
    report_format = fmt or _policy_format(chosen)

    with _progress() as on_file:
        report = scan_paths(paths, recursive=recursive, policy=chosen, jobs=jobs, on_file=on_file)
    if not report.files:
        raise UsageError(
            "nothing was scanned: no checkpoint files in " + ", ".join(str(p) for p in paths),
            hint="pass files, or add --recursive to scan directories",
        )

    color = output is None and _color_wanted()
    rendered = report_format.to_reporter(color=color, root=Path.cwd()).render(report)
    if output is None:
        sys.stdout.write(rendered)
        sys.stdout.flush()
    else:
        write_atomic(output, rendered.encode("utf-8"))
        if sys.stderr.isatty():
            _summary_to_stderr(report, output)
    raise typer.Exit(int(exit_code_for(report)))


def _parse_severity(value: str | None) -> Severity | None:
    if value is None:
        return None
    try:
        return Severity.parse(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--fail-on'") from None


def _policy_format(policy: Policy) -> ReportFormat:
    try:
        return ReportFormat(policy.output_format.lower())
    except ValueError:
        choices = ", ".join(f.value for f in ReportFormat)
        raise UsageError(
            f"policy output_format {policy.output_format!r} is not one of: {choices}",
            path=policy.source,
        ) from None


def _color_wanted() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


@contextlib.contextmanager
def _progress() -> Iterator[Callable[[FileReport], None] | None]:
    """A live count on stderr when a person watches it; nothing at all otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    # NOTE: imported here: a hook or CI run (stderr not a terminal) never shows a bar.
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, highlight=False)
    with Progress(
        SpinnerColumn(),
        TextColumn("scanned {task.completed}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}", markup=False),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("scan", total=None, last="")

        def on_file(file: FileReport) -> None:
            progress.update(task, advance=1, last=printable(file.path))

        yield on_file


def _summary_to_stderr(report: ScanReport, output: Path) -> None:
    counts = {v: sum(f.verdict is v for f in report.files) for v in Verdict}
    parts = ", ".join(f"{n} {v.value}" for v, n in counts.items())
    Console(stderr=True, highlight=False).print(
        f"{len(report.files)} files ({parts}); verdict {report.verdict.value}; "
        f"report written to {printable(str(output))}",
        markup=False,
    )


