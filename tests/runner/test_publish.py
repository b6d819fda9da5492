"""The publisher's host side without a sandbox: names, targets, the archive reader, re-encoding,
placing files, and removing a staging folder a job made hostile."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from gpenguard.errors import InputError, SandboxError
from gpenguard.runner.publish import (
    PlannedImage,
    Staging,
    check_targets,
    failure_reason,
    output_names,
    publish,
    remove_tree,
    results_budget,
)


def _png(size: tuple[int, int] = (8, 8), mode: str = "RGB", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 77 if mode in {"L", "I;16"} else (200, 30, 90)).save(buffer, format="PNG", **options)
    return buffer.getvalue()


def _plan(out: Path, count: int = 1) -> tuple[PlannedImage, ...]:
    return tuple(
        PlannedImage(index=i, source=Path(f"/photos/p{i}.jpg"), sandbox_path=f"/in/0000-p{i}.jpg", target=out / f"p{i}.png", sizes=((8, 8),))
        for i in range(count)
    )


def _members(staging: Staging, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> None:
    with staging.results.open("wb") as handle, tarfile.open(fileobj=handle, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))


def test_names_come_from_the_inputs_and_collisions_are_deterministic() -> None:
    sources = [Path("/a/face.jpg"), Path("/b/face.png"), Path("/c/face-2.webp"), Path("/d/FACE.jpeg"), Path("/e/my photo.jpg")]
    names = output_names(sources)
    assert names == ["face.png", "face-3.png", "face-2.png", "FACE-4.png", "my photo.png"]
    assert output_names(sources) == names  # the same inputs, the same names


def test_existing_files_are_refused_up_front_unless_overwrite(tmp_path: Path) -> None:
    plan = _plan(tmp_path, 2)
    (tmp_path / "p1.png").write_bytes(b"the user's photo")
    with pytest.raises(InputError, match=r"already has p1\.png; restore never replaces") as caught:
        check_targets(plan, overwrite=False)
    assert caught.value.hint is not None and "--overwrite" in caught.value.hint
    check_targets(plan, overwrite=True)
    (tmp_path / "p0.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(InputError, match="not a plain file"):
        check_targets(plan, overwrite=True)


def _collect(tmp_path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], count: int = 1) -> dict[int, Path]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    plan = _plan(out, count)
    with Staging(out) as staging:
        _members(staging, members)
        staged = staging.collect(plan, budget=results_budget(plan))
        return {i: Path(p.read_bytes().hex()) for i, p in staged.items()}  # read before removal


def _typed(name: str, kind: bytes, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([("000000.png", _png()), ("000000.png", _png())], r"unexpected entry '000000\.png'"),
        ([("photo.png", _png())], r"unexpected entry 'photo\.png'"),
        ([("../000000.png", _png())], r"unexpected entry '\.\./000000\.png'"),
        ([_typed("000000.png", tarfile.SYMTYPE, linkname="/etc/passwd")], "a link"),
        ([_typed("000000.png", tarfile.LNKTYPE, linkname="x")], "a link"),
        ([_typed("000000.png", tarfile.DIRTYPE)], "a folder"),
        ([_typed("000000.png", tarfile.FIFOTYPE)], "a device or FIFO"),
        ([_typed("000000.png", tarfile.CHRTYPE, devmajor=1, devminor=3)], "a device or FIFO"),
        ([_typed("000000.png", tarfile.GNUTYPE_SPARSE)], "a sparse file"),
        ([("000000.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 400)], "not a readable PNG"),
        ([("000000.png", _png((8, 9)))], "a 8x9 result where 8x8 was due"),
        ([("000000.png", _png(mode="I;16"))], "mode 'I;16'"),
        ([("000000.png", _png(mode="P"))], "mode 'P'"),
    ],
)
def test_anything_but_the_expected_pngs_refuses_the_run(
    tmp_path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], why: str
) -> None:
    with pytest.raises(SandboxError, match=why) as caught:
        _collect(tmp_path, members)
    assert "nothing from it is published" in str(caught.value)
    assert list((tmp_path / "out").iterdir()) == []  # the staging folder went too


def test_a_header_claiming_a_gigabyte_is_never_read(tmp_path: Path) -> None:
    """A pax header or long name is read whole by tarfile: the reader refuses before allocating."""
    out = tmp_path / "out"
    out.mkdir()
    plan = _plan(out)
    huge = _typed("././@PaxHeader", tarfile.XHDTYPE, size=2**30).tobuf(format=tarfile.USTAR_FORMAT)
    with Staging(out) as staging:
        staging.results.write_bytes(huge + b"\x00" * 4096)
        with pytest.raises(SandboxError, match="a 1073741824-byte header or entry"):
            staging.collect(plan, budget=results_budget(plan))


def test_an_oversized_member_or_archive_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    plan = _plan(out)
    with Staging(out) as staging:
        _members(staging, [("000000.png", b"\x00" * (plan[0].max_bytes + 1))])
        with pytest.raises(SandboxError, match="more than a PNG of that size can be"):
            staging.collect(plan, budget=10 * plan[0].max_bytes)
        with pytest.raises(SandboxError, match=r"more than its 1000-byte budget"):
            staging.collect(plan, budget=1000)


def test_results_are_reencoded_without_any_chunk_of_the_jobs(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "planted")
    info.add_itxt("XML:com.adobe.xmp", "<x>planted</x>", zip=True)
    planted = _png(pnginfo=info, icc_profile=b"planted profile", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00")
    (staged,) = _collect(tmp_path, [("000000.png", planted)]).values()
    clean = bytes.fromhex(str(staged))
    assert b"planted" not in clean
    assert clean == _png()  # exactly what the host's encoder makes of those pixels


def test_publish_never_replaces_what_appeared_and_never_follows_a_link(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    plan = _plan(out, 3)
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not to be touched")
    with Staging(out) as staging:
        staged = {}
        for planned in plan:
            staged[planned.index] = staging.clean / planned.member
            staged[planned.index].write_bytes(_png())
        (out / "p0.png").write_bytes(b"appeared during the run")
        (out / "p1.png").symlink_to(outside)
        outputs, failures = publish(staged, plan, overwrite=False, failed={})
        assert outputs == (out / "p2.png",)
        assert [f.source.name for f in failures] == ["p0.jpg", "p1.jpg"]
        assert "appeared during the run" in failures[0].reason and "not a plain file" in failures[1].reason
        assert (out / "p0.png").read_bytes() == b"appeared during the run"
        assert outside.read_bytes() == b"not to be touched"
        outputs, failures = publish(staged, plan[:2], overwrite=True, failed={})
        assert outputs == (out / "p0.png",) and (out / "p0.png").read_bytes() == _png()
        assert outside.read_bytes() == b"not to be touched" and (out / "p1.png").is_symlink()


def test_missing_results_are_failures_with_the_workers_reason(tmp_path: Path) -> None:
    plan = _plan(tmp_path, 2)
    outputs, failures = publish({}, plan, overwrite=False, failed={1: failure_reason("cannot read image: \x1b[2Jbroken\n")})
    assert outputs == ()
    assert [str(f) for f in failures] == [
        "/photos/p0.jpg: the sandbox returned no result for it",
        "/photos/p1.jpg: cannot read image:  [2Jbroken ",
    ]
    assert len(failure_reason("x" * 10_000)) == 301


def _hostile_tree_removed(base: Path) -> None:
    outside = base / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (outside / "linked.txt").write_text("linked")
    outside.chmod(0o555)
    root = base / "staging"
    deep = root / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "locked.bin").write_bytes(b"x")
    (deep / "locked.bin").chmod(0)
    (root / "a" / "setuid").write_bytes(b"x")
    (root / "a" / "setuid").chmod(0o6777)
    (root / "link-to-outside").symlink_to(outside)
    (root / "a" / "dangling").symlink_to("/nonexistent")
    os.mkfifo(root / "fifo")
    os.link(outside / "linked.txt", root / "hardlink")
    if os.geteuid() == 0:
        os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (root / "empty").mkdir(mode=0)
    deep.chmod(0o500)
    (root / "a").chmod(0)
    root.chmod(0o500)
    remove_tree(root)
    assert not root.exists()
    assert (outside / "keep.txt").read_text() == "keep"
    assert (outside / "linked.txt").read_text() == "linked"
    assert stat.S_IMODE(outside.stat().st_mode) == 0o555  # a link's target is never changed
    remove_tree(root)  # already gone: nothing to do


def test_remove_tree_removes_whatever_a_job_left(tmp_path: Path) -> None:
    """0500 and 0000 folders, 0000 and setuid files, links in and out, a FIFO, a hard link to a
    file outside, a device node (as root): all removed, nothing outside touched or followed."""
    _hostile_tree_removed(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="the test above already runs unprivileged")
def test_remove_tree_works_for_an_unprivileged_owner() -> None:
    """Root ignores modes; the same tree made and removed as uid 65534 proves the chmods."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="gpenguard-remove-tree-"))
    os.chown(base, 65534, 65534)
    try:
        os.setegid(65534)
        os.seteuid(65534)
        _hostile_tree_removed(base)
    finally:
        os.seteuid(0)
        os.setegid(0)
        remove_tree(base)


def test_the_results_file_is_read_through_the_descriptor_the_host_opened(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    plan = _plan(out)
    with Staging(out) as staging:
        _members(staging, [("000000.png", _png())])
        staging.results.chmod(0)
        if os.geteuid() != 0:
            with pytest.raises(PermissionError):
                staging.results.open("rb")
        assert set(staging.collect(plan, budget=results_budget(plan))) == {0}
        staging.path.chmod(0o500)
    assert list(out.iterdir()) == []
