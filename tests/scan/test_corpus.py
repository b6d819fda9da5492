"""Every bypass class is caught at the right severity and place; ordinary checkpoints pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpenguard.policy import Policy
from gpenguard.scan import Severity, Verdict, scan_paths
from gpenguard.scan.api import scan_file
from tests.corpus import CorpusItem

BYPASS_CLASSES_REQUIRED = {
    "reduce-os-system", "posix-alias", "nt-alias", "memo-stack-global", "memo-confusion",
    "inst-opcode", "obj-opcode", "ext-code", "builtins-getattr-chain", "operator-attrgetter",
    "operator-methodcaller", "functools-partial", "nested-zip", "non-data-pkl-member",
    "any-root-name", "zip-bad-crc", "zip-local-name-mismatch", "zip-utf8-flag", "legacy-format",
    "tar-format", "npy-object-array", "joblib-style", "trailing-pickle", "pickle-as-model.bin",
    "pickle-as-model.ckpt", "pickle-as-model", "torch-load-reentry", "runpy", "pty-spawn",
    "asyncio-subprocess", "pip-main", "pkgutil-resolve-name", "broken-pickle", "stack-global-computed",
    "polyglot-pickle-zip", "torchscript-archive", "newobj-ex", "cyclic-memo",
    *(f"protocol-{p}" for p in range(6)),
}  # fmt: skip


def test_corpus_covers_every_bypass_class(malicious: list[CorpusItem]) -> None:
    names = {i.name for i in malicious}
    assert names >= BYPASS_CLASSES_REQUIRED, BYPASS_CLASSES_REQUIRED - names
    assert len(names) == len(malicious), "item names are unique"


def test_every_malicious_item_is_blocked_with_its_finding(malicious: list[CorpusItem]) -> None:
    misses = []
    for item in malicious:
        report = scan_file(str(item.path))
        if item.expect_verdict == "error":
            if report.verdict is not Verdict.ERROR or not report.error:
                misses.append((item.name, report.verdict, []))
            continue
        rules = {f.rule_id for f in report.findings}
        if not set(item.also_rules) <= rules:
            misses.append((item.name, report.verdict, sorted(rules)))
        hits = [
            f
            for f in report.findings
            if f.rule_id == item.expect_rule
            and f.severity.name == item.expect_severity
            and (item.expect_global is None or f.global_name == item.expect_global)
            and (item.expect_member is None or f.member == item.expect_member)
            and f.offset is not None
        ]
        if report.verdict is not Verdict.BLOCK or not hits:
            misses.append(
                (
                    item.name,
                    report.verdict,
                    [(f.rule_id, f.member, f.global_name) for f in report.findings],
                )
            )
    assert not misses


def test_payload_call_is_rendered_in_python_syntax(malicious: list[CorpusItem]) -> None:
    item = next(i for i in malicious if i.name == "reduce-os-system")
    (hit,) = [f for f in scan_file(str(item.path)).findings if f.rule_id == "GG100"]
    assert hit.call == "posix.system('true')"
    assert hit.offset == 2  # the GLOBAL right after PROTO 2
    getattr_item = next(i for i in malicious if i.name == "builtins-getattr-chain")
    calls = {f.call for f in scan_file(str(getattr_item.path)).findings}
    assert "builtins.getattr(builtins.__import__('os'), 'system')('true')" in calls


def test_benign_corpus_passes_default_profile(benign: list[CorpusItem]) -> None:
    report = scan_paths([i.path for i in benign], jobs=1)
    bad = [
        (
            f.path,
            f.verdict,
            f.error,
            [(x.rule_id, x.global_name) for x in f.findings if x.severity >= Severity.HIGH],
        )
        for f in report.files
        if f.verdict is not Verdict.PASS
    ]
    assert not bad
    assert report.verdict is Verdict.PASS
    formats = {f.format for f in report.files}
    assert {"torch-zip", "torch-legacy", "safetensors", "npy", "npz"} <= formats


def test_strict_profile_refuses_non_plain_content(benign: list[CorpusItem]) -> None:
    strict = Policy(name="strict", scan_profile="strict")
    by_name = {i.name: i for i in benign}
    plain = scan_file(str(by_name["gpen-shaped"].path), strict)
    assert plain.verdict is Verdict.PASS
    for name in ("argparse-namespace", "numpy-values", "whole-nn-module", "builtin-collections"):
        report = scan_file(str(by_name[name].path), strict)
        assert report.verdict is Verdict.BLOCK, name
        assert {f.rule_id for f in report.findings} >= {"GG101"}, name


def test_fail_on_threshold_decides_verdict(tmp_path: Path) -> None:
    path = tmp_path / "memo.pkl"
    path.write_bytes(b"\x80\x02}q\x00Nq\x000.")  # a memo slot overwritten: MEDIUM (GG116)
    relaxed = scan_file(str(path))
    assert relaxed.verdict is Verdict.PASS
    assert sorted(f.rule_id for f in relaxed.findings) == ["GG116", "GG305"]
    assert scan_file(str(path), Policy(fail_on=Severity.MEDIUM)).verdict is Verdict.BLOCK


@pytest.mark.parametrize("jobs", [1, 2])
def test_scan_paths_parallel_matches_inline(
    malicious: list[CorpusItem], benign: list[CorpusItem], jobs: int
) -> None:
    paths = [i.path for i in malicious[:6]] + [i.path for i in benign[:4]]
    seen: list[str] = []
    report = scan_paths(paths, jobs=jobs, on_file=lambda r: seen.append(r.path))
    assert [f.path for f in report.files] == [str(p) for p in paths]
    assert sorted(seen) == sorted(str(p) for p in paths)
    assert [f.verdict for f in report.files] == [Verdict.BLOCK] * 6 + [Verdict.PASS] * 4
    assert all(f.sha256 is not None and len(f.sha256) == 64 and f.size for f in report.files)
