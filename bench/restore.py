"""Latency and peak memory of one GPEN-BFR forward: gpenguard's FullGenerator vs the official one.

Each implementation runs in its own subprocess, so peak RSS (``ru_maxrss``) is its own:
the process builds the network, makes the input, records its resident memory, then runs the
forward ``--repeat`` times. Reported: the best and median wall time, the peak RSS of the
process, and the forward's share of it (peak minus resident memory just before the first
forward). Both use the same thread count. The official code runs under ``torch.no_grad``
as its ``FaceGAN.process`` does, and through its pure-PyTorch fallbacks (CUDA hidden; its
extensions are only built where CUDA is visible); ours runs under ``torch.inference_mode``
as gpenguard's restorer does.

    python bench/restore.py --official /tmp/gpen_official            # 2048, CPU, fp32
    python bench/restore.py --official /tmp/gpen_official --size 512 --repeat 3
    python bench/restore.py --official /tmp/gpen_official --bf16   # + ours in bfloat16

On a machine with CUDA, ours is also timed on the GPU (peak = ``max_memory_allocated``);
the official GPU path needs its JIT-compiled extensions and is not run here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    """User + system CPU time of this process: less sensitive to other load than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(
    impl: str,
    size: int,
    repeat: int,
    threads: int,
    official: str | None,
    device: str,
    dtype_name: str = "float32",
) -> dict[str, Any]:
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cm, narrow = (1, 0.5) if size == 256 else (2, 1.0)
    if impl == "official":
        assert official is not None
        sys.path.insert(0, official)
        import gpen_model  # type: ignore[import-not-found]

        model = gpen_model.FullGenerator(size, 512, 8, cm, narrow=narrow, device="cpu")
        context = torch.no_grad
    else:
        sys.path.insert(0, str(ROOT))
        from gpenguard.nets.gpen import FullGenerator

        model = FullGenerator(size, 512, 8, channel_multiplier=cm, narrow=narrow)
        context = torch.inference_mode
    dtype = getattr(torch, dtype_name)
    model = model.eval().to(device=device, dtype=dtype)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    x = x.to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if device == "cuda" else rss_bytes()
    times, cpu_times = [], []
    checksum = 0.0
    for _ in range(repeat):
        with context():
            sync()
            c0, t0 = cpu_seconds(), time.perf_counter()
            out = model(x)
            out = out[0] if isinstance(out, tuple) else out
            sync()
            times.append(time.perf_counter() - t0)
            cpu_times.append(cpu_seconds() - c0)
        checksum = float(out.float().abs().mean())
        del out
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "impl": impl if dtype_name == "float32" else f"{impl} {dtype_name}",
        "best_s": min(times),
        "median_s": statistics.median(times),
        "cpu_s": min(cpu_times),
        "peak_bytes": peak,
        "forward_bytes": peak - before,
        "checksum": checksum,
    }


def run_worker(
    impl: str, args: argparse.Namespace, device: str, dtype: str = "float32"
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        impl,
        "--size",
        str(args.size),
        "--repeat",
        str(args.repeat),
        "--threads",
        str(args.threads),
        "--device",
        device,
        "--dtype",
        dtype,
    ]
    if args.official:
        cmd += ["--official", str(args.official)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{impl} worker failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def table(
    title: str,
    ours: dict[str, Any],
    official: dict[str, Any] | None,
    extra: tuple[dict[str, Any], ...] = (),
) -> None:
    print(f"\n{title}")
    print(f"{'':14} {'best s':>8} {'median s':>9} {'CPU s':>7} {'peak RSS':>11} {'forward':>11}")
    for row in (ours, official, *extra):
        if row is not None:
            print(
                f"{row['impl']:14} {row['best_s']:8.2f} {row['median_s']:9.2f} {row['cpu_s']:7.2f} "
                f"{gib(row['peak_bytes']):>11} {gib(row['forward_bytes']):>11}"
            )
    if official is not None:
        print(
            f"ours/official: time {ours['best_s'] / official['best_s']:.2f}x (best), "
            f"{ours['median_s'] / official['median_s']:.2f}x (median), "
            f"{ours['cpu_s'] / official['cpu_s']:.2f}x (CPU time); "
            f"peak RSS {ours['peak_bytes'] / official['peak_bytes']:.2f}x; "
            f"forward memory {ours['forward_bytes'] / official['forward_bytes']:.2f}x"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--official", type=Path, help="yangxy/GPEN checkout or its face_model/")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--worker", choices=["ours", "official"], help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument(
        "--bf16", action="store_true", help="also time ours in bfloat16 (not in the ratios)"
    )
    args = parser.parse_args()
    if args.worker:
        official = None
        if args.official:
            root = args.official
            official = str(
                root / "face_model" if (root / "face_model" / "gpen_model.py").is_file() else root
            )
        print(
            json.dumps(
                worker(
                    args.worker,
                    args.size,
                    args.repeat,
                    args.threads,
                    official,
                    args.device,
                    args.dtype,
                )
            )
        )
        return 0

    import torch

    print(
        f"GPEN-BFR-{args.size} forward, batch 1, fp32 unless marked; torch {torch.__version__}; {args.threads} threads; repeat {args.repeat}"
    )
    official_cpu = run_worker("official", args, "cpu") if args.official else None
    ours_cpu = run_worker("ours", args, "cpu")
    extra = (run_worker("ours", args, "cpu", "bfloat16"),) if args.bf16 else ()
    table("CPU", ours_cpu, official_cpu, extra)
    if official_cpu is None:
        print("official: not measured (pass --official DIR)")
    if torch.cuda.is_available():
        table(
            f"GPU ({torch.cuda.get_device_name()}), peak = max_memory_allocated",
            run_worker("ours", args, "cuda"),
            None,
        )
        print("official on GPU: not measured (needs its JIT-compiled CUDA extensions)")
    else:
        print("\nGPU: not measured (no CUDA device on this machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
