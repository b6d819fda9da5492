"""Append-only, hash-chained JSONL audit log of gate decisions, and its verifier.

Each line is one JSON object (keys sorted, no spaces) that carries:

- ``seq``: 1 for the first record, then +1;
- ``prev``: sha256 of the previous line's exact bytes (without its newline); 64 zeros first;
- ``hash``: sha256 of the record's canonical JSON *without* the ``hash`` key.

So editing a record breaks its own ``hash``; editing it *and* recomputing ``hash`` breaks the
next record's ``prev``; removing, inserting or reordering records breaks ``seq`` and ``prev``;
a line cut short is not valid JSON or lacks its newline. `verify_log` names the line of each.

What a chain cannot show by itself: that whole records were removed from the *end*, or that
someone rewrote the log from some record onwards with freshly computed hashes. Both need an
anchor kept elsewhere: note the head (``gpenguard audit show --head``: the last record's hash
and seq) somewhere the log's writer cannot change (a ticket, a second log host, a signed
report), then ``gpenguard audit verify --expect-head HASH`` proves the log still reaches it.

Writers take an exclusive ``flock`` on the log, read the last line for ``prev``/``seq``, and
append the new line with one ``write`` on an ``O_APPEND`` descriptor, then ``fsync``: several
processes can log at once without interleaving or forking the chain.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpenguard import __version__
from gpenguard.errors import AuditError, InputError
from gpenguard.fileio import read_regular

GENESIS = "0" * 64
"""``prev`` of the first record."""

SCHEMA = 1
REQUIRED = ("v", "seq", "time", "file", "sha256", "size", "registry", "policy", "verdict",
            "reasons", "tool_version", "prev", "hash")
_TAIL_BLOCK = 64 * 1024


@dataclass(frozen=True)
class AuditEvent:
    """What one decision contributes to the log (the chain fields are added on append)."""

    file: str
    sha256: str | None
    size: int | None
    policy: str
    verdict: str
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    not_checked: tuple[str, ...] = ()
    artifact: str | None = None
    registry_name: str | None = None
    registry_version: int | None = None
    registry_sha256: str | None = None
    registry_path: str | None = None


@dataclass(frozen=True)
class AppendedRecord:
    """Where a record landed in the chain."""

    seq: int
    hash: str
    line_sha256: str
    """sha256 of the written line: the next record's ``prev`` and the value for --expect-head."""


@dataclass(frozen=True)
class AuditProblem:
    """One place where the log is not what its writer wrote."""

    line: int
    message: str


@dataclass(frozen=True)
class LogCheck:
    """The outcome of verifying a log from its first line to its last."""

    path: str
    records: int
    head: str | None
    """sha256 of the last intact line (what ``--expect-head`` compares against)."""
    problems: tuple[AuditProblem, ...]

    @property
    def ok(self) -> bool:
        """True when the whole log verified (and reached the expected head, if one was given)."""
        return not self.problems


def canonical(record: Mapping[str, Any]) -> bytes:
    """The one serialisation used for lines and hashes: sorted keys, compact, ASCII."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def record_hash(record: Mapping[str, Any]) -> str:
    """sha256 of the record's canonical form without its own ``hash`` field."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def _utc(now: datetime | None) -> str:
    t = (now or datetime.now(UTC)).astimezone(UTC)
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _last_line(fd: int, path: Path) -> bytes | None:
    """The last complete line (without newline), None for an empty log; refuses a torn tail."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end == 0:
        return None
    tail = b""
    pos = end
    while True:
        step = min(_TAIL_BLOCK, pos)
        pos -= step
        tail = os.pread(fd, step, pos) + tail
        if not tail.endswith(b"\n"):
            raise AuditError(
                "the log ends in a partial record (cut mid-line); refusing to extend it",
                path=path,
                hint=f"run `gpenguard audit verify {path}` and investigate before logging again",
            )
        cut = tail.rfind(b"\n", 0, len(tail) - 1)
        if cut >= 0:
            return tail[cut + 1 : -1]
        if pos == 0:
            return tail[:-1]


def append(path: str | os.PathLike[str], event: AuditEvent, *, now: datetime | None = None) -> AppendedRecord:
    """Append one decision to the log at `path` (created 0600 if absent), chained to the last.

    Raises `AuditError` when the log cannot be written or its last record is unreadable; a
    decision that must be logged is then not a pass.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise AuditError(f"cannot open audit log: {exc.strerror}", path=p) from exc
    except ValueError as exc:  # a NUL in the path: no file system can hold it
        raise AuditError(f"cannot open audit log: {exc}", path=p) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last = _last_line(fd, p)
        if last is None:
            prev, seq = GENESIS, 1
        else:
            try:
                last_record = json.loads(last)
                seq = int(last_record["seq"]) + 1
            except (ValueError, KeyError, TypeError, RecursionError):
                raise AuditError(
                    "the last record of the log is not a valid audit record; refusing to extend it",
                    path=p,
                ) from None
            prev = hashlib.sha256(last).hexdigest()
        record: dict[str, Any] = {
            "v": SCHEMA,
            "seq": seq,
            "time": _utc(now),
            "file": event.file,
            "sha256": event.sha256,
            "size": event.size,
            "artifact": event.artifact,
            "registry": {
                "name": event.registry_name,
                "version": event.registry_version,
                "sha256": event.registry_sha256,
                "path": event.registry_path,
            },
            "policy": event.policy,
            "verdict": event.verdict,
            "reasons": list(event.reasons),
            "warnings": list(event.warnings),
            "not_checked": list(event.not_checked),
            "tool_version": __version__,
            "prev": prev,
        }
        record["hash"] = record_hash(record)
        line = canonical(record)
        written = os.write(fd, line + b"\n")
        if written != len(line) + 1:
            raise AuditError(f"short write to audit log ({written} of {len(line) + 1} bytes)", path=p)
        os.fsync(fd)
    except OSError as exc:
        raise AuditError(f"cannot write audit log: {exc.strerror}", path=p) from exc
    finally:
        os.close(fd)  # closing releases the lock
    return AppendedRecord(seq=seq, hash=record["hash"], line_sha256=hashlib.sha256(line).hexdigest())


