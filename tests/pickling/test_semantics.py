"""The decoder reads every argument as CPython 3.11's C unpickler does (what torch.load runs).

Oracles: `_pickle.Unpickler` (C) and `pickle._Unpickler` (pure Python), both with `find_class`
and `persistent_load` returning plain tuples, so nothing named by a test pickle is imported.
Forms the two read differently are the parser-differential class: the walker takes the C
reading and flags the form (GG119) or the frame trick (GG120) so the gate blocks.
"""

from __future__ import annotations

import _pickle
import io
import pickle
import struct
from typing import Any

import pytest

from gpenguard.pickling.opcodes import c_float, c_int, c_long
from gpenguard.pickling.walker import constant, walk

_ERR = "error"


class _CInert(_pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return ("global", module, name)

    def persistent_load(self, pid: Any) -> Any:
        return ("pid", pid)


class _PyInert(pickle._Unpickler):  # type: ignore[name-defined,misc]
    def find_class(self, module: str, name: str) -> Any:
        return ("global", module, name)

    def persistent_load(self, pid: Any) -> Any:
        return ("pid", pid)


def c_load(data: bytes, *, feed: str = "bytesio") -> Any:
    """The C unpickler, fed as torch feeds it (zip records: BytesIO; legacy files: a file)."""
    f: Any = io.BytesIO(data)
    if feed == "file":
        f = io.BufferedReader(io.BytesIO(data))  # type: ignore[arg-type]
    try:
        return _CInert(f, encoding="utf-8").load()
    except Exception:
        return _ERR


def py_load(data: bytes) -> Any:
    try:
        return _PyInert(io.BytesIO(data), encoding="utf-8").load()
    except Exception:
        return _ERR


def ours(data: bytes) -> tuple[Any, list[str]]:
    res = walk(memoryview(data))
    rules = [p.rule_id for p in res.problems]
    if not res.complete:
        return _ERR, rules
    return constant(res.value), rules


def same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


# -- INT ---------------------------------------------------------------------------------------

INT_LINES = [
    # canonical: what pickle writers emit
    (b"0", False),
    (b"7", False),
    (b"-12", False),
    (b"00", False),
    (b"01", False),
    (b"2147483647", False),
    (b"9223372036854775807", False),  # Python 2 on LP64 wrote any int as INT
    (b"99999999999999999999", False),
    # read differently by C and pickle.py, or forms no writer emits
    (b"017", True),  # C strtol base 0: octal 15; pickle.py: error
    (b"0012", True),
    (b"08", True),  # both refuse
    (b" 1", True),  # C: True (three-byte line, value 1); pickle.py: 1
    (b"+1", True),
    (b"-0", True),
    (b"5\x00junk", True),  # C stops at the NUL: 5; pickle.py: error
    (b"1\x00", True),  # C: True
    (b"\x00", True),  # C: 0
    (b"0x1f", True),
    (b"0o17", True),
    (b"0b11", True),
    (b"1_000", True),
    (b" 12 ", True),
    (b"1\r", True),
    (b"\x0b7", True),
    (b"0777777777777777777777777", True),  # strtol overflows, PyLong refuses octal: error
    (b"0x", True),
    (b"-", True),
]


@pytest.mark.parametrize(("line", "odd"), INT_LINES)
def test_int_text_reads_as_c_does(line: bytes, odd: bool) -> None:
    data = b"I" + line + b"\n."
    want = c_load(data)
    value, rules = ours(data)
    assert same(value, want), (value, want)
    if want is _ERR:
        assert "GG110" in rules
    else:
        assert same(c_int(line), want)
        assert ("GG119" in rules) is odd


def test_int_forms_where_the_two_cpython_unpicklers_disagree_are_flagged() -> None:
    split = [
        line
        for line, _odd in INT_LINES
        if not same(c_load(b"I" + line + b"\n."), py_load(b"I" + line + b"\n."))
    ]
    assert split, "the oracle shows no C/Python split: the test would prove nothing"
    for line in split:
        value, rules = ours(b"I" + line + b"\n.")
        assert value is _ERR or "GG119" in rules, line


# -- LONG ---------------------------------------------------------------------------------------

LONG_LINES = [
    (b"12L", False),
    (b"12", False),
    (b"-340282366920938463463374607431768211456L", False),
    (b"7\x00zzL", True),  # C: 7; pickle.py: error
    (b"0x10L", True),
    (b"017L", True),  # error in both
    (b"L", True),  # error
    (b" 5 L", True),
    (b"5LL", True),  # error
    (b"1_0", True),
]


@pytest.mark.parametrize(("line", "odd"), LONG_LINES)
def test_long_text_reads_as_c_does(line: bytes, odd: bool) -> None:
    data = b"L" + line + b"\n."
    want = c_load(data)
    value, rules = ours(data)
    assert same(value, want), (value, want)
    if want is not _ERR:
        assert ("GG119" in rules) is odd
        assert c_long(line[:-1] if line.endswith(b"L") else line, base=0) == want


# -- FLOAT, memo indexes ------------------------------------------------------------------------

FLOAT_LINES = [
    (b"1.5", False),
    (b"-2.5e-05", False),
    (b"inf", False),
    (b"nan", False),
    (b"1.5\x00z", True),  # C: 1.5; pickle.py: error
    (b" 1.5", True),  # C: error; pickle.py: 1.5
    (b"1_0", True),  # C: error; pickle.py: 10.0
    (b"1e999", True),  # C: OverflowError; pickle.py: inf
    (b"+1.5", True),
    (b"Infinity", True),
    (b"0x10", True),
]


@pytest.mark.parametrize(("line", "odd"), FLOAT_LINES)
def test_float_text_reads_as_c_does(line: bytes, odd: bool) -> None:
    data = b"F" + line + b"\n."
    want = c_load(data)
    value, rules = ours(data)
    if want is _ERR:
        assert value is _ERR and c_float(line) is None
        return
    assert value == want or (value != value and want != want)  # nan
    assert ("GG119" in rules) is odd


@pytest.mark.parametrize(
    ("put", "get", "odd"),
    [
        (b"1", b"1", False),
        (b"01", b"1", True),
        (b" 1", b"1", True),
        (b"1\x00z", b"1", True),
        (b"1_0", b"10", True),
    ],
)
def test_text_memo_indexes_read_as_c_does(put: bytes, get: bytes, odd: bool) -> None:
    data = b"(NNp" + put + b"\n0g" + get + b"\nt."
    want = c_load(data)
    value, rules = ours(data)
    assert same(value, want)
    assert ("GG119" in rules) is odd


def test_a_memo_index_no_writer_reaches_is_flagged() -> None:
    # C sizes its memo table by the index: LONG_BINPUT 0xFFFFFFF0 asks for 64 GiB.
    data = b"\x80\x02N" + b"r" + struct.pack("<I", 0xFFFFFFF0) + b"."
    assert "GG119" in ours(data)[1]
    ordinary = pickle.dumps([[1], [2], [3]] * 50, protocol=2)
    assert "GG119" not in ours(ordinary)[1]


# -- text arguments: quoting and encodings -------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"c\nx\n.",  # empty module line: C refuses, pickle.py imports ''
        b"cm\n\n.",
        b"(i\xc3\xa9\nx\n.",  # INST names are ASCII in C
        b"P\xc3\xa9\n.",  # PERSID is ASCII
        b"S'\xe9'\n.",  # STRING decodes as UTF-8 (torch passes encoding='utf-8')
        b"U\x01\xe9.",
        b"T\x01\x00\x00\x00\xe9.",
        b"U\x03\xed\xa0\x80.",  # a lone surrogate: strict for Python 2 str
        b"S'a\\x'\n.",
        b"S\"a'\n.",
        b"\x80\x06N.",
        b"N1.",
    ],
)
def test_arguments_the_c_unpickler_refuses_stop_the_walk(data: bytes) -> None:
    assert c_load(data) is _ERR
    assert ours(data)[0] is _ERR


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # C warns on "\\q"
@pytest.mark.parametrize(
    "data",
    [
        b"(c\xc3\xa9\nx\nt.",  # GLOBAL names are UTF-8
        b"Pabc\n.",
        b"P\n.",
        b"S'\xc3\xa9'\n.",
        b"S'a\\q'\n.",
        b"X\x03\x00\x00\x00\xed\xa0\x80.",  # BINUNICODE is surrogatepass
        b"V\\ud800\n.",
        b"(0N.",  # POP with only a MARK pops the MARK
        b"(N(N1t.",
        b"N\x80\x02.",
    ],
)
def test_arguments_the_c_unpickler_accepts_are_read_alike(data: bytes) -> None:
    want = c_load(data)
    assert want is not _ERR
    res = walk(memoryview(data))
    assert res.complete, [p.message for p in res.problems]


