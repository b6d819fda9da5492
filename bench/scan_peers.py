"""Detection, false positives and speed of gpenguard's scanner against its peers.

Every tool gets the same fixture corpus (``tests/corpus.py``: malicious and benign checkpoints,
generated fresh, harmless even if executed) and is run the way its users run it: one process
per file through its command-line interface, its exit code read by its own documented
convention. gpenguard is timed the same way (``python -m gpenguard scan FILE``), so interpreter
start-up is in every tool's figure and the ratios compare like with like.

Peers live in throwaway virtualenvs under ``bench/.venv-peers/`` (one per tool: their pinned
dependencies conflict), created on first run::

    python bench/scan_peers.py            # set up peers if needed, run, print the tables
    python bench/scan_peers.py --setup    # only create/refresh the peer environments
    python bench/scan_peers.py --tools picklescan,gpenguard

Exit-code conventions (read from each tool's docs and source):

    picklescan   0 clean, 1 dangerous global found, 2 scan error (error wins over 1)
    modelscan    0 clean, 1 issues, 2 errors, 3 nothing supported/scanned, 4 usage
    fickling     0 LIKELY_SAFE, 1 unsafe, 2 parse error / no pickle found  (--check-safety)
    modelaudit   0 clean, 1 findings, 2 operational error or inconclusive
    gpenguard    0 pass, 1 blocked, 2 error (could not be scanned: blocks too)
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
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / "bench" / ".venv-peers"
TIMEOUT_S = 300.0


class Outcome(StrEnum):
    """What a tool told its user about one file, from its exit code."""

    CLEAN = "clean"
    FLAGGED = "flagged"
    ERROR = "error"
    """Could not scan, inconclusive, or nothing scanned: the user gets no 'clean' either."""
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Peer:
    """A scanner, how to install it, and how to run it on one file."""

    name: str
    requirement: str
    """What ``pip install`` gets (its PyPI name, pinned to the version we read)."""
    argv: tuple[str, ...]
    """Command after the venv's bin/ prefix; ``{file}`` is replaced by the file."""
    flagged_codes: frozenset[int] = frozenset({1})
    clean_codes: frozenset[int] = frozenset({0})

    def venv(self) -> Path:
        return VENVS / self.name.split()[0]

    def command(self, file: Path) -> list[str]:
        exe = str(self.venv() / "bin" / self.argv[0])
        return [exe, *(a.replace("{file}", str(file)) for a in self.argv[1:])]

    def outcome(self, returncode: int) -> Outcome:
        if returncode in self.clean_codes:
            return Outcome.CLEAN
        if returncode in self.flagged_codes:
            return Outcome.FLAGGED
        return Outcome.ERROR


PEERS: tuple[Peer, ...] = (
    Peer("picklescan", "picklescan==1.0.5", ("picklescan", "-p", "{file}")),
    Peer("picklescan --strict", "picklescan==1.0.5", ("picklescan", "--strict", "-p", "{file}")),
    Peer("modelscan", "modelscan==0.8.8", ("modelscan", "-p", "{file}")),
    Peer("fickling", "fickling==0.1.12", ("fickling", "--check-safety", "{file}")),
    Peer("modelaudit", "modelaudit==0.2.54", ("modelaudit", "scan", "--no-cache", "{file}")),
)

# Peers must not phone home or ask questions while we time them.
PEER_ENV = {
    "PROMPTFOO_DISABLE_TELEMETRY": "1",
    "MODELAUDIT_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "NO_COLOR": "1",
    "HF_HUB_OFFLINE": "1",
}


def setup_peers(peers: Sequence[Peer]) -> None:
    """Create one venv per distinct install and pip-install the peer into it."""
    VENVS.mkdir(parents=True, exist_ok=True)
    done: set[Path] = set()
    for peer in peers:
        venv = peer.venv()
        if venv in done:
            continue
        done.add(venv)
        marker = venv / ".installed"
        if marker.exists() and marker.read_text() == peer.requirement:
            continue
        print(f"setting up {peer.requirement} in {venv.relative_to(ROOT)} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", peer.requirement],
            check=True,
        )
        marker.write_text(peer.requirement)


@dataclass(frozen=True)
class Run:
    tool: str
    item: str
    malicious: bool
    outcome: Outcome
    returncode: int
    seconds: float


def run_one(tool: str, cmd: list[str], env: dict[str, str], item: str, malicious: bool,
            peer: Peer | None) -> Run:
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=env, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return Run(tool, item, malicious, Outcome.TIMEOUT, -1, time.perf_counter() - start)
    seconds = time.perf_counter() - start
    if peer is not None:
        outcome = peer.outcome(proc.returncode)
    else:
        outcome = {0: Outcome.CLEAN, 1: Outcome.FLAGGED}.get(proc.returncode, Outcome.ERROR)
    return Run(tool, item, malicious, outcome, proc.returncode, seconds)


