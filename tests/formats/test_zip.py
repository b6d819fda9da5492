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
        ("archive", {"local_name": True}, "GG215"),
        ("modèle", {"flags": 0x800, "local_flags": 0}, "GG215"),
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
    # torch reads the declared 10-byte prefix: that is what is judged, and the lie blocks
    assert "GG206" in rule_ids(box)
    assert [bytes(p.data) for p in box.pickles[:1]] == [b"\x80\x02N."]


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


def test_directory_fields_zipfile_refuses_but_torch_accepts() -> None:
    data = bytearray(_repack())
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        data[pos + 6 : pos + 8] = (99).to_bytes(2, "little")  # "version needed to extract" 9.9
        pos = data.find(b"PK\x01\x02", pos + 4)
    with pytest.raises(NotImplementedError):
        zipfile.ZipFile(io.BytesIO(bytes(data)))
    assert torch.equal(
        torch.load(io.BytesIO(bytes(data)), weights_only=True)["w"], torch.arange(4.0)
    )
    box = read_bytes(bytes(data))
    assert box.format is Format.TORCH_ZIP and box.pickles


def test_declared_entry_count_disagreement_reads_every_record() -> None:
    data = bytearray(
        build_zip([ZipEntry("a/one.pkl", b"\x80\x02N."), ZipEntry("a/two.pkl", b"\x80\x02N.")])
    )
    end = data.rfind(b"PK\x05\x06")
    data[end + 8 : end + 12] = (1).to_bytes(2, "little") * 2  # claim a single entry
    box = read_bytes(bytes(data))
    # torch reads one entry, zipfile two: both are inspected, and the disagreement blocks
    assert len(box.pickles) == 2 and "GG215" in rule_ids(box)


def test_zip64_archive_with_prepended_bytes() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, zf.open("a/data.pkl", "w", force_zip64=True) as fh:
        fh.write(pickle.dumps({"k": 1}, protocol=2))
    box = read_bytes(b"\x00" * 100 + buf.getvalue())
    assert [p.member for p in box.pickles] == ["a/data.pkl"]
    assert "GG215" in rule_ids(box)


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_compressed_members_are_inflated_within_bounds(method: int) -> None:
    buf = io.BytesIO()
    payload = pickle.dumps({"k": list(range(300))}, protocol=2)
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        zf.writestr("a/x.pkl", payload)
        zf.writestr("a/zeros", b"\0" * (16 * 2**20))
    box = read_bytes(buf.getvalue())
    (stream,) = box.pickles
    assert bytes(stream.data) == payload
    assert "GG203" in rule_ids(box)  # 16 MiB of zeros is far past the ratio bound


def test_trailing_bytes_after_data_pkl_stop() -> None:
    box = read_bytes(torch_like_zip("archive", b"\x80\x02N." + b"\x00\x01 not a pickle"))
    (finding,) = [f for f in box.findings if f.rule_id == "GG112"]
    assert finding.member == "archive/data.pkl" and finding.offset == 4
    assert len(box.pickles) == 1


def test_repeated_container_findings_are_capped() -> None:
    from gpenguard.formats._context import MAX_FINDINGS_PER_RULE

    box = read_bytes(build_zip([ZipEntry(f"../x{i}", b"1") for i in range(300)]))
    traversal = [f for f in box.findings if f.rule_id == "GG201"]
    assert len(traversal) == MAX_FINDINGS_PER_RULE + 1
