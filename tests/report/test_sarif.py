from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gpenguard.findings import FileReport, Finding, ScanReport, Severity, Verdict
from gpenguard.report.sarif import SarifReporter
from tests.report.conftest import make_report


def _sarif(report: ScanReport, root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(SarifReporter(root=root).render(report))
    return doc


def test_validates_against_the_official_sarif_2_1_0_schema(
    tmp_path: Path, sarif_schema: dict[str, Any]
) -> None:
    validator = jsonschema.Draft4Validator(sarif_schema)
    for fail_on in Severity:
        validator.validate(_sarif(make_report(tmp_path, fail_on=fail_on), tmp_path))
    validator.validate(_sarif(ScanReport(files=()), tmp_path))


def test_the_schema_check_would_catch_a_broken_log(tmp_path: Path, sarif_schema: dict[str, Any]) -> None:
    doc = _sarif(make_report(tmp_path), tmp_path)
    doc["runs"][0]["results"][0]["level"] = "critical"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(sarif_schema).validate(doc)


def test_driver_lists_every_rule_a_result_cites_with_github_metadata(tmp_path: Path) -> None:
    run = _sarif(make_report(tmp_path), tmp_path)["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "gpenguard" and driver["version"] == "0.1.0"
    assert driver["informationUri"].startswith("https://")
    rules = driver["rules"]
    ids = [r["id"] for r in rules]
    assert ids == ["GG101", "GG102", "GG201", "scan-error"]
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
    dangerous = rules[0]
    assert dangerous["shortDescription"]["text"] == "The pickle imports a callable that can run code"
    assert dangerous["help"]["text"] and dangerous["properties"]["security-severity"] == "9.8"
    assert dangerous["properties"]["problem.severity"] == "error"
    assert "security" in dangerous["properties"]["tags"]
    assert rules[2]["properties"]["security-severity"] == "5.5"


def test_results_point_at_the_file_member_offset_and_global(tmp_path: Path) -> None:
    run = _sarif(make_report(tmp_path), tmp_path)["runs"][0]
    result = next(r for r in run["results"] if r["ruleId"] == "GG101")
    assert result["level"] == "error"
    assert "os.system('true')" in result["message"]["text"]
    physical = result["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == "models/sub%20dir/poisoned.pth"
    assert physical["artifactLocation"]["uriBaseId"] == "%SRCROOT%"
    assert physical["region"]["startLine"] == 1
    logical = {ll["fullyQualifiedName"] for ll in result["locations"][0]["logicalLocations"]}
    assert logical == {"archive/data.pkl@311", "os.system"}
    assert result["properties"]["offset"] == 311 and result["properties"]["member"] == "archive/data.pkl"
    artifact = run["artifacts"][physical["artifactLocation"]["index"]]
    assert artifact["hashes"]["sha-256"] == "0123456789abcdef" * 4 and artifact["length"] == 4096
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.as_uri() + "/"


def test_level_follows_the_gate_threshold(tmp_path: Path) -> None:
    def levels(fail_on: Severity) -> dict[str, str]:
        run = _sarif(make_report(tmp_path, fail_on=fail_on), tmp_path)["runs"][0]
        return {r["ruleId"]: r["level"] for r in run["results"]}

    assert levels(Severity.HIGH) == {"GG101": "error", "GG201": "warning", "scan-error": "error"}
    assert levels(Severity.MEDIUM)["GG201"] == "error"


def test_unscannable_file_is_an_error_result_and_the_run_records_exit_2(tmp_path: Path) -> None:
    run = _sarif(make_report(tmp_path), tmp_path)["runs"][0]
    error = next(r for r in run["results"] if r["ruleId"] == "scan-error")
    assert "unknown magic bytes" in error["message"]["text"]
    assert error["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "models/broken.bin"
    invocation = run["invocations"][0]
    assert invocation["exitCode"] == 2 and invocation["executionSuccessful"] is False
    notes = invocation["toolExecutionNotifications"]
    assert len(notes) == 1 and "not checked" in notes[0]["message"]["text"]


def test_clean_run_has_no_results_and_exit_0(tmp_path: Path) -> None:
    report = make_report(tmp_path)
    run = _sarif(ScanReport(files=report.files[:1], tool_version="0.1.0"), tmp_path)["runs"][0]
    assert run["results"] == []
    assert run["invocations"][0] == {
        "executionSuccessful": True, "exitCode": 0,
        "exitCodeDescription": "pass: every file may be used",
    }


def test_fingerprints_are_stable_across_runs_and_distinct_per_finding(tmp_path: Path) -> None:
    first = _sarif(make_report(tmp_path), tmp_path)["runs"][0]["results"]
    again = _sarif(make_report(tmp_path), tmp_path)["runs"][0]["results"]
    prints = [r["partialFingerprints"]["gpenguard/v1"] for r in first]
    assert prints == [r["partialFingerprints"]["gpenguard/v1"] for r in again]
    assert len(set(prints)) == len(prints)


def test_paths_outside_root_become_absolute_file_uris(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "m.pth"
    finding = Finding("GG101", Severity.CRITICAL, "m", str(outside), global_name="os.system")
    report = ScanReport(files=(FileReport(str(outside), Verdict.BLOCK, findings=(finding,)),))
    run = _sarif(report, tmp_path / "repo")["runs"][0]
    location = run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert location["uri"] == outside.as_uri() and "uriBaseId" not in location
    # A rule the report did not list still gets a descriptor, so ruleIndex stays valid.
    assert run["tool"]["driver"]["rules"][0]["id"] == "GG101"


def test_relative_input_paths_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    report = ScanReport(files=(FileReport("models/a.pth", Verdict.PASS),))
    run = _sarif(report, tmp_path)["runs"][0]
    assert run["artifacts"][0]["location"]["uri"] == "models/a.pth"
