"""The library API the CLI, the gate and the report helper rely on."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from gpenguard.formats import Limits, Source
from gpenguard.rules import RULES
from gpenguard.scan import Verdict, scan, scan_paths, scan_source
from tests.corpus import os_system_true


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    (root / "sub").mkdir(parents=True)
    torch.save({"w": torch.zeros(2)}, root / "a.pt")
    (root / "b.pkl").write_bytes(os_system_true(2))
    torch.save({"w": torch.ones(2)}, root / "sub" / "c.pt")
    return root


def test_directory_recursion(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    flat = scan_paths([root], jobs=1)
    assert [Path(f.path).name for f in flat.files] == ["a.pt", "b.pkl"]
    deep = scan_paths([root], recursive=True, jobs=1)
    assert [Path(f.path).name for f in deep.files] == ["a.pt", "b.pkl", "c.pt"]
    assert deep.verdict is Verdict.BLOCK
    assert scan(root).verdict is Verdict.BLOCK
    assert len(scan(root).files) == 3
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    assert len(scan(root).files) == 3  # directory links are not followed


def test_report_fields(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    report = scan(root / "a.pt")
    (f,) = report.files
    data = (root / "a.pt").read_bytes()
    assert f.sha256 == hashlib.sha256(data).hexdigest() and f.size == len(data)
    assert f.format == "torch-zip" and f.verdict is Verdict.PASS
    assert "torch._utils._rebuild_tensor_v2" in f.globals_seen
    assert report.rules == tuple(RULES.values()) and report.tool_version


def test_unreadable_and_unknown_files_are_errors_not_passes(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("just some text\n")
    report = scan_paths([tmp_path / "missing.pt", tmp_path / "notes.txt"], jobs=1)
    missing, text = report.files
    assert missing.verdict is Verdict.ERROR and missing.error == "no such file"
    assert (
        text.verdict is Verdict.ERROR
        and text.error is not None
        and "unrecognised content" in text.error
    )
    assert report.verdict is Verdict.ERROR


@pytest.mark.parametrize("recursive", [False, True])
def test_nothing_in_a_directory_is_dropped_unseen(tmp_path: Path, recursive: bool) -> None:
    root = _tree(tmp_path)
    os.mkfifo(root / "pipe.pt")  # scanning it must neither hang nor skip it
    (root / "dangling.pt").symlink_to(root / "gone.pt")
    (root / "loop.pt").symlink_to(root / "loop.pt")
    report = scan_paths([root], recursive=recursive, jobs=1)
    errors = {Path(f.path).name: f.error for f in report.files if f.verdict is Verdict.ERROR}
    assert errors == {
        "pipe.pt": "not a regular file",
        "dangling.pt": "no such file",
        "loop.pt": "cannot open: Too many levels of symbolic links",
    }
    assert report.verdict is Verdict.ERROR


def test_a_directory_that_cannot_be_listed_is_an_error_not_a_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "models"
    (root / "locked").mkdir(parents=True)
    torch.save({"w": torch.zeros(2)}, root / "a.pt")
    torch.save({"w": torch.zeros(2)}, root / "locked" / "b.pt")
    locked = str(root / "locked")
    real_scandir, real_listdir, real_open = os.scandir, os.listdir, os.open

    def deny(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(path: str | Path, *args: Any, **kwargs: Any) -> Any:
            if os.fspath(path) == locked:
                raise PermissionError(13, "Permission denied", locked)
            return real(path, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "scandir", deny(real_scandir))  # as if mode 000, run as non-root
    monkeypatch.setattr(os, "listdir", deny(real_listdir))
    monkeypatch.setattr(os, "open", deny(real_open))
    deep = scan_paths([root], recursive=True, jobs=1)
    assert [(Path(f.path).name, f.verdict, f.error) for f in deep.files] == [
        ("a.pt", Verdict.PASS, None),
        ("locked", Verdict.ERROR, "permission denied"),
    ]
    alone = scan_paths([root / "locked"], jobs=1)
    assert [(f.path, f.error) for f in alone.files] == [(locked, "permission denied")]


def test_a_path_that_cannot_be_stated_is_an_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hidden = str(tmp_path / "x" / "model.pt")  # as under a directory without search permission
    real_stat, real_open = os.stat, os.open

    def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if os.fspath(path) == hidden:
            raise PermissionError(13, "Permission denied", hidden)
        return real_stat(path, *args, **kwargs)

    def open_(path: Any, *args: Any, **kwargs: Any) -> Any:
        if os.fspath(path) == hidden:
            raise PermissionError(13, "Permission denied", hidden)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "open", open_)
    for report in (scan(hidden), scan_paths([hidden], recursive=True)):
        assert [(f.path, f.verdict, f.error) for f in report.files] == [
            (hidden, Verdict.ERROR, "permission denied")
        ]


def test_scan_source_uses_the_callers_mapping(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(os_system_true(4))
    with Source.open(path) as src:
        report = scan_source(src)
    assert report.verdict is Verdict.BLOCK and report.sha256 is None
    assert report.findings[-1].call == "posix.system('true')"


def test_limit_hit_blocks_and_says_not_checked(tmp_path: Path) -> None:
    torch.save({f"k{i}": torch.zeros(1) for i in range(50)}, tmp_path / "big.pt")
    report = scan_paths([tmp_path / "big.pt"], limits=Limits(max_opcodes=100), jobs=1)
    (f,) = report.files
    assert f.verdict is Verdict.BLOCK
    assert any(x.rule_id == "GG115" for x in f.findings)
    assert f.not_checked


def test_second_pickle_in_data_pkl_is_scanned(tmp_path: Path) -> None:
    path = tmp_path / "two.pkl"
    path.write_bytes(pickle.dumps([1], protocol=2) + os_system_true(2))
    (f,) = scan(path).files
    rules = {x.rule_id for x in f.findings}
    assert {"GG113", "GG100"} <= rules


def test_pickle_size_bound(tmp_path: Path) -> None:
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps(list(range(1000)), protocol=2))
    (f,) = scan_paths([path], limits=Limits(max_pickle_bytes=100), jobs=1).files
    assert f.verdict is Verdict.BLOCK and any("exceeds" in x.message for x in f.findings)
    assert f.not_checked


def test_unchecked_content_blocks_whatever_the_threshold(tmp_path: Path) -> None:
    from gpenguard.policy import Policy
    from gpenguard.scan import Severity

    torch.save({f"k{i}": torch.zeros(1) for i in range(50)}, tmp_path / "big.pt")
    lenient = Policy(fail_on=Severity.CRITICAL)
    (f,) = scan_paths(
        [tmp_path / "big.pt"], policy=lenient, limits=Limits(max_opcodes=100), jobs=1
    ).files
    assert f.verdict is Verdict.BLOCK and f.not_checked


def test_many_distinct_refused_imports_are_summarised(tmp_path: Path) -> None:
    from tests.corpus import P2, STOP, op_global

    body = b"".join(op_global(f"pkg{i}", "Thing") + b"0" for i in range(500))
    path = tmp_path / "many.pkl"
    path.write_bytes(P2 + body + b"N" + STOP)
    (f,) = scan(path).files
    imports = [x for x in f.findings if x.rule_id == "GG101"]
    assert len(imports) == 201 and "300 more refused imports" in imports[-1].message
    assert f.verdict is Verdict.BLOCK and len(f.globals_seen) == 500


def test_storage_records_checked_against_the_pickle(tmp_path: Path) -> None:
    import io
    import zipfile

    from tests.corpus import ZipEntry, build_zip

    buf = io.BytesIO()
    torch.save({"a": torch.zeros(4), "b": torch.ones(2, dtype=torch.int8)}, buf)
    zf = zipfile.ZipFile(buf)
    members = {n: zf.read(n) for n in zf.namelist()}
    assert scan_source(Source.from_bytes(buf.getvalue(), "ok.pt")).findings == ()

    def variant(**changes: bytes | None) -> set[str]:
        entries = dict(members)
        for key, value in changes.items():
            name = f"archive/data/{key.lstrip('k')}"
            if value is None:
                del entries[name]
            else:
                entries[name] = value
        data = build_zip([ZipEntry(n, d) for n, d in entries.items()])
        report = scan_source(Source.from_bytes(data, "v.pt"))
        return {f.message for f in report.findings if f.rule_id == "GG307"}

    assert any("lacks" in m for m in variant(k1=None))
    assert any("holds 8 bytes" in m for m in variant(k0=b"\0" * 8))
    assert any("no tensor refers" in m for m in variant(k7=b"hidden"))
