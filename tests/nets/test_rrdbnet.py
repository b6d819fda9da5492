"""Real-ESRNet x2 (RRDBNet): the layout of ``realesrnet_x2.pth`` and tiled upscaling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from gpenguard.nets.rrdbnet import RRDBNet
from gpenguard.restore.upscale import upscale
from gpenguard.restore.weights import load_into

torch.set_num_threads(1)


def expected_layout(feat: int = 32, grow: int = 32, blocks: int = 23) -> dict[str, tuple[int, ...]]:
    """GPEN's RRDBNet(3, 3, scale=2, num_feat=32, num_block=23, num_grow_ch=32), by hand."""
    keys: dict[str, tuple[int, ...]] = {
        "conv_first.weight": (feat, 12, 3, 3),
        "conv_first.bias": (feat,),
    }
    for b in range(blocks):
        for r in (1, 2, 3):
            for c in range(1, 6):
                cin, cout = feat + (c - 1) * grow, grow if c < 5 else feat
                keys[f"body.{b}.rdb{r}.conv{c}.weight"] = (cout, cin, 3, 3)
                keys[f"body.{b}.rdb{r}.conv{c}.bias"] = (cout,)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        keys[f"{name}.weight"], keys[f"{name}.bias"] = (feat, feat, 3, 3), (feat,)
    keys["conv_last.weight"], keys["conv_last.bias"] = (3, feat, 3, 3), (3,)
    return keys


def test_state_dict_matches_realesrnet_x2() -> None:
    net = RRDBNet(scale=2)
    actual = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert actual == expected_layout()
    assert len(actual) == 702
    # 9,590,947 fp32 parameters = 38.4 MB; the published 77,228,423-byte file holds this
    # twice (BasicSR saves ``params`` and ``params_ema``).
    assert sum(p.numel() for p in net.parameters()) == 9_590_947


def test_params_ema_is_picked_from_a_file_holding_both(tmp_path: Path) -> None:
    ema, raw = RRDBNet(scale=2, num_block=1), RRDBNet(scale=2, num_block=1)
    tensors = {f"params_ema.{k}": v for k, v in ema.state_dict().items()}
    tensors |= {f"params.{k}": v for k, v in raw.state_dict().items()}
    path = tmp_path / "realesrnet_x2.safetensors"
    save_file(tensors, str(path))
    loaded = load_into(RRDBNet(scale=2, num_block=1), path, nested="params_ema")
    torch.testing.assert_close(loaded.conv_last.weight, ema.conv_last.weight)


def test_tiles_join_without_seams() -> None:
    torch.manual_seed(0)
    net = RRDBNet(scale=2, num_feat=8, num_block=1, num_grow_ch=4).eval()
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (37, 45, 3), dtype=np.uint8), "RGB")
    cpu = torch.device("cpu")
    whole = np.asarray(upscale(image, net, device=cpu, tile=1000, pad=0)).astype(int)
    tiled = np.asarray(upscale(image, net, device=cpu, tile=16, pad=40)).astype(int)
    assert whole.shape == (74, 90, 3)
    assert np.abs(whole - tiled).max() <= 1
