"""A second opinion from CPython's own C unpickler, with every global inert.

`torch.load(weights_only=False)` runs `_pickle.Unpickler`; the walker is gpenguard's model of it.
Any place the model is wrong (a text form, a frame rule, an opcode corner) is a place a payload
can hide, so every pickle the scanner judges is also run through the real C unpickler with
`find_class` and `persistent_load` overridden: a global becomes a fresh inert class that records
nothing but its (module, name), a persistent id an inert object. No global named by the file is
ever resolved to a real object; the C machine only builds plain values and inert stand-ins.

The run is bounded: it happens in a forked child with an address-space limit and a deadline
(the C unpickler sizes its memo by the largest index, and a dict of colliding integer keys is
quadratic; neither can be interrupted in-process). The child answers with JSON: the globals it
was asked for, the persistent ids, and where each load stopped or why it failed.

`compare` turns a disagreement with the walker into `Problem`s (rule GG121) for scan/ to block on.
"""

from __future__ import annotations

import _pickle
import io
import json
import os
import select
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpenguard.pickling.walker import Global, Problem, SList, SSet, WalkResult

BYTESIO = "bytesio"
"""How torch feeds a zip's ``data.pkl``: ``io.BytesIO(record)`` (no ``peek``)."""
FILE = "file"
"""How torch feeds a legacy stream: a buffered file object (``peek`` prefetches 128 KiB)."""
BYTES = "bytes"
"""`pickle.loads`: the whole buffer at once (frames are only length-checked)."""
FEEDS = (BYTESIO, FILE, BYTES)

MAX_RECORDED = 100_000
"""Globals / persistent ids the child reports per load; beyond that only the counts."""
TIMEOUT_BASE_S = 30.0
TIMEOUT_PER_MB_S = 2.0
MEMORY_BASE = 1 << 30
MEMORY_PER_BYTE = 64
"""Address space the child may add: a base plus this many bytes per pickle byte."""


@dataclass(frozen=True, slots=True)
class Job:
    """One load: `data` from the pickle's first byte to the end of what the loader can read."""

    data: memoryview
    feed: str
    weight: int = 0
    """Bytes of pickle the walker read there (sizes the bounds); 0: all of `data`."""


@dataclass(frozen=True, slots=True)
class Reading:
    """What the C unpickler did with one `Job`."""

    feed: str
    globals: tuple[tuple[str, str], ...]
    globals_total: int
    pids: tuple[object, ...]
    end: int | None
    """Input position after STOP (relative to the job's start); None if failed or unknown."""
    error: str | None = None
    """Why the load failed; None when it reached STOP."""


class CrossCheckError(Exception):
    """The child could not give an answer (deadline, memory bound, crash)."""


# ---------------------------------------------------------------------------------------------
# the inert world the C unpickler runs in


def _swallow(*_args: object, **_kwargs: object) -> None:
    return None


class _Sink:
    """A method that takes anything and does nothing, on instances and on the class itself."""

    def __get__(self, obj: object, owner: object = None) -> Callable[..., None]:
        return _swallow


class _InertMeta(type):
    # BUILD / SETITEM / APPEND aimed at an imported class itself must not touch it either
    __setitem__ = _Sink()
    __setattr__ = _Sink()  # type: ignore[misc]
    __delattr__ = _Sink()


class _Inert(metaclass=_InertMeta):
    """Every object the unpickler builds from a global: accepts every call and mutation."""

    __slots__ = ()
    _gg_where: tuple[str, str] = ("", "")

    def __new__(cls, *_args: object, **_kwargs: object) -> _Inert:
        return object.__new__(_Inert)

    def __init__(self, *_args: object, **_kwargs: object) -> None:
        pass

    def __call__(self, *_args: object, **_kwargs: object) -> _Inert:
        return object.__new__(_Inert)

    __setstate__ = append = extend = add = __setitem__ = _Sink()
    __setattr__ = __delattr__ = _Sink()  # type: ignore[misc]


class _PersRef:
    """What `persistent_load` returns: an object with no behaviour at all."""

    __slots__ = ()


