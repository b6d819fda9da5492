"""The symbolic machine resolves imports the way the real unpickler would."""

from __future__ import annotations

import copyreg
import pickle
import pickletools
import struct
from collections.abc import Iterator

import pytest

from gpenguard.pickling.walker import WalkLimits, constant, render, walk
from tests.corpus import P2, P4, STOP, TUPLE1, op_global, op_str


def imports(data: bytes) -> list[str]:
    return [g.qualname for g in walk(memoryview(data)).imports]


def rules(data: bytes, limits: WalkLimits | None = None) -> list[str]:
    return [p.rule_id for p in walk(memoryview(data), 0, limits).problems]


def test_stack_global_operands_through_memo() -> None:
    prog = (
        P4 + op_str("os") + b"\x94" + op_str("system") + b"\x94" + b"00" + b"h\x00h\x01\x93" + STOP
    )
    assert imports(prog) == ["os.system"]


def test_stack_global_operands_through_long_binget_and_put() -> None:
    prog = (
        P4
        + op_str("subprocess")
        + b"r\x10\x00\x00\x00"
        + b"0"
        + op_str("Popen")
        + b"p7\n0"
        + b"j\x10\x00\x00\x00g7\n\x93"
        + STOP
    )
    assert imports(prog) == ["subprocess.Popen"]


def test_stack_global_through_dup_and_tuple_tricks() -> None:
    # DUP the module name, drop one copy, then build the pair from a tuple that is never used
    prog = (
        P4
        + op_str("os")
        + b"2"
        + b"0"
        + op_str("system")
        + b"\x86"
        + b"0"
        + op_str("os")
        + op_str("system")
        + b"\x93"
        + STOP
    )
    assert imports(prog) == ["os.system"]


def test_stack_global_with_computed_operand_is_unresolved() -> None:
    prog = (
        P4
        + op_global("_codecs", "encode")
        + op_str("os")
        + op_str("latin1")
        + b"\x86R"
        + op_str("system")
        + b"\x93"
        + STOP
    )
    res = walk(memoryview(prog))
    assert [p.rule_id for p in res.problems] == ["GG103"]
    assert res.problems[0].call == "find_class(_codecs.encode('os', 'latin1'), 'system')"


@pytest.fixture
def registered_extension() -> Iterator[int]:
    code = 0x7FF0
    copyreg.add_extension("posix", "system", code)
    yield code
    copyreg.remove_extension("posix", "system", code)


def test_ext_code_resolves_through_registry_read_at_scan_time(registered_extension: int) -> None:
    prog = (
        P2
        + b"\x83"
        + struct.pack("<H", registered_extension)
        + op_str("true")
        + TUPLE1
        + b"R"
        + STOP
    )
    res = walk(memoryview(prog))
    assert [g.qualname for g in res.imports] == ["posix.system"]
    assert res.imports[0].via == "EXT2"
    assert render(res.imports[0].first_call) == "posix.system('true')"
    assert [p.rule_id for p in res.problems] == ["GG105"]


def test_ext_code_unknown_is_a_finding() -> None:
    assert rules(P2 + b"\x82\x01" + STOP) == ["GG104"]


def test_pickle_dumps_real_extension_roundtrip(registered_extension: int) -> None:
    import os

    data = pickle.dumps(os.system, protocol=2)
    assert data[2] == 0x83  # pickle itself emits EXT2 for a registered global
    assert imports(data) == ["posix.system"]


def test_inst_and_obj() -> None:
    assert imports(b"(S'x'\nios\nsystem\n.") == ["os.system"]
    assert imports(b"(cos\nsystem\nS'x'\no.") == ["os.system"]


def test_reduce_with_memoized_callable_records_first_call() -> None:
    prog = (
        P2
        + op_global("posix", "system")
        + b"q\x00"
        + b"0"
        + b"h\x00"
        + op_str("a")
        + TUPLE1
        + b"R"
        + STOP
    )
    res = walk(memoryview(prog))
    assert render(res.imports[0].first_call) == "posix.system('a')"


