"""The static scanner: walk every pickle in a container, judge its imports, never execute.

    report = scan("GPEN-BFR-2048.pth")                 # one file or a directory
    report = scan_paths(["a.pt", "models/"], recursive=True, jobs=4)
    file_report = scan_source(src)                     # the gate: same mapping it hashes

The entry points live in `gpenguard.scan.api`; they are imported lazily here because the
container readers import this package's `findings` module, and an eager import would cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gpenguard.scan.findings import FileReport, Finding, Rule, ScanReport, Severity, Verdict

if TYPE_CHECKING:
    from gpenguard.formats.container import Limits
    from gpenguard.formats.source import Source
    from gpenguard.policy import Policy

__all__ = [
    "FileReport",
    "Finding",
    "Rule",
    "ScanReport",
    "Severity",
    "Verdict",
    "scan",
    "scan_paths",
    "scan_source",
]


def scan(
    path: str | Path, *, policy: Policy | None = None, limits: Limits | None = None
) -> ScanReport:
    """Scan one file, or every file under a directory (recursively)."""
    from gpenguard.scan.api import scan as _scan

    return _scan(path, policy=policy, limits=limits)


def scan_source(
    source: Source, *, policy: Policy | None = None, limits: Limits | None = None
) -> FileReport:
    """Scan bytes already mapped by the caller (the gate hashes the same mapping)."""
    from gpenguard.scan.api import scan_source as _scan_source

    return _scan_source(source, policy=policy, limits=limits)


def scan_paths(
    paths: Sequence[str | Path],
    *,
    recursive: bool = False,
    policy: Policy | None = None,
    limits: Limits | None = None,
    jobs: int | None = None,
    on_file: Callable[[FileReport], None] | None = None,
) -> ScanReport:
    """Scan many files (in parallel when there are several); reports keep input order."""
    from gpenguard.scan.api import scan_paths as _scan_paths

    return _scan_paths(
        paths, recursive=recursive, policy=policy, limits=limits, jobs=jobs, on_file=on_file
    )
