"""gpenguard: decide whether a PyTorch checkpoint may be used, and run it without trusting it.

The library never prints: functions return values or raise `GpenguardError`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "convert", "scan", "verify"]


def __getattr__(name: str) -> Any:
    # NOTE: the stage entry points import torch and friends; load them on first use so that
    # `import gpenguard` (and `gpenguard --help`) stay fast.
    if name == "scan":
        from gpenguard.scan import scan

        return scan
    if name == "verify":
        from gpenguard.gate import verify

        return verify
    if name == "convert":
        from gpenguard.convert import convert

        return convert
    raise AttributeError(f"module 'gpenguard' has no attribute {name!r}")
