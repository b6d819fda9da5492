"""Values the scanner produces: severities, findings, per-file and overall reports.

These are shared by every stage that renders or decides on a scan (report/, gate.py), so they
are plain frozen data with no behaviour beyond ordering and summarising.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum


class Severity(IntEnum):
    """Ordered so that ``max()`` over findings gives a report's severity."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        """Read a severity name case-insensitively (CLI options, policy files)."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in cls)
            raise ValueError(f"unknown severity {text!r} (expected one of: {names})") from None


class Verdict(StrEnum):
    """What a user may do with a file: use it, not use it, or we could not tell (also not use)."""

    PASS = "pass"
    BLOCK = "block"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule a finding can cite; SARIF lists these under the tool driver."""

    id: str
    name: str
    description: str
    default_severity: Severity


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason to distrust a file, located precisely enough to check by hand."""

    rule_id: str
    severity: Severity
    message: str
    path: str
    """The file on disk (for nested archives: the outermost file)."""
    member: str | None = None
    """Archive member (``archive/data.pkl``; nested: ``outer.zip!inner.pth!archive/data.pkl``)."""
    offset: int | None = None
    """Byte offset of the opcode or record, inside `member` when set, else inside the file."""
    global_name: str | None = None
    """The imported callable, as ``module.qualname``, when the finding is about an import."""
    call: str | None = None
    """The call the pickle would make, in Python syntax, when it can be reconstructed."""


@dataclass(frozen=True, slots=True)
class FileReport:
    """Everything the scanner concluded about one file."""

    path: str
    verdict: Verdict
    format: str | None = None
    size: int | None = None
    sha256: str | None = None
    findings: tuple[Finding, ...] = ()
    error: str | None = None
    """Set when verdict is ERROR: why the file could not be scanned."""
    not_checked: tuple[str, ...] = ()
    """Checks that could not run on this file, each with its reason; never silently dropped."""
    globals_seen: tuple[str, ...] = ()
    """Every import the pickles make, allowed or not, for people auditing the allowlist."""

    @property
    def max_severity(self) -> Severity | None:
        """The worst finding's severity, or None for a file without findings."""
        return max((f.severity for f in self.findings), default=None)


@dataclass(frozen=True, slots=True)
class ScanReport:
    """The result of one scan invocation over one or more files."""

    files: tuple[FileReport, ...]
    tool_version: str = ""
    fail_on: Severity = Severity.HIGH
    rules: tuple[Rule, ...] = field(default=())
    skipped: tuple[str, ...] = ()
    """Files found under a directory and judged by content not to be model artifacts."""
    ignored: tuple[str, ...] = ()
    """Files left out by --include/--exclude or an ignore file."""
    unopened: tuple[str, ...] = ()
    """Subdirectories not descended into (--no-recursive, .git)."""

    @property
    def verdict(self) -> Verdict:
        """ERROR beats BLOCK beats PASS: any file we could not scan fails the whole run."""
        verdicts = {f.verdict for f in self.files}
        if Verdict.ERROR in verdicts:
            return Verdict.ERROR
        if Verdict.BLOCK in verdicts:
            return Verdict.BLOCK
        return Verdict.PASS