def _lines(data: bytes) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes without newline, whether it ended in a newline)."""
    start, number = 0, 0
    while start < len(data):
        number += 1
        end = data.find(b"\n", start)
        if end < 0:
            yield number, data[start:], False
            return
        yield number, data[start:end], True
        start = end + 1


def read_log(path: str | os.PathLike[str]) -> bytes:
    """The log's bytes; a missing or unreadable log is an `InputError` naming it."""
    p = Path(path)
    try:
        return read_regular(p)
    except FileNotFoundError:
        raise InputError("no such audit log", path=p) from None
    except OSError as exc:
        raise InputError(f"cannot read audit log: {exc.strerror}", path=p) from exc


def parse_records(data: bytes) -> list[tuple[int, dict[str, Any] | None]]:
    """Each line's record (None where a line is not a JSON object), for `audit show`."""
    out: list[tuple[int, dict[str, Any] | None]] = []
    for number, line, _ in _lines(data):
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            value = None
        out.append((number, value if isinstance(value, dict) else None))
    return out


def verify_log(path: str | os.PathLike[str], *, expect_head: str | None = None) -> LogCheck:
    """Check every record's hash, the chain of ``prev`` links and ``seq``; name each break.

    With `expect_head` (the sha256 of a line noted earlier) the log must also still contain
    that line, which is how removal of trailing records is detected.
    """
    data = read_log(path)
    problems: list[AuditProblem] = []
    prev_line_hash = GENESIS
    head: str | None = None
    records = 0
    seen_heads: set[str] = set()
    for number, line, terminated in _lines(data):
        line_hash = hashlib.sha256(line).hexdigest()
        if not terminated:
            problems.append(AuditProblem(number, "truncated: the last line was cut (no newline at its end)"))
            break
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            problems.append(AuditProblem(number, "not valid JSON (cut, edited or injected)"))
            prev_line_hash = line_hash
            continue
        if not isinstance(record, dict) or any(k not in record for k in REQUIRED):
            missing = [k for k in REQUIRED if not isinstance(record, dict) or k not in record]
            problems.append(AuditProblem(number, f"not an audit record (missing {', '.join(missing)})"))
            prev_line_hash = line_hash
            continue
        try:
            canon, own_hash = canonical(record), record_hash(record)
        except RecursionError:  # parsed, but nested too deeply to serialise again
            problems.append(AuditProblem(number, "not an audit record (nested too deeply)"))
            prev_line_hash = line_hash
            continue
        records += 1
        if canon != line:
            problems.append(AuditProblem(number, "not in canonical form: the line was rewritten"))
        if record.get("hash") != own_hash:
            problems.append(AuditProblem(number, "record was modified: its hash does not match its content"))
        if record.get("seq") != number:
            problems.append(
                AuditProblem(number, f"sequence number is {record.get('seq')!r}, expected {number}: records were removed, inserted or reordered")
            )
        if record.get("prev") != prev_line_hash:
            what = "the first record must start the chain" if number == 1 else f"does not match line {number - 1}"
            problems.append(
                AuditProblem(number, f"chain broken: prev {what} (a record before it was removed, inserted, reordered or rewritten)")
            )
        prev_line_hash = line_hash
        head = line_hash
        seen_heads.add(line_hash)
    if expect_head is not None:
        expected = expect_head.strip().lower().removeprefix("sha256:")
        if expected not in seen_heads:
            problems.append(
                AuditProblem(records + 1, f"expected head {expected[:16]}… is not in the log: records were removed from its end, or it was rewritten")
            )
    return LogCheck(path=str(path), records=records, head=head, problems=tuple(problems))


def summary(records: Sequence[tuple[int, dict[str, Any] | None]]) -> dict[str, int]:
    """Counts of verdicts, for `audit show`."""
    counts: dict[str, int] = {}
    for _, rec in records:
        key = str(rec.get("verdict")) if rec else "unreadable"
        counts[key] = counts.get(key, 0) + 1
    return counts
