"""One contract for every command: exit codes, option letters, --version, required options,
readable error lines, and restore's progress on a terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from gpenguard import __version__
from gpenguard.cli import app
from gpenguard.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def odd_inputs(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint at all\n")
    return {"empty": empty, "unknown": text}


@pytest.mark.parametrize("kind", ["empty", "unknown"])
@pytest.mark.parametrize("command", ["scan", "verify", "convert", "restore"])
def test_empty_or_unknown_input_is_exit_2_everywhere(
    runner: CliRunner, odd_inputs: dict[str, Path], tmp_path: Path, command: str, kind: str
) -> None:
    path = str(odd_inputs[kind])
    if command == "convert":
        args = ["convert", path, "-o", str(tmp_path / "out.safetensors")]
    elif command == "restore":
        from PIL import Image

        face = tmp_path / "face.png"
        Image.new("RGB", (16, 16)).save(face)
        args = ["restore", str(face), "-o", str(tmp_path / "out"), "--weights", path,
                "--store", str(tmp_path / "store")]
    else:
        args = [command, path]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert path in result.output


def test_version_flag_and_command(runner: CliRunner) -> None:
    for args in (["--version"], ["-V"], ["version"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and result.output.strip() == __version__, args
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "gpenguard", "--version"], capture_output=True,
                          text=True, env=env, check=False, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == __version__


@pytest.mark.parametrize("command", ["verify", "convert", "restore"])
def test_r_is_never_the_registry(runner: CliRunner, tmp_path: Path, command: str) -> None:
    """`-r` means --recursive (scan); elsewhere it is refused, never read as a registry path."""
    result = runner.invoke(app, [command, "-r", str(tmp_path / "reg.yaml"), "x"])
    assert result.exit_code == 2 and "No such option" in result.output
    assert "--registry" in runner.invoke(app, [command, "--help"]).output


def test_convert_help_marks_the_output_required_and_enforces_it(runner: CliRunner, tmp_path: Path) -> None:
    assert "Required unless --store" in runner.invoke(app, ["convert", "--help"]).output
    src = tmp_path / "m.pth"
    src.write_bytes(b"\x80\x02}q\x00.")
    result = runner.invoke(app, ["convert", str(src)])
    assert result.exit_code == 2 and "-o OUT.safetensors" in result.output


def test_scan_usage_errors_are_exit_2(runner: CliRunner) -> None:
    assert runner.invoke(app, ["scan"]).exit_code == 2
    assert runner.invoke(app, ["scan", "--no-such-option", "x"]).exit_code == 2
    assert runner.invoke(app, ["scan", "--jobs", "0", "x"]).exit_code == 2


@pytest.mark.parametrize("module", ["gpenguard.cli._common", "gpenguard.cli._scan"])
def test_error_hints_print_readable_lines(module: str, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    mod = importlib.import_module(module)
    if module.endswith("_common"):
        monkeypatch.setattr(mod, "err_console", Console(file=sys.stderr, highlight=False,
                                                        soft_wrap=True))
    error = UsageError("two\nlines", hint="first do this\nthen that\x1b[31m")
    mod.report_error(error)
    err = capsys.readouterr().err
    assert "\\x0a" not in err and "first do this\n" in err and "then that" in err
    assert "\x1b[31m" not in err  # control characters inside a line stay escaped


def test_restore_shows_per_image_progress_with_an_eta_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import gpenguard.cli._restore as restore_cli

    screen = io.StringIO()
    monkeypatch.setattr(restore_cli, "err_console", Console(file=screen, force_terminal=True, width=120))
    bar = restore_cli._ImageProgress()
    bar.advance(3, "a.png")
    bar.advance(3, "b.png")
    bar.stop()
    shown = screen.getvalue()
    assert "2/3" in shown and "eta" in shown and "b.png" in shown
