"""Hashing throughput: gpenguard's `hash_source` against raw hashlib.sha256, same file, same run.

    python bench/hashing.py [--size-mb 1024] [--repeat 3] [--dir DIR]

Writes a random file of the given size (default 1 GiB), then alternates the two contenders
`--repeat` times so page-cache state and CPU frequency affect both alike, and prints the best
throughput of each and the ratio gpenguard / hashlib (target >= 0.90). The baseline reads the
file with plain buffered reads of 1 MiB, the way a careful script would; gpenguard hashes the
Source's mmap (the bytes the scanner walks) in 16 MiB slices.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpenguard.formats.source import Source
from gpenguard.trust.hashing import hash_source


def raw_hashlib(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def gpenguard_hash(path: Path) -> str:
    with Source.open(path) as src:
        return hash_source(src).sha256


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    size = args.size_mb * 2**20
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        path = Path(d) / "blob.bin"
        block = os.urandom(1 << 20)
        with path.open("wb") as f:
            for i in range(args.size_mb):
                f.write(block[i % 251 :] + block[: i % 251])
        raw_hashlib(path)  # warm the page cache once, so both read from memory
        best = {"hashlib": float("inf"), "gpenguard": float("inf")}
        digests = set()
        for _ in range(args.repeat):
            for label, fn in (("hashlib", raw_hashlib), ("gpenguard", gpenguard_hash)):
                t0 = time.perf_counter()
                digests.add(fn(path))
                best[label] = min(best[label], time.perf_counter() - t0)
        if len(digests) != 1:
            raise SystemExit(f"digests disagree: {digests}")
    gib = size / 2**30
    print(f"file: {size:,} bytes, best of {args.repeat}")
    for label, secs in best.items():
        print(f"  {label:10s} {secs:7.3f} s  {gib / secs:6.3f} GiB/s")
    ratio = best["hashlib"] / best["gpenguard"]
    print(f"ratio gpenguard/hashlib throughput: {ratio:.3f} (target >= 0.90)")


if __name__ == "__main__":
    main()
