"""The `gpenguard` command: options in, one library call, a rendered report, an exit code.

Each command group lives in its own module and registers itself on `app`; none of them holds
logic beyond parsing options and choosing a renderer.
"""

from __future__ import annotations

import typer

from gpenguard.cli import _audit, _convert, _dev, _keys, _restore, _sandbox, _scan, _verify

app = typer.Typer(
    name="gpenguard",
    help="Vet PyTorch checkpoints statically, verify them against a signed registry, convert "
    "them to safetensors, and run GPEN on them inside a locked-down sandbox.",
    no_args_is_help=True,
    add_completion=False,
    # NOTE: typer's default shows local variables in tracebacks, which can leak paths and keys.
    pretty_exceptions_show_locals=False,
)



@app.command()
def version() -> None:
    """Print gpenguard's version."""
    from gpenguard import __version__

    typer.echo(__version__)


for _module in (_scan, _verify, _keys, _audit, _convert, _restore, _sandbox, _dev):
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
