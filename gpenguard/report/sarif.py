"""SARIF 2.1.0 for GitHub code scanning and any other SARIF consumer.

Choices that matter to consumers:

* Paths are relative to `root` (the repository checkout in CI), with forward slashes and
  ``uriBaseId: %SRCROOT%``; GitHub matches alerts to files by exactly this. Files outside
  `root` get an absolute ``file://`` URI instead.
* A checkpoint is binary, so the location's text region is just line 1 (GitHub requires a
  line); the precise place (archive member and opcode byte offset inside it) and the imported
  global are logical locations, and also sit in the result's property bag.
* ``level`` follows the gate: ``error`` for findings at or above the run's fail-on threshold,
  so the annotations that say "error" are exactly the ones that blocked. ``security-severity``
  follows the finding's own severity, so GitHub's severity column stays meaningful.
* ``partialFingerprints`` are our own stable hash (rule, file, member, global, offset), so
  alerts survive re-runs without GitHub trying to hash lines of a binary file.
* A file that could not be scanned is a result too (rule ``scan-error``): fail closed shows.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import quote

from gpenguard.findings import FileReport, Finding, Rule, ScanReport, Severity, Verdict
from gpenguard.report.interface import exit_code_for, location

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
INFORMATION_URI = "https://github.com/gpenguard/gpenguard"
SRCROOT = "%SRCROOT%"

SCAN_ERROR_RULE = Rule(
    id="scan-error",
    name="ScanError",
    description="The file could not be scanned (unreadable, malformed, unknown format or a "
    "limit was hit). It is blocked: nothing that was not checked is trusted.",
    default_severity=Severity.HIGH,
)

# GitHub: over 9.0 critical, 7.0-8.9 high, 4.0-6.9 medium, 0.1-3.9 low.
_SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.8",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
}
_PROBLEM_SEVERITY = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "recommendation",
    Severity.INFO: "recommendation",
}
_EXIT_DESCRIPTION = {
    Verdict.PASS: "pass: every file may be used",
    Verdict.BLOCK: "blocked: at least one file has findings at or above the threshold",
    Verdict.ERROR: "error: at least one file could not be scanned",
}


class SarifReporter:
    """One SARIF log with one run; `root` is what result URIs are relative to."""

    def __init__(self, *, root: str | os.PathLike[str] | None = None, indent: int | None = 2):
        self.root = Path(root) if root is not None else Path.cwd()
        self.indent = indent

    def render(self, report: ScanReport) -> str:
        return json.dumps(self.to_dict(report), indent=self.indent, ensure_ascii=True) + "\n"

    def to_dict(self, report: ScanReport) -> dict[str, Any]:
        """The SARIF log as plain data (what `render` serialises)."""
        rules = _rules(report)
        index = {rule.id: i for i, rule in enumerate(rules)}
        artifacts = [self._artifact(f) for f in report.files]
        results: list[dict[str, Any]] = []
        notifications: list[dict[str, Any]] = []
        for i, file in enumerate(report.files):
            uri = artifacts[i]["location"]
            results.extend(
                self._result(finding, file, uri, i, index, report.fail_on)
                for finding in file.findings
            )
            if file.verdict is Verdict.ERROR:
                results.append(self._error_result(file, uri, i, index))
            notifications.extend(
                {
                    "level": "warning",
                    "message": {"text": f"{file.path}: not checked: {reason}"},
                    "locations": [{"physicalLocation": {"artifactLocation": {**uri, "index": i}}}],
                }
                for reason in file.not_checked
            )
        code = exit_code_for(report)
        invocation: dict[str, Any] = {
            "executionSuccessful": report.verdict is not Verdict.ERROR,
            "exitCode": int(code),
            "exitCodeDescription": _EXIT_DESCRIPTION[report.verdict],
        }
        if notifications:
            invocation["toolExecutionNotifications"] = notifications
        return {
            "$schema": SARIF_SCHEMA_URI,
            "version": SARIF_VERSION,
            "runs": [
                {
                    "tool": {
                        "driver": {
                            "name": "gpenguard",
                            "version": report.tool_version or "0",
                            "semanticVersion": report.tool_version or "0",
                            "informationUri": INFORMATION_URI,
                            "rules": [_descriptor(r, report.fail_on) for r in rules],
                        }
                    },
                    "invocations": [invocation],
                    "originalUriBaseIds": {SRCROOT: {"uri": self._root_uri()}},
                    "artifacts": artifacts,
                    "results": results,
                    "columnKind": "unicodeCodePoints",
                    "properties": {"verdict": report.verdict.value, "failOn": report.fail_on.name.lower()},
                }
            ],
        }

    def _root_uri(self) -> str:
        return Path(os.path.abspath(self.root)).as_uri().rstrip("/") + "/"  # noqa: PTH100

    def _uri(self, path: str) -> dict[str, Any]:
        # NOTE: abspath, not resolve: a symlinked checkpoint is reported where the user named it.
        absolute = Path(os.path.abspath(path))  # noqa: PTH100
        try:
            relative = absolute.relative_to(os.path.abspath(self.root))  # noqa: PTH100
        except ValueError:
            return {"uri": absolute.as_uri()}
        return {"uri": quote(PurePath(relative).as_posix(), safe="/", errors="surrogateescape"), "uriBaseId": SRCROOT}

    def _artifact(self, file: FileReport) -> dict[str, Any]:
        artifact: dict[str, Any] = {"location": self._uri(file.path)}
        if file.size is not None:
            artifact["length"] = file.size
        if file.sha256:
            artifact["hashes"] = {"sha-256": file.sha256}
        if file.format:
            artifact["properties"] = {"format": file.format}
        return artifact

    def _result(
        self,
        finding: Finding,
        file: FileReport,
        uri: dict[str, Any],
        artifact_index: int,
        rule_index: dict[str, int],
        fail_on: Severity,
    ) -> dict[str, Any]:
        text = finding.message
        if finding.call:
            text += f" Would call: {finding.call}"
        where = location(finding.member, finding.offset)
        logical: list[dict[str, Any]] = []
        if where:
            logical.append({"name": finding.member or file.path, "fullyQualifiedName": where,
                            "kind": "resource"})
        if finding.global_name:
            logical.append({"name": finding.global_name.rsplit(".", 1)[-1],
                            "fullyQualifiedName": finding.global_name, "kind": "function"})
        loc: dict[str, Any] = {
            "physicalLocation": {
                "artifactLocation": {**uri, "index": artifact_index},
                "region": {"startLine": 1},
            }
        }
        if logical:
            loc["logicalLocations"] = logical
        extra = {"member": finding.member, "offset": finding.offset,
                 "global": finding.global_name, "call": finding.call}
        props: dict[str, Any] = {"severity": finding.severity.name.lower()}
        props.update({k: v for k, v in extra.items() if v is not None})
        return {
            "ruleId": finding.rule_id,
            "ruleIndex": rule_index[finding.rule_id],
            "level": _level(finding.severity, fail_on),
            "message": {"text": text},
            "locations": [loc],
            "partialFingerprints": _fingerprints(
                finding.rule_id, uri["uri"], finding.member, finding.global_name, finding.offset
            ),
            "properties": props,
        }

    def _error_result(
        self, file: FileReport, uri: dict[str, Any], artifact_index: int, rule_index: dict[str, int]
    ) -> dict[str, Any]:
        rule = SCAN_ERROR_RULE
        return {
            "ruleId": rule.id,
            "ruleIndex": rule_index[rule.id],
            "level": "error",
            "message": {"text": f"Could not be scanned, so it is blocked: {file.error or 'unknown error'}"},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {**uri, "index": artifact_index},
                        "region": {"startLine": 1},
                    }
                }
            ],
            "partialFingerprints": _fingerprints(rule.id, uri["uri"], None, None, None),
        }


def _rules(report: ScanReport) -> list[Rule]:
    """The report's rules, plus any rule a finding cites that the report did not list."""
    rules = list(report.rules)
    known = {r.id for r in rules}
    for file in report.files:
        for finding in file.findings:
            if finding.rule_id not in known:
                known.add(finding.rule_id)
                rules.append(Rule(finding.rule_id, finding.rule_id, finding.message, finding.severity))
    if any(f.verdict is Verdict.ERROR for f in report.files) and SCAN_ERROR_RULE.id not in known:
        rules.append(SCAN_ERROR_RULE)
    return rules


