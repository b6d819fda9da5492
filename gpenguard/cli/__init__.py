"""The `gpenguard` command: options in, one library call, a rendered report, an exit code.

Each command group lives in its own module with a ``register(app)``; none of them holds logic
beyond parsing options and choosing a renderer.

NOTE: a CI gate runs ``gpenguard scan`` once per file, so start-up time is per-file time.
`main()` therefore builds only the command group that was asked for (typer builds a parameter
adapter for every option of every registered command); ``--help`` and `app` get all of them;
and ``scan`` (the command a hook runs per commit) skips typer altogether (see `_scan`).
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

_HELP = (
    "Vet PyTorch checkpoints statically, verify them against a signed registry, convert them "
    "to safetensors, and run GPEN on them inside a locked-down sandbox."
)

# Order is the order of `gpenguard --help`.
_GROUPS: dict[str, tuple[str, ...]] = {
    "scan": ("_scan",),
    "verify": ("_verify",),
    "sign": ("_keys",),
    "convert": ("_convert",),
    "restore": ("_restore",),
    "dev-restore": ("_dev",),
    "keys": ("_keys",),
    "registry": ("_keys", "_verify", "_tuf"),
    "audit": ("_audit",),
    "sandbox": ("_sandbox",),
    "version": (),
}


def version() -> None:
    """Print gpenguard's version."""
    from gpenguard import __version__

    print(__version__)  # noqa: T201 - the CLI's output


def build_app(groups: tuple[str, ...] | None = None) -> typer.Typer:
    """A typer app with the named command modules registered (all of them by default)."""
    import typer

    from gpenguard.cli._common import root

    new = typer.Typer(
        name="gpenguard",
        help=_HELP,
        no_args_is_help=True,
        add_completion=False,
        # NOTE: typer's default shows local variables in tracebacks: paths and keys in CI logs.
        pretty_exceptions_show_locals=False,
    )
    # A callback keeps typer in group mode even when only one command is registered.
    new.callback()(root)
    new.command()(version)
    wanted = groups if groups is not None else tuple(m for ms in _GROUPS.values() for m in ms)
    for name in dict.fromkeys(wanted):
        importlib.import_module(f"gpenguard.cli.{name}").register(new)
    return new


@functools.cache
def _full_app() -> typer.Typer:
    return build_app()


def __getattr__(name: str) -> Any:
    # `app` (every command) is built on first use: tests and `--help` want it, `main` need not.
    if name == "app":
        return _full_app()
    raise AttributeError(f"module 'gpenguard.cli' has no attribute {name!r}")


def main() -> None:
    """Console-script entry point: an unknown or missing command gets the full app (its help)."""
    command = sys.argv[1] if len(sys.argv) > 1 else None
    if command == "scan":  # the hot path of hooks and CI: no typer, no rich
        from gpenguard.cli._scan import run

        sys.exit(run(sys.argv[2:]))
    if command in ("--version", "-V"):
        version()
        sys.exit(0)
    build_app(_GROUPS.get(command) if command else None)()
