"""Detection, false positives and speed of gpenguard's scanner against its peers.

Every tool gets the same fixture corpus (``tests/corpus.py``: malicious and benign checkpoints,
generated fresh, harmless even if executed) and is timed two ways:

* per process: one process per file through its command-line interface, its exit code read by
  its own documented convention -- what a pre-commit hook or CI step pays. gpenguard is run the
  same way (``python -m gpenguard scan FILE``), so interpreter start-up is in every figure. Files
  are taken round-robin (file 1 through every tool, then file 2, ...) so that load from other
  work on the machine falls on all tools alike.
* in process (batch): one process per tool that imports the tool once (timed apart) and then
  calls its own Python API on every file in a loop, timing each call -- the scan's own cost,
  without interpreter start-up. The drivers are the ``DRIVERS`` below; each reads the verdict
  the way that tool's own CLI derives its exit code from the same API result.

Peers live in throwaway virtualenvs under ``bench/.venv-peers/`` (one per tool: their pinned
dependencies conflict), created on first run::

    python bench/scan_peers.py            # set up peers if needed, run, print the tables
    python bench/scan_peers.py --setup    # only create/refresh the peer environments
    python bench/scan_peers.py --tools picklescan,gpenguard
    python bench/scan_peers.py --mode batch   # only the in-process table
    python bench/scan_peers.py --mode speed --tools picklescan   # TABLE 3 only (issue 9 item 7)

TABLE 3 (speed as a process, what a hook pays per file): gpenguard's console script against
each peer's, interleaved, repeated ``--reps`` times, on the corpus of small files and on a
285 MB checkpoint with GPEN-BFR-2048's exact architecture (``gpenguard.demo``, random weights).
gpenguard is installed the way a CI gate installs it: the core package, no torch.

Exit-code conventions (read from each tool's docs and source):

    picklescan   0 clean, 1 dangerous global found, 2 scan error (error wins over 1)
    modelscan    0 clean, 1 issues, 2 errors, 3 nothing supported/scanned, 4 usage
    fickling     0 LIKELY_SAFE, 1 unsafe, 2 parse error / no pickle found  (--check-safety)
    modelaudit   0 clean, 1 findings, 2 operational error or inconclusive
    gpenguard    0 pass, 1 blocked, 2 error (could not be scanned: blocks too)

In-process API calls (``DRIVERS``; verdict precedence copied from each CLI):

    picklescan   scanner.scan_file_path(path, strict)      scan_err -> error, issues_count -> flagged
    modelscan    ModelScan().scan(path) (one instance)     nothing scanned / errors -> error, issues
    fickling     scan_zip_archive (zip) / scan_file (else), graceful: errors -> error, severity above
                 LIKELY_SAFE -> flagged (the CLI has no zip handling; this is its library's own)
    modelaudit   core.scan_model_directory_or_file(path, cache_enabled=False) + determine_exit_code
    gpenguard    scan.scan_paths([path], policy=load_policy(None), jobs=1) -> report.verdict
"""

from __future__ import annotations

import argparse
import compileall
import json
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
BATCH_TIMEOUT_S = 1800.0


class Outcome(StrEnum):
    """What a tool told its user about one file, from its exit code or its API's result."""

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
    """What ``pip install`` gets (its PyPI name pinned to the version we read, and any
    dependency the release forgot to declare), space-separated."""
    argv: tuple[str, ...]
    """Command after the venv's bin/ prefix; ``{file}`` is replaced by the file."""
    driver: str
    """Key into DRIVERS for the in-process mode."""
    driver_arg: str = ""
    flagged_codes: frozenset[int] = frozenset({1})
    clean_codes: frozenset[int] = frozenset({0})

    def venv(self) -> Path:
        return VENVS / self.name.split()[0]

    def python(self) -> str:
        # The venv's own interpreter (a symlink to the real binary, not the pyenv shim).
        return str(self.venv() / "bin" / "python")

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
    Peer("picklescan", "picklescan==1.0.5", ("picklescan", "-p", "{file}"), "picklescan"),
    Peer("picklescan --strict", "picklescan==1.0.5", ("picklescan", "--strict", "-p", "{file}"),
         "picklescan", "strict"),
    Peer("modelscan", "modelscan==0.8.8", ("modelscan", "-p", "{file}"), "modelscan"),
    # fickling 0.1.12 imports typing_extensions without declaring it: without it every run
    # dies on import with exit 1, which its convention would read as "unsafe".
    Peer("fickling", "fickling==0.1.12 typing_extensions", ("fickling", "--check-safety", "{file}"),
         "fickling"),
    Peer("modelaudit", "modelaudit==0.2.54", ("modelaudit", "scan", "--no-cache", "{file}"),
         "modelaudit"),
)

