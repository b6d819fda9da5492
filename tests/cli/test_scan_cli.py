"""`gpenguard scan` as CI users drive it: exit codes, formats, --output, options reaching the scanner.

Checkpoints are real `torch.save` files from `gpenguard.demo` (random weights; the poisoned one
pickles a call to ``os.system("true")``, harmless even if it ever ran).
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

import gpenguard.scan
from gpenguard.cli import app
from gpenguard.demo import make_demo_pair
from gpenguard.findings import FileReport, ScanReport, Severity, Verdict
from gpenguard.policy import Policy
from gpenguard.report.json import load_schema
from tests.report import sarif_schema

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return make_demo_pair(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str | Path) -> Any:
    return runner.invoke(app, ["scan", *map(str, args)], catch_exceptions=False)


# --- against the real scanner --------------------------------------------------------------


def test_benign_checkpoint_passes_with_exit_0(runner: CliRunner, pair: tuple[Path, Path]) -> None:
    result = invoke(runner, pair[0])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("PASS ") and "1 passed" in result.stdout


def test_poisoned_checkpoint_is_blocked_with_exit_1_and_names_the_call(
    runner: CliRunner, pair: tuple[Path, Path]
) -> None:
    result = invoke(runner, *pair)
    assert result.exit_code == 1, result.output
    assert "BLOCK" in result.stdout and "system" in result.stdout
    assert "1 passed, 1 blocked" in result.stdout


def test_unreadable_input_is_exit_2_and_blocks_the_run(
    runner: CliRunner, pair: tuple[Path, Path], tmp_path: Path
) -> None:
    junk = tmp_path / "notes.pth"
    junk.write_bytes(b"this is not a checkpoint at all")
    result = invoke(runner, pair[0], junk)
    assert result.exit_code == 2
    assert "notes.pth" in result.output


def test_missing_file_is_exit_2_naming_it(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(runner, tmp_path / "nope.pth")
    assert result.exit_code == 2 and "nope.pth" in result.output


def test_json_output_follows_the_schema_and_the_exit_code(
    runner: CliRunner, pair: tuple[Path, Path]
) -> None:
    result = invoke(runner, "--format", "json", *pair)
    doc = json.loads(result.stdout)
    jsonschema.Draft202012Validator(load_schema()).validate(doc)
    assert result.exit_code == doc["exit_code"] == 1
    assert [f["verdict"] for f in doc["files"]] == ["pass", "block"]
    assert any(f["global"] and f["global"].endswith("system") for f in doc["files"][1]["findings"])


def test_sarif_to_output_file_leaves_stdout_empty_and_no_temp_files(
    runner: CliRunner, pair: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "reports" / "gpenguard.sarif"
    out.parent.mkdir()
    out.write_text("stale")
    result = invoke(runner, "--format", "sarif", "-o", out, *pair)
    assert result.exit_code == 1
    assert result.stdout == ""
    log = json.loads(out.read_text())
    assert log["version"] == "2.1.0" and log["runs"][0]["invocations"][0]["exitCode"] == 1
    assert any(r["level"] == "error" for r in log["runs"][0]["results"])
    assert sorted(p.name for p in out.parent.iterdir()) == ["gpenguard.sarif"]


def test_real_sarif_output_validates_against_the_official_schema(
    runner: CliRunner, pair: tuple[Path, Path], tmp_path: Path
) -> None:
    schema = sarif_schema.load()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x80\x04not really")
    result = invoke(runner, "--format", "sarif", *pair, junk)
    log = json.loads(result.stdout)
    jsonschema.Draft4Validator(schema).validate(log)
    assert {r["level"] for r in log["runs"][0]["results"]} >= {"error"}


def test_shipped_ci_policy_defaults_to_sarif(runner: CliRunner, pair: tuple[Path, Path]) -> None:
    result = invoke(runner, "--policy", "ci", pair[0])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["version"] == "2.1.0"


def test_recursive_directory_scan_covers_every_file(
    runner: CliRunner, pair: tuple[Path, Path]
) -> None:
    result = invoke(runner, "-r", "--format", "json", pair[0].parent)
    doc = json.loads(result.stdout)
    assert result.exit_code == 1 and doc["summary"]["files"] == 2


def test_real_process_exit_code(pair: tuple[Path, Path]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "gpenguard", "scan", "--format", "json", *map(str, pair)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["verdict"] == "block"
    assert proc.stderr == ""  # piped: no progress bar, nothing extra


# --- option plumbing (the scanner replaced by a recorder) ----------------------------------


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace `scan_paths` with one that records its arguments and returns a chosen verdict."""
    seen: dict[str, Any] = {"verdict": Verdict.PASS}

    def fake(paths: list[Path], *, recursive: bool = False, policy: Policy | None = None,
             limits: object = None, jobs: int | None = None,
             on_file: Callable[[FileReport], None] | None = None,
             digest: bool = True) -> ScanReport:
        seen.update(paths=paths, recursive=recursive, policy=policy, jobs=jobs, on_file=on_file,
                    digest=digest)
        files = tuple(FileReport(str(p), seen["verdict"]) for p in paths)
        assert policy is not None
        return ScanReport(files=files, tool_version="test", fail_on=policy.fail_on)

    monkeypatch.setattr(gpenguard.scan, "scan_paths", fake, raising=False)
    return seen


@pytest.mark.parametrize(("verdict", "code"), [(Verdict.PASS, 0), (Verdict.BLOCK, 1), (Verdict.ERROR, 2)])
def test_exit_code_is_the_overall_verdict(
    runner: CliRunner, recorder: dict[str, Any], verdict: Verdict, code: int
) -> None:
    recorder["verdict"] = verdict
    assert invoke(runner, "a.pth").exit_code == code


