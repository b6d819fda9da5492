"""Outputs are replaced in one step or not at all, and never leave temp files behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpenguard.errors import InputError
from gpenguard.fileio import atomic_output, write_atomic


def test_replaces_the_file_with_plain_permissions(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_failure_inside_the_block_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as handle:
        handle.write(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_a_missing_folder_is_an_input_error_naming_the_file(tmp_path: Path) -> None:
    target = tmp_path / "nope" / "out.sig"
    with pytest.raises(InputError, match="cannot write") as info:
        write_atomic(target, b"x")
    assert info.value.path == str(target)


def test_a_link_is_written_through_not_replaced(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    write_atomic(link, b"through")
    assert link.is_symlink() and real.read_bytes() == b"through"
