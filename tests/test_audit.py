"""The audit log: chained appends, concurrent writers, and every kind of tampering caught."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpenguard.audit import AuditEvent, append, parse_records, verify_log
from gpenguard.errors import AuditError, InputError

ROOT = Path(__file__).resolve().parents[1]


def event(i: int) -> AuditEvent:
    return AuditEvent(
        file=f"/models/m{i}.pth", sha256=f"{i:064x}", size=1000 + i, policy="default",
        verdict="pass" if i % 2 else "block", reasons=() if i % 2 else (f"reason {i}",),
        registry_name="acme", registry_version=3, registry_sha256="ab" * 32,
    )


@pytest.fixture
def log(tmp_path: Path) -> Path:
    p = tmp_path / "audit.jsonl"
    for i in range(5):
        append(p, event(i))
    return p


def lines(p: Path) -> list[bytes]:
    return p.read_bytes().splitlines(keepends=True)


def test_a_fresh_log_verifies_and_records_hold_the_decision(log: Path) -> None:
    check = verify_log(log)
    assert check.ok and check.records == 5
    first = json.loads(lines(log)[0])
    assert first["seq"] == 1 and first["prev"] == "0" * 64
    assert first["file"] == "/models/m0.pth" and first["verdict"] == "block"
    assert first["reasons"] == ["reason 0"] and first["registry"]["version"] == 3
    assert first["time"].endswith("Z") and first["tool_version"]
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_append_returns_the_head_that_verify_accepts(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    append(p, event(1))
    rec = append(p, event(2))
    assert rec.seq == 2
    assert verify_log(p, expect_head=rec.line_sha256).ok
    assert verify_log(p).head == rec.line_sha256


def rewrite(p: Path, new_lines: list[bytes]) -> None:
    p.write_bytes(b"".join(new_lines))


def test_an_edited_record_is_named(log: Path) -> None:
    ls = lines(log)
    ls[2] = ls[2].replace(b'"verdict":"block"', b'"verdict":"pass"')
    rewrite(log, ls)
    check = verify_log(log)
    assert [p.line for p in check.problems] == [3, 4]
    assert "modified" in check.problems[0].message
    assert "chain broken" in check.problems[1].message


def test_an_edited_and_rehashed_record_breaks_the_next_link(log: Path) -> None:
    from gpenguard.audit import canonical, record_hash

    ls = lines(log)
    rec = json.loads(ls[2])
    assert rec["verdict"] == "block"
    rec["verdict"] = "pass"
    rec["hash"] = record_hash(rec)
    ls[2] = canonical(rec) + b"\n"
    rewrite(log, ls)
    check = verify_log(log)
    assert [p.line for p in check.problems] == [4]
    assert "chain broken" in check.problems[0].message


def test_a_removed_record_is_named(log: Path) -> None:
    ls = lines(log)
    del ls[1]
    rewrite(log, ls)
    problems = verify_log(log).problems
    assert {p.line for p in problems} == {2, 3, 4}
    assert "removed, inserted or reordered" in problems[0].message


def test_the_first_record_removed_is_caught(log: Path) -> None:
    rewrite(log, lines(log)[1:])
    assert verify_log(log).problems[0].line == 1


def test_reordered_records_are_named(log: Path) -> None:
    ls = lines(log)
    ls[1], ls[2] = ls[2], ls[1]
    rewrite(log, ls)
    assert {p.line for p in verify_log(log).problems} >= {2, 3}


def test_a_line_cut_midway_is_reported_as_torn_then_cut_away_by_the_next_append(log: Path) -> None:
    data = log.read_bytes()
    log.write_bytes(data[: len(data) - 40])
    check = verify_log(log)
    assert check.problems[-1].line == 5 and "truncated" in check.problems[-1].message
    assert check.torn_tail == len(data.splitlines()[-1]) - 39
    record = append(log, event(9))
    assert record.seq == 5  # the torn fifth line was never a record; its place is taken
    check = verify_log(log)
    assert check.ok and check.records == 5 and check.torn_tail == 0
    assert [n.line for n in check.notes] == [5] and "cut away a torn last line" in check.notes[0].message


def test_trailing_records_removed_are_caught_only_against_an_expected_head(log: Path) -> None:
    head = verify_log(log).head
    assert head is not None
    rewrite(log, lines(log)[:-2])
    assert verify_log(log).ok, "without an anchor, a whole-record cut at the end is invisible"
    check = verify_log(log, expect_head=head)
    assert not check.ok and "removed from its end" in check.problems[0].message


def test_an_injected_non_json_line_is_named(log: Path) -> None:
    ls = lines(log)
    ls.insert(3, b"hello\n")
    rewrite(log, ls)
    assert verify_log(log).problems[0].line == 4


def test_a_missing_log_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such audit log"):
        verify_log(tmp_path / "nope.jsonl")


def test_parse_records_marks_unreadable_lines(log: Path) -> None:
    ls = lines(log)
    ls.insert(1, b"{oops\n")
    rewrite(log, ls)
    recs = parse_records(log.read_bytes())
    assert [r is None for _, r in recs] == [False, True, False, False, False, False]



def test_json_nested_past_the_recursion_limit_is_an_unreadable_line_not_a_crash(log: Path) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    ls = lines(log)
    ls.insert(2, deep + b"\n")
    rewrite(log, ls)
    assert verify_log(log).problems[0].line == 3
    assert parse_records(log.read_bytes())[2] == (3, None)


def test_a_record_too_deep_to_serialise_again_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "a.jsonl"
    append(p, event(1))

    def too_deep(record: object) -> bytes:
        raise RecursionError
    monkeypatch.setattr("gpenguard.audit.canonical", too_deep)
    check = verify_log(p)
    assert [(x.line, x.message) for x in check.problems] == [(1, "not an audit record (nested too deeply)")]


def test_append_refuses_a_last_line_nested_too_deeply(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_bytes(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    with pytest.raises(AuditError, match="not a valid audit record"):
        append(p, event(1))


def test_a_path_no_file_system_can_hold_is_an_audit_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="embedded null byte"):
        append(f"{tmp_path}/a\0b.jsonl", event(1))

WRITER = """
import sys
from gpenguard.audit import AuditEvent, append
for i in range(int(sys.argv[2])):
    append(sys.argv[1], AuditEvent(file=f"w{sys.argv[3]}-{i}" + "x" * 3000, sha256=None, size=None,
                                   policy="default", verdict="pass"))