# -- FRAME ------------------------------------------------------------------------------------


def _frame(n: int) -> bytes:
    return b"\x95" + struct.pack("<Q", n)


STRADDLE = b"\x80\x04" + _frame(3) + b"X\x03\x00\x00\x00abc." + b"X\x02\x00\x00\x00bc."


def test_frame_straddle_is_read_three_ways_by_cpython_and_flagged() -> None:
    # CPython 3.11: loads(bytes) reads on ('abc'), BytesIO re-reads from the file ('bc'),
    # pickle.py refuses: the same bytes mean different programs.
    try:
        as_bytes = _pickle.loads(STRADDLE)
    except Exception:
        as_bytes = _ERR
    readings = {repr(as_bytes), repr(c_load(STRADDLE)), repr(py_load(STRADDLE))}
    assert len(readings) > 1, readings
    assert "GG120" in ours(STRADDLE)[1]


def test_stop_inside_a_frame_and_nested_frames_are_flagged() -> None:
    early_stop = b"\x80\x04" + _frame(4) + b"N.NN"
    assert "GG120" in ours(early_stop)[1]
    nested = b"\x80\x04" + _frame(11) + b"N" + _frame(1) + b"."
    assert "GG120" in ours(nested)[1]


@pytest.mark.parametrize("protocol", [4, 5])
def test_frames_written_by_pickle_are_not_flagged(protocol: int) -> None:
    obj = [list(range(20_000)), "x" * 70_000, [b"y" * 100] * 3, (1.5, None, True)]
    for dumps in (pickle.dumps, _pickle.dumps):
        data = dumps(obj, protocol=protocol)
        value, rules = ours(data)
        assert value == obj
        assert not {"GG119", "GG120"} & set(rules), rules
