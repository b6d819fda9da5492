"""Output formats for scan reports: one module per format, chosen by `ReportFormat`.

Adding a format takes one module with a `Reporter`, one enum member, and one branch in
`ReportFormat.to_reporter` (mypy's `assert_never` and a test fail if the branch is missing).
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import assert_never

from gpenguard.report.interface import Reporter, exit_code_for
from gpenguard.report.json import JsonReporter
from gpenguard.report.sarif import SarifReporter
from gpenguard.report.text import TextReporter

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
            return TextReporter(color=color)
        if self is ReportFormat.JSON:
            return JsonReporter()
        if self is ReportFormat.SARIF:
            return SarifReporter(root=root)
        assert_never(self)
