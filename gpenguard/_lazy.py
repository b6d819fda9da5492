"""A module imported on first attribute access.

Start-up is per-file time for a CI hook; modules only some runs need are bound this way.
(`importlib.util.LazyLoader` does the same but costs more to import than it saves here.)
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _Lazy(ModuleType):
    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)


def lazy_module(name: str) -> ModuleType:
    """A stand-in for module `name` that imports it when one of its attributes is read."""
    return _Lazy(name)
