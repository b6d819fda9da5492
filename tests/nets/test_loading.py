"""Strict loading of .safetensors weights into a module, with errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from gpenguard.errors import FormatError, GpenguardError, InputError, ModelError
from gpenguard.nets.loading import load_safetensors


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
