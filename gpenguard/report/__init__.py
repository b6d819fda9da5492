"""Output formats for scan reports: one module per format, chosen by `ReportFormat`.

Adding a format takes one module with a `Reporter`, one enum member, and one branch in
`ReportFormat.to_reporter` (mypy's `assert_never` and a test fail if the branch is missing).
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import TYPE_CHECKING, Any, assert_never

from gpenguard.report.interface import Reporter, exit_code_for

if TYPE_CHECKING:
    from gpenguard.report.json import JsonReporter
    from gpenguard.report.sarif import SarifReporter
    from gpenguard.report.text import TextReporter

# NOTE: each reporter is imported when asked for: `gpenguard scan` pays only for the one it
# renders (start-up is per-file time in a hook).
_LAZY = {"JsonReporter": "json", "SarifReporter": "sarif", "TextReporter": "text"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"gpenguard.report.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'gpenguard.report' has no attribute {name!r}")

__all__ = [
    "JsonReporter",
    "ReportFormat",
    "Reporter",
    "SarifReporter",
    "TextReporter",
    "exit_code_for",
]


class ReportFormat(StrEnum):
    """The ``--format`` choices."""

    TEXT = "text"
    JSON = "json"
    SARIF = "sarif"

    def to_reporter(
        self, *, color: bool = False, root: str | os.PathLike[str] | None = None
    ) -> Reporter:
        """The reporter for this format; `color` (text) and `root` (SARIF URIs) where they apply."""
        if self is ReportFormat.TEXT:
            from gpenguard.report.text import TextReporter

            return TextReporter(color=color)
        if self is ReportFormat.JSON:
            from gpenguard.report.json import JsonReporter

            return JsonReporter()
        if self is ReportFormat.SARIF:
            from gpenguard.report.sarif import SarifReporter

            return SarifReporter(root=root)
        assert_never(self)
