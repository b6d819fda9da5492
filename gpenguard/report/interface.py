"""What every output format implements, and the helpers they share.

A reporter turns one `ScanReport` into text; where that text goes (stdout, a file written
atomically) is the CLI's business. Reporters never print and never decide verdicts: they render
the verdicts the scanner reached.
"""

from __future__ import annotations

import re
from typing import Protocol

from gpenguard.errors import ExitCode
from gpenguard.findings import ScanReport, Verdict


class Reporter(Protocol):
    """One output format."""

    def render(self, report: ScanReport) -> str:
        """The whole document for `report`, ending in a newline."""
        ...


def exit_code_for(report: ScanReport) -> ExitCode:
    """The CLI's exit-code contract, also recorded in machine-readable reports."""
    return exit_code_of(report.verdict)


def exit_code_of(verdict: Verdict) -> ExitCode:
    """0 pass, 1 block, 2 error: one mapping for scan reports and gate decisions alike."""
    if verdict is Verdict.PASS:
        return ExitCode.PASS
    if verdict is Verdict.BLOCK:
        return ExitCode.BLOCKED
    return ExitCode.ERROR


# C0/C1 control characters, DEL, and the bidirectional overrides/isolates ("Trojan Source"):
# strings from a hostile pickle must not be able to move the cursor, recolour the terminal or
# reorder what a reviewer reads.
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every control or bidi character shown as a Python escape."""
    return _UNSAFE_CHARS.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def location(member: str | None, offset: int | None) -> str | None:
    """``member@offset`` (decimal, as ``python -m pickletools`` shows it), as far as known."""
    if member is None:
        return None if offset is None else f"offset {offset}"
    return member if offset is None else f"{member}@{offset}"