class _Recorder(_pickle.Unpickler):
    """`_pickle.Unpickler` whose globals and persistent ids are inert."""

    def __init__(self, f: Any) -> None:
        super().__init__(f, encoding="utf-8")  # what torch.load passes
        self.requested: list[tuple[str, str]] = []
        self.requested_total = 0
        self.pids: list[object] = []

    def find_class(self, module: str, name: str) -> type:
        self.requested_total += 1
        if len(self.requested) < MAX_RECORDED:
            self.requested.append((str(module), str(name)))
        cls = _InertMeta("inert", (_Inert,), {"__slots__": ()})
        type.__setattr__(cls, "_gg_where", (module, name))
        return cls

    def persistent_load(self, pid: object) -> object:
        if len(self.pids) < MAX_RECORDED:
            self.pids.append(_shape_c(pid))
        if isinstance(pid, tuple) and len(pid) >= 2 and pid[0] == "module":
            # torch's legacy loader hands back the class a ('module', cls, ...) id names: here
            # an inert class made by find_class (or whatever plain value the id holds)
            return pid[1]
        return _PersRef()


def shape_of(
    value: object,
    global_of: Callable[[object], Sequence[str] | None],
    is_list: Callable[[object], bool],
    depth: int = 0,
) -> object:
    """A JSON-able, bounded shape of a pickled value, so readings from different machines (the
    C unpickler, the walker, the weights reader) compare: each says how it spells a global and a
    list, the rest is shared."""
    if depth > 16:
        return ["deep"]
    if value is None or isinstance(value, bool | int | str):
        return value if not isinstance(value, int) or abs(value) < 2**53 else ["int", hex(value)]
    if isinstance(value, float):
        return ["float", repr(value)]
    if isinstance(value, bytes | bytearray):
        return ["bytes", bytes(value[:64]).hex(), len(value)]
    where = global_of(value)
    if where is not None:
        return ["global", *where]
    if isinstance(value, tuple):
        return ["tuple", *(shape_of(v, global_of, is_list, depth + 1) for v in value[:64])]
    if is_list(value):
        assert isinstance(value, list)
        return ["list", *(shape_of(v, global_of, is_list, depth + 1) for v in value[:64])]
    return ["object"]


def _inert_global(value: object) -> Sequence[str] | None:
    return value._gg_where if isinstance(value, type) and issubclass(value, _Inert) else None


def _shape_c(value: object) -> object:
    """The shape of a value the C unpickler built."""
    return shape_of(value, _inert_global, lambda v: isinstance(v, list))


def shape(value: object) -> object:
    """The same shape for a walker stand-in, so persistent ids compare across the two."""
    return shape_of(
        value,
        lambda v: (v.module, v.name) if isinstance(v, Global) else None,
        lambda v: isinstance(v, SList) and not isinstance(v, SSet),
    )


class _View(io.RawIOBase):
    """A zero-copy raw file over a memoryview, so `BufferedReader` adds the real `peek`."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = max(0, min(len(b), len(self._view) - self._pos))
        b[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._pos, len(self._view))[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _load(job: Job) -> dict[str, object]:
    f: Any
    if job.feed == BYTES:
        f = _AllAtOnce(job.data)
    elif job.feed == BYTESIO:
        f = io.BytesIO(job.data)
    else:
        f = io.BufferedReader(_View(job.data), buffer_size=io.DEFAULT_BUFFER_SIZE)
    rec = _Recorder(f)
    end: int | None = None
    error: str | None = None
    try:
        rec.load()
        end = None if job.feed == BYTES else f.tell()
    except Exception as exc:  # the C unpickler's own verdict on the bytes
        error = f"{type(exc).__name__}: {str(exc)[:200]}"
    return {
        "feed": job.feed,
        "globals": rec.requested,
        "globals_total": rec.requested_total,
        "pids": rec.pids,
        "end": end,
        "error": error,
    }


class _AllAtOnce:
    """`pickle.loads` semantics through the file API: the first read hands over everything.

    The C unpickler keeps whatever a ``read`` returns as its input buffer (more than it asked
    for is fine), so every later read and every FRAME is served from one contiguous buffer,
    exactly as for ``loads(bytes)``. Where it stopped is not observable this way.
    """

    def __init__(self, data: memoryview) -> None:
        self._data: memoryview | None = data

    def read(self, n: int = -1) -> bytes:
        data, self._data = self._data, None
        return bytes(data) if data is not None else b""

    def readinto(self, b: Any) -> int:
        return 0

    def readline(self) -> bytes:
        return b""


# ---------------------------------------------------------------------------------------------
# running it, bounded


def _vm_bytes() -> int:
    try:
        pages = Path("/proc/self/statm").read_bytes().split()[0]
        return int(pages) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _child(jobs: Sequence[Job], memory: int, wfd: int) -> None:
    """Runs in the forked child: never returns."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            import resource

            vm = _vm_bytes()
            if vm:
                resource.setrlimit(resource.RLIMIT_AS, (vm + memory, vm + memory))
        except (ImportError, ValueError, OSError):
            pass
        warnings.simplefilter("ignore")  # the library never prints, not even from a child
        out = json.dumps([_load(job) for job in jobs]).encode()
        view = memoryview(out)
        while view:
            view = view[os.write(wfd, view) :]
    except BaseException:
        code = 70
    finally:
        os._exit(code)


