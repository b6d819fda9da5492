"""``gpenguard scan``: options in, one `scan_paths` call, a rendered report, the exit code.

stdout carries only the report (so ``--format json | jq`` works); progress goes to stderr and
only when a person is watching it. ``--output`` is written atomically: a CI job never sees a
half-written SARIF file, and a failed write leaves the previous file untouched.

NOTE: a pre-commit hook or CI step starts one process per invocation, so this command's
start-up is per-file time (bench/scan_peers.py holds it below picklescan's). It is therefore
parsed with `argparse` and imports neither typer nor rich unless a terminal is watching; the
typer app only forwards ``scan`` here, so `gpenguard --help` still lists it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from gpenguard.errors import ExitCode, GpenguardError, UsageError
from gpenguard.findings import FileReport, ScanReport, Severity, Verdict
from gpenguard.report.interface import printable

if TYPE_CHECKING:
    import typer

    from gpenguard.discover import Discovery
    from gpenguard.policy import Policy
    from gpenguard.report import ReportFormat

_SEVERITIES = ", ".join(s.name.lower() for s in Severity)
_FORMATS = ("text", "json", "sarif")
HELP = "Statically scan checkpoints for code they would run when loaded. Nothing is executed."
_EPILOG = """\
Directories are walked (every subfolder; .git/ is skipped): each file that could be loaded as
a model artifact is judged by its content (pickle of any protocol, zip, tar, npy/npz,
safetensors, legacy torch, joblib), whatever its name; other files (source, text, images,
JSON) are skipped and counted. A file named on the command line is always judged. Patterns are
gitignore-style and apply under directories; a .gpenguardignore in a scanned directory adds
exclude patterns (review changes to it like CI configuration).

exit codes: 0 every file passed; 1 at least one file is blocked; 2 a file could not be
scanned, or a usage or I/O error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # usage errors are exit 2, as everywhere
        self.print_usage(sys.stderr)
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(int(ExitCode.ERROR))


