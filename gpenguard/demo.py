"""A benign checkpoint and a poisoned copy of it, to see the scanner block a real attack shape.

Both files are made by `torch.save` from the same small network with RANDOM weights (seeded;
they restore nothing and are not GPEN). The poisoned copy adds one extra entry whose pickle
reduces to ``os.system("true")`` — the classic "model file runs a shell command on load"
attack, with a payload that does nothing even if someone does load it with
``torch.load(weights_only=False)``. gpenguard itself never loads either file.
"""

from __future__ import annotations

import os
from pathlib import Path

BENIGN_NAME = "demo-random-weights-benign.pth"
POISONED_NAME = "demo-random-weights-POISONED-runs-os-system-true.pth"
PAYLOAD_COMMAND = "true"


class _RunsShellOnLoad:
    """Pickles as a call to ``os.system(PAYLOAD_COMMAND)``: what a loader would execute."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (PAYLOAD_COMMAND,))


def make_demo_pair(directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write the benign and the poisoned checkpoint into `directory`; return their paths."""
    import torch  # NOTE: only the demo needs torch to *write* checkpoints

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(2048)
    state_dict = {
        "conv1.weight": torch.randn(8, 3, 3, 3, generator=generator),
        "conv1.bias": torch.zeros(8),
        "conv2.weight": torch.randn(3, 8, 3, 3, generator=generator),
        "conv2.bias": torch.zeros(3),
    }
    benign = out / BENIGN_NAME
    poisoned = out / POISONED_NAME
    torch.save(state_dict, benign)
    torch.save({**state_dict, "_metadata_": _RunsShellOnLoad()}, poisoned)
    return benign, poisoned
