"""Job files reach the sandbox from a neutral per-run folder (`runner/mounts.py`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gpenguard.errors import SandboxError
from gpenguard.runner import mounts
from gpenguard.runner.spec import HOST_IMAGE, Bind, SandboxSpec


def _spec(*binds: Bind) -> SandboxSpec:
    return SandboxSpec(
        image=HOST_IMAGE, command=("python",), user=(65534, 65534), binds=binds, tmpfs=(), env=(), gpus=(),
        memory_bytes=2**30, pids_limit=64, nano_cpus=10**9, timeout_s=10.0,
    )  # fmt: skip


def test_files_and_folders_are_staged_and_the_folder_is_removed(tmp_path: Path) -> None:
    secret_place = tmp_path / "cases" / "2024-117-alice"
    secret_place.mkdir(parents=True)
    weights = secret_place / "gpen.safetensors"
    weights.write_bytes(b"w" * 100)
    photos = secret_place / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(b"a")
    (photos / "sub").mkdir()
    (photos / "link.png").symlink_to(weights)
    os.mkfifo(photos / "fifo.png")
    out = tmp_path / "out"
    out.mkdir()
    spec = _spec(
        Bind(str(weights), "/weights/gpen.safetensors"),
        Bind(str(photos), "/in/0000-photos"),
        Bind(str(out), "/out", read_only=False),
    )
    with mounts.neutral_sources(spec) as staged:
        sources = [b.source for b in staged.binds]
        folder = Path(sources[0]).parent
        assert folder.name.startswith(mounts.PREFIX)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert sources[:2] == [str(folder / "weights-gpen.safetensors"), str(folder / "in-0000-photos")]
        assert all("alice" not in source for source in sources[:2])
        assert Path(sources[0]).read_bytes() == weights.read_bytes()
        assert Path(sources[0]).samefile(weights)  # a hard link: nothing copied
        # Only the folder's plain files: no link out of it, no FIFO, no subfolder.
        assert sorted(p.name for p in Path(sources[1]).iterdir()) == ["a.png"]
        assert sources[2] == str(out)  # the writable folder stays the publisher's
        assert [b.target for b in staged.binds] == [b.target for b in spec.binds]
    assert not folder.exists()


def test_a_file_that_cannot_be_linked_is_copied_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "face.png"
    source.write_bytes(b"pixels")

    def refuse(*_: object, **__: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(mounts.os, "link", refuse)
    with mounts.neutral_sources(_spec(Bind(str(source), "/in/0000-face.png"))) as staged:
        (bind,) = staged.binds
        assert Path(bind.source).read_bytes() == b"pixels"
        assert not Path(bind.source).samefile(source)
        assert stat.S_IMODE(Path(bind.source).stat().st_mode) == 0o444


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_anything_but_a_file_or_folder_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "face.png"
    if kind == "symlink":
        (tmp_path / "real.png").write_bytes(b"x")
        path.symlink_to(tmp_path / "real.png")
    else:
        os.mkfifo(path)  # O_NONBLOCK: refused at once, never a hang
    with pytest.raises(SandboxError), mounts.neutral_sources(_spec(Bind(str(path), "/in/0000-face.png"))):
        pass
