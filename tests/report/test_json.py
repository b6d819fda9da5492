from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from gpenguard.findings import ScanReport
from gpenguard.report.json import SCHEMA_VERSION, JsonReporter, load_schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_output_validates_against_the_shipped_schema(
    report: ScanReport, clean_report: ScanReport, validator: jsonschema.Draft202012Validator
) -> None:
    for r in (report, clean_report):
        validator.validate(json.loads(JsonReporter().render(r)))


def test_document_carries_what_ci_scripts_read(report: ScanReport) -> None:
    doc = json.loads(JsonReporter().render(report))
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["tool"] == {"name": "gpenguard", "version": "0.1.0"}
    assert (doc["verdict"], doc["exit_code"], doc["fail_on"]) == ("error", 2, "high")
    assert doc["summary"] == {"files": 3, "pass": 1, "block": 1, "error": 1, "skipped": 0, "ignored": 0}
    clean, poisoned, broken = doc["files"]
    assert clean["verdict"] == "pass" and clean["findings"] == [] and clean["sha256"] == "a" * 64
    assert poisoned["max_severity"] == "critical"
    assert poisoned["findings"][1] == {
        "rule_id": "GG101", "severity": "critical",
        "message": "Imports os.system, which runs a shell command.",
        "member": "archive/data.pkl", "offset": 311, "global": "os.system",
        "call": "os.system('true')",
    }
    assert broken["error"].startswith("not a checkpoint") and broken["format"] is None
    assert broken["not_checked"] == ["pickle opcodes: the container could not be read"]
    assert [r["id"] for r in doc["rules"]] == ["GG101", "GG102", "GG201"]


def test_schema_is_strict_enough_to_catch_drift(
    report: ScanReport, validator: jsonschema.Draft202012Validator
) -> None:
    doc = json.loads(JsonReporter().render(report))
    del doc["files"][1]["findings"][0]["offset"]
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(doc)
    doc = json.loads(JsonReporter().render(report))
    doc["files"][0]["verdict"] = "clean"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(doc)


def test_compact_output_is_one_line_and_always_ascii(tmp_path: Path, report: ScanReport) -> None:
    out = JsonReporter(indent=None).render(report)
    assert out.count("\n") == 1 and out.isascii()


def test_schema_ships_as_package_data() -> None:
    # NOTE: pyproject's package-data must list it, or an installed gpenguard cannot load it.
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    data = pyproject["tool"]["setuptools"]["package-data"]
    assert "*.schema.json" in data.get("gpenguard.report", [])
