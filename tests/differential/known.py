"""Recognisers for the OPEN differentials of DIFFERENTIALS.md, so the fuzz budget in CI flags
only new ones. Remove a recogniser when its entry is FIXED: the fuzz test then holds the fix.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.differential.oracle import Differential, GuardView, LoaderView

KNOWN: dict[str, Callable[[bytes, GuardView, LoaderView, Differential], bool]] = {}
"""id -> recogniser, for each OPEN entry; empty while every entry found so far is FIXED."""


def classify(data: bytes, guard: GuardView, loader: LoaderView, diff: Differential) -> str | None:
    """The OPEN entry `diff` is an instance of, or None for a new differential."""
    for key, test in KNOWN.items():
        try:
            if test(data, guard, loader, diff):
                return key
        except Exception:
            continue
    return None
