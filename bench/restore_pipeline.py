"""Where a face's time goes: GPEN's forward against everything the pipeline adds around it.

One photo with one face, real networks at their released shapes with random weights
(RetinaFace-R50 with its heads set to report one face, ParseNet at 512, GPEN-BFR-``size``).
Reported: detection, the GPEN forward alone, ParseNet alone, and the whole `Restorer.restore`;
the pipeline's own share (alignment, masks, warps, paste) is the rest. The peer is GPEN's
forward measured in the same run: the pipeline should add little on top of its networks.

    python bench/restore_pipeline.py --size 512 --threads 2
    python bench/restore_pipeline.py --size 2048 --device cuda --dtype float16
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpenguard.nets.parsenet import ParseNet  # noqa: E402
from gpenguard.restore import Restorer, pipeline  # noqa: E402
from tests.restore.test_pipeline import rigged_retinaface  # noqa: E402


def timed(fn: Callable[[], object], repeat: int, device: torch.device) -> float:
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times) if repeat > 1 else times[0]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    restorer = Restorer.from_modules(
        pipeline.build_generator(args.size),
        detector=rigged_retinaface(spread=3.0),
        parser=ParseNet(),
        size=args.size,
        device=device,
        dtype=dtype,
    )
    assert restorer.detector is not None and restorer.parser is not None
    detect = restorer.detector.detect
    restorer.detector.detect = lambda img: detect(img)[:1]  # type: ignore[method-assign]
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (600, 800, 3), dtype=np.uint8), "RGB")
    x = torch.rand(1, 3, args.size, args.size, device=device, dtype=dtype) * 2 - 1
    p = torch.rand(1, 3, 512, 512, device=device) * 2 - 1

    with torch.inference_mode():
        restorer.restore(photo)  # warm-up (allocator, kernels)
        t_detect = timed(lambda: detect(photo), args.repeat, device)
        t_gpen = timed(lambda: restorer.generator(x), args.repeat, device)
        t_parse = timed(lambda: restorer.parser(p), args.repeat, device)  # type: ignore[misc]
    t_total = timed(lambda: restorer.restore(photo), args.repeat, device)
    rest = t_total - t_detect - t_gpen - t_parse
    print(
        f"GPEN-BFR-{args.size} on {args.device} ({args.dtype}, {args.threads} threads), one face in 800x600"
    )
    for name, t in (
        ("detection", t_detect),
        ("GPEN forward", t_gpen),
        ("ParseNet", t_parse),
        ("pipeline rest", rest),
    ):
        print(f"  {name:14s} {t:8.3f} s")
    print(f"  whole restore  {t_total:8.3f} s = {t_total / t_gpen:.2f}x the GPEN forward; "
          f"own work {rest / t_gpen:.1%} of it (total minus the networks; +-timing noise)")  # fmt: skip


if __name__ == "__main__":
    main()
