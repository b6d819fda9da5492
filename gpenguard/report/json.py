"""The machine-readable report: a stable JSON document for scripts and CI.

The schema is `scan-report.schema.json` next to this module (JSON Schema 2020-12). Its
contract: ``schema_version`` is ``MAJOR.MINOR``; a minor bump only adds optional keys, a major
bump may remove or change them. Every key listed in the schema is always present (``null`` when
unknown), so consumers never need ``.get`` chains.
"""

from __future__ import annotations

import json
from typing import Any

from gpenguard.findings import FileReport, Finding, ScanReport, Verdict
from gpenguard.report.interface import exit_code_for

SCHEMA_VERSION = "1.1"  # 1.1: summary.skipped/ignored, not_scanned
SCHEMA_RESOURCE = "scan-report.schema.json"


class JsonReporter:
    """Pretty-printed JSON (``indent``) or one line (``indent=None``)."""

    def __init__(self, *, indent: int | None = 2) -> None:
        self.indent = indent

    def render(self, report: ScanReport) -> str:
        return json.dumps(report_to_dict(report), indent=self.indent, ensure_ascii=True) + "\n"


def report_to_dict(report: ScanReport) -> dict[str, Any]:
    """The document as plain data (what `render` serialises)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "gpenguard", "version": report.tool_version},
        "verdict": report.verdict.value,
        "exit_code": int(exit_code_for(report)),
        "fail_on": report.fail_on.name.lower(),
        "summary": {
            "files": len(report.files),
            **{v.value: sum(f.verdict is v for f in report.files) for v in Verdict},
            "skipped": len(report.skipped),
            "ignored": len(report.ignored),
        },
        "not_scanned": {
            "skipped": list(report.skipped),
            "ignored": list(report.ignored),
            "unopened": list(report.unopened),
        },
        "files": [_file(f) for f in report.files],
        "rules": [
            {
                "id": r.id,
                "name": r.name,
                "description": r.description,
                "default_severity": r.default_severity.name.lower(),
            }
            for r in report.rules
        ],
    }


def _file(file: FileReport) -> dict[str, Any]:
    worst = file.max_severity
    return {
        "path": file.path,
        "verdict": file.verdict.value,
        "format": file.format,
        "size": file.size,
        "sha256": file.sha256,
        "max_severity": worst.name.lower() if worst is not None else None,
        "error": file.error,
        "not_checked": list(file.not_checked),
        "globals_seen": list(file.globals_seen),
        "findings": [_finding(f) for f in file.findings],
    }


def _finding(finding: Finding) -> dict[str, Any]:
    return {
        "rule_id": finding.rule_id,
        "severity": finding.severity.name.lower(),
        "message": finding.message,
        "member": finding.member,
        "offset": finding.offset,
        "global": finding.global_name,
        "call": finding.call,
    }


def load_schema() -> dict[str, Any]:
    """The JSON Schema this reporter's output conforms to (shipped as package data)."""
    from importlib import resources

    text = resources.files("gpenguard.report").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
