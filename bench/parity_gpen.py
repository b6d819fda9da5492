"""Parity of gpenguard's FullGenerator with the official GPEN code (yangxy/GPEN), fp32 on CPU.

The official code is not part of this repository: fetch yangxy/GPEN and pass either its root
or a folder holding ``gpen_model.py`` and ``op/`` (from ``face_model/``). Its ``op`` package
JIT-compiles CUDA extensions at import when CUDA is visible, so the GPU is hidden here and
the official pure-PyTorch fallbacks run.

Both networks get the same state_dict: our random init with every bias, noise weight and
modulation bias perturbed too (the released init zeroes the noise weights, which would hide
the encoder wiring), loaded into the official module with ``strict=True``. Same input, and
the largest absolute output difference is reported per size; exit status 1 if any is above
the tolerance.

    python bench/parity_gpen.py --official /tmp/gpen_official --sizes 512 2048
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

os.environ["CUDA_VISIBLE_DEVICES"] = ""

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpenguard.nets.gpen import FullGenerator, gpen_bfr


def official_dir(root: Path) -> Path:
    for candidate in (root / "face_model", root):
        if (candidate / "gpen_model.py").is_file() and (candidate / "op").is_dir():
            return candidate
    raise SystemExit(f"{root}: no gpen_model.py and op/ here or under face_model/")


def randomised_state(model: FullGenerator, seed: int) -> dict[str, torch.Tensor]:
    """The model's random init with every bias and noise weight perturbed, so all matter."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.endswith("noise.weight"):
            state[key] = 0.5 + 0.5 * torch.rand(value.shape, generator=gen)
        elif key.endswith("bias"):
            state[key] = value + 0.1 * torch.randn(value.shape, generator=gen)
        else:  # weights (random at init) and the FIR kernels
            state[key] = value.clone()
    return state


def build_official(src: Path, size: int) -> torch.nn.Module:
    sys.path.insert(0, str(src))
    import gpen_model  # type: ignore[import-not-found]

    cfg = {256: (1, 0.5)}.get(size, (2, 1.0))
    return gpen_model.FullGenerator(
        size, 512, 8, channel_multiplier=cfg[0], narrow=cfg[1], device="cpu"
    )


def ours(size: int) -> FullGenerator:
    if size in (256, 512, 1024, 2048):
        return gpen_bfr(size)
    return FullGenerator(size, 512, 8, channel_multiplier=2, narrow=1.0)


def compare(src: Path, size: int, seed: int, batch: int) -> tuple[float, float, float, float]:
    torch.manual_seed(seed)
    mine = ours(size).eval()
    state = randomised_state(mine, seed)
    mine.load_state_dict(state, strict=True)
    x = (
        torch.rand((batch, 3, size, size), generator=torch.Generator().manual_seed(seed + 1)) * 2
        - 1
    )

    official = build_official(src, size).eval()
    official.load_state_dict(state, strict=True)
    del state
    with torch.inference_mode():
        t0 = time.perf_counter()
        image, extra = official(x)
        t_official = time.perf_counter() - t0
    assert extra is None
    del official
    gc.collect()
    with torch.inference_mode():
        t0 = time.perf_counter()
        mine_out = mine(x)
        t_ours = time.perf_counter() - t0
    diff = (mine_out - image).abs().max().item()
    return diff, image.abs().max().item(), t_official, t_ours


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--official", type=Path, required=True, help="yangxy/GPEN checkout or its face_model/"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--tol", type=float, default=1e-4)
    args = parser.parse_args()
    src = official_dir(args.official)
    torch.set_grad_enabled(False)
    worst = 0.0
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, CPU, batch {args.batch}"
    )
    print(f"{'size':>6} {'max|diff|':>12} {'max|out|':>10} {'official s':>11} {'ours s':>8}")
    for size in args.sizes:
        diff, peak, t_off, t_ours = compare(src, size, args.seed, args.batch)
        worst = max(worst, diff)
        print(f"{size:>6} {diff:>12.3e} {peak:>10.3f} {t_off:>11.2f} {t_ours:>8.2f}", flush=True)
    ok = worst < args.tol
    print(f"{'PASS' if ok else 'FAIL'}: worst max|diff| {worst:.3e} (tolerance {args.tol:.0e})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