# Peers must not phone home or ask questions while we time them.
PEER_ENV = {
    "PROMPTFOO_DISABLE_TELEMETRY": "1",
    "MODELAUDIT_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "NO_COLOR": "1",
    "HF_HUB_OFFLINE": "1",
}

# --- in-process drivers -------------------------------------------------------------------
# Each is run as ``python -c PRELUDE+DRIVER+LOOP ARG FILE...`` by the tool's own interpreter.
# The driver's code up to ``check`` is the import phase (timed apart); ``check(path)`` returns
# (verdict, detail) with verdict one of clean/flagged/error. JSON lines go to a private copy of
# the original stdout; anything the tool prints goes to stderr.

_PRELUDE = """\
import json, os, sys, time
_out = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr
ARG = sys.argv[1]
_t0 = time.perf_counter()
"""

_LOOP = """
_out.write(json.dumps({"import_s": time.perf_counter() - _t0}) + "\\n")
for _path in sys.argv[2:]:
    _t = time.perf_counter()
    try:
        _verdict, _detail = check(_path)
    except Exception as _exc:
        _verdict, _detail = "error", f"{type(_exc).__name__}: {_exc}"
    _s = time.perf_counter() - _t
    _out.write(json.dumps({"path": _path, "verdict": _verdict, "seconds": _s,
                           "detail": str(_detail)[:200]}) + "\\n")
"""

DRIVERS: dict[str, str] = {
    # cli.main: scan_err -> exit 2 (checked first), issues_count -> 1, else 0.
    "picklescan": """
from picklescan.scanner import scan_file_path

def check(path):
    r = scan_file_path(path, strict=(ARG == "strict"))
    if r.scan_err:
        return "error", "scan_err"
    if r.issues_count:
        return "flagged", f"{r.issues_count} issues"
    return "clean", ""
""",
    # cli.cli: nothing scanned -> 3, errors -> 2, issues -> 1, else 0. scan() resets its state.
    "modelscan": """
from modelscan.modelscan import ModelScan
_ms = ModelScan()

def check(path):
    _ms.scan(path)
    if not _ms.scanned:
        return "error", "nothing scanned"
    if _ms.errors:
        return "error", f"{len(_ms.errors)} errors"
    if _ms.issues.all_issues:
        return "flagged", f"{len(_ms.issues.all_issues)} issues"
    return "clean", ""
""",
    # loader.ScanResult: is_safe = severity <= LIKELY_SAFE; errors = could not parse/analyse.
    "fickling": """
import zipfile
import fickling

def check(path):
    if zipfile.is_zipfile(path):
        results = list(fickling.scan_zip_archive(path, graceful=True).values())
        if not results:
            return "error", "no pickle member"
    else:
        results = [fickling.scan_file(path, graceful=True)]
    errors = [e for r in results for e in r.errors]
    if errors:
        return "error", errors[0]
    worst = max(results, key=lambda r: r.severity)
    if not worst.is_safe:
        return "flagged", worst.severity.name
    return "clean", ""
""",
    # core_results.determine_exit_code: the CLI's own 0/1/2 decision on the same result model.
    "modelaudit": """
from modelaudit.core import determine_exit_code, scan_model_directory_or_file

def check(path):
    code = determine_exit_code(scan_model_directory_or_file(path, cache_enabled=False))
    return {0: "clean", 1: "flagged"}.get(code, "error"), f"exit {code}"
""",
    # The CLI's own call: default policy, one scan_paths call; ERROR fails closed.
    "gpenguard": """
from gpenguard.policy import load_policy
from gpenguard.scan import api as _api  # where scan_paths lives; imported lazily otherwise
from gpenguard.scan import scan_paths
_policy = load_policy(None)

def check(path):
    report = scan_paths([path], policy=_policy, jobs=1)
    return {"pass": "clean", "block": "flagged"}.get(report.verdict.value, "error"), ""
""",
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
             "--disable-pip-version-check", *peer.requirement.split()],
            check=True,
        )
        marker.write_text(peer.requirement)


