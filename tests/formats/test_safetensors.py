"""safetensors headers are validated at least as strictly as the reference parser."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gpenguard.errors import FormatError
from gpenguard.formats import Format, Limits
from tests.formats.conftest import read_bytes


def _file(header: dict[str, object] | str, data: bytes) -> bytes:
    text = header if isinstance(header, str) else json.dumps(header)
    raw = text.encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def _problems(data: bytes, limits: Limits | None = None) -> list[str]:
    box = read_bytes(data, limits=limits)
    assert box.format is Format.SAFETENSORS
    return [f.message for f in box.findings if f.rule_id == "GG300"]


def test_real_file_is_valid(tmp_path: Path) -> None:
    save_file(
        {"a": torch.zeros(3, 2), "b": torch.ones(5, dtype=torch.bfloat16), "e": torch.zeros(0)},
        str(tmp_path / "f"),
        metadata={"k": "v"},
    )
    assert _problems((tmp_path / "f").read_bytes()) == []


T = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    ("header", "data", "needle"),
    [
        (
            '{"a": ' + json.dumps(T) + ', "a": ' + json.dumps(T) + "}",
            b"\0" * 8,
            "duplicate key 'a'",
        ),
        ({"a": {**T, "dtype": "F33"}}, b"\0" * 8, "unknown dtype"),
        ({"a": {**T, "shape": [3]}}, b"\0" * 8, "needs 12 bytes"),
        ({"a": T, "b": {**T, "data_offsets": [4, 12]}}, b"\0" * 12, "overlaps"),
        ({"a": T, "b": {**T, "data_offsets": [12, 20]}}, b"\0" * 20, "hole"),
        ({"a": T}, b"\0" * 12, "cover 8 bytes of a 12-byte"),
        ({"a": {**T, "data_offsets": [0, 8]}}, b"\0" * 4, "cover 8 bytes of a 4-byte"),
        ({"a": T, "__metadata__": {"k": 1}}, b"\0" * 8, "__metadata__"),
        ({"a": {**T, "data_offsets": [8, 0]}}, b"\0" * 8, "before begin"),
        ({"a": {**T, "shape": [-1]}}, b"\0" * 8, "bad shape"),
        ({"a": {**T, "extra": 1}}, b"\0" * 8, "exactly dtype"),
        ({"a": {"dtype": "F4", "shape": [1], "data_offsets": [0, 0]}}, b"", "whole bytes"),
        ('{"a": [1, 2', b"", "not JSON"),
    ],
)
def test_invalid_headers(header: dict[str, object] | str, data: bytes, needle: str) -> None:
    problems = _problems(_file(header, data))
    assert any(needle in p for p in problems), problems


def test_header_size_bound() -> None:
    assert any(
        "exceeds" in p
        for p in _problems(_file({"a": T}, b"\0" * 8), Limits(max_safetensors_header=16))
    )


def test_length_beyond_file_is_not_safetensors() -> None:
    data = struct.pack("<Q", 10**9) + b'{"a": 1}'
    with pytest.raises(FormatError, match="unrecognised content"):
        read_bytes(data)