def build_parser() -> argparse.ArgumentParser:
    """The ``scan`` command line (also what ``gpenguard scan --help`` prints)."""
    p = _Parser(prog="gpenguard scan", description=HELP, epilog=_EPILOG,
                formatter_class=_formatter)
    p.add_argument("paths", nargs="*", metavar="PATH", type=Path,
                   help="checkpoint files, or directories to walk")
    walk = p.add_mutually_exclusive_group()
    walk.add_argument("-r", "--recursive", action="store_true",
                      help="descend into subdirectories (the default; kept for compatibility)")
    walk.add_argument("--no-recursive", action="store_true",
                      help="only the files directly in each directory; the subfolders not "
                      "opened are named on stderr")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="under directories, judge only files matching GLOB (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="under directories, leave out files matching GLOB (repeatable)")
    p.add_argument("--no-ignore-file", action="store_true",
                   help="do not read .gpenguardignore files")
    p.add_argument("--skip-non-models", action="store_true",
                   help="also skip NAMED files that are not model artifacts by content "
                   "(for hooks that pass every changed file)")
    p.add_argument("-f", "--format", choices=_FORMATS, type=str.lower, default=None,
                   help="report format (default: the policy's, else text)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="write the report here (atomically) instead of stdout")
    p.add_argument("--fail-on", metavar="SEVERITY",
                   help=f"block on findings at or above this severity ({_SEVERITIES}) "
                   "(default: the policy's, else high)")
    p.add_argument("-p", "--policy", metavar="FILE|NAME",
                   help="gate policy: a YAML file, or a shipped one (default, strict, ci)")
    p.add_argument("-j", "--jobs", type=_positive, metavar="N",
                   help="files scanned in parallel (default: by total size and CPU count)")
    p.add_argument("--hash", action="store_true",
                   help="show each file's sha256 (json and sarif reports always carry it)")
    return p


def _formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's help layout at the terminal's width, found without importing shutil.

    argparse builds a formatter for every add_argument; its default asks shutil for the
    width, which imports zlib, bz2 and lzma: 2 ms of a hook's per-file start-up.
    """
    try:
        width = os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError):
        width = int(os.environ.get("COLUMNS", "80") or 80)
    return argparse.RawDescriptionHelpFormatter(prog, width=max(width - 2, 40))


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} is below 1")
    return number


def run(argv: Sequence[str]) -> int:
    """Parse `argv` (after ``scan``), scan, print; the exit code (never raises for input)."""
    args = build_parser().parse_args(list(argv))
    try:
        return _scan(args)
    except GpenguardError as exc:
        report_error(exc)
        return int(exc.exit_code)


def _scan(args: argparse.Namespace) -> int:
    from gpenguard import scan as scan_pkg  # NOTE: deferred so `--help` stays fast
    from gpenguard.policy import load_policy, with_overrides

    if not args.paths:
        raise UsageError("give at least one PATH (a file, or a directory to walk)")
    threshold = _parse_severity(args.fail_on)
    base = default_policy() if args.policy is None else load_policy(args.policy)
    chosen = with_overrides(base, fail_on=threshold)
    report_format = _format(args.format, chosen)
    found = _find(args)
    digest = args.hash or report_format.value != "text"
    with _progress() as on_file:
        report = scan_pkg.scan_paths(found.files, recursive=False, policy=chosen, jobs=args.jobs,
                                     on_file=on_file, digest=digest)
    if not report.files and not found.skipped:
        raise UsageError(
            "nothing was scanned: no files in " + ", ".join(str(p) for p in args.paths),
            hint="pass checkpoint files, or directories that contain some",
        )
    import dataclasses

    report = dataclasses.replace(report, skipped=found.skipped, ignored=found.ignored,
                                 unopened=found.unopened)
    color = args.output is None and _color_wanted()
    rendered = report_format.to_reporter(color=color, root=Path.cwd()).render(report)
    if args.output is None:
        sys.stdout.write(rendered)
        sys.stdout.flush()
    else:
        from gpenguard.fileio import write_atomic

        write_atomic(args.output, rendered.encode("utf-8"))
        _summary_to_stderr(report, args.output)
    if report_format.value != "text":  # text already says it; json/sarif readers see stderr
        _not_opened_to_stderr(report)
    from gpenguard.report import exit_code_for

    return int(exit_code_for(report))


def default_policy() -> Policy:
    """The shipped ``default`` policy without parsing its YAML (a test holds them equal).

    Loading YAML costs a hook a sixth of its start-up; the scan needs only the scan fields.
    """
    from gpenguard.policy import Policy

    return Policy(source="<shipped policy default>")


def _find(args: argparse.Namespace) -> _Found | Discovery:
    """What to scan: directories walked, named files as they are (or probed, if asked)."""
    if not args.skip_non_models and not any(_is_dir(p) for p in args.paths):
        # files named one by one (a hook): nothing to walk or probe, no walk module to load
        return _Found(files=tuple(str(p) for p in args.paths))
    from gpenguard.discover import discover

    found = discover(args.paths, recursive=not args.no_recursive, include=args.include,
                     exclude=args.exclude, ignore_files=not args.no_ignore_file)
    if args.skip_non_models:
        found = _probe_named(found, args.paths)
    return found


class _Found(NamedTuple):
    """The fields of `gpenguard.discover.Discovery` the command reads."""

    files: tuple[str, ...]
    skipped: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    unopened: tuple[str, ...] = ()


def _probe_named(found: Discovery, named: Sequence[Path]) -> Discovery:
    """Named files go through the same content probe as files found in directories."""
    import dataclasses

    from gpenguard.discover import could_be_model

    named_set = {str(p) for p in named}
    keep = [f for f in found.files if f not in named_set or could_be_model(f)]
    dropped = tuple(f for f in found.files if f in named_set and f not in keep)
    return dataclasses.replace(found, files=tuple(keep), skipped=found.skipped + dropped)


def _parse_severity(value: str | None) -> Severity | None:
    if value is None:
        return None
    try:
        return Severity.parse(value)
    except ValueError as exc:
        raise UsageError(f"--fail-on: {exc}") from None


def _format(chosen: str | None, policy: Policy) -> ReportFormat:
    from gpenguard.report import ReportFormat

    if chosen is not None:
        return ReportFormat(chosen)
    try:
        return ReportFormat(policy.output_format.lower())
    except ValueError:
        raise UsageError(
            f"policy output_format {policy.output_format!r} is not one of: {', '.join(_FORMATS)}",
            path=policy.source,
        ) from None


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _color_wanted() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def report_error(exc: GpenguardError) -> None:
    """``error: ...``, its reasons and its hint on stderr, one readable line each."""
    lines = [f"error: {_lines(str(exc))}"]
    lines += [f"  - {_lines(str(r))}" for r in getattr(exc, "reasons", ())]
    if exc.hint:
        lines.append(f"  hint: {_lines(exc.hint)}")
    sys.stderr.write("\n".join(lines) + "\n")


def _lines(text: str) -> str:
    """Multi-line text as indented lines; control characters inside a line shown escaped."""
    return "\n        ".join(printable(line) for line in text.splitlines() or [""])


@contextlib.contextmanager
def _progress() -> Iterator[Callable[[FileReport], None] | None]:
    """A live count on stderr when a person watches it; nothing at all otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    # NOTE: imported here: a hook or CI run (stderr not a terminal) never pays for rich.
    from rich.console import Console
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
    if not sys.stderr.isatty():
        return
    counts = {v: sum(f.verdict is v for f in report.files) for v in Verdict}
    parts = ", ".join(f"{n} {v.value}" for v, n in counts.items())
    sys.stderr.write(
        f"{len(report.files)} files ({parts}); {len(report.skipped)} skipped as not model "
        f"artifacts; verdict {report.verdict.value}; report written to "
        f"{printable(str(output))}\n"
    )


def _not_opened_to_stderr(report: ScanReport) -> None:
    for path in report.unopened:
        sys.stderr.write(f"not opened: {printable(path)} (a subdirectory)\n")


# --- the typer side: `gpenguard --help` lists scan; `app` (tests, --help) forwards to run() ---


def register(app: typer.Typer) -> None:
    """Attach a ``scan`` that hands its raw arguments to `run`."""
    import typer

    def scan(ctx: typer.Context) -> None:
        raise typer.Exit(run(ctx.args))

    scan.__doc__ = HELP
    scan.__annotations__ = {"ctx": typer.Context, "return": None}  # typer is not a module global
    app.command(
        "scan",
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                          "allow_interspersed_args": False, "help_option_names": []},
    )(scan)
