"""CLI commands of this group; see the owning stage for the logic."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach this group's commands to the app."""