def preflight(peers: Sequence[Peer]) -> None:
    """Refuse to time a peer whose CLI cannot even start: a crash exits 1, read as 'unsafe'."""
    for peer in peers:
        proc = subprocess.run([peer.python(), "-c", f"import {peer.driver}"],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise SystemExit(f"{peer.name}: cannot import {peer.driver} in {peer.venv()}: "
                             f"{last}; re-run with --setup after fixing its requirement")


@dataclass(frozen=True)
class Run:
    tool: str
    item: str
    malicious: bool
    outcome: Outcome
    returncode: int
    seconds: float


def run_one(tool: str, cmd: list[str], env: dict[str, str], item: str, malicious: bool,
            peer: Peer | None, cwd: Path) -> Run:
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=env, cwd=cwd, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return Run(tool, item, malicious, Outcome.TIMEOUT, -1, time.perf_counter() - start)
    seconds = time.perf_counter() - start
    if peer is not None:
        outcome = peer.outcome(proc.returncode)
    else:
        outcome = {0: Outcome.CLEAN, 1: Outcome.FLAGGED}.get(proc.returncode, Outcome.ERROR)
    return Run(tool, item, malicious, outcome, proc.returncode, seconds)


def gpenguard_command(file: Path) -> list[str]:
    # The console script, as a hook runs it (and as each peer's is run).
    return [str(GPENGUARD_VENV / "bin" / "gpenguard"), "scan", str(file)]


@dataclass(frozen=True)
class Batch:
    """One tool's in-process pass over the corpus."""

    tool: str
    runs: tuple[Run, ...]
    import_s: float
    wall_s: float
    failure: str = ""
    """Why the driver produced no (or too few) results; empty when it covered every file."""


def run_batch(tool: str, python: str, driver: str, arg: str, items: list[tuple[str, str, bool]],
              env: dict[str, str], cwd: Path) -> Batch:
    """Run one tool's driver over every file in ONE process; parse its JSON lines."""
    source = _PRELUDE + DRIVERS[driver] + _LOOP
    cmd = [python, "-c", source, arg or "-", *(path for path, _, _ in items)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd,
                              timeout=BATCH_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raw: object = exc.stdout or b""  # partial output; bytes even in text mode
        out = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        err = f"timed out after {BATCH_TIMEOUT_S:.0f} s"
    else:
        out, err = proc.stdout, (proc.stderr or "")[-400:] if proc.returncode else ""
    wall = time.perf_counter() - start
    meta = {path: (name, bad) for path, name, bad in items}
    import_s = float("nan")
    runs: list[Run] = []
    for line in out.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by a timeout
        if "import_s" in rec:
            import_s = rec["import_s"]
            continue
        name, bad = meta[rec["path"]]
        runs.append(Run(tool, name, bad, Outcome(rec["verdict"]), -1, rec["seconds"]))
    failure = err if len(runs) < len(items) else ""
    return Batch(tool, tuple(runs), import_s, wall, failure)


GPENGUARD_VENV = VENVS / "gpenguard"


def gpenguard_python() -> str:
    return str(GPENGUARD_VENV / "bin" / "python")


def setup_gpenguard() -> None:
    """Install this checkout into its own venv, as every peer is: same start-up conditions.

    A plain (non-editable) install of the core package (no torch: what the Action and the
    pre-commit hook install), bytecode compiled, so neither the development environment's
    .pth hooks nor recompilation (PYTHONDONTWRITEBYTECODE) are timed.
    """
    python = gpenguard_python()
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    marker = GPENGUARD_VENV / ".installed"
    if not marker.exists() or marker.read_text() != "core":  # once: the venv and the core deps
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(GPENGUARD_VENV)], check=True)
        subprocess.run([*pip, str(ROOT)], check=True)  # the core, as a CI gate installs it
        marker.write_text("core")
    subprocess.run([*pip, "--force-reinstall", "--no-deps", str(ROOT)], check=True)  # this checkout
    site = subprocess.run([python, "-c", "import gpenguard, os; print(os.path.dirname(gpenguard.__file__))"],
                          capture_output=True, text=True, check=True, cwd="/").stdout.strip()
    compileall.compile_dir(site, quiet=1)


