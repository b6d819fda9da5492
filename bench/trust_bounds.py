"""Hostile trust inputs: how long `gpenguard verify` takes, and how much memory, before it decides.

    python bench/trust_bounds.py [--timeout 120] [--case NAME ...] [--code DIR]

Each case builds a real checkpoint (``torch.save``), a registry and its files in a temp folder,
then runs ``python -m gpenguard verify`` in a fresh subprocess whose working directory is
`--code` (default: this checkout), so the gpenguard package found there is the one measured:
``git archive <commit> gpenguard | tar -x -C /tmp/base`` then ``--code /tmp/base`` measures an
older commit on the same inputs. Wall time covers the whole child; peak RSS is its
``ru_maxrss`` from ``os.wait4``. Cases:

- ``registry-15mb``   a 15 MB unsigned registry of 50,000 well-formed entries, default policy
- ``registry-1mb``    the same just under 1 MiB (the size cap now), parsed in full
- ``registry-tiny-values``  1 MiB of ``- a`` lines: the most YAML values per byte
- ``keyless-250k``    a registry .sig holding 250,000 signatures with no keyid (each would be
                      tried against every trust-root key), with a trust root of five keys
- ``fifo-bundle``     the entry's OMS bundle path is a FIFO nobody writes to

The point is the bound: every case must end in a decision (exit 1 or 2) within seconds.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _world(folder: Path) -> tuple[Path, Path, Path, object]:
    from tests._gatekit import build_world

    w = build_world(folder)
    return w.model, w.registry, w.trust_root, w


def _registry_of(folder: Path, size: int) -> list[str]:
    """An unsigned registry of well-formed entries, just under `size` bytes, verified under default."""
    model, _, _, _ = _world(folder)
    head = "schema_version: 1\nregistry:\n  name: big\n  version: 1\n  expires: 2099-01-01T00:00:00Z\nartifacts:\n"
    entry = ("  - name: model-{i:06d}\n    version: \"1.0\"\n    status: approved\n"
             "    source: {{url: https://example.org/m{i}.pth}}\n    license: MIT\n"
             "    files:\n      - {{path: m{i}.pth, format: torch-zip, size: 1234}}\n")
    parts, used, i = [head], len(head), 0
    while used + len(entry) + 20 < size:
        text = entry.format(i=i)
        parts.append(text)
        used += len(text)
        i += 1
    big = folder / "big-registry.yaml"
    big.write_text("".join(parts))
    return ["verify", str(model), "--registry", str(big), "--policy", "default"]


def case_registry_15mb(folder: Path) -> list[str]:
    return _registry_of(folder, 15 * 2**20)


def case_registry_1mb(folder: Path) -> list[str]:
    return _registry_of(folder, 2**20)


def case_registry_tiny_values(folder: Path) -> list[str]:
    """1 MiB of one-character list items: the most values per byte a block list allows."""
    model, _, _, _ = _world(folder)
    big = folder / "tiny-values.yaml"
    head = "schema_version: 1\nregistry: {name: x, version: 1, expires: 2099-01-01T00:00:00Z}\nartifacts:\n"
    big.write_text(head + "- a\n" * ((2**20 - len(head) - 1) // 4))
    return ["verify", str(model), "--registry", str(big), "--policy", "default"]


def case_keyless_250k(folder: Path) -> list[str]:
    from tests.trust.factory import new_key, write_trust_root

    model, registry, root, w = _world(folder)
    write_trust_root(root, [w.registry_key, *(new_key("ecdsa-p256") for _ in range(4))])  # type: ignore[attr-defined]
    sig = registry.with_name(registry.name + ".sig")
    envelope = json.loads(sig.read_text())
    junk = base64.b64encode(os.urandom(64)).decode()  # the length of an ed25519 signature: really verified
    envelope["signatures"] = [{"keyid": "", "sig": junk}] * 250_000
    sig.write_text(json.dumps(envelope))
    return ["verify", str(model), "--registry", str(registry), "--trust-root", str(root)]


def case_fifo_bundle(folder: Path) -> list[str]:
    from tests._gatekit import build_world

    w = build_world(folder, artifact_signatures=1)
    bundle = w.dir / w.entry["signatures"][0]["path"]
    bundle.unlink()
    os.mkfifo(bundle)
    return ["verify", str(w.model), "--registry", str(w.registry), "--trust-root", str(w.trust_root)]


CASES = {"registry-15mb": case_registry_15mb, "registry-1mb": case_registry_1mb,
         "registry-tiny-values": case_registry_tiny_values, "keyless-250k": case_keyless_250k, "fifo-bundle": case_fifo_bundle}


def measure(args: list[str], timeout: float, env: dict[str, str], code_dir: Path) -> tuple[float, int, int | None]:
    """(wall seconds, peak RSS in MiB, exit code or None when it had to be killed)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gpenguard", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, cwd=code_dir)
    code: int | None = None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.perf_counter() - start > timeout:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    return time.perf_counter() - start, usage.ru_maxrss // 1024, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--case", action="append", choices=sorted(CASES))
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1],
                        help="folder holding the gpenguard package to measure")
    opts = parser.parse_args()
    code_dir = opts.code.resolve()
    print(f"gpenguard from {code_dir / 'gpenguard'}")
    for name in opts.case or list(CASES):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            env = {**os.environ, "GPENGUARD_STATE_DIR": str(folder / "state"), "OMP_NUM_THREADS": "1"}
            args = CASES[name](folder)
            env["PYTHONPATH"] = str(code_dir)
            wall, rss, code = measure(args, opts.timeout, env, code_dir)
            ended = f"exit {code}" if code is not None else f"killed after {opts.timeout:.0f} s"
            print(f"{name:<21} {wall:7.2f} s  {rss:6d} MiB  {ended}")


if __name__ == "__main__":
    main()
