"""Coverage-guided differential campaign: gpenguard's reading against torch.load's readers.

    python bench/differential.py --minutes 30 --out /tmp/gg-diff      # needs the `fuzz` extra

atheris (libFuzzer) drives the structure-aware mutators of tests/differential/mutators.py: its
input bytes are the choices (which seed, which mutator, which field, which value), and the
coverage it maximises is gpenguard's own (instrumented) code. Every input gpenguard passes is
read again by the real loaders (tests/differential/oracle.py). Prints executions per second and
the differentials found, new ones and known OPEN ones (DIFFERENTIALS.md) apart; writes one
reproducer per distinct differential into --out, and summary.json there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class _Provider:
    """`Choices` backed by libFuzzer's bytes, so coverage feedback steers each decision."""

    def __init__(self, fdp: Any) -> None:
        self._fdp = fdp

    def randint(self, a: int, b: int) -> int:
        return int(self._fdp.ConsumeIntInRange(a, b)) if b > a else a


class Campaign:
    def __init__(self, out: Path, minutes: float) -> None:
        from tests.differential import known, mutators, oracle, seeds

        self.oracle, self.mutators, self.known = oracle, mutators, known
        self.pool = seeds.benign(), seeds.malicious()
        self.out = out
        self.deadline = time.monotonic() + minutes * 60
        self.started = time.monotonic()
        self.execs = 0
        self.passed = 0
        self.verdicts: Counter[str] = Counter()
        self.found: Counter[str] = Counter()
        self.signatures: dict[str, str] = {}
        self.last_print = self.started

    def one(self, raw: bytes) -> None:
        import atheris

        fdp = atheris.FuzzedDataProvider(raw)
        r = _Provider(fdp)
        group = self.pool[0] if r.randint(0, 4) else self.pool[1]
        data = self.mutators.mutate(group[r.randint(0, len(group) - 1)], r, rounds=r.randint(1, 3))
        self.execs += 1
        guard = self.oracle.guard_view(data)
        self.verdicts[guard.verdict.value] += 1
        if guard.verdict.value == "pass":
            self.passed += 1
            loader = self.oracle.loader_view(data)
            for diff in self.oracle.differentials(guard, loader):
                key = self.known.classify(data, guard, loader, diff) or "NEW"
                self._record(key, diff, data)
        now = time.monotonic()
        if now - self.last_print > 30:
            self.last_print = now
            self.report(final=False)
        if now > self.deadline:
            self.report(final=True)
            os._exit(0)

    def _record(self, key: str, diff: Any, data: bytes) -> None:
        sig = f"{key}:{diff.kind}:{diff.detail.split(':')[0]}"
        self.found[key] += 1
        if sig in self.signatures:
            return
        name = f"{key}-{diff.kind}-{hashlib.sha256(data).hexdigest()[:12]}.bin"
        (self.out / name).write_bytes(data)
        self.signatures[sig] = f"{name}: {diff}"

    def report(self, *, final: bool) -> None:
        took = time.monotonic() - self.started
        summary = {
            "executions": self.execs,
            "minutes": round(took / 60, 2),
            "exec_per_s": round(self.execs / max(took, 1e-9), 1),
            "passed_by_gpenguard": self.passed,
            "verdicts": dict(self.verdicts),
            "differentials": dict(self.found),
            "distinct": sorted(self.signatures.values()),
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        tag = "final" if final else "progress"
        print(
            f"[{tag}] {self.execs} executions in {took / 60:.1f} min "
            f"({summary['exec_per_s']}/s), {self.passed} passed by gpenguard, "
            f"differentials: {dict(self.found) or 'none'}",
            flush=True,
        )
        if final:
            for line in summary["distinct"]:
                print("  ", line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=Path("differential-out"))
    ap.add_argument("--corpus", type=Path, default=None, help="libFuzzer corpus folder to grow")
    args, rest = ap.parse_known_args()
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: pip install 'gpenguard[fuzz]'")
    args.out.mkdir(parents=True, exist_ok=True)
    with atheris.instrument_imports(include=["gpenguard"]):
        import gpenguard.formats.weights
        import gpenguard.scan.api  # noqa: F401
    campaign = Campaign(args.out, args.minutes)
    # A backstop for the loaders' own memory bombs (a huge memo index, a huge storage): an
    # allocation past this fails with MemoryError, which the oracle records as the loader failing.
    resource.setrlimit(resource.RLIMIT_DATA, (6 * 2**30, resource.RLIM_INFINITY))
    argv = [
        sys.argv[0],
        *rest,
        "-max_len=4096",
        "-rss_limit_mb=4096",
        "-timeout=60",
        f"-artifact_prefix={args.out}/",
    ]
    if args.corpus is not None:
        args.corpus.mkdir(parents=True, exist_ok=True)
        argv.append(str(args.corpus))
    atheris.Setup(argv, campaign.one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