SLACK = 64 * 2**10
"""Bytes past the walker's STOP a job may read: a loader that agrees with the walker reads at
most a buffer's prefetch beyond it; one that reads on has disagreed already (and fails here)."""
IN_PROCESS_MAX = 128 * 2**10
"""Jobs this small (and free of large memo indexes) run in-process: see `_bounded`."""
IN_PROCESS_MEMORY = 256 * 2**20
"""Address space an in-process run may add."""


def _trim(job: Job) -> Job:
    if job.weight and len(job.data) > job.weight + SLACK:
        return Job(job.data[: job.weight + SLACK], job.feed, job.weight)
    return job


def _bounded(jobs: Sequence[Job]) -> bool:
    """Whether these jobs may run in-process, under `_address_space_cap`.

    At this size everything the C unpickler builds is linear in its input except its memo
    table (sized by an index in the bytes: the cap turns 0xFFFFFFF0 into a MemoryError) and
    colliding dict keys (at most ~10^7 probes here). Registered copyreg extensions would make it
    consult process-wide state, and another thread could trip over the cap, so either sends
    the jobs to a child.
    """
    import copyreg
    import threading

    if copyreg._extension_cache or copyreg._inverted_registry:  # type: ignore[attr-defined]
        return False
    if threading.active_count() > 1:
        return False
    return sum(len(j.data) for j in jobs) <= IN_PROCESS_MAX


class _address_space_cap:  # noqa: N801 - used as a statement, like contextlib's helpers
    """Lower RLIMIT_AS's soft limit to the current size plus `extra` for a `with` block."""

    def __init__(self, extra: int) -> None:
        self.extra = extra
        self.saved: tuple[int, int] | None = None

    def __enter__(self) -> bool:
        try:
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            vm = _vm_bytes()
            want = vm + self.extra
            if not vm or (hard != resource.RLIM_INFINITY and want > hard):
                return False
            if soft != resource.RLIM_INFINITY and soft <= want:
                self.saved = None
                return True  # already at least this strict
            resource.setrlimit(resource.RLIMIT_AS, (want, hard))
            self.saved = (soft, hard)
            return True
        except (ImportError, ValueError, OSError):
            return False

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, self.saved)


