"""What every sandbox backend offers: run one spec to completion and report how it went.

Backends differ in mechanism only (Docker engine, bubblewrap); the hardening they apply is the
`SandboxSpec`, and their failures are the same three errors: `SandboxTimeout` (killed at the
time limit), `SandboxOOM` (killed at the memory limit) and `SandboxError` (non-zero exit, with
the tail of the log).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gpenguard.errors import SandboxError, SandboxOOM
from gpenguard.runner.spec import SandboxSpec

Event = Mapping[str, Any]
"""One progress line from the worker: a JSON object with at least an ``event`` key."""

EventSink = Callable[[Event], None]

LOG_TAIL_LINES = 40

STDOUT_KEEP = 4 * 2**20
"""Bytes of the job's stdout kept as text in the result; the rest is still parsed for events."""
STDOUT_CAP = 64 * 2**20
"""Bytes of stdout a job may write at all; past this it is killed (the worker writes ~200 per image)."""
LINE_CAP = 2**20
"""The longest stdout line the host holds while waiting for its newline."""
STDERR_CAP = 16 * 2**20
"""Bytes of stderr a job may write; the host keeps only the last STDERR_KEEP of them."""
STDERR_KEEP = 64 * 2**10


@dataclass(frozen=True, slots=True)
class RunResult:
    """A finished sandbox run (exit code 0; failures raise instead)."""

    backend: str
    exit_code: int
    events: tuple[Event, ...]
    """The worker's JSON progress lines, in order."""
    stdout: str
    stderr_tail: str
    duration_s: float
    """From start request to exit, as the host saw it."""


class Backend(Protocol):
    """A way to run a `SandboxSpec`; see `gpenguard.runner.backend()` for the choice."""

    name: str

    def output_owner(self, user: tuple[int, int]) -> tuple[int, int]:
        """The host uid/gid files written by the sandbox user end up owned by."""
        ...

    def run(self, spec: SandboxSpec, *, on_event: EventSink | None = None) -> RunResult:
        """Run to completion; raise SandboxTimeout / SandboxOOM / SandboxError on failure."""
        ...


class JobOutput:
    """One output stream of the job, read with a byte budget so a job cannot grow the host.

    `feed` takes raw chunks as they arrive and returns False once the stream is over its budget
    (in total, or one line longer than LINE_CAP); the backend then kills the job and `finish`
    reports why. Only bounded state is kept: the first `keep` bytes (or, with `tail`, the last),
    and the current partial line.
    """

    def __init__(self, name: str, *, cap: int, keep: int, tail: bool = False, on_event: EventSink | None = None) -> None:
        self.name = name
        self.cap = cap
        self.keep = keep
        self.keep_tail = tail
        self.on_event = on_event
        self.events: list[dict[str, Any]] = []
        self.size = 0
        self.overflow: str | None = None
        self._kept = bytearray()
        self._partial = bytearray()

    def feed(self, chunk: bytes) -> bool:
        if self.overflow is not None:
            return False
        self.size += len(chunk)
        if self.size > self.cap:
            self.overflow = f"the sandboxed job wrote more than {self.cap // 2**20} MiB to {self.name} and was killed"
            return False
        if self.keep_tail:
            self._kept += chunk
            del self._kept[: max(0, len(self._kept) - self.keep)]
        elif len(self._kept) < self.keep:
            self._kept += chunk[: self.keep - len(self._kept)]
        if self.on_event is None and self.keep_tail:
            return True  # stderr: no events, no lines to hold
        if b"\n" in chunk:
            *lines, rest = (bytes(self._partial) + chunk).split(b"\n")
            for line in lines:
                self._line(line)
            self._partial = bytearray(rest)
        else:
            self._partial += chunk
        if len(self._partial) > LINE_CAP:
            self.overflow = (
                f"the sandboxed job wrote a line of more than {LINE_CAP // 2**20} MiB to {self.name} and was killed"
            )
            return False
        return True

    def close(self) -> None:
        """End of stream: a last line without a newline is still an event."""
        if self._partial and self.overflow is None:
            self._line(bytes(self._partial))
        self._partial = bytearray()

    def _line(self, line: bytes) -> None:
        event = parse_event(line.decode("utf-8", "replace"))
        if event is not None:
            self.events.append(dict(event))
            if self.on_event is not None:
                self.on_event(event)

    def text(self) -> str:
        return bytes(self._kept).decode("utf-8", "replace")


def stdout_reader(on_event: EventSink | None) -> JobOutput:
    """The job's stdout: events parsed, the first STDOUT_KEEP bytes kept, STDOUT_CAP in all."""
    return JobOutput("stdout", cap=STDOUT_CAP, keep=STDOUT_KEEP, on_event=on_event)


def stderr_reader() -> JobOutput:
    """The job's stderr: only its last STDERR_KEEP bytes kept, STDERR_CAP in all."""
    return JobOutput("stderr", cap=STDERR_CAP, keep=STDERR_KEEP, tail=True)


def parse_event(line: str) -> Event | None:
    """A worker progress line, or None for anything else on stdout."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("event"), str):
        return value
    return None


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log, for error messages."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def finish(
    backend: str,
    spec: SandboxSpec,
    *,
    code: int,
    oom: bool,
    stderr: str,
    events: tuple[Event, ...],
    stdout: str,
    duration_s: float,
) -> RunResult:
    """Turn how a job ended into a result, or into the error that says why it failed.

    The kernel's OOM kill is reported by the backend (`oom`); an allocation refused first
    surfaces as Python's MemoryError instead (the traceback's last line), which is the same
    limit at work, so both are `SandboxOOM`.
    """
    if oom or (code != 0 and stderr.rstrip().endswith("MemoryError")):
        raise SandboxOOM(
            f"the sandboxed job exceeded its {spec.memory_bytes / 2**20:.0f} MiB memory limit and was killed",
            hint=tail(stderr) or None,
        )
    if code != 0:
        raise SandboxError(f"the sandboxed job exited with status {code}", hint=tail(stderr) or None)
    return RunResult(
        backend=backend,
        exit_code=code,
        events=events,
        stdout=stdout,
        stderr_tail=tail(stderr),
        duration_s=duration_s,
    )
