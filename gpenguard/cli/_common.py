"""What every command shares: turning a `GpenguardError` into a message and an exit code."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from gpenguard.errors import GpenguardError
from gpenguard.report.interface import printable

P = ParamSpec("P")
R = TypeVar("R")

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _show_version(value: bool) -> None:
    if value:
        from gpenguard.cli import version

        version()
        raise typer.Exit(0)


def root(
    show_version: Annotated[
        bool,
        typer.Option("--version", "-V", help="Print the version and exit.",
                     callback=_show_version, is_eager=True),
    ] = False,
) -> None:
    """Vet PyTorch checkpoints; see the commands below."""


def guarded(func: Callable[P, R]) -> Callable[P, R]:
    """Catch the library's one exception root, say what failed, and exit with its code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except GpenguardError as exc:
            report_error(exc)
            raise typer.Exit(int(exc.exit_code)) from None

    return wrapper


def report_error(exc: GpenguardError) -> None:
    """Print an error to stderr: the message, any reasons, then the hint.

    Messages carry file names, member names and YAML text: never read as rich markup
    (``[/x].yaml`` would raise, ``[bold]`` vanish), control characters shown escaped.
    """
    err_console.print(Text.assemble(("error:", "bold red"), " ", _lines(str(exc))))
    for reason in getattr(exc, "reasons", ()):
        err_console.print(f"  - {_lines(str(reason))}", markup=False)
    if exc.hint:
        err_console.print(f"  hint: {_lines(exc.hint)}", markup=False)


def _lines(text: str) -> str:
    """Multi-line text as indented lines (a hint's newline is a line break, not ``\\x0a``);
    control characters inside a line are still shown escaped."""
    return "\n        ".join(printable(line) for line in text.splitlines() or [""])


def note(label: str, style: str, text: str) -> None:
    """A labelled line on stderr (``warning:``, ``not checked:``...): only the label is styled.

    The text carries file names and messages from the input, so it is never read as markup.
    """
    err_console.print(Text.assemble((label, style), " ", printable(text)))


def stdout_is_terminal() -> bool:
    """Progress bars and colour only when a person is watching."""
    return sys.stdout.isatty()