def _descriptor(rule: Rule, fail_on: Severity) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "tags": ["security", "supply-chain", "pickle"],
        "problem.severity": _PROBLEM_SEVERITY[rule.default_severity],
        "precision": "high",
    }
    if rule.default_severity in _SECURITY_SEVERITY:
        properties["security-severity"] = _SECURITY_SEVERITY[rule.default_severity]
    short = rule.description.split(". ", 1)[0].rstrip(".")
    return {
        "id": rule.id,
        "name": _pascal(rule.name),
        "shortDescription": {"text": short},
        "fullDescription": {"text": rule.description},
        "help": {
            "text": f"{rule.description}\n\nSeverity: {rule.default_severity.name.lower()}. "
            "Do not load this file with pickle or torch.load; obtain the weights from a trusted "
            "source or convert a verified copy with `gpenguard convert`.",
            "markdown": f"{rule.description}\n\n**Severity:** {rule.default_severity.name.lower()}. "
            "Do not load this file with `pickle` or `torch.load`; obtain the weights from a "
            "trusted source, or convert a verified copy with `gpenguard convert`.",
        },
        "defaultConfiguration": {"level": _level(rule.default_severity, fail_on)},
        "properties": properties,
    }


def _level(severity: Severity, fail_on: Severity) -> str:
    if severity >= fail_on:
        return "error"
    return "warning" if severity >= Severity.MEDIUM else "note"


def _pascal(name: str) -> str:
    parts = [p for p in name.replace("_", "-").replace(" ", "-").split("-") if p]
    return "".join(p[:1].upper() + p[1:] for p in parts) or name


def _fingerprints(
    rule_id: str, uri: str, member: str | None, global_name: str | None, offset: int | None
) -> dict[str, str]:
    key = "\x1f".join((rule_id, uri, member or "", global_name or "", str(offset)))
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
    return {"gpenguard/v1": digest, "primaryLocationLineHash": f"{digest[:16]}:1"}
