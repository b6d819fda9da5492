"""The second opinion: CPython's C unpickler over the judged bytes, with inert globals."""

from __future__ import annotations

import builtins
import importlib
import io
import pickle
import struct
import sys
import time
from pathlib import Path

import pytest

from gpenguard.formats import Source
from gpenguard.pickling import crosscheck
from gpenguard.pickling.walker import walk
from gpenguard.scan import Verdict, scan_source


def _frame(n: int) -> bytes:
    return b"\x95" + struct.pack("<Q", n)


PAYLOAD = b"cos\nsystem\n(S'true'\ntR0"


def straddle_hiding(payload: bytes = PAYLOAD) -> bytes:
    """A program whose import only a BytesIO-fed C unpickler runs.

    The frame holds BINUNICODE and one byte of its length. `loads` (and gpenguard's contiguous
    reading) takes the length 0x20 and swallows the payload as text; fed a BytesIO, CPython
    3.11 re-reads the whole length from the file after the frame (four zero bytes) and runs
    the payload as opcodes.
    """
    body = payload + b"N0" * ((31 - len(payload)) // 2)
    assert len(body) == 31
    return b"\x80\x04" + _frame(2) + b"X\x20" + b"\x00\x00\x00" + b"\x00" + body + b"0N."


def _jobs(data: bytes, *feeds: str) -> list[crosscheck.Job]:
    return [crosscheck.Job(memoryview(data), f) for f in feeds or crosscheck.FEEDS]


def test_the_frame_straddle_hides_an_import_from_the_contiguous_reading() -> None:
    data = straddle_hiding()
    res = walk(memoryview(data))
    assert res.complete and not res.imports  # what a contiguous reader judges
    by_feed = {r.feed: r for r in crosscheck.run(_jobs(data))}
    assert by_feed[crosscheck.BYTESIO].globals == (("os", "system"),)
    assert by_feed[crosscheck.BYTES].globals == ()
    problems = crosscheck.compare(res, by_feed[crosscheck.BYTESIO])
    assert any(p.global_name == "os.system" for p in problems)


def test_scan_blocks_the_frame_straddle_with_both_findings() -> None:
    report = scan_source(Source.from_bytes(straddle_hiding(), "straddle.pkl"))
    assert report.verdict is Verdict.BLOCK
    rules = {f.rule_id for f in report.findings}
    assert {"GG120", "GG121"} <= rules
    assert any(f.global_name == "os.system" for f in report.findings if f.rule_id == "GG121")


def test_agreeing_readings_add_nothing() -> None:
    data = pickle.dumps({"a": [1, 2.5, "x", b"y", (None, True)], "b": {3, 4}}, protocol=4)
    res = walk(memoryview(data))
    for reading in crosscheck.run(_jobs(data)):
        assert reading.error is None
        assert crosscheck.compare(res, reading) == []


def test_globals_and_persistent_ids_are_compared() -> None:
    data = (
        b"\x80\x02ctorch\nFloatStorage\nq\x00(X\x07\x00\x00\x00storageq\x01h\x00X\x01\x00\x00\x00"
        b"0X\x03\x00\x00\x00cpuK\x04tQ."
    )
    res = walk(memoryview(data))
    (reading,) = crosscheck.run(_jobs(data, crosscheck.BYTESIO))
    assert reading.globals == (("torch", "FloatStorage"),)
    assert reading.pids == (
        ["tuple", "storage", ["global", "torch", "FloatStorage"], "0", "cpu", 4],
    )
    assert crosscheck.compare(res, reading) == []
    other = crosscheck.Reading(
        reading.feed, (("torch", "HalfStorage"),), 1, reading.pids, reading.end
    )
    assert [p.rule_id for p in crosscheck.compare(res, other)] == ["GG121"]
    moved = crosscheck.Reading(
        reading.feed, reading.globals, 1, reading.pids, (reading.end or 0) + 1
    )
    assert "stops at offset" in crosscheck.compare(res, moved)[0].message


# -- inert: nothing the file names is ever imported ---------------------------------------------


@pytest.fixture
def tripwire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module that leaves a file behind if anything ever imports it."""
    marker = tmp_path / "imported"
    (tmp_path / "gg_tripwire_mod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef boom(*a): raise SystemExit(3)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


def _hostile_programs() -> list[bytes]:
    g = b"cgg_tripwire_mod\nboom\n"
    stack_global = b"\x80\x04\x8c\x0fgg_tripwire_mod\x8c\x04boom\x93)R."
    inst = b"(igg_tripwire_mod\nboom\n."
    newobj = b"\x80\x02" + g + b")\x81}b."
    build_on_class = g + b"}b."  # BUILD aimed at the imported object itself
    setitem_on_class = g + b"X\x01\x00\x00\x00kNs."
    append_on_class = g + b"Na."
    call_result_called = g + b")R)R(NNe."
    return [g + b")R.", stack_global, inst, newobj, build_on_class, setitem_on_class,
            append_on_class, call_result_called]  # fmt: skip


def test_no_global_is_imported_in_the_child(
    tripwire: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def refuse(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("gg_tripwire"):
            raise AssertionError("the cross-check imported a module named by the file")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", refuse)
    monkeypatch.setattr(importlib, "import_module", lambda *a, **k: refuse(*a, **k))
    for data in _hostile_programs():
        # an explicit deadline always takes the forked child
        for reading in crosscheck.run(_jobs(data), timeout=60):
            assert ("gg_tripwire_mod", "boom") in reading.globals, (data, reading)
            assert "AssertionError" not in (reading.error or "")
    assert not tripwire.exists()
    assert "gg_tripwire_mod" not in sys.modules


def test_no_global_is_imported_in_process(tripwire: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small programs run in-process under an address-space cap: no fork to hide behind.
    monkeypatch.delattr(crosscheck.os, "fork")
    for data in _hostile_programs():
        for reading in crosscheck.run(_jobs(data)):
            assert ("gg_tripwire_mod", "boom") in reading.globals
    assert not tripwire.exists()
    assert "gg_tripwire_mod" not in sys.modules


# -- bounded ----------------------------------------------------------------------------------


@pytest.mark.parametrize("forked", [False, True], ids=["in-process", "child"])
def test_a_huge_memo_index_is_refused_within_the_memory_bound(forked: bool) -> None:
    # C sizes its memo table by the index and clears every slot: 64 GiB for this one.
    data = b"\x80\x02N" + b"r" + struct.pack("<I", 0xFFFFFFF0) + b"."
    t0 = time.monotonic()
    (reading,) = crosscheck.run(_jobs(data, crosscheck.BYTESIO), timeout=60 if forked else None)
    assert time.monotonic() - t0 < 20
    assert reading.error is not None and "Memory" in reading.error
    report = scan_source(Source.from_bytes(data, "memo.pkl"))
    assert report.verdict is Verdict.BLOCK
    assert {"GG119", "GG121"} <= {f.rule_id for f in report.findings}


def test_a_quadratic_program_is_killed_at_the_deadline() -> None:
    # Integers equal modulo 2**61 - 1 share a hash: inserting n of them into a dict is O(n^2).
    n = 60_000
    pairs = b"".join(
        b"\x8a\x10" + (i * (2**61 - 1)).to_bytes(16, "little", signed=True) + b"N"
        for i in range(1, n)
    )
    data = b"\x80\x02}(" + pairs + b"u."
    res = walk(memoryview(data))
    assert res.complete  # linear for the walker
    t0 = time.monotonic()
    with pytest.raises(crosscheck.CrossCheckError, match="did not finish"):
        crosscheck.run(_jobs(data, crosscheck.BYTESIO), timeout=0.5)
    assert time.monotonic() - t0 < 10


def test_feeds_follow_frames() -> None:
    plain = walk(memoryview(pickle.dumps([1, 2], protocol=2)))
    framed = walk(memoryview(pickle.dumps([1, 2], protocol=4)))
    assert crosscheck.feeds_for(crosscheck.FILE, plain) == (crosscheck.FILE,)
    assert set(crosscheck.feeds_for(crosscheck.FILE, framed)) == set(crosscheck.FEEDS)


def test_legacy_stream_is_fed_as_a_file(tmp_path: Path) -> None:
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.arange(4.0)}, buf, _use_new_zipfile_serialization=False)
    report = scan_source(Source.from_bytes(buf.getvalue(), "legacy.pt"))
    assert report.verdict is Verdict.PASS, report.findings