def gpenguard_command(file: Path) -> list[str]:
    return [sys.executable, "-m", "gpenguard", "scan", str(file)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--setup", action="store_true", help="only create the peer venvs")
    parser.add_argument("--tools", default="", help="comma-separated subset of tools to run")
    parser.add_argument("--keep", type=Path, default=None, help="write the corpus here and keep it")
    parser.add_argument("--limit", type=int, default=0, help="smoke test: first N items of each corpus")
    args = parser.parse_args(argv)

    wanted = {t.strip() for t in args.tools.split(",") if t.strip()}
    peers = [p for p in PEERS if not wanted or p.name in wanted]
    setup_peers(peers)
    if args.setup:
        return 0

    sys.path.insert(0, str(ROOT))
    from tests.corpus import make_benign_corpus, make_malicious_corpus

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="gpenguard-bench-"))
    try:
        malicious = make_malicious_corpus(workdir / "malicious")
        benign = make_benign_corpus(workdir / "benign")
        if args.limit:
            malicious, benign = malicious[: args.limit], benign[: args.limit]
        items = [(i, True) for i in malicious] + [(i, False) for i in benign]

        env = {**os.environ, **PEER_ENV}
        g_env = {**env, "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")}
        runs: list[Run] = []
        tools: list[str] = []
        if not wanted or "gpenguard" in wanted:
            tools.append("gpenguard")
            for item, bad in items:
                runs.append(run_one("gpenguard", gpenguard_command(Path(item.path)), g_env,
                                    item.name, bad, None))
        for peer in peers:
            tools.append(peer.name)
            for item, bad in items:
                runs.append(run_one(peer.name, peer.command(Path(item.path)), env,
                                    item.name, bad, peer))
        print_tables(tools, runs, n_bad=len(malicious), n_good=len(benign))
        if "gpenguard" in tools:
            print_batch([Path(item.path) for item, _ in items], g_env)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def print_batch(files: list[Path], env: dict[str, str]) -> None:
    """gpenguard once over the whole corpus: the scan's own cost, without n process starts."""
    n_files = len(files)
    cmd = [sys.executable, "-m", "gpenguard", "scan", "--format", "json", *map(str, files)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=env, timeout=TIMEOUT_S, check=False)
    seconds = time.perf_counter() - start
    print(f"\nFor reference (not a comparison): gpenguard in ONE process over all {n_files} files "
          f"(default --jobs): {seconds:.2f} s, {seconds / max(n_files, 1) * 1000:.0f} ms "
          f"per file, exit {proc.returncode}.")


def print_tables(tools: list[str], runs: list[Run], *, n_bad: int, n_good: int) -> None:
    print("Timing: one process per file for every tool (interpreter start-up included),")
    print("sequential, same machine, same corpus, same run.\n")
    header = (f"{'tool':<22} {'detected':>10} {'error(bad)':>10} {'missed':>8} "
              f"{'FP flag':>8} {'FP error':>9} {'total s':>9} {'s/file':>8} {'median':>8} "
              f"{'gpenguard x':>11}")
    print(header)
    print("-" * len(header))
    totals = {t: sum(r.seconds for r in runs if r.tool == t) for t in tools}
    for tool in tools:
        mine = [r for r in runs if r.tool == tool]
        bad = [r for r in mine if r.malicious]
        good = [r for r in mine if not r.malicious]
        detected = sum(r.outcome is Outcome.FLAGGED for r in bad)
        bad_err = sum(r.outcome in (Outcome.ERROR, Outcome.TIMEOUT) for r in bad)
        missed = sum(r.outcome is Outcome.CLEAN for r in bad)
        fp_flag = sum(r.outcome is Outcome.FLAGGED for r in good)
        fp_err = sum(r.outcome in (Outcome.ERROR, Outcome.TIMEOUT) for r in good)
        total = totals[tool]
        per_file = total / max(len(mine), 1)
        median = statistics.median(r.seconds for r in mine) if mine else 0.0
        ratio = "" if tool == "gpenguard" or "gpenguard" not in totals else (
            f"{total / totals['gpenguard']:.2f}" if totals["gpenguard"] else "n/a")
        print(f"{tool:<22} {detected:>4}/{n_bad:<5} {bad_err:>4}/{n_bad:<5} {missed:>3}/{n_bad:<4} "
              f"{fp_flag:>3}/{n_good:<4} {fp_err:>4}/{n_good:<4} {total:>9.2f} {per_file:>8.3f} "
              f"{median:>8.3f} {ratio:>11}")
    print("\ndetected = exit code says 'unsafe'; error(bad) = could not decide on a malicious file")
    print("(fails closed, but is no detection); missed = reported clean. FP flag / FP error =")
    print("benign files reported unsafe / could not be scanned. 'gpenguard x' = that tool's")
    print("total wall time divided by gpenguard's (above 1: gpenguard is faster).\n")

    print("Malicious items some tool reported CLEAN (missed) or could not decide on (error):")
    names = sorted({r.item for r in runs if r.malicious})
    width = max((len(r.item) for r in runs), default=10)
    any_listed = False
    for name in names:
        these = [r for r in runs if r.item == name and r.malicious]
        missed = [r.tool for r in these if r.outcome is Outcome.CLEAN]
        errored = [r.tool for r in these if r.outcome in (Outcome.ERROR, Outcome.TIMEOUT)]
        if missed or errored:
            any_listed = True
            parts = []
            if missed:
                parts.append("missed: " + ", ".join(missed))
            if errored:
                parts.append("error: " + ", ".join(errored))
            print(f"  {name:<{width}}  " + "; ".join(parts))
    if not any_listed:
        print("  (none)")
    fps = sorted({(r.item, r.tool, r.outcome.value) for r in runs
                  if not r.malicious and r.outcome is not Outcome.CLEAN})
    print("\nBenign items not reported clean:")
    if not fps:
        print("  (none)")
    for item, tool, outcome in fps:
        print(f"  {item:<{width}}  {tool}: {outcome}")


if __name__ == "__main__":
    raise SystemExit(main())
