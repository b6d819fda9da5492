"""Shared state of one `read_container` call: where we are, what we found, what is left."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from gpenguard.findings import Finding, Severity
from gpenguard.formats.container import Limits
from gpenguard.rules import finding

MAX_FINDINGS_PER_RULE = 100
"""Per container: 100k traversal names need not become 100k findings."""


@dataclass
class Budget:
    """Totals across nested archives, so nesting cannot multiply the bounds."""

    uncompressed: int = 0
    members: int = 0


@dataclass
class Ctx:
    """Reading context: the outermost file, the member chain to this container, the bounds."""

    path: str
    limits: Limits
    where: str | None = None
    """Member chain of the container being read (``outer.zip!inner.pth``); None at the top."""
    depth: int = 0
    budget: Budget = field(default_factory=Budget)
    findings: list[Finding] = field(default_factory=list)
    per_rule: dict[str, int] = field(default_factory=dict)

    def sub(self, name: str) -> str:
        """The member chain of `name` inside the current container."""
        return f"{self.where}!{name}" if self.where else name

    def add(
        self,
        rule_id: str,
        message: str,
        *,
        member: str | None = None,
        offset: int | None = None,
        severity: Severity | None = None,
        global_name: str | None = None,
    ) -> None:
        """Record a container finding; `member` is relative to the current container.

        Offsets are inside the member when one is named (else inside the container), so a
        finding without a more precise place points at the first byte.
        """
        if offset is None:
            offset = 0
        count = self.per_rule.get(rule_id, 0) + 1
        self.per_rule[rule_id] = count
        if count > MAX_FINDINGS_PER_RULE:
            if count == MAX_FINDINGS_PER_RULE + 1:
                message = f"{message} (and more like it; only the first {MAX_FINDINGS_PER_RULE} are listed)"
            else:
                return
        self.findings.append(
            finding(
                rule_id,
                message,
                path=self.path,
                member=self.sub(member) if member is not None else self.where,
                offset=offset,
                severity=severity,
                global_name=global_name,
            )
        )

    def child(self, member: str) -> Ctx:
        """Context for an archive nested at `member` of the current one."""
        return Ctx(self.path, self.limits, self.sub(member), self.depth + 1, self.budget)


class MemFile(io.RawIOBase):
    """A seekable read-only file over a memoryview, for zipfile/tarfile without copying."""

    def __init__(self, buf: memoryview):
        super().__init__()
        self._buf = buf
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._buf)}[whence]
        pos = base + offset
        if pos < 0:
            raise OSError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        start = min(self._pos, len(self._buf))
        n = min(len(b), len(self._buf) - start)
        b[:n] = self._buf[start : start + n]
        self._pos = start + n
        return n

    def read(self, size: int | None = -1) -> bytes:
        start = min(self._pos, len(self._buf))
        stop = len(self._buf) if size is None or size < 0 else min(len(self._buf), start + size)
        self._pos = stop
        return bytes(self._buf[start:stop])
