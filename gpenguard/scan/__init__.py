"""The static scanner: walk every pickle in a container, judge its imports, never execute.

    report = scan("GPEN-BFR-2048.pth")                 # one file or a directory
    report = scan_paths(["a.pt", "models/"], recursive=True, jobs=4)
    file_report = scan_source(src)                     # the gate: same mapping it hashes

The entry points live in `gpenguard.scan.api`; they are imported lazily so that `import
gpenguard.scan` for the value types does not pay for the readers and the allowlist. The pickle
machine lives below in `gpenguard.pickling`, the finding values and rule catalogue in
`gpenguard.findings` and `gpenguard.rules`: `formats/` uses them and never imports this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpenguard.findings import FileReport, Finding, Rule, ScanReport, Severity, Verdict

if TYPE_CHECKING:
    from gpenguard.scan.api import scan, scan_paths, scan_source

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

_LAZY = frozenset({"scan", "scan_paths", "scan_source"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from gpenguard.scan import api

        return getattr(api, name)
    raise AttributeError(f"module 'gpenguard.scan' has no attribute {name!r}")
