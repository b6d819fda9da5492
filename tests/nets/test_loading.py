"""Strict loading of .safetensors weights into a module, with errors naming file and key."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from gpenguard.errors import (
    FormatError,
    GpenguardError,
    InputError,
    LimitExceeded,
    ModelError,
    VerificationError,
)
from gpenguard.nets.loading import load_safetensors, read_safetensors


class Tiny(nn.Module):
    kernel: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.norm = nn.BatchNorm2d(3)
        self.register_buffer("kernel", torch.ones(2, 2))


def saved(tmp_path: Path, tensors: dict[str, torch.Tensor], name: str = "w.safetensors") -> Path:
    path = tmp_path / name
    save_file(tensors, str(path))
    return path


def test_loads_every_tensor_and_buffer(tmp_path: Path) -> None:
    source = Tiny()
    with torch.no_grad():
        source.norm.running_mean.fill_(0.25)
        source.kernel.fill_(3.0)
    path = saved(tmp_path, source.state_dict())
    target = load_safetensors(Tiny(), path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    assert isinstance(target.conv.weight, nn.Parameter) and target.conv.weight.requires_grad


def test_casts_to_the_module_dtype(tmp_path: Path) -> None:
    source = Tiny().half()
    path = saved(tmp_path, source.state_dict())
    target = load_safetensors(Tiny(), path)
    assert target.conv.weight.dtype == torch.float32
    torch.testing.assert_close(target.conv.weight, source.conv.weight.float())


def test_missing_key_is_named(tmp_path: Path) -> None:
    state = Tiny().state_dict()
    del state["norm.running_var"]
    path = saved(tmp_path, state, "missing.safetensors")
    with pytest.raises(
        ModelError, match=r"missing\.safetensors: 1 key\(s\) of Tiny missing: norm\.running_var"
    ) as info:
        load_safetensors(Tiny(), path)
    assert info.value.path == str(path)


def test_unexpected_key_is_named(tmp_path: Path) -> None:
    state = Tiny().state_dict() | {"conv.extra": torch.zeros(1)}
    with pytest.raises(ModelError, match=r"unexpected key\(s\) for Tiny: conv\.extra"):
        load_safetensors(Tiny(), saved(tmp_path, state))


def test_shape_mismatch_is_named(tmp_path: Path) -> None:
    state = Tiny().state_dict()
    state["conv.weight"] = torch.zeros(3, 2, 5, 5)
    with pytest.raises(
        ModelError,
        match=r"conv\.weight: shape \[3, 2, 5, 5\] in the file, Tiny expects \[3, 2, 3, 3\]",
    ):
        load_safetensors(Tiny(), saved(tmp_path, state))


def test_integer_tensor_for_a_float_parameter_is_refused(tmp_path: Path) -> None:
    state = Tiny().state_dict()
    state["conv.bias"] = torch.zeros(3, dtype=torch.int32)
    with pytest.raises(ModelError, match=r"conv\.bias: dtype torch\.int32"):
        load_safetensors(Tiny(), saved(tmp_path, state))


def test_failed_load_leaves_the_module_untouched(tmp_path: Path) -> None:
    target = Tiny()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    state = {k: torch.zeros_like(v) for k, v in Tiny().state_dict().items()}
    state["norm.weight"] = torch.zeros(4)
    with pytest.raises(ModelError):
        load_safetensors(target, saved(tmp_path, state))
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_missing_file_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_safetensors(Tiny(), tmp_path / "absent.safetensors")
    with pytest.raises(InputError, match="not a file"):
        load_safetensors(Tiny(), tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(
        FormatError, match=r"bad\.safetensors: not a valid safetensors file"
    ) as info:
        load_safetensors(Tiny(), bad)
    assert isinstance(info.value, GpenguardError)


def test_rewriting_the_file_after_loading_changes_nothing(tmp_path: Path) -> None:
    """The tensors are copies: a file swapped after the check cannot reach the weights."""
    path = saved(tmp_path, {"w": torch.zeros(100_000)})
    tensors = read_safetensors(path)
    raw = bytearray(path.read_bytes())
    raw[-4000:] = b"\x01" * 4000
    path.write_bytes(bytes(raw))
    assert tensors["w"].abs().sum() == 0
    assert tensors["w"].untyped_storage().nbytes() == 400_000


def test_sha256_is_checked_on_the_bytes_used(tmp_path: Path) -> None:
    path = saved(tmp_path, Tiny().state_dict())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    load_safetensors(Tiny(), path, sha256=digest.upper())
    with pytest.raises(VerificationError, match=f"sha256 {digest}, expected 00") as info:
        load_safetensors(Tiny(), path, sha256="00" * 32)
    assert info.value.exit_code == 1


def test_size_bound(tmp_path: Path) -> None:
    path = saved(tmp_path, {"w": torch.zeros(1000)})
    with pytest.raises(LimitExceeded, match="more than the 1000 allowed"):
        read_safetensors(path, max_bytes=1000)


def test_every_float_dtype_round_trips(tmp_path: Path) -> None:
    want = {
        str(dt): torch.arange(6, dtype=dt).reshape(2, 3)
        for dt in (torch.float16, torch.bfloat16, torch.float64)
    }
    got = read_safetensors(saved(tmp_path, want | {"empty": torch.zeros(0, 3)}))
    for key, value in want.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value)
    assert got["empty"].shape == (0, 3)
