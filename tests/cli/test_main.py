"""`main()` builds only the invoked command group; its table must match the full app."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer
from typer.main import get_command

from gpenguard import cli

ROOT = Path(__file__).resolve().parents[2]


def _names(app: typer.Typer) -> set[str]:
    group = get_command(app)
    return set(group.commands)  # type: ignore[attr-defined]


def test_every_command_of_the_full_app_is_in_the_dispatch_table() -> None:
    assert _names(cli.app) == set(cli._GROUPS)


def test_each_partial_app_has_the_command_it_was_built_for() -> None:
    for name, groups in cli._GROUPS.items():
        assert name in _names(cli.build_app(groups)), name


def test_partial_builds_do_not_register_a_command_twice() -> None:
    cli.build_app(cli._GROUPS["verify"])
    cli.build_app(cli._GROUPS["registry"])
    registry = get_command(cli.app).commands["registry"]  # type: ignore[attr-defined]
    assert sorted(registry.commands) == ["init", "pin", "publish", "refresh", "revoke", "rotate", "show", "sign"]


def test_console_entry_runs_one_command_and_rejects_unknown_ones(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, "-m", "gpenguard", "version"], capture_output=True,
                        text=True, env=env, check=False)
    assert ok.returncode == 0 and ok.stdout.strip()
    bad = subprocess.run([sys.executable, "-m", "gpenguard", "nosuch"], capture_output=True,
                         text=True, env=env, check=False)
    assert bad.returncode == 2 and "No such command" in bad.stderr


def test_notes_print_input_text_literally(capsys: object) -> None:
    from gpenguard.cli._common import note

    note("warning:", "yellow", "[/x].pth: [bold]odd\x1b[31m name")
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "warning: [/x].pth: [bold]odd" in err and "\x1b[31m" not in err
