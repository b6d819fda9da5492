"""Zip hardening: read whatever torch reads, flag whatever could mislead another reader."""

from __future__ import annotations

import io
import pickle
import zipfile

import pytest
import torch

from gpenguard.formats import Format, Limits
from tests.corpus import ZipEntry, build_zip, torch_like_zip
from tests.formats.conftest import read_bytes, rule_ids


def _repack(root: str = "archive", **trick: object) -> bytes:
    """A real torch.save archive rewritten with `trick` applied to its data.pkl entry."""
    buf = io.BytesIO()
    torch.save({"w": torch.arange(4.0)}, buf)
    zf = zipfile.ZipFile(buf)
    entries = []
    for name in zf.namelist():
        opts = dict(trick) if name.endswith("data.pkl") else {}
        if opts.get("local_name") is True:
            opts["local_name"] = f"{root}/elsewhere.pkl"
        entries.append(ZipEntry(root + name[len("archive") :], zf.read(name), **opts))  # type: ignore[arg-type]
    return build_zip(entries)


@pytest.mark.parametrize(
    ("root", "trick", "rule"),
    [
        ("archive", {"crc": 0xDEADBEEF}, "GG205"),
        ("archive", {"local_name": True}, "GG206"),
        ("modèle", {"flags": 0x800, "local_flags": 0}, "GG206"),
    ],
)
def test_tricks_torch_loads_are_read_and_flagged(
    root: str, trick: dict[str, object], rule: str
) -> None:
    data = _repack(root, **trick)
    with pytest.raises(zipfile.BadZipFile):  # what made other scanners give up
        zf = zipfile.ZipFile(io.BytesIO(data))
        for name in zf.namelist():
            zf.read(name)
    assert torch.equal(torch.load(io.BytesIO(data), weights_only=True)["w"], torch.arange(4.0))
    box = read_bytes(data)
    assert box.format is Format.TORCH_ZIP
    assert [p.member for p in box.pickles] == [f"{root}/data.pkl"]
    assert rule in rule_ids(box)
    assert bytes(box.storages["0"]) == torch.arange(4.0).numpy().tobytes()


def test_every_pickle_member_is_found_whatever_its_name() -> None:
    evil = pickle.dumps({"x": 1}, protocol=2)
    data = torch_like_zip(
        "anyroot", evil, [ZipEntry("anyroot/hidden.dat", evil), ZipEntry("anyroot/notes.pkl", evil)]
    )
    box = read_bytes(data)
    assert box.root == "anyroot"
    assert sorted(p.member or "" for p in box.pickles) == [
        "anyroot/data.pkl",
        "anyroot/hidden.dat",
        "anyroot/notes.pkl",
    ]
    assert "GG214" in rule_ids(box)


def test_duplicate_and_traversal_names() -> None:
    box = read_bytes(
        build_zip(
            [
                ZipEntry("a/data.pkl", b"N."),
                ZipEntry("a/data.pkl", b"N."),
                ZipEntry("/etc/x", b"1"),
                ZipEntry("a/../../y", b"2"),
            ]
        )
    )
    ids = [f.rule_id for f in box.findings]
    assert ids.count("GG200") == 1 and ids.count("GG201") == 2
    assert len(box.pickles) == 2  # both duplicates are scanned


def test_encrypted_member_is_not_checked() -> None:
    box = read_bytes(torch_like_zip("archive", b"\x80\x02N.", flags=0x1))
    assert {"GG202", "GG212"} <= rule_ids(box)
    assert not box.pickles


def test_compression_ratio_bound() -> None:
    bomb = build_zip(
        [
            ZipEntry("a/data.pkl", b"\x80\x02N."),
            ZipEntry("a/blob", b"\0" * (8 * 2**20), deflate=True),
        ]
    )
    assert "GG203" in rule_ids(read_bytes(bomb))
    relaxed = Limits(max_compression_ratio=1e6)
    assert "GG203" not in rule_ids(read_bytes(bomb, limits=relaxed))
    assert "GG203" in rule_ids(
        read_bytes(bomb, limits=Limits(max_compression_ratio=1e6, max_uncompressed_bytes=2**20))
    )


def test_declared_size_lies_are_caught() -> None:
    data = bytearray(build_zip([ZipEntry("a/x.pkl", b"\x80\x02N." * 1000, deflate=True)]))
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24 : cd + 28] = (10).to_bytes(4, "little")  # central directory: 10 bytes uncompressed
    box = read_bytes(bytes(data))
    assert "GG206" in rule_ids(box) and not box.pickles


def test_member_count_bound() -> None:
    box = read_bytes(
        build_zip([ZipEntry(f"a/{i}.txt", b"x") for i in range(10)]), limits=Limits(max_members=3)
    )
    assert "GG204" in rule_ids(box)


def test_nesting_bound() -> None:
    inner = build_zip([ZipEntry("x.pkl", pickle.dumps(print, protocol=2))])
    data = inner
    for level in range(4):
        data = build_zip([ZipEntry(f"l{level}.zip", data)])
    deep = read_bytes(data, limits=Limits(max_nesting=2))
    assert "GG213" in rule_ids(deep)
    full = read_bytes(data)
    node = full
    for _ in range(4):
        (node,) = node.children
    assert node.pickles[0].member == "l3.zip!l2.zip!l1.zip!l0.zip!x.pkl"


def test_corrupt_directory_is_a_format_error() -> None:
    from gpenguard.errors import FormatError

    data = bytearray(build_zip([ZipEntry("a/x", b"1")]))
    data[data.rfind(b"PK\x01\x02") : data.rfind(b"PK\x01\x02") + 4] = b"XXXX"
    with pytest.raises(FormatError, match="zip archive is corrupt"):
        read_bytes(bytes(data))


def test_torchscript_archive_is_flagged(tmp_path: object) -> None:
    box = read_bytes(
        torch_like_zip("m", b"\x80\x02N.", [ZipEntry("m/constants.pkl", b"\x80\x02).")])
    )
    assert "GG210" in rule_ids(box)
