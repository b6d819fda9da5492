"""Policies load strictly: every mistake names the file and line; shipped ones stay in sync."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpenguard.errors import PolicyError
from gpenguard.findings import Severity
from gpenguard.policy import SHIPPED, load_policy, parse_policy

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policies_load_and_match_the_documented_copies(name: str) -> None:
    packaged = ROOT / "gpenguard" / "data" / "policies" / f"{name}.yaml"
    documented = ROOT / "policies" / f"{name}.yaml"
    assert packaged.read_bytes() == documented.read_bytes(), "policies/ and gpenguard/data/policies/ drifted"
    policy = load_policy(name)
    assert policy.name == name
    assert load_policy(documented) == load_policy(documented)  # deterministic


def test_shipped_policies_say_what_the_issue_asks() -> None:
    default, strict, ci = (load_policy(n) for n in ("default", "strict", "ci"))
    assert default.fail_on == Severity.HIGH and not default.require_registry_entry
    assert strict.require_signed_registry and strict.require_registry_entry
    assert strict.require_pinned_sha256 and strict.require_artifact_signatures
    assert strict.require_audit_log and strict.fail_on <= Severity.LOW
    assert ci.output_format == "sarif"


def test_every_field_is_documented_in_the_readme() -> None:
    readme = (ROOT / "policies" / "README.md").read_text()
    for key in ("fail_on", "profile", "allow", "deny", "registry", "trust_root",
                "require_registry_entry", "require_signed_registry", "require_pinned_sha256",
                "require_artifact_signatures", "require_architecture", "allow_deprecated",
                "log", "required", "format", "backend", "allow_gpu", "memory_bytes",
                "pids_limit", "cpus", "timeout_s", "seccomp", "min_nvidia_toolkit"):
        assert f"`{key}`" in readme, key


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path) -> None:
    p = write(tmp_path, "name: x\nverify:\n  require_signed_registry: true\n  require_signed_registry: false\n")
    with pytest.raises(PolicyError, match=r"p\.yaml:4: duplicate key 'require_signed_registry' \(first on line 3\)"):
        load_policy(p)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("name: x\nscan:\n  fail_on: high\n  fail_onn: low\n", 4, "unknown field scan.'fail_onn'"),
        ("name: x\nverfy: {}\n", 2, "unknown field 'verfy'"),
        ("name: x\nscan:\n  fail_on: severe\n", 3, "unknown severity"),
        ("name: x\nverify:\n  require_registry_entry: 'yes'\n", 3, "must be bool"),
        ("name: x\nsandbox:\n  pids_limit: true\n", 3, "must be int"),
        ("name: x\nsandbox:\n  cpus: -1\n", 3, "must be a finite positive number"),
        ("name: x\nsandbox:\n  cpus: .nan\n", 3, "must be a finite positive number"),
        ("name: x\nsandbox:\n  timeout_s: .inf\n", 3, "must be a finite positive number"),
        ('name: x\nverify:\n  registry: "a\\0b"\n', 3, "NUL character"),
        ('name: x\naudit:\n  log: "a\\0b"\n', 3, "NUL character"),
        ("name: x\noutput:\n  format: html\n", 3, "must be one of text, json, sarif"),
        ("name: x\nscan:\n  allow:\n    - {name: os.system}\n", 4, "non-empty reason"),
        ("name: x\nscan: {}\nverify: *a\n", 3, "aliases"),
        ("name: x\nscan: &a {}\n", 2, "anchors"),
        ("name: x\nscan: [1\n", 3, None),
        ("description: no name\n", 1, "needs a 'name'"),
        ("name: x\nscan: " + "[" * 100 + "]" * 100 + "\n", 2, "nesting deeper"),
    ],
)
def test_invalid_policies_name_file_line_and_reason(tmp_path: Path, text: str, line: int, message: str | None) -> None:
    p = write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_policy(p)
    assert str(info.value).startswith(f"{p}:{line}: ")
    if message:
        assert message in str(info.value)


def test_a_list_is_not_a_policy() -> None:
    with pytest.raises(PolicyError, match="must be a YAML mapping"):
        parse_policy("- 1\n", source="x.yaml")


def test_relative_paths_resolve_against_the_policy_folder(tmp_path: Path) -> None:
    p = write(tmp_path, "name: x\nverify:\n  trust_root: keys/root.yaml\naudit:\n  log: /var/log/a.jsonl\n")
    policy = load_policy(p)
    assert policy.trust_root == tmp_path.resolve() / "keys" / "root.yaml"
    assert policy.audit_log == Path("/var/log/a.jsonl")
    assert policy.source == str(p)


def test_unknown_name_or_missing_file_lists_the_shipped_ones(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="shipped policies: default, strict, ci"):
        load_policy("paranoid")
    with pytest.raises(PolicyError, match="is a directory"):
        load_policy(tmp_path)
