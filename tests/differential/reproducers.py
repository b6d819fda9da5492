"""Minimal inputs for each differential in DIFFERENTIALS.md, built on demand (never committed).

Every payload is harmless (``os.system('true')``), and the oracle never runs it: the loaders'
view comes from readers that record globals instead of resolving them.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile

import torch

from tests.differential.mutators import _rebuild, zip_members

PAYLOAD = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R."
"""``os.system('true')`` as a protocol-2 program."""

SYS_INFO = pickle.dumps(
    {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    },
    protocol=2,
)


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def d001_legacy_magic_text_forms() -> bytes:
    """Legacy stream whose magic is ``INT`` text with underscores and protocol ``LONG`` octal."""
    magic = b"\x80\x02I119_547_037_146_038_801_333_356\n."
    protocol = b"L0o1751L\n."
    return magic + protocol + SYS_INFO + PAYLOAD + pickle.dumps([], protocol=2)


def d002_tar_storages_views_pickle() -> bytes:
    """A tar with only a ``storages`` member; torch unpickles its trailing views list first."""
    record = pickle.dumps(("0", "cpu", torch.FloatStorage), protocol=2)
    storages = (
        pickle.dumps(1, protocol=2) + record + (3).to_bytes(8, "little")
        + struct.pack("<3f", 0.0, 1.0, 2.0) + PAYLOAD
    )  # fmt: skip
    return _tar({"storages": storages})


def d003_zip_deflated_storage() -> bytes:
    """torch.save output with ``data/0`` stored deflated: mmap=True reads the compressed bytes."""
    buf = io.BytesIO()
    torch.save({"w": torch.arange(6.0)}, buf)
    members = zip_members(buf.getvalue())
    assert members is not None
    members = [(n, b, 8 if n.endswith(b"/data/0") else m) for n, b, m in members]
    return _rebuild(members)


def d004_zip_directory_attribute() -> bytes:
    """torch.save output whose ``data/0`` central entry carries the DOS directory attribute."""
    buf = io.BytesIO()
    torch.save({"w": torch.arange(1.0, 7.0)}, buf)
    data = bytearray(buf.getvalue())
    eocd = data.rfind(b"PK\x05\x06")
    count, _size, pos = struct.unpack_from("<HII", data, eocd + 10)
    for _ in range(count):
        nlen, xlen, clen = struct.unpack_from("<HHH", data, pos + 28)
        if bytes(data[pos + 46 : pos + 46 + nlen]).endswith(b"/data/0"):
            attr = struct.unpack_from("<I", data, pos + 38)[0]
            struct.pack_into("<I", data, pos + 38, attr | 0x10)
        pos += 46 + nlen + xlen + clen
    return bytes(data)


def d005_zip_big_endian_byteorder() -> bytes:
    """torch.save output whose ``byteorder`` record says ``big``: torch byteswaps every storage."""
    buf = io.BytesIO()
    torch.save({"w": torch.arange(1.0, 7.0)}, buf)
    members = zip_members(buf.getvalue())
    assert members is not None
    return _rebuild([(n, b"big" if n.endswith(b"/byteorder") else c, m) for n, c, m in members])
