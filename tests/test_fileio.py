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


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["verify", "{ckpt}", "--policy", "{fifo}"], "cannot read policy"),
        (["verify", "{ckpt}", "--registry", "{fifo}"], "cannot read registry"),
        (["audit", "verify", "{fifo}"], "cannot read audit log"),
        (["sign", "{ckpt}", "--key", "{fifo}"], "cannot read key file"),
    ],
)
def test_a_fifo_given_as_a_config_file_is_refused_not_waited_on(
    tmp_path: Path, args: list[str], what: str
) -> None:
    import subprocess
    import sys

    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"\x80\x04K\x01.")  # a bare pickle of the int 1
    argv = [a.format(fifo=fifo, ckpt=ckpt) for a in args]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "gpenguard", *argv], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(root)},
                          check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{what}: not a regular file" in proc.stdout + proc.stderr
