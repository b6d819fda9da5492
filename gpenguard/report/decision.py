"""Render a gate decision (`gpenguard verify`): text for people, JSON for scripts, SARIF for CI.

Like the scan reporters these never print and never decide: they show the checklist, every
reason, warning and unchecked item the gate produced. Strings that may come from the checked
file or the registry pass through `printable` and are given to rich as plain text.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

from rich.console import Console
from rich.text import Text

from gpenguard import __version__
from gpenguard.errors import ExitCode
from gpenguard.findings import ScanReport, Severity, Verdict
from gpenguard.gate import GateDecision, Outcome
from gpenguard.report.interface import exit_code_of, printable
from gpenguard.report.json import report_to_dict
from gpenguard.report.sarif import SarifReporter

DECISION_SCHEMA_VERSION = "1.0"

_VERDICT_STYLE = {Verdict.PASS: "bold green", Verdict.BLOCK: "bold red", Verdict.ERROR: "bold magenta"}
_OUTCOME_STYLE = {
    Outcome.PASS: ("ok  ", "green"),
    Outcome.FAIL: ("FAIL", "bold red"),
    Outcome.WARN: ("warn", "yellow"),
    Outcome.NOT_CHECKED: ("n/c ", "magenta"),
}


def exit_code_for_decision(decision: GateDecision) -> ExitCode:
    """0 pass, 1 block, 2 error: the CLI contract."""
    return exit_code_of(decision.verdict)


def render_text(decision: GateDecision, *, color: bool = False, width: int = 100) -> str:
    """A checklist, then every reason, warning and unchecked item, then the verdict."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=color, no_color=not color,
                      color_system="standard" if color else None, width=width, highlight=False,
                      emoji=False, markup=False, soft_wrap=True)
    head = Text(printable(decision.path), style="bold")
    head.append(f"  (policy {printable(decision.policy)})", style="dim")
    console.print(head)
    for check in decision.checks:
        label, style = _OUTCOME_STYLE[check.outcome]
        line = Text("  ")
        line.append(label, style=style)
        line.append(f" {check.name:<18} ")
        line.append(printable(check.detail))
        console.print(line)
    for title, items, style in (("reasons", decision.reasons, "red"),
                                ("warnings", decision.warnings, "yellow"),
                                ("not checked", decision.not_checked, "magenta")):
        if items:
            console.print(Text(f"{title}:", style=style))
            for item in items:
                console.print(Text(f"  - {printable(item)}"))
    if decision.audit is not None:
        console.print(Text(f"audit: record {decision.audit.seq} appended to "
                           f"{printable(decision.audit_log or '')} (head {decision.audit.line_sha256})",
                           style="dim"))
    verdict = Text(decision.verdict.value.upper(), style=_VERDICT_STYLE[decision.verdict])
    summary = {Verdict.PASS: " the file may be used",
               Verdict.BLOCK: " do not use this file",
               Verdict.ERROR: " could not decide; the file must not be used"}[decision.verdict]
    verdict.append(summary)
    console.print(verdict)
    return buffer.getvalue()


def decision_to_dict(decision: GateDecision) -> dict[str, Any]:
    """The JSON document: every field of the decision, the scan report nested in report's form."""
    scan = None
    if decision.scan is not None:
        scan = report_to_dict(ScanReport(files=(decision.scan,), tool_version=__version__))["files"][0]
    return {
        "schema_version": DECISION_SCHEMA_VERSION,
        "tool": {"name": "gpenguard", "version": __version__},
        "path": decision.path,
        "verdict": decision.verdict.value,
        "exit_code": int(exit_code_for_decision(decision)),
        "policy": decision.policy,
        "reasons": list(decision.reasons),
        "warnings": list(decision.warnings),
        "not_checked": list(decision.not_checked),
        "checks": [{"name": c.name, "outcome": c.outcome.value, "detail": c.detail} for c in decision.checks],
        "sha256": decision.sha256,
        "size": decision.size,
        "artifact": decision.artifact,
        "artifact_status": decision.artifact_status,
        "fingerprint": decision.fingerprint,
        "registry": {
            "path": decision.registry_path,
            "name": decision.registry_name,
            "version": decision.registry_version,
            "sha256": decision.registry_sha256,
            "signed_by": list(decision.registry_signed_by),
        },
        "audit": None if decision.audit is None else {
            "log": decision.audit_log,
            "seq": decision.audit.seq,
            "head": decision.audit.line_sha256,
        },
        "scan": scan,
    }


def render_json(decision: GateDecision, *, indent: int | None = 2) -> str:
    """`decision_to_dict` serialised, ending in a newline."""
    return json.dumps(decision_to_dict(decision), indent=indent, ensure_ascii=True) + "\n"


VERIFY_RULE_PREFIX = "verify/"


def render_sarif(decision: GateDecision, *, root: str | os.PathLike[str] | None = None,
                 fail_on: Severity = Severity.HIGH) -> str:
    """The scan's SARIF run (report's reporter), plus one ``error`` result per failed gate check.

    Gate rules are named ``verify/<check>`` (``verify/sha256``, ``verify/architecture``...), so
    code scanning shows a tampered or unapproved file next to the pickle findings.
    """
    reporter = SarifReporter(root=root)
    files = (decision.scan,) if decision.scan is not None else ()
    log = reporter.to_dict(ScanReport(files=files, tool_version=__version__, fail_on=fail_on))
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    uri = reporter._uri(decision.path)  # same URI scheme as the scan results
    if not run["artifacts"]:
        run["artifacts"].append({"location": uri})
    failed = [c for c in decision.checks if c.outcome is Outcome.FAIL]
    for check in failed:
        rule_id = VERIFY_RULE_PREFIX + check.name.replace(" ", "-")
        ids = [r["id"] for r in driver["rules"]]
        if rule_id not in ids:
            driver["rules"].append({
                "id": rule_id,
                "name": "Verify" + "".join(w.capitalize() for w in check.name.split()),
                "shortDescription": {"text": f"gate check failed: {check.name}"},
                "fullDescription": {"text": f"The artifact failed the gate's {check.name} check "
                                            "against the signed weights registry."},
                "defaultConfiguration": {"level": "error"},
                "properties": {"tags": ["security", "supply-chain"], "security-severity": "8.0"},
            })
            ids.append(rule_id)
        run["results"].append({
            "ruleId": rule_id,
            "ruleIndex": ids.index(rule_id),
            "level": "error",
            "message": {"text": check.detail},
            "locations": [{"physicalLocation": {"artifactLocation": {**uri, "index": 0},
                                                "region": {"startLine": 1}}}],
        })
    code = exit_code_for_decision(decision)
    invocation = run["invocations"][0]
    invocation["exitCode"] = int(code)
    invocation["executionSuccessful"] = decision.verdict is not Verdict.ERROR
    invocation["exitCodeDescription"] = f"{decision.verdict.value}: " + ("; ".join(decision.reasons) or "every check passed")
    run["properties"].update(verdict=decision.verdict.value, policy=decision.policy,
                             artifact=decision.artifact, sha256=decision.sha256)
    return json.dumps(log, indent=2, ensure_ascii=True) + "\n"
