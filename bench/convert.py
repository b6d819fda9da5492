"""Conversion cost: gpenguard's converter against the usual recipe and against `cp`, one run.

    python bench/convert.py [--repeat 3] [--dir DIR] [--keys shared/research/gpen2048_keys.txt]

Builds a GPEN-BFR-2048-shaped checkpoint (the 201 tensors of the published state_dict, random
fp32 values, ~285 MB) with ``torch.save``, names it ``GPEN-BFR-2048.pth`` so the gate holds it
to the shipped registry entry (architecture fingerprint included), warms the page cache, then
runs each contender in a fresh subprocess, alternating them `--repeat` times:

- ``gpenguard``          `gpenguard.convert.convert`: gate (sha256, scan, fingerprint) + reader
                         + writer + read-back verification + provenance
- ``gpenguard-nogate``   reader + writer + read-back verification only
- ``recipe``             ``torch.load(weights_only=True)`` + ``safetensors.torch.save_file``
- ``cp``                 ``cp SRC DST`` (the physical floor: one copy of the bytes)
- ``sha256``             hashlib over the file (the floor for anything that must state the
                         digest of what it wrote, as the converter's provenance does)

Wall time is measured by the parent around the whole child (interpreter start and imports
included, as a user pays them); peak RSS is the child's own ``ru_maxrss`` from ``os.wait4``.
The child also reports its in-process work time (after imports) and its own VmHWM. Best time and highest RSS
over the repeats are printed, then the ratios the targets are stated in:
peak RSS <= 0.5x recipe, time <= recipe, time <= 2x cp.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_KEYS = Path("/work/shared/research/gpen2048_keys.txt")


# ---- child side ----------------------------------------------------------------------------


def _child(mode: str, src: str, out: str) -> None:
    t_start = time.perf_counter()
    if mode == "gpenguard":
        sys.path.insert(0, str(ROOT))
        from gpenguard.convert import convert

        t0 = time.perf_counter()
        convert(src, out)
    elif mode == "gpenguard-nogate":
        sys.path.insert(0, str(ROOT))
        from gpenguard.convert import write_safetensors
        from gpenguard.formats.container import read_container
        from gpenguard.formats.source import Source
        from gpenguard.formats.weights import read_tensors

        t0 = time.perf_counter()
        with Source.open(src) as source:
            write_safetensors(read_tensors(read_container(source)), out)
    elif mode == "sha256":
        import hashlib

        t0 = time.perf_counter()
        h = hashlib.sha256()
        with Path(src).open("rb", buffering=0) as f:
            while chunk := f.read(16 * 2**20):
                h.update(chunk)
    elif mode == "recipe":
        import torch
        from safetensors.torch import save_file

        t0 = time.perf_counter()
        sd = torch.load(src, map_location="cpu", weights_only=True)
        save_file({k: v.contiguous() for k, v in sd.items()}, out, metadata={"format": "pt"})
    else:
        raise SystemExit(f"unknown mode {mode}")
    work = time.perf_counter() - t0
    hwm = 0.0
    with Path("/proc/self/status").open() as status:  # this process's own peak, nothing inherited
        for line in status:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    print(json.dumps({"work_s": work, "import_s": t0 - t_start, "hwm_mb": hwm}))


# ---- parent side ---------------------------------------------------------------------------


def build_checkpoint(keys: Path, dest: Path) -> int:
    """torch.save a dict of random fp32 tensors with the shapes listed in `keys` (a subprocess,
    so the builder's memory is not the parent's)."""
    code = f"""
import re, torch
torch.manual_seed(0)
sd = {{}}
for line in open({str(keys)!r}):
    name, shape = line.split()
    sd[name] = torch.randn([int(d) for d in re.findall(r"\\d+", shape)])
torch.save(sd, {str(dest)!r})
print(sum(t.numel() for t in sd.values()))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return int(proc.stdout.strip())


def warm(path: Path) -> None:
    """Read the file once so every contender starts from the page cache. In small chunks: a
    child's ru_maxrss starts from its parent's high-water mark (vfork + exec), so the parent
    must never hold much memory itself."""
    with path.open("rb", buffering=0) as f:
        while f.read(1 << 20):
            pass


def measure(cmd: list[str]) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()}")
    result = {"wall_s": wall, "rss_mb": usage.ru_maxrss / 1024}
    text = out.decode().strip()
    if text:
        result.update(json.loads(text.splitlines()[-1]))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--keys", type=Path, default=DEFAULT_KEYS)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        src = Path(d) / "GPEN-BFR-2048.pth"
        elements = build_checkpoint(args.keys, src)
        size = src.stat().st_size
        warm(src)
        print(f"checkpoint: {src.name}, {elements:,} fp32 elements, {size / 1e6:.1f} MB")

        modes = {
            "gpenguard": lambda out: [sys.executable, __file__, "--child", "gpenguard", str(src), str(out)],
            "gpenguard-nogate": lambda out: [sys.executable, __file__, "--child", "gpenguard-nogate", str(src), str(out)],
            "recipe": lambda out: [sys.executable, __file__, "--child", "recipe", str(src), str(out)],
            "cp": lambda out: ["cp", str(src), str(out)],
            "sha256": lambda out: [sys.executable, __file__, "--child", "sha256", str(src), str(out)],
        }
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.repeat):
            for mode, cmd in modes.items():
                out = Path(d) / f"out-{mode}.safetensors"
                r = measure(cmd(out))
                out.unlink(missing_ok=True)
                for extra in (out.with_name(out.name + ".intoto.json"),):
                    extra.unlink(missing_ok=True)
                b = best.setdefault(mode, {"wall_s": float("inf"), "rss_mb": 0.0, "work_s": float("inf"), "hwm_mb": 0.0})
                b["hwm_mb"] = max(b["hwm_mb"], r.get("hwm_mb", 0.0))
                b["wall_s"] = min(b["wall_s"], r["wall_s"])
                b["rss_mb"] = max(b["rss_mb"], r["rss_mb"])
                if "work_s" in r:
                    b["work_s"] = min(b["work_s"], r["work_s"])

    print(f"\n{'contender':18} {'wall s':>8} {'work s':>8} {'peak RSS MB':>12} {'VmHWM MB':>9}   (best of {args.repeat}; memory: max)")
    for mode, b in best.items():
        work = f"{b['work_s']:8.2f}" if b["work_s"] != float("inf") else f"{'-':>8}"
        hwm = f"{b['hwm_mb']:9.0f}" if b["hwm_mb"] else f"{'-':>9}"
        print(f"{mode:18} {b['wall_s']:8.2f} {work} {b['rss_mb']:12.0f} {hwm}")
    rec, cp, sha = best["recipe"], best["cp"], best["sha256"]
    print("\nratios (targets: RSS <= 0.50x recipe, time <= 1.00x recipe, time <= 2.00x cp)")
    for mode in ("gpenguard", "gpenguard-nogate"):
        b = best[mode]
        print(
            f"{mode:18} RSS {b['rss_mb'] / rec['rss_mb']:.2f}x recipe   "
            f"wall {b['wall_s'] / rec['wall_s']:.2f}x recipe   wall {b['wall_s'] / cp['wall_s']:.2f}x cp   "
            f"work {b['work_s'] / rec['work_s']:.2f}x recipe work   "
            f"work {b['work_s'] / sha['work_s']:.2f}x sha256 of the file"
        )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
