"""The architecture fingerprint: stable canonical form, GPEN-BFR-2048's published figures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gpenguard.errors import FormatError
from gpenguard.trust.fingerprint import (
    TensorInfo,
    fingerprint,
    fingerprint_from_keys_file,
    fingerprint_from_lines,
    normalize_dtype,
)

KEYS = Path(__file__).parent / "data" / "gpen_bfr_2048_keys.txt"

# The digest the shipped registry pins for GPEN-BFR-2048 (fp32). Changing the canonical form
# silently would un-approve every registered artifact, so this is pinned on purpose.
GPEN_BFR_2048_DIGEST = "59186077ce0af45f1360746d9946e1c4a7bb35fa3d534268235cad4af3bfa208"


def test_gpen_bfr_2048_counts_match_the_module() -> None:
    # gpen.md §2.5: 201 keys, 27 FIR-kernel buffers, 71,294,769 parameters, 71,295,201 elements.
    fp = fingerprint_from_keys_file(KEYS)
    assert fp.tensor_count == 201
    assert fp.element_count == 71_295_201
    assert fp.parameter_count == 71_294_769
    assert fp.digest == GPEN_BFR_2048_DIGEST


def test_canonical_text_is_exactly_as_documented() -> None:
    fp = fingerprint(
        [
            TensorInfo("b.weight", "F32", (2, 3)),
            TensorInfo("a.kernel", "F16", (4, 4)),
            TensorInfo("c.scale", "I64", ()),
        ]
    )
    expected = "a.kernel|F16|4,4\nb.weight|F32|2,3\nc.scale|I64|\ntensors=3\nelements=23\n"
    assert fp.canonical == expected
    assert fp.digest == hashlib.sha256(expected.encode()).hexdigest()
    assert fp.parameter_count == 23 - 16


def test_order_of_records_does_not_matter_but_every_field_does() -> None:
    base = [TensorInfo("x", "F32", (3, 3)), TensorInfo("y", "F32", (3,))]
    same = fingerprint(list(reversed(base))).digest
    assert fingerprint(base).digest == same
    assert fingerprint([TensorInfo("x", "F16", (3, 3)), base[1]]).digest != same
    assert fingerprint([TensorInfo("x", "F32", (9,)), base[1]]).digest != same
    assert fingerprint([TensorInfo("z", "F32", (3, 3)), base[1]]).digest != same
    assert fingerprint(base[:1]).digest != same


def test_torch_state_dict_matches_the_key_listing() -> None:
    torch = pytest.importorskip("torch")
    lines = KEYS.read_text().splitlines()[:12]
    sd = {}
    for line in lines:
        name, shape = line.split(" ")
        dims = [int(d) for d in shape.strip("[]").split(",")]
        sd[name] = torch.empty(dims, dtype=torch.float32, device="meta")
    from_torch = fingerprint(TensorInfo(k, str(v.dtype), tuple(v.shape)) for k, v in sd.items())
    assert from_torch.digest == fingerprint_from_lines(lines).digest


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [("torch.float32", "F32"), ("float16", "F16"), ("FloatStorage", "F32"),
     ("torch.BFloat16Storage", "BF16"), ("torch.int64", "I64"), ("BOOL", "BOOL")],
)
def test_dtype_spellings_normalise(spelling: str, canonical: str) -> None:
    assert normalize_dtype(spelling) == canonical


@pytest.mark.parametrize(
    "tensors",
    [
        [TensorInfo("a|b", "F32", (1,))],
        [TensorInfo("a\nb", "F32", (1,))],
        [TensorInfo("a", "F32", (1,)), TensorInfo("a", "F32", (2,))],
        [TensorInfo("a", "F32", (-1,))],
        [TensorInfo("a", "complex32", (1,))],
    ],
)
def test_ambiguous_or_invalid_records_are_refused(tensors: list[TensorInfo]) -> None:
    with pytest.raises(FormatError):
        fingerprint(tensors)


def test_malformed_key_listing_names_the_line() -> None:
    with pytest.raises(FormatError, match="line 2"):
        fingerprint_from_lines(["a [1,2]", "b 1,2"], source="keys.txt")


def test_the_gpen_module_itself_has_the_pinned_fingerprint_and_parameter_count() -> None:
    # The network the restorer runs (built on the meta device: shapes only, no memory) must
    # have exactly the architecture the registry pins, and the buffer rule must recover its
    # true parameter count from a state_dict that cannot say which tensors are buffers.
    torch = pytest.importorskip("torch")
    from gpenguard.nets.gpen import FullGenerator

    with torch.device("meta"):
        model = FullGenerator(2048)
    sd = model.state_dict()
    fp = fingerprint(TensorInfo(k, str(v.dtype), tuple(v.shape)) for k, v in sd.items())
    assert fp.digest == GPEN_BFR_2048_DIGEST
    assert fp.parameter_count == sum(p.numel() for p in model.parameters()) == 71_294_769
    assert fp.element_count - fp.parameter_count == sum(b.numel() for b in model.buffers())
