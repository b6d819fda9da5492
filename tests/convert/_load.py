"""Test-only stand-in for formats.read_container until the formats branch lands."""

from __future__ import annotations

import io
import pickletools
import zipfile

from gpenguard.formats.container import Container, Format, PickleStream
from gpenguard.formats.source import Source


def container_of(src: Source) -> Container:
    data = bytes(src.buf)
    if data[:4] == b"PK\x03\x04":
        zf = zipfile.ZipFile(io.BytesIO(data))
        names = zf.namelist()
        root = names[0].split("/")[0]
        pkl = zf.read(f"{root}/data.pkl")
        storages = {
            n[len(root) + 6 :]: memoryview(zf.read(n)) for n in names if n.startswith(f"{root}/data/")
        }
        return Container(
            path=src.name,
            format=Format.TORCH_ZIP,
            pickles=(PickleStream(member=f"{root}/data.pkl", offset=0, data=memoryview(pkl)),),
            storages=storages,
            root=root,
        )
    f = io.BytesIO(data)
    streams = []
    for i in range(5):
        start = f.tell()
        for _ in pickletools.genops(f):
            pass
        streams.append(PickleStream(member=None, offset=start, data=src.buf[start : f.tell()], index=i))
    return Container(
        path=src.name,
        format=Format.TORCH_LEGACY,
        pickles=tuple(streams),
        legacy_tail=src.buf[f.tell() :],
    )
