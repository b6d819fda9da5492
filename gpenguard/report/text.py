"""The report for people at a terminal: one block per file, worst news first within it.

Every string that came out of a scanned file (paths, messages, reconstructed calls) goes
through `printable` and is styled only as a whole segment, never read as markup, so a hostile
checkpoint cannot inject escape sequences or rich markup into a reviewer's terminal.

Lines are built as (text, style) segments; rich renders them only when colour is wanted, so a
CI run (no terminal) never imports it: start-up is per-file time in a hook.
"""

from __future__ import annotations

import io

from gpenguard.findings import FileReport, Finding, ScanReport, Severity, Verdict
from gpenguard.report.interface import location, printable


class Text:
    """A line of (text, style) segments; the subset of `rich.text.Text` this module needs."""

    def __init__(self, text: str = "", style: str = "") -> None:
        self.parts: list[tuple[str, str]] = [(text, style)] if text else []

    def append(self, text: str, style: str = "") -> Text:
        self.parts.append((text, style))
        return self

    @property
    def plain(self) -> str:
        return "".join(text for text, _ in self.parts)


_VERDICT_STYLE = {
    Verdict.PASS: "bold green",
    Verdict.BLOCK: "bold red",
    Verdict.ERROR: "bold magenta",
}
_SEVERITY_STYLE = {
    Severity.CRITICAL: "bold red",
    Severity.HIGH: "red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}
_LABEL = {Verdict.PASS: "PASS ", Verdict.BLOCK: "BLOCK", Verdict.ERROR: "ERROR"}


class TextReporter:
    """Human-readable report; colour only when asked (the CLI asks when stdout is a terminal)."""

    def __init__(self, *, color: bool = False, width: int = 100) -> None:
        self.color = color
        self.width = width

    def render(self, report: ScanReport) -> str:
        lines = [line for file in report.files for line in _file_lines(file)]
        lines.extend(_not_scanned_lines(report))
        lines.append(_summary(report))
        if not self.color:
            return "".join(f"{line.plain}\n" for line in lines)
        from rich.console import Console
        from rich.text import Text as RichText

        buffer = io.StringIO()
        console = Console(
            file=buffer,
            force_terminal=True,
            color_system="standard",
            width=self.width,
            highlight=False,
            emoji=False,
            markup=False,
            soft_wrap=True,
        )
        for line in lines:
            rich_line = RichText()
            for text, style in line.parts:
                rich_line.append(text, style=style or None)
            console.print(rich_line)
        return buffer.getvalue()


def _file_lines(file: FileReport) -> list[Text]:
    head = Text()
    head.append(_LABEL[file.verdict], style=_VERDICT_STYLE[file.verdict])
    head.append("  ")
    head.append(printable(file.path), style="bold")
    facts = [f for f in (file.format, _size(file.size)) if f]
    if file.sha256:
        facts.append(f"sha256 {file.sha256}")
    if facts:
        head.append(f"  ({', '.join(facts)})", style="dim")
    lines = [head]
    if file.error:
        lines.append(Text("  error: ", style="magenta").append(printable(file.error), style=""))
    ordered = sorted(file.findings, key=lambda f: (-f.severity, f.member or "", f.offset or 0))
    for finding in ordered:
        lines.extend(_finding_lines(finding))
    lines.extend(
        Text("  not checked: ", style="yellow").append(printable(reason), style="")
        for reason in file.not_checked
    )
    return lines


def _finding_lines(finding: Finding) -> list[Text]:
    first = Text("  ")
    first.append(f"{finding.severity.name:<8}", style=_SEVERITY_STYLE[finding.severity])
    first.append(f" {printable(finding.rule_id)}", style="bold")
    where = location(finding.member, finding.offset)
    if where:
        first.append(f"  {printable(where)}", style="dim")
    if finding.global_name:
        first.append(f"  {printable(finding.global_name)}", style="bold")
    lines = [first, Text("           " + printable(finding.message))]
    if finding.call:
        lines.append(Text("           would call: ", style="dim").append(
            printable(finding.call), style="bold yellow"))
    return lines


_LISTED = 20
"""Paths listed per kind of file not scanned; beyond it, a count."""


def _not_scanned_lines(report: ScanReport) -> list[Text]:
    """Files left out by patterns and subfolders not opened, by name: nothing is dropped unsaid."""
    lines: list[Text] = []
    for label, paths in (("ignored:", report.ignored), ("not opened:", report.unopened)):
        lines.extend(Text(label, "yellow").append(f" {printable(p)}") for p in paths[:_LISTED])
        if len(paths) > _LISTED:
            lines.append(Text(label, "yellow").append(f" ... and {len(paths) - _LISTED} more"))
    return lines


def _summary(report: ScanReport) -> Text:
    counts = {v: sum(f.verdict is v for f in report.files) for v in Verdict}
    n = len(report.files)
    text = Text()
    text.append(f"{n} file{'s' if n != 1 else ''}{' scanned' if report.skipped else ''}: ")
    text.append(f"{counts[Verdict.PASS]} passed, ")
    text.append(f"{counts[Verdict.BLOCK]} blocked, ")
    text.append(f"{counts[Verdict.ERROR]} could not be scanned")
    if report.skipped:
        text.append(f"; {len(report.skipped)} skipped as not model artifacts")
    if report.ignored:
        text.append(f"; {len(report.ignored)} ignored by pattern")
    text.append(" — verdict: ")
    text.append(report.verdict.value.upper(), style=_VERDICT_STYLE[report.verdict])
    text.append(f" (blocking at {report.fail_on.name.lower()} and above)", style="dim")
    return text


def _size(size: int | None) -> str | None:
    if size is None:
        return None
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return None  # pragma: no cover - the loop always returns
