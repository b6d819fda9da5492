"""Peak memory of restoring a very large photo, against the floor any restorer must pay.

The floor is holding the decoded input and the output image (2 x W x H x 3 bytes) on top of
an idle torch process; the restorer should stay a small constant above it however large the
photo, because it detects on a 1000-px copy and crops, warps and pastes face regions only.
Each measurement runs in its own subprocess, so peak RSS (``ru_maxrss``) is its own.

The networks are the real RetinaFace-R50 body (random weights, heads set to report a grid
of faces) and a stand-in for GPEN and ParseNet (their memory does not depend on the photo's
size and is measured by bench/restore.py):

    python bench/restore_large_image.py                 # 12000 x 9000 (108 MP)
    python bench/restore_large_image.py --width 6000 --height 4000 --size 1024
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(kind: str, width: int, height: int, size: int, faces: int) -> dict[str, float]:
    import numpy as np
    import torch
    from PIL import Image

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from gpenguard.restore import Restorer
    from tests.restore.test_pipeline import AllFace, Identity, rigged_retinaface

    # A smooth synthetic photo, built row-block by row-block to keep the build itself small.
    image = Image.new("RGB", (width, height))
    for y0 in range(0, height, 1024):
        h = min(1024, height - y0)
        ys, xs = np.mgrid[y0 : y0 + h, 0:width]
        block = np.stack([(xs * 7) % 256, (ys * 5) % 256, ((xs + ys) * 3) % 256], -1)
        image.paste(Image.fromarray(block.astype(np.uint8)), (0, y0))
        del ys, xs, block
    restorer = Restorer.from_modules(
        Identity(),
        detector=rigged_retinaface(),
        parser=AllFace(),  # type: ignore[arg-type]
        size=size,
    )
    assert restorer.detector is not None
    detect = restorer.detector.detect
    # The rigged heads report a face on every 256-px anchor; keep a photo-like handful.
    restorer.detector.detect = lambda img: detect(img)[:faces]  # type: ignore[method-assign]
    base = peak_rss()
    t0 = time.perf_counter()
    if kind == "floor":
        out = Image.fromarray(np.array(image))  # decoded input + one output image
        found = 0
    else:
        result = restorer.restore(image)
        out, found = result.image, len(result.faces)
    seconds = time.perf_counter() - t0
    assert out.size == image.size
    return {"peak": peak_rss(), "before": base, "seconds": seconds, "faces": found}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--width", type=int, default=12000)
    ap.add_argument("--height", type=int, default=9000)
    ap.add_argument("--size", type=int, default=512, help="GPEN crop size")
    ap.add_argument("--faces", type=int, default=8, help="faces to restore")
    ap.add_argument("--child", choices=["floor", "restore"])
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.width, args.height, args.size, args.faces)))
        return
    runs = {}
    for kind in ("floor", "restore"):
        cmd = [sys.executable, __file__, "--child", kind, "--width", str(args.width),
               "--height", str(args.height), "--size", str(args.size), "--faces", str(args.faces)]  # fmt: skip
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=True,
            env={"OMP_NUM_THREADS": "1", "PATH": ""},
        )
        runs[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    mib = 1024 * 1024
    pixels = args.width * args.height * 3
    floor, rest = runs["floor"], runs["restore"]
    print(f"image {args.width}x{args.height} ({pixels / mib:.0f} MiB RGB), GPEN crop {args.size}px, "
          f"{rest['faces']} faces")  # fmt: skip
    print(f"floor   peak RSS {floor['peak'] / mib:8.0f} MiB")
    print(f"restore peak RSS {rest['peak'] / mib:8.0f} MiB  ({rest['seconds']:.1f} s)")
    print(f"restore / floor: {rest['peak'] / floor['peak']:.2f}x; "
          f"extra over floor: {(rest['peak'] - floor['peak']) / mib:.0f} MiB "
          f"= {(rest['peak'] - floor['peak']) / pixels:.2f} x the image's bytes")  # fmt: skip


if __name__ == "__main__":
    main()
