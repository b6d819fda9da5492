"""Every pickle-level differential class blocks under every shipped policy.

Each file is built here from harmless bytes; the contrast column says how CPython 3.11's two
unpicklers (C `_pickle`, pure-Python `pickle._Unpickler`) read it, with inert globals.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile

import pytest

from gpenguard.formats import Source
from gpenguard.policy import load_policy
from gpenguard.scan import Verdict, scan_source
from tests.pickling.test_crosscheck import straddle_hiding
from tests.pickling.test_semantics import c_load, py_load

SHIPPED = ["default", "ci", "strict"]


def _frame(n: int) -> bytes:
    return b"\x95" + struct.pack("<Q", n)


def _zip(data_pkl: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/version", "3\n")
    return buf.getvalue()


SD = pickle.dumps({"w": [1.0, 2.0]}, protocol=2)

CLASSES: dict[str, tuple[bytes, str]] = {
    # INT text C reads as octal / stops at NUL / reads as a bool: pickle.py disagrees
    "int-octal": (b"(I017\nI1\nt.", "GG119"),
    "int-nul-junk": (b"(I5\x00junk\nI1\nt.", "GG119"),
    "int-space-bool": (b"(I 1\nI1\nt.", "GG119"),
    "long-nul": (b"L7\x00zzL\n.", "GG119"),
    "float-nul": (b"F1.5\x00z\n.", "GG119"),
    "put-leading-zero": (b"Np01\n0g1\n.", "GG119"),
    # a frame straddle that hides an import from a contiguous reading
    "frame-straddle": (straddle_hiding(), "GG120"),
    "stop-inside-frame": (b"\x80\x04" + _frame(4) + b"N.NN", "GG120"),
    "nested-frame": (b"\x80\x04" + _frame(11) + b"N" + _frame(1) + b".", "GG120"),
    # a memo index that makes C allocate gigabytes
    "huge-memo-index": (b"\x80\x02Nr\xf0\xff\xff\xff.", "GG119"),
    # bytes after STOP no loader reads, a second program where one is expected
    "trailing-bytes": (SD + b"\x00\x01junk", "GG112"),
    "second-pickle": (SD + pickle.dumps("x", protocol=2), "GG113"),
    # the same tricks inside a torch zip's data.pkl
    "zip-int-octal": (_zip(b"\x80\x02}X\x01\x00\x00\x00kI017\ns."), "GG119"),
    "zip-frame-straddle": (_zip(straddle_hiding()), "GG121"),
}


@pytest.mark.parametrize("policy", SHIPPED)
@pytest.mark.parametrize("name", sorted(CLASSES))
def test_class_blocks(name: str, policy: str) -> None:
    data, rule = CLASSES[name]
    report = scan_source(Source.from_bytes(data, f"{name}.pt"), policy=load_policy(policy))
    assert report.verdict is Verdict.BLOCK, (name, report.findings, report.error)
    assert rule in {f.rule_id for f in report.findings}, report.findings


@pytest.mark.parametrize(
    "name", ["int-octal", "int-nul-junk", "int-space-bool", "long-nul", "float-nul"]
)
def test_contrast_oracles_disagree_on_the_text_forms(name: str) -> None:
    data, _rule = CLASSES[name]
    assert repr(c_load(data)) != repr(py_load(data))