def test_options_reach_the_scanner(runner: CliRunner, recorder: dict[str, Any]) -> None:
    result = invoke(runner, "-r", "--jobs", "3", "--fail-on", "MEDIUM", "--policy", "strict", "m")
    assert result.exit_code == 0, result.output
    assert recorder["jobs"] == 3 and recorder["digest"] is False  # text shows no digest
    assert recorder["paths"] == ("m",)  # a named file is always judged
    assert recorder["policy"].name == "strict" and recorder["policy"].fail_on is Severity.MEDIUM
    assert recorder["on_file"] is None  # stderr is not a terminal under the runner


def test_default_policy_threshold_is_used_without_fail_on(runner: CliRunner, recorder: dict[str, Any]) -> None:
    invoke(runner, "m")
    assert recorder["policy"].fail_on is Severity.HIGH


def test_bad_fail_on_is_a_usage_error(runner: CliRunner, recorder: dict[str, Any]) -> None:
    result = invoke(runner, "--fail-on", "urgent", "m")
    assert result.exit_code == 2
    assert "unknown severity 'urgent'" in result.output and "paths" not in recorder


def test_bad_policy_is_exit_2_naming_it(runner: CliRunner, recorder: dict[str, Any], tmp_path: Path) -> None:
    result = invoke(runner, "--policy", tmp_path / "missing.yaml", "m")
    assert result.exit_code == 2 and "missing.yaml" in result.output


@pytest.mark.parametrize("name", ["[/x].yaml", "[bold]p.yaml", "\x1b[31mp.yaml"])
def test_error_messages_are_not_read_as_markup(
    runner: CliRunner, recorder: dict[str, Any], tmp_path: Path, name: str
) -> None:
    result = invoke(runner, "--policy", tmp_path / name, "m")
    assert result.exit_code == 2  # a MarkupError traceback would be exit 1
    shown = name.replace("\x1b", "\\x1b")  # a control character is shown escaped
    assert f"{shown}: no such policy file" in result.output and "\x1b[31m" not in result.output


def test_nothing_to_scan_is_not_a_pass(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpenguard.scan, "scan_paths", lambda *a, **k: ScanReport(files=()), raising=False)
    result = invoke(runner, "empty-dir")
    assert result.exit_code == 2 and "nothing was scanned" in result.output


def test_unwritable_output_is_exit_2_and_leaves_no_partial_file(
    runner: CliRunner, recorder: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "no-such-dir" / "out.json"
    result = invoke(runner, "--format", "json", "-o", target, "m")
    assert result.exit_code == 2 and "out.json" in result.output
    assert not target.parent.exists()


def test_output_replaces_the_old_report_in_one_step(
    runner: CliRunner, recorder: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    assert invoke(runner, "--format", "json", "-o", target, "m").exit_code == 0
    assert json.loads(target.read_text())["verdict"] == "pass"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_output_to_a_pipe_or_device_writes_into_it_and_never_replaces_it(
    runner: CliRunner, recorder: dict[str, Any], tmp_path: Path
) -> None:
    fifo = tmp_path / "report.fifo"  # stands for /dev/stdout, /dev/null: rename would replace them
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    result = invoke(runner, "--format", "json", "-o", fifo, "m")
    reader.join(timeout=10)
    assert result.exit_code == 0
    assert json.loads(received[0])["verdict"] == "pass"
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["report.fifo"]


def test_output_through_a_link_keeps_the_link(
    runner: CliRunner, recorder: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "real.json"
    link = tmp_path / "stdout"  # as /dev/stdout -> /proc/self/fd/1 when stdout is a file
    link.symlink_to(target)
    assert invoke(runner, "--format", "json", "-o", link, "m").exit_code == 0
    assert link.is_symlink() and json.loads(target.read_text())["verdict"] == "pass"


def test_text_to_a_pipe_has_no_colour(runner: CliRunner, recorder: dict[str, Any]) -> None:
    result = invoke(runner, "m")
    assert "\x1b[" not in result.stdout and result.stdout.startswith("PASS ")


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def test_progress_is_shown_only_to_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpenguard.cli._scan import _progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with _progress() as on_file:
        assert on_file is not None
        on_file(FileReport("models/a.pth", Verdict.PASS))
    assert "scanned" in terminal.getvalue()

    piped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", piped)
    with _progress() as on_file:
        assert on_file is None
    assert piped.getvalue() == ""


# --- start-up: a hook pays it per invocation ------------------------------------------------


def test_the_default_policy_without_yaml_is_the_shipped_default() -> None:
    import dataclasses

    from gpenguard.cli._scan import default_policy
    from gpenguard.policy import load_policy

    assert default_policy() == dataclasses.replace(load_policy(None), description="")


def test_scan_imports_no_typer_rich_yaml_or_torch(pair: tuple[Path, Path]) -> None:
    code = (
        "import sys, io, contextlib\n"
        "from gpenguard.cli import main\n"
        f"sys.argv = ['gpenguard', 'scan', {str(pair[0])!r}, {str(pair[1])!r}]\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main()\n    except SystemExit as e:\n        code = e.code\n"
        "heavy = sorted(m for m in ('typer', 'click', 'rich', 'yaml', 'torch', 'numpy', 'PIL', 'docker') if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120, check=False)
    assert proc.stdout.strip() == "1 []", proc.stdout + proc.stderr
