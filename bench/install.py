"""Install time and size of gpenguard's core against picklescan and ModelAudit, in one run.

What a CI gate or pre-commit hook pays before its first scan: a fresh virtualenv, then
``pip install`` of the tool with pip's real dependency resolution. Each tool is installed
``--rounds`` times into a new venv (cold venv, warm pip cache: the first round fills the cache
and is reported apart), round-robin across tools so load on the machine falls on all alike.
Size is the venv's bytes on disk minus an empty venv's (pip and setuptools are the same for all).

    python bench/install.py                    # gpenguard core (this checkout) vs the peers
    python bench/install.py --rounds 5
    python bench/install.py --with-restore     # also gpenguard[restore] (torch, pillow, docker)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PEERS = {
    "picklescan": ["picklescan==1.0.5"],
    "modelaudit": ["modelaudit==0.2.54"],
}


def disk_bytes(path: Path) -> int:
    """Allocated bytes of every file under `path` (what `du` counts), links not followed."""
    total = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(Path(dirpath) / name).st_blocks * 512
            except OSError:
                continue
    return total


def install(requirements: list[str], workdir: Path) -> tuple[float, int, int]:
    """(seconds, venv bytes, distributions installed) for one fresh venv + pip install."""
    venv = workdir / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    start = time.perf_counter()
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    *requirements], check=True, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze",
                             "--disable-pip-version-check"], capture_output=True, text=True,
                            check=True).stdout.split()
    return seconds, disk_bytes(venv), len(listed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed installs per tool (default 3)")
    parser.add_argument("--with-restore", action="store_true",
                        help="also time gpenguard[restore] (pulls torch)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="gpenguard-install-") as tmp:
        work = Path(tmp)
        wheel_dir = work / "wheel"
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                        "--disable-pip-version-check", "-w", str(wheel_dir), str(ROOT)],
                       check=True, stderr=subprocess.DEVNULL)
        (wheel,) = wheel_dir.glob("gpenguard-*.whl")
        tools: dict[str, list[str]] = {"gpenguard (core)": [str(wheel)], **PEERS}
        if args.with_restore:
            tools["gpenguard[restore]"] = [f"gpenguard[restore] @ {wheel.as_uri()}"]
        empty = work / "empty"
        subprocess.run([sys.executable, "-m", "venv", str(empty)], check=True)
        base = disk_bytes(empty)

        first: dict[str, float] = {}
        times: dict[str, list[float]] = {t: [] for t in tools}
        sizes: dict[str, int] = {}
        dists: dict[str, int] = {}
        for round_ in range(args.rounds + 1):  # round 0 fills pip's cache
            for tool, reqs in tools.items():
                seconds, size, count = install(reqs, work / tool.split()[0])
                if round_ == 0:
                    first[tool] = seconds
                else:
                    times[tool].append(seconds)
                sizes[tool], dists[tool] = size - base, count

    g = "gpenguard (core)"
    g_time, g_size = statistics.median(times[g]), sizes[g]
    print(f"python {sys.version.split()[0]}; {args.rounds} timed rounds per tool after one "
          f"cache-filling round; size = venv on disk minus an empty venv ({base / 2**20:.1f} MiB)\n")
    head = (f"{'tool':<20} {'first s':>8} {'median s':>9} {'size MiB':>9} {'dists':>6} "
            f"{'time x':>7} {'size x':>7}")
    print(head)
    print("-" * len(head))
    for tool in tools:
        med = statistics.median(times[tool])
        tx = "" if tool == g else f"{med / g_time:.2f}"
        sx = "" if tool == g else f"{sizes[tool] / g_size:.2f}"
        print(f"{tool:<20} {first[tool]:>8.2f} {med:>9.2f} {sizes[tool] / 2**20:>9.1f} "
              f"{dists[tool]:>6} {tx:>7} {sx:>7}")
    print("\nfirst s = the cache-filling install (downloads, when the index is remote); "
          "median s = a fresh venv with pip's cache warm;\ndists = distributions in the venv "
          "(pip, setuptools included); x = that tool's figure divided by gpenguard core's "
          "(above 1: gpenguard is lighter).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
