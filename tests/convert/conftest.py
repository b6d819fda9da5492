"""Fixtures for the converter tests: real checkpoints written by torch.save, and forged ones.

Forged pickles are produced by Python's own pickler from harmless stand-in objects, so the
byte stream is exactly what a hostile or corrupt writer could emit, yet executing it would
at worst call ``os.getpid``.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch = pytest.importorskip("torch")


class StorageStub:
    """Pickled by persistent id as ``('storage', cls, key, location, numel)``."""

    def __init__(self, cls: Any, key: str, numel: int, location: str = "cpu") -> None:
        self.cls, self.key, self.numel, self.location = cls, key, numel, location


class TensorStub:
    """Pickled as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, {})``."""

    def __init__(self, storage: StorageStub, offset: int, size: tuple[int, ...], stride: tuple[int, ...], func: Any = None) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())
        self.func = func or torch._utils._rebuild_tensor_v2

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, StorageStub):
            return ("storage", obj.cls, obj.key, obj.location, obj.numel)
        return None


def forge_pickle(obj: Any, protocol: int = 2) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def write_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes], root: str = "archive") -> Path:
    """A torch-zip-shaped archive (stored, not deflated) around a given data.pkl."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{root}/data.pkl", data_pkl)
        zf.writestr(f"{root}/byteorder", "little")
        for key, raw in storages.items():
            zf.writestr(f"{root}/data/{key}", raw)
        zf.writestr(f"{root}/version", "3\n")
    return path


@pytest.fixture
def save(tmp_path: Path) -> Callable[..., Path]:
    """``save(obj, legacy=False, protocol=2, name=...)`` -> a file written by torch.save."""
    counter = iter(range(10_000))

    def _save(obj: Any, *, legacy: bool = False, protocol: int = 2, name: str | None = None) -> Path:
        path = tmp_path / (name or f"ckpt{next(counter)}.pth")
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy, pickle_protocol=protocol)
        return path

    return _save