def _loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} CPUs)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--setup", action="store_true", help="only create the peer venvs")
    parser.add_argument("--tools", default="", help="comma-separated subset of tools to run")
    parser.add_argument("--mode", choices=("both", "process", "batch", "speed", "all"),
                        default="both",
                        help="per-process CLI runs, in-process API batch, both (default), the "
                        "speed table alone, or all three")
    parser.add_argument("--reps", type=int, default=5,
                        help="repetitions per file in the speed table (default 5)")
    parser.add_argument("--keep", type=Path, default=None, help="write the corpus here and keep it")
    parser.add_argument("--limit", type=int, default=0, help="smoke test: first N items of each corpus")
    args = parser.parse_args(argv)

    wanted = {t.strip() for t in args.tools.split(",") if t.strip()}
    peers = [p for p in PEERS if not wanted or p.name in wanted]
    setup_peers(peers)
    preflight(peers)
    if not wanted or "gpenguard" in wanted or args.mode in ("speed", "all"):
        setup_gpenguard()
    if args.setup:
        return 0

    print(f"load average at start: {_loadavg()}")
    print(f"python: {sys.executable} {sys.version.split()[0]}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}\n")
    sys.path.insert(0, str(ROOT))
    from tests.corpus import make_benign_corpus, make_malicious_corpus

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="gpenguard-bench-"))
    cwd = Path(tempfile.mkdtemp(prefix="gpenguard-bench-cwd-"))  # tools may drop files in cwd
    try:
        malicious = make_malicious_corpus(workdir / "malicious")
        benign = make_benign_corpus(workdir / "benign")
        if args.limit:
            malicious, benign = malicious[: args.limit], benign[: args.limit]
        items = [(i, True) for i in malicious] + [(i, False) for i in benign]

        env = {**os.environ, **PEER_ENV}
        g_env = dict(env)
        tools = (["gpenguard"] if not wanted or "gpenguard" in wanted else []) + [
            p.name for p in peers]
        by_name = {p.name: p for p in peers}

        if args.mode in ("speed", "all"):
            speed_peers = [p for p in peers if p.name in wanted] or [
                p for p in peers if p.name == "picklescan"]
            print_speed(speed_peers, [Path(item.path) for item in benign + malicious],
                        workdir, env, cwd, reps=args.reps)
            if args.mode == "speed":
                return 0

        if args.mode in ("both", "process", "all"):
            runs: list[Run] = []
            for item, bad in items:  # round-robin: load spikes hit every tool alike
                file = Path(item.path)
                for tool in tools:
                    peer = by_name.get(tool)
                    cmd = peer.command(file) if peer else gpenguard_command(file)
                    runs.append(run_one(tool, cmd, g_env if peer is None else env, item.name,
                                        bad, peer, cwd))
            print_tables(tools, runs, n_bad=len(malicious), n_good=len(benign))
            if "gpenguard" in tools:
                print_batch([Path(item.path) for item, _ in items], g_env, cwd)
            print(f"\nload average after the per-process runs: {_loadavg()}\n")

        if args.mode in ("both", "batch", "all"):
            triples = [(str(item.path), item.name, bad) for item, bad in items]
            batches: list[Batch] = []
            for tool in tools:
                peer = by_name.get(tool)
                if peer is None:
                    batches.append(run_batch(tool, gpenguard_python(), "gpenguard", "", triples,
                                             g_env, cwd))
                else:
                    batches.append(run_batch(tool, peer.python(), peer.driver, peer.driver_arg,
                                             triples, env, cwd))
            print_batch_table(batches, n_bad=len(malicious), n_good=len(benign))
            if args.mode in ("both", "all"):
                print_disagreements(runs, batches)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(cwd, ignore_errors=True)
    print(f"\nload average at end: {_loadavg()}")
    return 0


