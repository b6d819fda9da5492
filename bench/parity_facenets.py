"""Parity of gpenguard's ParseNet and RRDBNet with the official GPEN code, fp32 on CPU.

The official code is not part of this repository: fetch yangxy/GPEN and pass its root (the
folder holding ``face_parse/`` and ``sr_model/``). Both implementations get the same
state_dict (our random init with biases and BatchNorm statistics perturbed, so nothing
hides behind zeros and ones), loaded into the official module with ``strict=True``, and the
same input; the largest absolute output difference is reported. Exit status 1 if any is
above the tolerance. (RetinaFace's official code needs torchvision, which has no CPU build
here; its layout is pinned by tests/nets/test_retinaface.py instead.)

    python bench/parity_facenets.py --official /path/to/GPEN
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpenguard.nets.parsenet import ParseNet
from gpenguard.nets.rrdbnet import RRDBNet


def perturbed(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd = {}
    for key, value in net.state_dict().items():
        if key.endswith("running_var"):
            value = torch.rand(value.shape, generator=g) + 0.5
        elif value.is_floating_point() and (key.endswith("bias") or key.endswith("running_mean")):
            value = torch.randn(value.shape, generator=g) * 0.1
        sd[key] = value.clone()
    return sd


def compare(name: str, ours: torch.nn.Module, theirs: torch.nn.Module, x: torch.Tensor) -> float:
    sd = perturbed(ours)
    ours.load_state_dict(sd, strict=True)
    theirs.load_state_dict(sd, strict=True)
    with torch.no_grad():
        a, b = ours.eval()(x), theirs.eval()(x)
    a_t = a if isinstance(a, tuple) else (a,)
    b_t = b if isinstance(b, tuple) else (b,)
    diff = max(float((p - q).abs().max()) for p, q in zip(a_t, b_t, strict=True))
    scale = max(float(q.abs().max()) for q in b_t)
    print(f"{name:9s} keys {len(sd):4d}  max|diff| {diff:.3g}  (output range {scale:.3g})")
    return diff


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--official", type=Path, required=True)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()
    torch.manual_seed(0)
    sys.path[:0] = [str(args.official / "face_parse"), str(args.official / "sr_model")]
    from parse_model import ParseNet as OfficialParseNet  # type: ignore[import-not-found]
    from rrdbnet_arch import RRDBNet as OfficialRRDBNet  # type: ignore[import-not-found]

    worst = 0.0
    theirs_p = OfficialParseNet(
        512, 512, 32, 64, 19, norm_type="bn", relu_type="LeakyReLU", ch_range=[32, 256]
    )
    worst = max(
        worst, compare("ParseNet", ParseNet(), theirs_p, torch.rand(1, 3, 512, 512) * 2 - 1)
    )
    theirs_r = OfficialRRDBNet(
        num_in_ch=3, num_out_ch=3, num_feat=32, num_block=23, num_grow_ch=32, scale=2
    )
    worst = max(worst, compare("RRDBNet", RRDBNet(scale=2), theirs_r, torch.rand(1, 3, 64, 48)))
    sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
