"""Python-2-era state_dicts that torch.load reads are read too, with torch's tensors.

Python 2's ``OrderedDict.__reduce__`` passes its items as ``[[key, value], ...]`` to the
constructor (the weights the ``lpips`` package ships were saved that way, protocol 2), and a
Python 2 ``str`` key is a SHORT_BINSTRING. `torch.load(weights_only=True)` is the oracle.
"""

from __future__ import annotations

import collections
import io
import pickletools
import zipfile
from pathlib import Path
from typing import Any

import pytest

from gpenguard.errors import ConversionError
from gpenguard.formats.container import read_container
from gpenguard.formats.source import Source
from gpenguard.formats.weights import read_tensors
from gpenguard.pickling import crosscheck
from tests.convert.conftest import write_zip

torch = pytest.importorskip("torch")


class Py2OrderedDict:
    """Reduces like Python 2's OrderedDict: ``OrderedDict(items)`` and, optionally, BUILD."""

    def __init__(self, items: list[Any], state: dict[str, Any] | None = None) -> None:
        self.items, self.state = items, state

    def __reduce__(self) -> tuple[Any, ...]:
        if self.state is None:
            return (collections.OrderedDict, (self.items,))
        return (collections.OrderedDict, (self.items,), self.state)


def _tensors() -> dict[str, Any]:
    g = torch.Generator().manual_seed(7)
    return {
        "lin0.model.1.weight": torch.randn(1, 64, 1, 1, generator=g),
        "lin1.model.1.weight": torch.randn(1, 192, 1, 1, generator=g),
        "scale": torch.arange(6, dtype=torch.float64).reshape(2, 3).t(),  # a strided view
    }


FORMS = {
    "pairs-as-lists": lambda d: Py2OrderedDict([[k, v] for k, v in d.items()]),
    "pairs-as-tuples": lambda d: Py2OrderedDict(list(d.items())),
    "from-a-dict": lambda d: Py2OrderedDict([dict(d)][0]),
    "with-metadata": lambda d: Py2OrderedDict(
        [[k, v] for k, v in d.items()], {"_metadata": {"": {"version": 1}}}
    ),
}


def _check(path: Path) -> None:
    ref = torch.load(path, weights_only=True)
    state = read_tensors(read_container(Source.from_bytes(path.read_bytes(), name=str(path))))
    assert state.names == tuple(ref)
    for rec in state:
        t = ref[rec.name].contiguous()
        assert rec.shape == tuple(t.shape)
        assert bytes(state.tensor_bytes(rec)) == t.reshape(-1).view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("form", sorted(FORMS))
def test_ordered_dict_built_from_items(tmp_path: Path, form: str, legacy: bool) -> None:
    path = tmp_path / "w.pth"
    obj = FORMS[form](_tensors())
    torch.save(obj, path, pickle_protocol=2, _use_new_zipfile_serialization=not legacy)
    assert isinstance(torch.load(path, weights_only=True), collections.OrderedDict)
    _check(path)


def _py2_strings(data: bytes) -> bytes:
    """Rewrite ASCII BINUNICODE arguments as SHORT_BINSTRING (a Python 2 ``str``)."""
    out = io.BytesIO()
    ops = list(pickletools.genops(data))
    for i, (op, arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(data)
        if op.name == "BINUNICODE" and isinstance(arg, str) and arg.isascii() and len(arg) < 256:
            out.write(b"U" + bytes([len(arg)]) + arg.encode())
        else:
            out.write(data[pos:end])
    return out.getvalue()


def test_python2_str_keys_and_storage_ids(tmp_path: Path) -> None:
    src = tmp_path / "py3.pth"
    torch.save(Py2OrderedDict([[k, v] for k, v in _tensors().items()]), src, pickle_protocol=2)
    with zipfile.ZipFile(src) as zf:
        root = zf.namelist()[0].split("/", 1)[0]
        data = _py2_strings(zf.read(f"{root}/data.pkl"))
        storages = {n.split("/data/", 1)[1]: zf.read(n) for n in zf.namelist() if "/data/" in n}
    assert b"U\x13lin0.model.1.weight" in data
    path = write_zip(tmp_path / "py2.pth", data, storages)
    _check(path)


def test_a_reading_cpython_disagrees_with_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.pth"
    torch.save(collections.OrderedDict(_tensors()), path)
    real = crosscheck.run

    def other_globals(jobs: list[crosscheck.Job], **kw: Any) -> list[crosscheck.Reading]:
        return [
            crosscheck.Reading(r.feed, (("os", "system"),), 1, r.pids, r.end)
            for r in real(jobs, **kw)
        ]

    monkeypatch.setattr(crosscheck, "run", other_globals)
    with pytest.raises(ConversionError, match="reads this pickle differently"):
        read_tensors(read_container(Source.from_bytes(path.read_bytes(), name=str(path))))


def test_refuses_what_is_not_pairs(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(Py2OrderedDict([[1, 2, 3]]), path, pickle_protocol=2)
    with pytest.raises(ConversionError, match="not a \\(key, value\\) pair"):
        read_tensors(read_container(Source.from_bytes(path.read_bytes(), name=str(path))))