def print_batch(files: list[Path], env: dict[str, str], cwd: Path) -> None:
    """gpenguard's CLI once over the whole corpus (its default --jobs), for reference."""
    n_files = len(files)
    cmd = [gpenguard_python(), "-m", "gpenguard", "scan", "--format", "json", *map(str, files)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=env, cwd=cwd, timeout=TIMEOUT_S,
                          check=False)
    seconds = time.perf_counter() - start
    print(f"\nFor reference: the gpenguard CLI in ONE process over all {n_files} files "
          f"(default --jobs): {seconds:.2f} s, {seconds / max(n_files, 1) * 1000:.0f} ms "
          f"per file, exit {proc.returncode}.")


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    """(wall s, CPU s of the process, exit code). CPU time (user + system, from wait4) is what
    the tool itself costs; wall time also holds whatever else the machine was doing."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            cwd=cwd)
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime, proc.returncode


def print_speed(peers: Sequence[Peer], small: list[Path], workdir: Path, env: dict[str, str],
                cwd: Path, *, reps: int) -> None:
    """TABLE 3: per-file wall time as a process, gpenguard against each peer, same run."""
    from gpenguard.demo import make_gpen_demo

    big, _poisoned, _sample = make_gpen_demo(workdir / "gpen2048")
    size_mb = big.stat().st_size / 1e6
    corpora = {f"{len(small)} small files": small, f"GPEN-2048 ({size_mb:.0f} MB)": [big]}
    tools = ["gpenguard", *(p.name for p in peers)]
    commands = {"gpenguard": gpenguard_command, **{p.name: p.command for p in peers}}
    print("TABLE 3 -- speed as a process: one process per file through each tool's console")
    print(f"script, interleaved file by file, {reps} repetitions of the small files and "
          f"{max(reps, 15)} of the big one; per-file median wall time.\n")
    head = (f"{'corpus':<26} {'tool':<12} {'wall med ms':>11} {'wall mean':>9} {'cpu med ms':>10} "
            f"{'exit codes':<11} {'x wall':>7} {'x cpu':>6}")
    print(head)
    print("-" * len(head))
    for corpus, files in corpora.items():
        seconds: dict[str, list[float]] = {t: [] for t in tools}
        cpu: dict[str, list[float]] = {t: [] for t in tools}
        codes: dict[str, set[int]] = {t: set() for t in tools}
        # one big file gets more rounds: a median needs more than `reps` samples
        for _ in range(reps if len(files) > 1 else max(reps, 15)):
            for file in files:
                for tool in tools:
                    took, used, code = _timed(commands[tool](file), env, cwd)
                    seconds[tool].append(took)
                    cpu[tool].append(used)
                    codes[tool].add(code)
        g_wall = statistics.median(seconds["gpenguard"])
        g_cpu = statistics.median(cpu["gpenguard"])
        for tool in tools:
            med, med_cpu = statistics.median(seconds[tool]), statistics.median(cpu[tool])
            x_wall = "" if tool == "gpenguard" else f"{med / g_wall:.2f}"
            x_cpu = "" if tool == "gpenguard" else f"{med_cpu / g_cpu:.2f}"
            print(f"{corpus:<26} {tool:<12} {med * 1000:>11.1f} "
                  f"{statistics.fmean(seconds[tool]) * 1000:>9.1f} {med_cpu * 1000:>10.1f} "
                  f"{','.join(map(str, sorted(codes[tool]))):<11} {x_wall:>7} {x_cpu:>6}")
    print("\nx wall / x cpu = that tool's median divided by gpenguard's (above 1: gpenguard is "
          "faster).\ncpu = user + system time of the process (wait4): on a shared machine the "
          "steadier figure.\nThe text report carries no sha256 (json, sarif and --hash do), so the scan "
          "reads only what the verdict needs.\n")


@dataclass(frozen=True)
class Score:
    detected: int
    bad_err: int
    missed: int
    fp_flag: int
    fp_err: int


def score(runs: Sequence[Run]) -> Score:
    bad = [r for r in runs if r.malicious]
    good = [r for r in runs if not r.malicious]
    errorish = (Outcome.ERROR, Outcome.TIMEOUT)
    return Score(
        detected=sum(r.outcome is Outcome.FLAGGED for r in bad),
        bad_err=sum(r.outcome in errorish for r in bad),
        missed=sum(r.outcome is Outcome.CLEAN for r in bad),
        fp_flag=sum(r.outcome is Outcome.FLAGGED for r in good),
        fp_err=sum(r.outcome in errorish for r in good),
    )


def _score_cols(sc: Score, n_bad: int, n_good: int) -> str:
    return (f"{sc.detected:>4}/{n_bad:<5} {sc.bad_err:>4}/{n_bad:<5} {sc.missed:>3}/{n_bad:<4} "
            f"{sc.fp_flag:>3}/{n_good:<4} {sc.fp_err:>4}/{n_good:<4}")


_SCORE_HEAD = f"{'detected':>10} {'error(bad)':>10} {'missed':>8} {'FP flag':>8} {'FP error':>9}"


def print_tables(tools: list[str], runs: list[Run], *, n_bad: int, n_good: int) -> None:
    print("TABLE 1 -- per process: one process per file for every tool, through its CLI")
    print("(interpreter start-up included), sequential, files round-robin across tools.\n")
    header = (f"{'tool':<22} {_SCORE_HEAD} {'total s':>9} {'s/file':>8} {'median':>8} "
              f"{'gpenguard x':>11}")
    print(header)
    print("-" * len(header))
    totals = {t: sum(r.seconds for r in runs if r.tool == t) for t in tools}
    for tool in tools:
        mine = [r for r in runs if r.tool == tool]
        total = totals[tool]
        per_file = total / max(len(mine), 1)
        median = statistics.median(r.seconds for r in mine) if mine else 0.0
        ratio = "" if tool == "gpenguard" or "gpenguard" not in totals else (
            f"{total / totals['gpenguard']:.2f}" if totals["gpenguard"] else "n/a")
        print(f"{tool:<22} {_score_cols(score(mine), n_bad, n_good)} {total:>9.2f} "
              f"{per_file:>8.3f} {median:>8.3f} {ratio:>11}")
    print("\ndetected = exit code says 'unsafe'; error(bad) = could not decide on a malicious file")
    print("(fails closed, but is no detection); missed = reported clean. FP flag / FP error =")
    print("benign files reported unsafe / could not be scanned. 'gpenguard x' = that tool's")
    print("total wall time divided by gpenguard's (above 1: gpenguard is faster).\n")
    print_item_details(runs)


def print_item_details(runs: Sequence[Run]) -> None:
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


def print_batch_table(batches: list[Batch], *, n_bad: int, n_good: int) -> None:
    print("\nTABLE 2 -- in process: one process per tool, its own Python API called on every")
    print("file in a loop; times are per call, after imports (import + set-up shown apart).\n")
    header = (f"{'tool':<22} {_SCORE_HEAD} {'scan s':>8} {'mean ms':>8} {'median ms':>9} "
              f"{'benign med':>10} {'import s':>8} {'x total':>8} {'x median':>8} {'x benign':>8}")
    print(header)
    print("-" * len(header))
    g = next((b for b in batches if b.tool == "gpenguard"), None)
    g_total = sum(r.seconds for r in g.runs) if g else 0.0
    g_median = _median_ms(g.runs) if g else 0.0
    g_benign = _median_ms([r for r in g.runs if not r.malicious]) if g else 0.0
    for b in batches:
        secs = [r.seconds for r in b.runs]
        total = sum(secs)
        mean_ms = total / max(len(secs), 1) * 1000
        median_ms = _median_ms(b.runs)
        benign_ms = _median_ms([r for r in b.runs if not r.malicious])
        x_total = x_median = x_benign = ""
        if g is not None and b is not g:
            x_total = f"{total / g_total:.2f}" if g_total else "n/a"
            x_median = f"{median_ms / g_median:.2f}" if g_median else "n/a"
            x_benign = f"{benign_ms / g_benign:.2f}" if g_benign else "n/a"
        print(f"{b.tool:<22} {_score_cols(score(b.runs), n_bad, n_good)} {total:>8.3f} "
              f"{mean_ms:>8.2f} {median_ms:>9.2f} {benign_ms:>10.2f} {b.import_s:>8.3f} "
              f"{x_total:>8} {x_median:>8} {x_benign:>8}")
    print("\nscan s = sum of the per-file API calls; 'benign med' = median ms over the benign")
    print("checkpoints only (what a user mostly scans); 'x total' / 'x median' / 'x benign' = that")
    print("tool's figure divided by gpenguard's (above 1: gpenguard is faster). The first call")
    print("of each tool also pays any import its API defers to first use.")
    for b in batches:
        if b.failure:
            print(f"  {b.tool}: driver covered {len(b.runs)} files only: {b.failure}")
    print()
    print_item_details([r for b in batches for r in b.runs])


def _median_ms(runs: Sequence[Run]) -> float:
    return statistics.median(r.seconds for r in runs) * 1000 if runs else 0.0


def print_disagreements(runs: Sequence[Run], batches: Sequence[Batch]) -> None:
    """Where a tool's API verdict differs from its CLI's on the same file."""
    # Item names repeat across the two corpora (a malicious and a benign "protocol-4").
    cli = {(r.tool, r.item, r.malicious): r.outcome for r in runs}
    diffs = [(r.tool, f"{r.item} ({'malicious' if r.malicious else 'benign'})",
              cli[key].value, r.outcome.value)
             for b in batches for r in b.runs
             if (key := (r.tool, r.item, r.malicious)) in cli and cli[key] is not r.outcome]
    print("\nFiles where a tool's in-process verdict differs from its CLI's (tool, item, CLI, API):")
    if not diffs:
        print("  (none)")
    for tool, item, a, b in sorted(diffs):
        print(f"  {tool:<20} {item:<44} {a:>8} -> {b}")


if __name__ == "__main__":
    raise SystemExit(main())