def run(jobs: Sequence[Job], *, timeout: float | None = None) -> list[Reading]:
    """Run each job through the C unpickler, bounded; raise `CrossCheckError`.

    Small jobs that `_bounded` proves harmless run in-process (a fork costs milliseconds, the
    check microseconds); everything else runs in a forked child with an address-space limit
    and a deadline.
    """
    if not jobs:
        return []
    jobs = [_trim(j) for j in jobs]
    if timeout is None and _bounded(jobs):
        cap = _address_space_cap(IN_PROCESS_MEMORY)
        with cap as capped, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if capped:
                return [_reading(_load(j)) for j in jobs]
    pickle_bytes = sum(j.weight or len(j.data) for j in jobs)
    if timeout is None:
        timeout = TIMEOUT_BASE_S + TIMEOUT_PER_MB_S * pickle_bytes / 2**20
    memory = MEMORY_BASE + MEMORY_PER_BYTE * pickle_bytes
    if not hasattr(os, "fork"):  # pragma: no cover - POSIX only
        raise CrossCheckError("no way to bound CPython's unpickler on this platform")
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - measured in the child, which exits without reporting
        os.close(rfd)
        _child(jobs, memory, wfd)
    os.close(wfd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    killed = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
            ready, _w, _x = select.select([rfd], [], [], left)
            if not ready:
                continue
            chunk = os.read(rfd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(rfd)
        _pid, status = os.waitpid(pid, 0)
    if killed:
        raise CrossCheckError(f"CPython's unpickler did not finish within {timeout:.0f} s")
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        why = (
            f"killed by signal {os.WTERMSIG(status)}"
            if os.WIFSIGNALED(status)
            else f"exit status {os.WEXITSTATUS(status)}"
        )
        raise CrossCheckError(f"CPython's unpickler could not be run to the end ({why})")
    try:
        raw = json.loads(b"".join(chunks))
    except ValueError:
        raise CrossCheckError("CPython's unpickler gave no readable answer") from None
    return [_reading(r) for r in raw]


def _reading(r: dict[str, Any]) -> Reading:
    return Reading(
        feed=str(r["feed"]),
        globals=tuple((str(m), str(n)) for m, n in r["globals"]),
        globals_total=int(r["globals_total"]),
        pids=tuple(r["pids"]),
        end=None if r["end"] is None else int(r["end"]),
        error=None if r["error"] is None else str(r["error"]),
    )


# ---------------------------------------------------------------------------------------------
# comparing


def compare(res: WalkResult, reading: Reading, *, base: int = 0) -> list[Problem]:
    """Where the C reading and the walk disagree: globals, persistent ids, where they stop."""
    out: list[Problem] = []
    feed = {BYTESIO: "fed a BytesIO", FILE: "fed a file", BYTES: "fed bytes"}[reading.feed]
    ours = [(g.module, g.name) for g in res.imports]
    theirs = list(reading.globals)
    n = min(len(ours), len(theirs), MAX_RECORDED)
    first = next((i for i in range(n) if ours[i] != theirs[i]), None)
    if first is not None:
        g = res.imports[first]
        out.append(
            Problem(
                "GG121",
                base + g.offset,
                f"CPython's unpickler ({feed}) imports {'.'.join(theirs[first])} "
                f"where gpenguard read {'.'.join(ours[first])} (import #{first + 1})",
                global_name=".".join(theirs[first]),
            )
        )
    elif len(ours) != reading.globals_total and (
        len(ours) < MAX_RECORDED or reading.globals_total < MAX_RECORDED
    ):
        extra = theirs[n:] or [("?", "?")]
        where = f"; first extra: {'.'.join(extra[0])}" if theirs[n:] else ""
        out.append(
            Problem(
                "GG121",
                base + (res.end or 0),
                f"CPython's unpickler ({feed}) makes {reading.globals_total} imports, "
                f"gpenguard read {len(ours)}{where}",
                global_name=".".join(extra[0]) if theirs[n:] else None,
            )
        )
    pids = [shape(p) for p in res.pids[:MAX_RECORDED]]
    theirs_pids = list(reading.pids)
    if pids != theirs_pids and first is None:
        k = next(
            (i for i in range(min(len(pids), len(theirs_pids))) if pids[i] != theirs_pids[i]),
            min(len(pids), len(theirs_pids)),
        )
        out.append(
            Problem(
                "GG121",
                base,
                f"CPython's unpickler ({feed}) passes other persistent ids than gpenguard read "
                f"(id #{k + 1} of {len(theirs_pids)} vs {len(pids)})",
            )
        )
    if res.end is not None and reading.error is not None:
        out.append(
            Problem(
                "GG121",
                base + res.end,
                f"CPython's unpickler ({feed}) fails ({reading.error}) where gpenguard reads "
                "to STOP",
            )
        )
    elif res.end is None and reading.error is None:
        out.append(
            Problem(
                "GG121",
                base + (reading.end or 0),
                f"CPython's unpickler ({feed}) runs the pickle to STOP where gpenguard's "
                "reading stopped short",
            )
        )
    elif res.end is not None and reading.end is not None and res.end - res.start != reading.end:
        out.append(
            Problem(
                "GG121",
                base + res.end,
                f"CPython's unpickler ({feed}) stops at offset {base + reading.end}, "
                f"gpenguard at {base + res.end - res.start}",
            )
        )
    return out


def feeds_for(primary: str, res: WalkResult) -> tuple[str, ...]:
    """The loader's own feed, plus the other two when the program has frames.

    Every reader agrees until the first FRAME: without one, one reading stands for all.
    """
    if res.frames:
        return (primary, *(f for f in FEEDS if f != primary))
    return (primary,)


__all__ = [
    "BYTES",
    "BYTESIO",
    "FEEDS",
    "FILE",
    "CrossCheckError",
    "Job",
    "Reading",
    "compare",
    "feeds_for",
    "run",
    "shape",
]
