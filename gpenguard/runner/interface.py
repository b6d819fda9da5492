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
