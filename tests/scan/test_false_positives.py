"""Ordinary contents that were blocked at random (issue 9, item 5) pass the default policy,
and what was allowed for them cannot be stretched into running code.

Every file here is real `torch.save` / `numpy.savez` output; every attack is a hand-written
program using the same names with the arguments a hostile file would choose.
"""

from __future__ import annotations

import io
import pathlib
import random
import types

import numpy as np
import pytest
import torch

from gpenguard.findings import Severity
from gpenguard.formats import Source
from gpenguard.policy import Policy
from gpenguard.scan import Verdict, scan_source
from gpenguard.scan.allowlist import entries, judge
from tests.corpus import op_global


def _scan(data: bytes, name: str = "x.pt"):  # type: ignore[no-untyped-def]
    return scan_source(Source.from_bytes(data, name))


def _saved(obj: object, **kw: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


def _generator() -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(7)
    return g


def _float4() -> torch.Tensor:
    return torch.zeros(4, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)


CASES = {
    "transformer_gelu": lambda: torch.nn.TransformerEncoderLayer(8, 2, activation="gelu"),
    "simple_namespace": lambda: {"cfg": types.SimpleNamespace(lr=0.1, sizes=[1, 2])},
    "generator": lambda: {"rng": _generator()},
    "generator_state": lambda: {"rng_state": _generator().get_state()},
    "random_state": lambda: {"py_rng": random.getstate()},
    "paths": lambda: {
        "out": pathlib.Path("runs/exp1"),
        "posix": pathlib.PurePosixPath("/data/x"),
        "windows": pathlib.PureWindowsPath("C:/data/x"),
    },
    "float4": lambda: {"w": _float4()},
    "float8_e8m0": lambda: {"scale": torch.ones(2).to(torch.float8_e8m0fnu)},
    "weight_norm_module": lambda: torch.nn.utils.weight_norm(torch.nn.Linear(3, 2)),
    "weight_norm_state": lambda: torch.nn.utils.weight_norm(torch.nn.Linear(3, 2)).state_dict(),
    "parametrized_weight_norm": lambda: torch.nn.utils.parametrizations.weight_norm(
        torch.nn.Linear(3, 2)
    ).state_dict(),
    "parametrized_spectral_norm": lambda: torch.nn.utils.parametrizations.spectral_norm(
        torch.nn.Linear(3, 3)
    ).state_dict(),
}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("proto", [2, 4])
@pytest.mark.parametrize("name", sorted(CASES))
def test_ordinary_contents_pass(name: str, proto: int, legacy: bool) -> None:
    obj = CASES[name]()
    data = _saved(obj, pickle_protocol=proto, _use_new_zipfile_serialization=not legacy)
    report = _scan(data, f"{name}.pt")
    assert report.verdict is Verdict.PASS, report.findings
    assert {f.rule_id for f in report.findings} <= {"GG303"}, report.findings


def test_every_new_entry_says_why() -> None:
    table = entries("default")
    for name in ("torch._C._nn.gelu", "torch._C.Generator", "types.SimpleNamespace",
                 "torch.nn.utils.weight_norm.WeightNorm", "torch.float4_e2m1fn_x2"):  # fmt: skip
        assert table[name].strip(), name


@pytest.mark.parametrize(
    "name",
    [
        # the rest of the modules the new names live in stays refused, and CRITICAL
        "types.FunctionType", "types.CodeType", "torch._C._nn.linear", "torch._C._nn.one_hot",
        "torch._C._set_grad_enabled", "torch._C._jit_pass_inline", "torch._C.import_ir_module",
        # the allowed names cannot be used as a step to something else
        "torch._C._nn.gelu.__self__", "types.SimpleNamespace.__init__",
        "torch._C.Generator.__setstate__", "torch.nn.utils.weight_norm.WeightNorm.apply",
        "torch.nn.utils.weight_norm.torch",
    ],
)  # fmt: skip
def test_neighbours_of_new_entries_stay_refused(name: str) -> None:
    module, _, attr = name.rpartition(".")
    verdict = judge(module, attr, Policy())
    assert verdict is not None and verdict.severity >= Severity.HIGH, name


def _program(*parts: bytes) -> bytes:
    return b"\x80\x02" + b"".join(parts) + b"."


def test_dotted_names_through_an_allowed_global_block() -> None:
    # protocol 4 resolves dotted names: gelu's module object must not be reachable through it
    program = b"\x80\x04\x8c\x0ctorch._C._nn\x94\x8c\x0egelu.__self__\x94\x93\x94."
    report = _scan(program, "dotted.pkl")
    assert report.verdict is Verdict.BLOCK


def test_allowed_callables_with_hostile_arguments_build_nothing_dangerous() -> None:
    """What a file can do with the new names: call them. Each call's result is inert."""
    # SimpleNamespace(**state) only sets attributes; WeightNorm(name, dim) stores two values;
    # Generator(device) builds an RNG: none of them imports, opens, or runs anything.
    hostile = _program(
        op_global("types", "SimpleNamespace"), b")R",
        b"}", b"X\x08\x00\x00\x00__init__", op_global("os", "system"), b"s", b"b",
    )  # fmt: skip
    report = _scan(hostile, "ns.pkl")
    assert report.verdict is Verdict.BLOCK
    assert any(f.global_name == "os.system" for f in report.findings)


def test_npz_object_arrays_are_judged_by_their_pickles() -> None:
    ok = io.BytesIO()
    np.savez(ok, labels=np.array([{"cls": 1}, "cat", None], dtype=object), w=np.zeros(3))
    report = _scan(ok.getvalue(), "obj.npz")
    assert report.verdict is Verdict.PASS, report.findings
    assert {f.rule_id for f in report.findings} <= {"GG302"}
    packed = io.BytesIO()
    np.savez_compressed(packed, labels=np.array([1.5, "x"], dtype=object))
    assert _scan(packed.getvalue(), "packed.npz").verdict is Verdict.PASS

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.system, ("true",))

    bad = io.BytesIO()
    np.savez(bad, x=np.array([Evil()], dtype=object))
    report = _scan(bad.getvalue(), "bad.npz")
    assert report.verdict is Verdict.BLOCK
    assert any(f.global_name in ("os.system", "posix.system") for f in report.findings)
