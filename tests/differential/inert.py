"""CPython's C unpickler with inert globals: what the real loader would import, never imported.

`InertUnpickler.find_class` returns a fresh recorder class and `persistent_load` a recorder, so
no name the input gives is ever resolved to a real object and nothing it names is called. This
is the only way the differential tests run CPython's unpickler over an input.
"""

from __future__ import annotations

import pickle
import pickletools
from dataclasses import dataclass, field
from typing import Any

from gpenguard.scan.allowlist import normalize


class Recorded:
    """What an imported name becomes: accepts every operation the unpickler performs, does nothing."""

    __gg_name__ = "?"

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> Recorded:
        return Recorded()

    def __setstate__(self, state: object) -> None:
        pass

    def append(self, item: object) -> None:
        pass

    def extend(self, items: object) -> None:
        pass

    def add(self, item: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass


@dataclass
class Run:
    """One pickle program the C unpickler ran: where, what it imported, how it ended."""

    start: int
    end: int | None
    """Position after STOP, or None when the unpickler raised."""
    globals: list[str] = field(default_factory=list)
    raw_globals: list[tuple[str, str]] = field(default_factory=list)
    pids: list[object] = field(default_factory=list)
    value: object = None
    error: str | None = None


class InertUnpickler(pickle.Unpickler):
    """CPython's ``_pickle.Unpickler``; every global and persistent id becomes a recorder."""

    def __init__(self, file: Any, run: Run) -> None:
        super().__init__(file, encoding="utf-8")  # torch.load's pickle_load_args
        self._run = run

    def find_class(self, module: str, name: str) -> Any:
        self._run.raw_globals.append((module, name))
        self._run.globals.append(normalize(str(module), str(name)))
        # a class, because NEWOBJ/NEWOBJ_EX refuse anything that is not a type
        return type("Recorded", (Recorded,), {"__gg_name__": f"{module}.{name}"})

    def persistent_load(self, pid: Any) -> Any:
        self._run.pids.append(pid)
        return Recorded()


MAX_MEMO_INDEX = 1 << 22
"""`_pickle` sizes its memo array to the largest PUT index: ``r\xff\xff\xff\x7f`` alone asks for
16 GiB. The oracle does not run programs past this bound (gpenguard's walker blocks them)."""


def _memo_bomb(f: Any) -> bool:
    """Whether the program at `f`'s position PUTs at an index past `MAX_MEMO_INDEX` (stdlib decoder)."""
    start = f.tell()
    try:
        for op, arg, _pos in pickletools.genops(f):
            if "PUT" in op.name and isinstance(arg, int) and arg > MAX_MEMO_INDEX:
                return True
    except Exception:
        return False  # a decoding error: whatever the C unpickler makes of it stays small
    finally:
        f.seek(start)
    return False


def run_pickle(f: Any) -> Run:
    """Run one program from file object `f` at its current position, inertly."""
    run = Run(start=f.tell(), end=None)
    if _memo_bomb(f):
        run.error = f"oracle: memo index beyond {MAX_MEMO_INDEX}; not run"
        return run
    try:
        run.value = InertUnpickler(f, run).load()
        run.end = f.tell()
    except RecursionError:
        run.error = "RecursionError"
    except Exception as exc:  # any unpickling failure ends the loader's reading here
        run.error = f"{type(exc).__name__}: {exc}"[:200]
    return run
