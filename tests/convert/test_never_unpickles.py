"""Invariant 1 for the converter: it runs no unpickler, imports no torch, and survives garbage."""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpenguard.errors import GpenguardError
from gpenguard.formats.container import Container, PickleStream, read_container
from gpenguard.formats.source import Source
from gpenguard.formats.weights import read_tensors

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]


def test_conversion_runs_without_pickle_or_torch(tmp_path: Path) -> None:
    """In a fresh interpreter where torch cannot be imported and every unpickler raises."""
    src = tmp_path / "m.pth"
    torch.save({"w": torch.randn(3, 4).t(), "b": torch.zeros(2, dtype=torch.bfloat16)}, src)
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.randn(5)}, legacy, _use_new_zipfile_serialization=False)
    script = textwrap.dedent(
        f"""
        import pickle, sys
        sys.modules["torch"] = None  # any `import torch` now fails
        def refuse(*a, **k):
            raise AssertionError("an unpickler was used")
        pickle.load = pickle.loads = refuse
        class NoUnpickler:
            def __init__(self, *a, **k):
                refuse()
        pickle.Unpickler = pickle._Unpickler = NoUnpickler
        from gpenguard.convert import convert
        for name in ("m", "legacy"):
            r = convert({str(tmp_path)!r} + f"/{{name}}.pth", {str(tmp_path)!r} + f"/{{name}}.safetensors")
            print(name, r.tensors, r.sha256)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("m 2 ")
    assert proc.stdout.splitlines()[1].startswith("legacy 1 ")


@functools.cache
def _seed() -> tuple[bytes, Container]:
    """A real checkpoint's data.pkl, and its container (storages included)."""
    import io

    buf = io.BytesIO()
    torch.save({"a": torch.ones(2, 3), "b": torch.nn.Parameter(torch.zeros(4, 2)).t()}, buf)
    box = read_container(Source.from_bytes(buf.getvalue(), name="fuzz.pth"))
    (pkl,) = [p for p in box.pickles if p.member == "archive/data.pkl"]
    return bytes(pkl.data), box


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_pickles_only_ever_raise_gpenguard_errors(data: st.DataObject) -> None:
    """Flip, cut and splice a real data.pkl: the reader either reads it or says why, never crashes."""
    raw, box = _seed()
    seed = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(len(seed) - 1, 0)))
        if op == "flip" and seed:
            seed[pos] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del seed[pos : pos + data.draw(st.integers(1, 16))]
        else:
            seed[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    stream = PickleStream(member="archive/data.pkl", offset=0, data=memoryview(bytes(seed)))
    try:
        state = read_tensors(dataclasses.replace(box, pickles=(stream,)))
        for rec in state:  # whatever layout survived the checks must be readable as claimed
            assert len(state.tensor_bytes(rec)) == rec.nbytes
    except GpenguardError as exc:
        assert exc.path == "fuzz.pth"


def test_released_pages_read_back_the_same(tmp_path: Path) -> None:
    path = tmp_path / "m.pth"
    torch.save({"w": torch.randn(256, 1024), "v": torch.randn(300)}, path)
    with Source.open(path) as src:
        state = read_tensors(read_container(src))
        before = {r.name: bytes(state.tensor_bytes(r)) for r in state}
        for rec in state:
            state.release(rec)
        assert {r.name: bytes(state.tensor_bytes(r)) for r in state} == before
        del state
