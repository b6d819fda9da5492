"""The gate as a library: one read for every check, every reason reported, fail closed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gpenguard.findings import Verdict
from gpenguard.formats.source import Source
from gpenguard.gate import Outcome, fingerprint_source, verify
from gpenguard.policy import load_policy, with_overrides
from tests._gatekit import (
    MODEL_NAME,
    Evil,
    arch_of,
    build_world,
    save_checkpoint,
    tiny_state_dict,
)


def test_an_approved_pinned_file_passes_with_its_checklist(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    d = verify(w.model, registry=w.registry, trust_root=w.trust_root)
    assert d.verdict is Verdict.PASS, d.reasons
    assert d.artifact == f"{MODEL_NAME}@1.0"
    assert d.sha256 == w.entry["files"][0]["sha256"] and d.size == w.model.stat().st_size
    assert d.fingerprint == w.entry["architecture"]["fingerprint"]
    assert d.registry_signed_by == (w.registry_key.key_id,)
    outcomes = {c.name: c.outcome for c in d.checks}
    for name in ("registry", "registry entry", "status", "size", "sha256", "scan", "architecture"):
        assert outcomes[name] is Outcome.PASS, name


def test_fingerprint_from_the_file_equals_the_one_from_live_tensors(tmp_path: Path) -> None:
    sd = tiny_state_dict(6)
    p = save_checkpoint(tmp_path / "m.pth", sd)
    with Source.open(p) as src:
        fp = fingerprint_source(src)
    assert fp.digest == arch_of(sd)["fingerprint"]
    assert fp.element_count == sum(v.numel() for v in sd.values())
    assert fp.parameter_count == fp.element_count - 16  # conv.blur.kernel is a buffer


def test_every_reason_is_reported_not_only_the_first(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    # A different architecture, with a payload, under the approved name, while the entry is revoked.
    other = tiny_state_dict(8)
    other["payload"] = Evil()
    save_checkpoint(w.model, other)
    w.entry["status"] = "revoked"
    w.write()
    d = verify(w.model, registry=w.registry, trust_root=w.trust_root)
    assert d.verdict is Verdict.BLOCK
    failed = {c.name for c in d.checks if c.outcome is Outcome.FAIL}
    assert {"status", "scan"} <= failed
    assert any(r.startswith("status:") and "revoked" in r for r in d.reasons)
    assert any(r.startswith("scan:") for r in d.reasons)
    assert any(r.startswith("size:") or r.startswith("sha256:") for r in d.reasons)


def test_a_file_replaced_on_disk_during_the_check_is_blocked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = build_world(tmp_path)
    import gpenguard.gate as gate

    real = gate._scan

    def scan_then_swap(run: gate._Run, src: Source) -> None:
        real(run, src)
        swapped = w.model.with_suffix(".new")
        swapped.write_bytes(w.model.read_bytes())
        swapped.replace(w.model)  # same bytes, new inode: the path no longer names what was read

    monkeypatch.setattr(gate, "_scan", scan_then_swap)
    d = verify(w.model, registry=w.registry, trust_root=w.trust_root)
    assert d.verdict is Verdict.BLOCK
    assert any("changed on disk" in r for r in d.reasons)


def test_the_hash_covers_the_mapping_that_was_scanned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = build_world(tmp_path)
    import gpenguard.scan as scan_pkg

    seen: list[int] = []
    real = scan_pkg.scan_source

    def spy(source: Source, **kw: object) -> object:
        seen.append(id(source))
        return real(source, **kw)

    monkeypatch.setattr(scan_pkg, "scan_source", spy)
    opened: list[int] = []
    real_open = Source.open

    def spy_open(path: object) -> Source:
        s = real_open(path)  # type: ignore[arg-type]
        opened.append(id(s))
        return s

    monkeypatch.setattr(Source, "open", staticmethod(spy_open))
    verify(w.model, registry=w.registry)
    assert opened == seen, "the scan must read the one Source the gate opened and hashed"


def test_strict_without_an_audit_log_is_an_error_not_a_pass(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    d = verify(w.model, registry=w.registry, trust_root=w.trust_root, policy="strict")
    assert d.verdict is Verdict.ERROR
    assert "requires an audit log" in d.reasons[0]


def test_the_decision_is_written_to_the_audit_log(tmp_path: Path) -> None:
    w = build_world(tmp_path, artifact_signatures=1)
    log = tmp_path / "audit.jsonl"
    d = verify(w.model, registry=w.registry, trust_root=w.trust_root, policy="strict", audit_log=log)
    assert d.verdict is Verdict.PASS, d.reasons
    assert d.audit is not None and d.audit.seq == 1
    rec = json.loads(log.read_text())
    assert rec["verdict"] == "pass" and rec["policy"] == "strict" and rec["sha256"] == d.sha256
    assert rec["registry"] == {"name": "test-registry", "version": 1, "sha256": d.registry_sha256,
                               "path": str(w.registry)}
    assert rec["artifact"] == f"{MODEL_NAME}@1.0"


def test_an_unwritable_audit_log_turns_a_pass_into_an_error(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    not_a_file = tmp_path / "logdir"
    not_a_file.mkdir()  # even root cannot open a directory for writing
    d = verify(w.model, registry=w.registry, audit_log=not_a_file)
    assert d.verdict is Verdict.ERROR
    assert any(r.startswith("audit:") and "cannot open audit log" in r for r in d.reasons)
    d = verify(w.model, registry=w.registry, audit_log=f"{tmp_path}/a\0b.jsonl")
    assert d.verdict is Verdict.ERROR  # a path no file system can hold: still a decision, not a crash


def test_policy_overrides_and_deprecated_handling(tmp_path: Path) -> None:
    w = build_world(tmp_path, status="deprecated")
    d = verify(w.model, registry=w.registry)
    assert d.verdict is Verdict.PASS and any("deprecated" in x for x in d.warnings)
    strictish = with_overrides(load_policy("default"), allow_deprecated=False)
    d = verify(w.model, registry=w.registry, policy=strictish)
    assert d.verdict is Verdict.BLOCK and any("deprecated" in r for r in d.reasons)


def test_unpinned_entry_is_not_checked_under_default_and_blocks_under_require_pinned(tmp_path: Path) -> None:
    w = build_world(tmp_path, pinned=False)
    d = verify(w.model, registry=w.registry, name=MODEL_NAME)
    assert d.verdict is Verdict.PASS
    assert any(n.startswith("sha256:") for n in d.not_checked)
    pinned = with_overrides(load_policy("default"), require_pinned_sha256=True)
    d = verify(w.model, registry=w.registry, name=MODEL_NAME, policy=pinned)
    assert d.verdict is Verdict.BLOCK and any(r.startswith("sha256:") for r in d.reasons)


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    d = verify(tmp_path / "nope.pth", registry=w.registry)
    assert d.verdict is Verdict.ERROR and "no such file" in d.reasons[0]


def test_a_lookalike_named_like_the_shipped_gpen_entry_is_held_to_it(tmp_path: Path) -> None:
    # Default registry (the shipped one): a small checkpoint posing as GPEN-BFR-2048.pth is
    # matched by its file name and blocked on the architecture fingerprint, not waved through.
    fake = save_checkpoint(tmp_path / "GPEN-BFR-2048.pth", tiny_state_dict())
    d = verify(fake)
    assert d.verdict is Verdict.BLOCK, d.reasons
    assert d.artifact == "GPEN-BFR-2048@1"
    assert any(r.startswith("architecture:") and "71,294,769" in r for r in d.reasons)


def test_pin_edits_the_shipped_registry_text_in_place(tmp_path: Path) -> None:
    from gpenguard.pin import _edits
    from gpenguard.trust.registry import default_registry_path, find_artifact, parse_registry
    from gpenguard.trust.yamledit import apply_edits as _apply

    text = default_registry_path().read_text()
    new = _apply(text, _edits(text, "r.yaml", "GPEN-BFR-2048", "1", "GPEN-BFR-2048.pth", 285_253_831, "ab" * 32, 1))
    reg = parse_registry(new.encode(), "r.yaml")
    assert reg.version == 2
    art = find_artifact(reg, sha256="ab" * 32, size=285_253_831)
    assert art is not None and art.name == "GPEN-BFR-2048"
    # Only the pinned lines and the version changed; every comment survived.
    old_lines, new_lines = text.splitlines(), new.splitlines()
    assert [ln for ln in old_lines if ln.lstrip().startswith("#")] == [ln for ln in new_lines if ln.lstrip().startswith("#")]
    added = [ln for ln in new_lines if ln not in old_lines]
    assert added == ["  version: 2", "        size: 285253831", f'        sha256: "{"ab" * 32}"']


def test_pin_edits_a_flow_style_file_entry(tmp_path: Path) -> None:
    from gpenguard.pin import _edits
    from gpenguard.trust.registry import parse_registry
    from gpenguard.trust.yamledit import apply_edits as _apply

    text = (
        "schema_version: 1\nregistry: {name: r, version: 7, expires: 2099-01-01T00:00:00Z}\n"
        "artifacts:\n  - name: m\n    version: '1'\n    status: approved\n"
        "    files: [{path: m.pth, format: torch-zip}]  # one file\n"
    )
    new = _apply(text, _edits(text, "r.yaml", "m", "1", "m.pth", 10, "cd" * 32, 7))
    reg = parse_registry(new.encode(), "r.yaml")
    assert reg.version == 8
    assert reg.artifacts[0].files[0].size == 10 and reg.artifacts[0].files[0].sha256 == "cd" * 32
    assert new.endswith("# one file\n")


def test_progress_is_reported_and_the_package_exports_verify(tmp_path: Path) -> None:
    import gpenguard

    assert gpenguard.verify is verify
    w = build_world(tmp_path)
    seen: list[tuple[int, int]] = []
    d = verify(w.model, registry=w.registry, progress=lambda done, total: seen.append((done, total)))
    assert d.passed and seen and seen[-1] == (d.size, d.size)


def test_verify_source_catches_a_path_swapped_after_the_caller_opened_it(tmp_path: Path) -> None:
    from gpenguard.gate import verify_source

    w = build_world(tmp_path)
    with Source.open(w.model) as src:
        twin = w.model.with_suffix(".twin")
        twin.write_bytes(w.model.read_bytes())
        twin.replace(w.model)  # identical bytes, but the path now names another file
        d = verify_source(src, registry=w.registry)
    assert d.verdict is Verdict.BLOCK
    assert any("changed on disk" in r for r in d.reasons)


def test_verify_source_leaves_the_callers_mapping_open_for_the_next_stage(tmp_path: Path) -> None:
    from gpenguard.gate import verify_source

    w = build_world(tmp_path)
    with Source.open(w.model) as src:
        d = verify_source(src, registry=w.registry)
        assert d.passed, d.reasons
        assert bytes(src.buf[:2]) == b"PK"  # still mapped: convert reads these same bytes


def test_a_file_rewritten_in_place_during_the_check_is_blocked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = build_world(tmp_path)
    import gpenguard.gate as gate

    real = gate._scan

    def scan_then_touch(run: gate._Run, src: Source) -> None:
        real(run, src)
        with w.model.open("r+b") as f:  # same inode, same size, bytes rewritten in place
            f.seek(0)
            f.write(f.read(1))
        st = w.model.stat()
        os.utime(w.model, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))  # even with mtime forged

    monkeypatch.setattr(gate, "_scan", scan_then_touch)
    d = verify(w.model, registry=w.registry)
    assert d.verdict is Verdict.BLOCK
    assert any("changed on disk" in r for r in d.reasons)


def test_an_unexpected_failure_is_an_error_decision_and_is_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gpenguard.gate as gate

    w = build_world(tmp_path)

    def broken(run: gate._Run, src: Source) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(gate, "_scan", broken)
    log = tmp_path / "a.jsonl"
    d = verify(w.model, registry=w.registry, audit_log=log)
    assert d.verdict is Verdict.ERROR and "internal error: OSError" in d.reasons[-1]
    assert json.loads(log.read_text())["verdict"] == "error"


def test_a_legacy_format_checkpoint_is_fingerprinted_too(tmp_path: Path) -> None:
    import torch

    w = build_world(tmp_path, pinned=False)
    torch.save(tiny_state_dict(), w.model, _use_new_zipfile_serialization=False)
    d = verify(w.model, registry=w.registry, name=MODEL_NAME)
    assert d.passed, d.reasons
    assert d.scan is not None and d.scan.format == "torch-legacy"
    assert d.fingerprint == w.entry["architecture"]["fingerprint"]
