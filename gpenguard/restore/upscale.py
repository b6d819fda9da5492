"""Background super-resolution with Real-ESRNet, tile by tile.

The network sees overlapping tiles (``pad`` px of context on each side, as GPEN's
``--tile_size``/``tile_pad`` do) and writes each tile's centre into the output image, so
memory is bounded by the tile size whatever the photo's size.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.nn import functional

from gpenguard.nets.rrdbnet import RRDBNet
from gpenguard.restore.paste import read_region


@torch.inference_mode()
def upscale(
    image: Image.Image, net: RRDBNet, *, device: torch.device, tile: int = 400, pad: int = 10
) -> Image.Image:
    """``image`` (RGB) enlarged ``net.scale`` times."""
    if tile <= 0 or pad < 0:
        raise ValueError("tile must be positive and pad non-negative")
    s = net.scale
    width, height = image.size
    out = Image.new("RGB", (width * s, height * s))
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            x1, y1 = min(x0 + tile, width), min(y0 + tile, height)
            px0, py0 = max(x0 - pad, 0), max(y0 - pad, 0)
            px1, py1 = min(x1 + pad, width), min(y1 + pad, height)
            x = read_region(image, (px0, py0, px1, py1), device)[None] / 255.0
            # The unshuffle needs sides divisible by its factor: mirror-pad the far edges.
            f = net.unshuffle
            ph, pw = (-x.shape[2]) % f, (-x.shape[3]) % f
            if ph or pw:
                mode = "reflect" if min(x.shape[2:]) > max(ph, pw) else "replicate"
                x = functional.pad(x, (0, pw, 0, ph), mode=mode)
            dtype = next(net.parameters()).dtype
            y = net(x.to(dtype)).float()[0]
            y = y[:, (y0 - py0) * s : (y1 - py0) * s, (x0 - px0) * s : (x1 - px0) * s]
            arr = (y.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            out.paste(Image.fromarray(np.ascontiguousarray(arr), "RGB"), (x0 * s, y0 * s))
    return out
