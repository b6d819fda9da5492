"""Inputs the differential fuzzer starts from: real torch.save output and the malicious corpus."""

from __future__ import annotations

import io
import pickle
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

from tests.corpus import legacy_tar, make_malicious_corpus


def _save(obj: object, **kw: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


def _tar_storages() -> bytes:
    """A legacy tar ``storages`` member with one float storage, laid out as torch < 1.0 wrote it."""
    rec = pickle.dumps(("0", "cpu", torch.FloatStorage), protocol=2)
    data = torch.arange(3.0).numpy().tobytes()
    return (
        pickle.dumps(1, protocol=2) + rec + (3).to_bytes(8, "little") + data
        + pickle.dumps([], protocol=2)
    )  # fmt: skip


@lru_cache(maxsize=1)
def benign() -> tuple[bytes, ...]:
    """torch.save output of both formats and several protocols (all pass gpenguard)."""
    torch.manual_seed(0)
    sd = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.float16)}
    view = {"t": torch.arange(12.0).reshape(3, 4).t(), "i": torch.tensor([7], dtype=torch.int64)}
    out = [
        _save(sd),
        _save(view),
        _save(sd, pickle_protocol=4),
        _save(sd, _use_new_zipfile_serialization=False),
        _save(view, _use_new_zipfile_serialization=False),
        _save(sd, _use_new_zipfile_serialization=False, pickle_protocol=4),
        _save({"epoch": 3, "cfg": {"lr": 0.1}}, _use_new_zipfile_serialization=False),
        legacy_tar(pickle_member=pickle.dumps({"a": 1}, protocol=2)),
        legacy_tar(pickle_member=pickle.dumps({"a": 1}, protocol=2), storages=_tar_storages()),
    ]
    return tuple(out)


@lru_cache(maxsize=1)
def malicious() -> tuple[bytes, ...]:
    """The malicious corpus of tests/corpus.py (harmless payloads), as bytes."""
    with tempfile.TemporaryDirectory(prefix="gg-diff-seeds-") as tmp:
        items = make_malicious_corpus(Path(tmp))
        return tuple(item.path.read_bytes() for item in items if item.path.is_file())


def all_seeds() -> tuple[bytes, ...]:
    return benign() + malicious()
