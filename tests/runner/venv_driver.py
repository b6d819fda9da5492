"""Run by a virtualenv's interpreter (see test_bwrap_venv.py): the real worker under bwrap.

Makes a GPEN-256 checkpoint with `torch.save`, gates and converts it like `restore` does, then
restores one image in the bwrap sandbox with this interpreter's own environment. Prints one
JSON line: who ran inside the sandbox, the worker's events, and the outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(work: Path) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from gpenguard.convert import convert
    from gpenguard.nets.gpen import gpen_bfr
    from gpenguard.pipeline import StoredInput, recheck, run_worker
    from gpenguard.policy import Policy, SandboxPolicy
    from gpenguard.runner.bwrap import BwrapBackend
    from gpenguard.runner.seccomp import load_profile
    from gpenguard.runner.spec import HOST_IMAGE, Job, build_spec
    from gpenguard.store import Store

    policy = Policy(name="venv", sandbox=SandboxPolicy(memory_bytes=4 * 2**30, pids_limit=128, cpus=2.0, timeout_s=600.0))
    backend = BwrapBackend()
    who = work / "who-out"
    who.mkdir()
    probe = (
        "import json, sys, venv_marker\n"
        "print(json.dumps({'event': 'who', 'prefix': sys.prefix, 'executable': sys.executable,"
        " 'marker': venv_marker.__file__}))\n"
    )
    asked = backend.run(build_spec(policy, Job(image=HOST_IMAGE, command=("python", "-c", probe), output_dir=str(who)),
                                   seccomp_profile=load_profile()))  # fmt: skip

    torch.manual_seed(0)
    checkpoint = work / "gpen-256.pth"
    torch.save(gpen_bfr(256).state_dict(), checkpoint)
    record = convert(checkpoint, None, store=Store(work / "store"))
    stored = StoredInput("gpen", checkpoint, record.output, record.provenance, record.sha256)
    recheck(stored)
    face = work / "face.png"
    Image.fromarray((np.random.default_rng(0).random((128, 128, 3)) * 255).astype(np.uint8)).save(face)
    done = run_worker(backend, HOST_IMAGE, policy, [stored], [face], work / "out", size=256)
    result, outputs = done.run, done.outputs
    print(json.dumps({
        "who": [dict(e) for e in asked.events if e["event"] == "who"],
        "events": [dict(e) for e in result.events],
        "outputs": [str(p) for p in outputs],
        "ro_paths": list(backend.runtime.ro_paths),
        "python": backend.runtime.python,
    }))  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]))
