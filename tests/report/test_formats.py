from __future__ import annotations

from pathlib import Path

import pytest

from gpenguard.findings import ScanReport
from gpenguard.report import JsonReporter, ReportFormat, SarifReporter, TextReporter


@pytest.mark.parametrize("fmt", list(ReportFormat))
def test_every_format_has_a_reporter_that_renders(fmt: ReportFormat, report: ScanReport) -> None:
    out = fmt.to_reporter().render(report)
    assert out.endswith("\n") and "poisoned.pth" in out


def test_formats_map_to_their_reporters(tmp_path: Path) -> None:
    assert isinstance(ReportFormat.TEXT.to_reporter(color=True), TextReporter)
    assert isinstance(ReportFormat.JSON.to_reporter(), JsonReporter)
    sarif = ReportFormat.SARIF.to_reporter(root=tmp_path)
    assert isinstance(sarif, SarifReporter) and sarif.root == tmp_path


def test_an_unmapped_format_fails_loudly() -> None:
    """`to_reporter` ends in assert_never: a member without a branch cannot slip through."""
    with pytest.raises(AssertionError):
        ReportFormat.to_reporter("xml")  # type: ignore[arg-type]
