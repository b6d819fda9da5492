"""ParseNet: the state_dict layout of ``ParseNet-latest.pth`` and its forward contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gpenguard.errors import ModelError
from gpenguard.nets.parsenet import CLASSES, ParseNet
from gpenguard.restore.weights import load_into

torch.set_num_threads(1)


def _conv(prefix: str, cin: int, cout: int, *, bias: bool) -> dict[str, tuple[int, ...]]:
    keys: dict[str, tuple[int, ...]] = {f"{prefix}.conv2d.weight": (cout, cin, 3, 3)}
    if bias:
        keys[f"{prefix}.conv2d.bias"] = (cout,)
    return keys


def _bn(prefix: str, ch: int) -> dict[str, tuple[int, ...]]:
    p = f"{prefix}.norm.norm"
    return {
        f"{p}.weight": (ch,),
        f"{p}.bias": (ch,),
        f"{p}.running_mean": (ch,),
        f"{p}.running_var": (ch,),
        f"{p}.num_batches_tracked": (),
    }


def _block(prefix: str, cin: int, cout: int, *, shortcut: bool) -> dict[str, tuple[int, ...]]:
    keys = _conv(f"{prefix}.shortcut_func", cin, cout, bias=True) if shortcut else {}
    keys |= _conv(f"{prefix}.conv1", cin, cout, bias=False) | _bn(f"{prefix}.conv1", cout)
    keys |= _conv(f"{prefix}.conv2", cout, cout, bias=False) | _bn(f"{prefix}.conv2", cout)
    return keys


def expected_layout() -> dict[str, tuple[int, ...]]:
    """GPEN's ParseNet(512, 512, 32, 64, 19, bn, LeakyReLU, ch_range [32, 256]) written out by
    hand: 4 down blocks 64->128->256->256->256, 10 body blocks at 256, 4 up blocks
    256->256->256->128->64, two output convs."""
    keys = _conv("encoder.0", 3, 64, bias=True)
    for i, (cin, cout) in enumerate(((64, 128), (128, 256), (256, 256), (256, 256)), start=1):
        keys |= _block(f"encoder.{i}", cin, cout, shortcut=True)
    for i in range(10):
        keys |= _block(f"body.{i}", 256, 256, shortcut=False)
    for i, (cin, cout) in enumerate(((256, 256), (256, 256), (256, 128), (128, 64))):
        keys |= _block(f"decoder.{i}", cin, cout, shortcut=True)
    keys |= _conv("out_img_conv", 64, 3, bias=True) | _conv("out_mask_conv", 64, 19, bias=True)
    return keys


def test_state_dict_matches_the_published_layout() -> None:
    net = ParseNet()
    actual = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    expected = expected_layout()
    assert set(actual) == set(expected)
    assert actual == expected
    assert len(actual) == 238
    assert sum(1 for k in actual if not k.endswith("num_batches_tracked")) == 202
    assert sum(p.numel() for p in net.parameters()) == 21_303_254
    assert len(CLASSES) == 19


def test_forward_shapes_on_a_narrow_config() -> None:
    net = ParseNet(
        in_size=64, out_size=64, min_feat_size=16, base_ch=8, res_depth=2, ch_range=(8, 16)
    )
    with torch.inference_mode():
        logits, image = net.eval()(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert logits.shape == (2, 19, 64, 64)
    assert image.shape == (2, 3, 64, 64)


def test_strict_round_trip_through_safetensors(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = ParseNet()
    for p in source.parameters():
        p.data.normal_()
    path = tmp_path / "parsenet.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    fresh = load_into(ParseNet(), path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value)


def test_a_retinaface_file_is_refused_with_reasons(tmp_path: Path) -> None:
    path = tmp_path / "wrong.safetensors"
    save_file({"body.conv1.weight": torch.zeros(64, 3, 7, 7)}, str(path))
    with pytest.raises(
        ModelError, match=r"202 key\(s\) of ParseNet missing: encoder\.0\.conv2d\.weight"
    ):
        load_into(ParseNet(), path)
