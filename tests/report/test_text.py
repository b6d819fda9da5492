from __future__ import annotations

from pathlib import Path

from gpenguard.findings import FileReport, Finding, ScanReport, Severity, Verdict
from gpenguard.report.text import TextReporter


def test_each_file_gets_its_verdict_and_the_findings_say_where_and_what(report: ScanReport) -> None:
    out = TextReporter().render(report)
    lines = out.splitlines()
    assert lines[0].startswith("PASS ") and lines[0].rstrip().endswith(f"sha256 {'a' * 64})")
    assert any(line.startswith("BLOCK") and "poisoned.pth" in line for line in lines)
    assert any(line.startswith("ERROR") and "broken.bin" in line for line in lines)
    critical = next(line for line in lines if "CRITICAL" in line)
    assert "GG101" in critical and "archive/data.pkl@311" in critical and "os.system" in critical
    assert "would call: os.system('true')" in out
    assert "error: not a checkpoint: unknown magic bytes" in out
    assert "not checked: pickle opcodes: the container could not be read" in out


def test_worst_finding_comes_first_within_a_file(report: ScanReport) -> None:
    out = TextReporter().render(report)
    assert out.index("CRITICAL") < out.index("MEDIUM")


def test_summary_counts_and_overall_verdict(report: ScanReport, clean_report: ScanReport) -> None:
    last = TextReporter().render(report).splitlines()[-1]
    assert "3 files: 1 passed, 1 blocked, 1 could not be scanned" in last
    assert "verdict: ERROR" in last and "high and above" in last
    assert "verdict: PASS" in TextReporter().render(clean_report).splitlines()[-1]


def test_no_escape_codes_unless_colour_is_asked_for(report: ScanReport) -> None:
    assert "\x1b[" not in TextReporter(color=False).render(report)
    assert "\x1b[" in TextReporter(color=True).render(report)


def test_hostile_strings_cannot_reach_the_terminal_raw(tmp_path: Path) -> None:
    """A pickle controls the call text and the archive member name: neither may inject
    escape sequences, bidi overrides or rich markup into the reviewer's terminal."""
    path = str(tmp_path / "[bold]x[/bold].pth")
    finding = Finding(
        "GG101", Severity.CRITICAL, "msg\x1b]0;owned\x07", path,
        member="archive/\u202edata.pkl", offset=3, global_name="os.system",
        call="os.system('\x1b[2J\x1b[Hclear')",
    )
    report = ScanReport(files=(FileReport(path, Verdict.BLOCK, findings=(finding,)),))
    for color in (False, True):
        out = TextReporter(color=color).render(report)
        assert "\x1b[2J" not in out and "\x1b]0" not in out and "\u202e" not in out
        assert "\\x1b[2J\\x1b[Hclear" in out and "\\u202e" in out
        assert "[bold]x[/bold].pth" in out


def test_locations_read_naturally_with_and_without_a_member() -> None:
    from gpenguard.report.interface import location

    assert location("archive/data.pkl", 311) == "archive/data.pkl@311"
    assert location("archive/data.pkl", None) == "archive/data.pkl"
    assert location(None, 41) == "offset 41"
    assert location(None, None) is None
