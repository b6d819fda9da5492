"""Recognisers for the OPEN differentials of DIFFERENTIALS.md, so the fuzz budget in CI flags
only new ones. Remove a recogniser when its entry is FIXED: the fuzz test then holds the fix.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.differential.mutators import parse_zip
from tests.differential.oracle import Differential, GuardView, LoaderView


def _d003(data: bytes, guard: GuardView, loader: LoaderView, diff: Differential) -> bool:
    """torch.load(mmap=True) of a storage stored with compression."""
    if diff.kind != "tensors" or "(mmap)" not in diff.detail:
        return False
    z = parse_zip(data)
    return z is not None and any(b"/data/" in e.name and e.method != 0 for e in z.entries)


def _d004(data: bytes, guard: GuardView, loader: LoaderView, diff: Differential) -> bool:
    """A central entry with the DOS directory attribute (0x10): miniz returns it unread."""
    z = parse_zip(data)
    if z is None or diff.kind not in ("storage", "tensors"):
        return False
    return any(data[e.cd_offset + 38] & 0x10 for e in z.entries)


def _d005(data: bytes, guard: GuardView, loader: LoaderView, diff: Differential) -> bool:
    """A ``byteorder`` record other than ``little``: torch byteswaps, convert does not."""
    return diff.kind == "tensors" and loader.byteorder not in (None, b"little")


KNOWN: dict[str, Callable[[bytes, GuardView, LoaderView, Differential], bool]] = {
    "D003": _d003,
    "D004": _d004,
    "D005": _d005,
}


def classify(data: bytes, guard: GuardView, loader: LoaderView, diff: Differential) -> str | None:
    """The OPEN entry `diff` is an instance of, or None for a new differential."""
    for key, test in KNOWN.items():
        try:
            if test(data, guard, loader, diff):
                return key
        except Exception:
            continue
    return None