"""


def test_concurrent_writers_keep_one_valid_chain(tmp_path: Path) -> None:
    p = tmp_path / "shared.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(p), "25", str(w)], env=env)
        for w in range(4)
    ]
    assert all(proc.wait(timeout=60) == 0 for proc in procs)
    check = verify_log(p)
    assert check.ok, check.problems
    assert check.records == 100
    files = [json.loads(line)["file"] for line in lines(p)]
    assert len(set(files)) == 100  # every record whole, none lost or interleaved


def test_records_longer_than_the_tail_block_chain_correctly(tmp_path: Path) -> None:
    p = tmp_path / "big.jsonl"
    long = AuditEvent(file="/m.pth", sha256=None, size=None, policy="default", verdict="block",
                      reasons=tuple("x" * 1000 + str(i) for i in range(150)))  # ~150 KB per line
    for _ in range(3):
        append(p, long)
    check = verify_log(p)
    assert check.ok and check.records == 3


def test_a_whole_record_missing_only_its_newline_is_completed_not_cut(log: Path) -> None:
    """The writer died between the record and its newline: the record was whole, so it stays."""
    log.write_bytes(log.read_bytes()[:-1])
    assert verify_log(log).torn_tail > 0
    assert append(log, event(9)).seq == 6
    check = verify_log(log)
    assert check.ok and check.records == 6 and not check.notes


def test_a_failed_write_is_cut_back_to_the_previous_length(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.write takes 10 bytes, then the disk is full: the 10 bytes must not stay behind."""
    import errno

    import gpenguard.audit as audit

    before = log.read_bytes()
    calls = {"n": 0}
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audit.os, "write", full_disk)
    with pytest.raises(AuditError, match="No space left on device; the partial record was cut away"):
        append(log, event(9))
    monkeypatch.undo()
    assert log.read_bytes() == before
    assert append(log, event(10)).seq == 6
