"""What the sandbox costs: a fixed start-up price and a per-image overhead, for every sandbox
(Docker with runc, Docker with gVisor's runsc, bubblewrap) against in-process GPEN, in one run.

One run, one machine, same weights, same images, same thread count:

    in-process   Restorer built from the stored .safetensors, then each image restored
    bare worker  the sandbox's worker as a plain host subprocess (no isolation)
    sandboxes    the same worker under each backend: start, verify, load, restore

The table, one row per sandbox (and the bare worker as the baseline row):

    empty job         wall time of `python -c pass` in the sandbox (its bare start/stop price)
    first output      run() called -> the worker's first line reaches the host
    fixed cost        first output, minus the bare worker's (the price of the sandbox itself)
    model loaded      run() called -> the worker reports the model loaded
    per image         fastest and median image after the first, by the host's clock (the gap
                      between the worker's image events as they reach the host)
    / in proc, / bare per image (fastest) / in process (fastest), and / the bare worker's

The sides run interleaved, once per round, and each figure is the best over the rounds: on a
shared machine the minimum is the figure least inflated by other load. The first image of each
run pays one-off allocator and kernel warm-up on every side, so it is left out. Targets (runc and
bwrap): fixed < 1.5 s, per image < 1.05x; gVisor pays more, and the table says how much.

    python bench/sandbox.py [--size 256] [--images 4] [--rounds 3] [--threads 2] [--sandboxes runc,runsc,bwrap]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _stored_weights(folder: Path, size: int) -> Any:
    """A random GPEN checkpoint of `size`, gated and converted into a store like `restore` does."""
    import torch

    from gpenguard.convert import convert
    from gpenguard.nets.gpen import gpen_bfr
    from gpenguard.pipeline import StoredInput, recheck
    from gpenguard.store import Store

    torch.manual_seed(0)
    checkpoint = folder / f"gpen-bench-{size}.pth"
    torch.save(gpen_bfr(size).state_dict(), checkpoint)
    record = convert(checkpoint, None, store=Store(folder / "store"))
    stored = StoredInput("gpen", checkpoint, record.output, record.provenance, record.sha256)
    recheck(stored)
    return stored


def _images(folder: Path, count: int, size: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    paths = []
    for index in range(count):
        path = folder / f"face{index}.png"
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def _in_process(stored: Any, images: list[Path], size: int, threads: int, out: Path) -> tuple[float, list[float]]:
    """The same per-image work as the worker (decode, restore, a PNG into the results archive), in this process."""
    import io
    import tarfile

    import torch

    from gpenguard.decoders import decode
    from gpenguard.restore import Restorer
    from gpenguard.runner.worker import result_member

    out.mkdir()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    restorer = Restorer({"gpen": stored.path}, size=size, mode="aligned")
    load = time.perf_counter() - started
    per_image = []
    with tarfile.open(out / "results.tar", "w", format=tarfile.USTAR_FORMAT) as archive:
        for index, path in enumerate(images):
            t0 = time.perf_counter()
            data = io.BytesIO()
            restorer.restore_image(decode(path)).save(data, format="PNG")
            member = tarfile.TarInfo(result_member(index))
            member.size = data.tell()
            data.seek(0)
            archive.addfile(member, data)
            per_image.append(time.perf_counter() - t0)
    return load, per_image


def _bare_worker(stored: Any, images: list[Path], size: int, threads: int, out: Path) -> tuple[float, float, list[float]]:
    """The same worker as a plain host process, no sandbox: start -> first output, -> model loaded, per image."""
    import json
    import subprocess

    from gpenguard.runner.worker import WeightFile, WorkerJob

    out.mkdir()
    job = WorkerJob(
        gpen=WeightFile(str(stored.path), str(stored.provenance)),
        inputs=tuple(str(p) for p in images),
        results=str(out / "results.tar"),
        size=size,
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    first = loaded = None
    last = 0.0
    per_image: list[float] = []
    with subprocess.Popen(
        [sys.executable, "-m", "gpenguard.runner.worker", "--job", job.to_json()], stdout=subprocess.PIPE, env=env, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            event = json.loads(line)
            if first is None:
                first = time.perf_counter() - started
            if event["event"] == "model-loaded" and loaded is None:
                loaded = time.perf_counter() - started
            elif event["event"] == "image":
                now = time.perf_counter() - started
                per_image.append(now - last)
                last = now
            if event["event"] == "model-loaded":
                last = time.perf_counter() - started
    assert process.returncode == 0 and first is not None and loaded is not None
    return first, loaded, per_image


def _policy(threads: int) -> Any:
    from gpenguard.policy import Policy, SandboxPolicy

    return Policy(name="bench", sandbox=SandboxPolicy(cpus=float(threads), memory_bytes=8 * 2**30))


def _backend(name: str) -> tuple[Any, str]:
    """(backend, image) for ``runc``, ``runsc`` (Docker runtimes) or ``bwrap``."""
    from gpenguard.runner.spec import HOST_IMAGE

    if name == "bwrap":
        from gpenguard.runner.bwrap import BwrapBackend

        return BwrapBackend(), HOST_IMAGE
    from gpenguard.runner.docker import DockerBackend, client, resolve_image, resolve_runtime

    engine = client()
    return DockerBackend(engine, resolve_runtime(engine, name)), resolve_image(engine)


def _empty_run(backend: Any, image: str, threads: int, folder: Path) -> float:
    """Wall time of an empty job (`pass`) in the sandbox."""
    from gpenguard.runner.seccomp import load_profile
    from gpenguard.runner.spec import Job, build_spec

    out = folder / f"empty-out-{uuid.uuid4().hex[:8]}"
    out.mkdir()
    if os.geteuid() == 0:
        os.chown(out, *backend.output_owner((65534, 65534)))
    spec = build_spec(
        _policy(threads), Job(image=image, command=("python", "-c", "pass"), output_dir=str(out)),
        seccomp_profile=load_profile(),
    )  # fmt: skip
    t0 = time.perf_counter()
    backend.run(spec)
    return time.perf_counter() - t0


def _sandboxed(backend: Any, image: str, stored: Any, images: list[Path], args: Any, out: Path) -> dict[str, Any]:
    """One restore in the sandbox: when the first output and the loaded model reached the host."""
    from gpenguard.pipeline import run_worker

    arrivals: dict[str, float] = {}
    images_at: list[float] = []

    def on_event(event: Any) -> None:
        now = time.perf_counter()
        arrivals.setdefault("first", now)
        arrivals.setdefault(str(event["event"]), now)
        if event["event"] == "image":
            images_at.append(now)

    started = time.perf_counter()
    outputs = run_worker(
        backend, image, _policy(args.threads), [stored], images, out, size=args.size, on_event=on_event
    ).outputs
    total = time.perf_counter() - started
    assert len(outputs) == len(images), outputs
    # Per image by the host's clock (gaps between image events): a sandbox's own clock, gVisor's
    # above all, is not the host's, and the worker's own figures would compare unlike clocks.
    per_image = [b - a for a, b in zip([arrivals["model-loaded"], *images_at], images_at, strict=False)]
    return {"first": arrivals["first"] - started, "loaded": arrivals["model-loaded"] - started,
            "per_image": per_image, "total": total}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="GPEN model size (256, 512, 1024, 2048)")
    parser.add_argument("--images", type=int, default=4, help="images per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every side once, interleaved")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sandboxes", default="runc,runsc,bwrap", help="comma-separated: runc, runsc, bwrap")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    names = [n.strip() for n in args.sandboxes.split(",") if n.strip()]
    unknown = set(names) - {"runc", "runsc", "bwrap"}
    if unknown:
        parser.error(f"unknown sandboxes: {', '.join(sorted(unknown))}")
    backends = {name: _backend(name) for name in names}  # fails here, before any timing
    labels = {"runc": "docker runc", "runsc": "docker runsc", "bwrap": "bwrap"}

    # Every side runs once per round, one after another, so load from other work on a shared
    # machine falls on all of them alike; each figure is the best over the rounds.
    empty: dict[str, list[float]] = {name: [] for name in names}
    first: dict[str, list[float]] = {name: [] for name in ["bare", *names]}
    loaded: dict[str, list[float]] = {name: [] for name in ["bare", *names]}
    per_image: dict[str, list[float]] = {name: [] for name in ["in", "bare", *names]}
    with tempfile.TemporaryDirectory(prefix="gpenguard-bench-") as tmp:
        folder = Path(tmp)
        stored = _stored_weights(folder, args.size)
        images = _images(folder, args.images, args.size // 2)
        for round_ in range(args.rounds):
            _, times = _in_process(stored, images, args.size, args.threads, folder / f"in-{round_}")
            per_image["in"] += times[1:] or times
            bare_first, bare_loaded, times = _bare_worker(stored, images, args.size, args.threads, folder / f"bare-{round_}")
            first["bare"].append(bare_first)
            loaded["bare"].append(bare_loaded)
            per_image["bare"] += times[1:] or times
            for name, (backend, image) in backends.items():
                empty[name].append(_empty_run(backend, image, args.threads, folder))
                run = _sandboxed(backend, image, stored, images, args, folder / f"out-{name}-{round_}")
                first[name].append(run["first"])
                loaded[name].append(run["loaded"])
                per_image[name] += run["per_image"][1:] or run["per_image"]

    steady_in = min(per_image["in"])
    print(f"gpenguard sandbox benchmark: GPEN-{args.size}, {args.images} images of {args.size // 2} px x "
          f"{args.rounds} rounds, {args.threads} threads, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"in process, per image (min / median, first image of each run left out): {steady_in:.3f} s / "
          f"{statistics.median(per_image['in']):.3f} s")  # fmt: skip
    header = (f"{'sandbox':<13}{'empty job':>11}{'first out':>11}{'fixed cost':>12}{'model loaded':>14}"
              f"{'per image min':>15}{'median':>9}{'/ in proc':>11}{'/ bare':>8}")  # fmt: skip
    print(header)
    print("-" * len(header))
    bare_first = min(first["bare"])
    for name in ["bare", *names]:
        label = labels.get(name, "bare worker")
        empty_text = f"{min(empty[name]):.3f} s" if name in empty else ""
        fixed = f"{min(first[name]) - bare_first:.3f} s" if name != "bare" else ""
        times = per_image[name]
        print(f"{label:<13}{empty_text:>11}{min(first[name]):9.3f} s{fixed:>12}{min(loaded[name]):12.3f} s"
              f"{min(times):13.3f} s{statistics.median(times):7.3f} s{min(times) / steady_in:10.3f}x"
              f"{min(times) / min(per_image['bare']):7.3f}x")  # fmt: skip


if __name__ == "__main__":
    main()
