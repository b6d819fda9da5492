"""Cost of the CPython cross-check: scan with it against scan without it, one run.

    python bench/crosscheck.py [--repeat 5] [--keys /work/shared/research/gpen2048_keys.txt]

Builds a GPEN-BFR-2048-shaped checkpoint (the published state_dict's 201 tensor shapes, random
fp32, ~285 MB, ``torch.save``) and the benign corpus of small checkpoints (``tests/corpus.py``),
then measures in a fresh child process that never imports torch (as the CLI runs): for each
file, `scan_source` with and without the cross-check, alternating, `--repeat` times, best of
each. Printed: per-file time both ways, the overhead in ms and the ratio with/without, and the
time when the check must run in a forked child (another thread alive, or a pickle over 128 KiB).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_KEYS = Path("/work/shared/research/gpen2048_keys.txt")


def _measure(files: list[str], repeat: int) -> None:
    """Child: time scan_source both ways per file; prints one JSON line."""
    sys.path.insert(0, str(ROOT))
    import threading

    from gpenguard.formats import Source
    from gpenguard.scan import scan_source

    out = {}
    for f in files:
        best = {"without": float("inf"), "with": float("inf"), "forked": float("inf")}
        verdicts = set()
        with Source.open(f) as src:
            for _ in range(repeat):
                for mode in best:
                    # another live thread sends the cross-check to a forked child (as under
                    # the CLI's progress display); otherwise small pickles run in-process
                    stop = threading.Event()
                    if mode == "forked":
                        threading.Thread(target=stop.wait, daemon=True).start()
                    t0 = time.perf_counter()
                    rep = scan_source(src, cross_check=mode != "without")
                    best[mode] = min(best[mode], time.perf_counter() - t0)
                    stop.set()
                    verdicts.add(rep.verdict.value)
        out[f] = {**best, "verdicts": sorted(verdicts)}
    print(json.dumps(out))


def _build(dest: Path, keys: Path) -> None:
    import torch

    sd = {}
    for line in keys.read_text().splitlines():
        if line.strip():
            name, shape = line.split()
            sd[name] = torch.randn([int(d) for d in re.findall(r"\d+", shape)])
    torch.save(sd, dest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keys", type=Path, default=DEFAULT_KEYS)
    ap.add_argument("--measure", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure is not None:
        _measure(args.measure, args.repeat)
        return
    sys.path.insert(0, str(ROOT))
    from tests.corpus import make_benign_corpus

    with tempfile.TemporaryDirectory() as d:
        big = Path(d) / "GPEN-BFR-2048.pth"
        _build(big, args.keys)
        size = big.stat().st_size
        small = [str(item.path) for item in make_benign_corpus(Path(d) / "benign")]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        cmd = [
            sys.executable,
            __file__,
            "--repeat",
            str(args.repeat),
            "--measure",
            str(big),
            *small,
        ]
        res = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True).stdout)
    b = res.pop(str(big))
    print(f"GPEN-2048-shaped checkpoint ({size / 2**20:.0f} MiB)")
    print(
        f"  scan without cross-check {b['without'] * 1e3:8.1f} ms   with {b['with'] * 1e3:8.1f} ms"
        f"   overhead {(b['with'] - b['without']) * 1e3:6.1f} ms   ratio {b['with'] / b['without']:.2f}x"
        f"   verdicts {b['verdicts']}"
    )
    print(f"  with the cross-check in a forked child {b['forked'] * 1e3:8.1f} ms")
    w = [v["with"] for v in res.values()]
    wo = [v["without"] for v in res.values()]
    over = [v["with"] - v["without"] for v in res.values()]
    print(f"benign corpus: {len(res)} small files (median per file)")
    print(
        f"  scan without cross-check {statistics.median(wo) * 1e3:8.1f} ms   with "
        f"{statistics.median(w) * 1e3:8.1f} ms   overhead {statistics.median(over) * 1e3:6.1f} ms"
        f"   ratio {statistics.median(w) / statistics.median(wo):.2f}x   (total {sum(w) / sum(wo):.2f}x)"
    )
    forked = statistics.median(v["forked"] for v in res.values())
    print(f"  with the cross-check in a forked child {forked * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