def test_cycles_render_without_recursion() -> None:
    prog = P2 + b"]q\x00h\x00a" + STOP
    res = walk(memoryview(prog))
    assert render(res.value) == "[<cycle>]"


def test_memo_miss_and_overwrite() -> None:
    assert rules(P2 + b"h\x05" + STOP) == ["GG114"]
    assert rules(P2 + b"K\x01q\x00K\x02q\x00" + b"0" + STOP) == ["GG116"]
    assert rules(P2 + b"K\x01K\x02" + STOP) == ["GG118"]  # a value left under the result


@pytest.mark.parametrize(
    ("prog", "rule"),
    [
        (P2 + b"R" + STOP, "GG110"),  # stack underflow
        (P2 + b"\xff" + STOP, "GG111"),  # unknown opcode
        (P2 + b"K", "GG110"),  # truncated argument
        (P2 + b"K\x01", "GG110"),  # no STOP
        (P2 + b"K\x01e" + STOP, "GG110"),  # APPENDS without MARK
        (b"\x80\x09" + STOP, "GG110"),  # unsupported protocol
        (P2 + b"K\x01K\x02s" + STOP, "GG110"),  # SETITEM on an int
    ],
)
def test_malformed_programs_are_findings(prog: bytes, rule: str) -> None:
    assert rule in rules(prog)


def test_opcode_limit() -> None:
    prog = P2 + b"N0" * 1000 + b"N" + STOP
    assert rules(prog, WalkLimits(max_opcodes=100)) == ["GG115"]
    assert rules(prog) == []


def test_mark_depth_limit() -> None:
    prog = P2 + b"(" * 50 + STOP
    assert rules(prog, WalkLimits(max_depth=10)) == ["GG115"]


def test_memo_limit() -> None:
    prog = P2 + b"".join(b"Nq" + bytes([i]) + b"0" for i in range(20)) + b"N" + STOP
    assert rules(prog, WalkLimits(max_memo=5)) == ["GG115"]


def test_stack_item_limit() -> None:
    prog = P2 + b"N" * 100 + STOP
    assert "GG115" in rules(prog, WalkLimits(max_stack_items=10))


def test_build_on_imported_class_is_monkeypatching() -> None:
    prog = P2 + op_global("collections", "OrderedDict") + b"}" + b"b" + STOP
    assert rules(prog) == ["GG107"]


@pytest.mark.parametrize("proto", range(6))
def test_constants_match_pickle_for_every_protocol(proto: int) -> None:
    # bytes below protocol 3 are rebuilt by a call (_codecs.encode), so they are left out
    value = {"a": [1, 2.5, "x", None, True], "b": (1, (2, 3))}
    res = walk(memoryview(pickle.dumps(value, protocol=proto)))
    assert res.complete and not res.problems
    items = dict(res.value.items)  # type: ignore[attr-defined]
    assert constant(items["a"]) == [1, 2.5, "x", None, True]
    assert constant(items["b"]) == (1, (2, 3))


def test_agrees_with_pickletools_on_opcode_count() -> None:
    data = pickle.dumps({"k": list(range(50)), "s": {1, 2}}, protocol=4)
    assert walk(memoryview(data)).opcodes == sum(1 for _ in pickletools.genops(data))


def test_every_opcode_is_modelled() -> None:
    from gpenguard.pickling.walker import _DISPATCH

    assert {op.name for op in pickletools.opcodes} <= set(_DISPATCH)


def test_repeated_problems_are_capped(registered_extension: int) -> None:
    from gpenguard.pickling.walker import MAX_PROBLEMS_PER_RULE

    ext = b"\x83" + struct.pack("<H", registered_extension) + b"0"
    res = walk(memoryview(P2 + ext * 500 + b"N" + STOP))
    assert len(res.imports) == 500
    assert len(res.problems) == MAX_PROBLEMS_PER_RULE + 1
    assert "only the first" in res.problems[-1].message
