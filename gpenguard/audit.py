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
anchor kept elsewhere: a signed checkpoint of the head (`gpenguard.trust.checkpoint`), or the
head noted somewhere the log's writer cannot change (``--expect-head``).

Writers take an exclusive ``flock`` on the log, read the last line for ``prev``/``seq``, and
append the new line on an ``O_APPEND`` descriptor, then ``fsync``: several processes can log at
once without interleaving or forking the chain. A write that fails part-way (a full disk) is
cut back to the log's previous length, so the log stays valid. A torn last line left by a
writer that died mid-write is not a record anyone was told about: the next append cuts it away
and says so in its own record (``repaired``), and `verify_log` reports it apart from tampering.
"""

from __future__ import annotations

import errno
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
    torn_tail: int = 0
    """Bytes after the last newline: an unfinished write (a crash), reported apart from tampering."""
    notes: tuple[AuditProblem, ...] = ()
    """Lines worth knowing about that are not problems (a record that cut away a torn tail)."""
    line_hashes: tuple[str, ...] = ()
    """sha256 of every complete line, in order (what a checkpoint is compared with)."""

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


def _tail(fd: int, end: int) -> tuple[bytes | None, bytes]:
    """(the last complete line without its newline or None, the torn bytes after it)."""
    if end == 0:
        return None, b""
    tail = b""
    pos = end
    while True:
        step = min(_TAIL_BLOCK, pos)
        pos -= step
        tail = os.pread(fd, step, pos) + tail
        body_end = tail.rfind(b"\n")
        if body_end < 0 and pos > 0:
            continue  # no newline yet: the torn part is longer than what was read
        torn = tail[body_end + 1 :]
        if body_end < 0:  # pos == 0: the whole log is one torn line
            return None, torn
        start = tail.rfind(b"\n", 0, body_end)
        if start >= 0:
            return tail[start + 1 : body_end], torn
        if pos == 0:
            return tail[:body_end], torn


def _is_record(line: bytes) -> bool:
    """Whether `line` is a complete, self-consistent record (canonical, own hash matching)."""
    try:
        record = json.loads(line)
        return isinstance(record, dict) and all(k in record for k in REQUIRED) and (
            canonical(record) == line and record.get("hash") == record_hash(record)
        )
    except (ValueError, TypeError, RecursionError):
        return False


def _next_seq(last: bytes, path: Path) -> int:
    """The seq after the record `last`; a last line that is no record stops the writer."""
    try:
        return int(json.loads(last)["seq"]) + 1
    except (ValueError, KeyError, TypeError, RecursionError):
        raise AuditError(
            "the last record of the log is not a valid audit record; refusing to extend it",
            path=path,
            hint=f"run `gpenguard audit verify {path}` and investigate before logging again",
        ) from None


def _repair_tail(fd: int, end: int, path: Path) -> tuple[bytes | None, int, dict[str, Any] | None]:
    """Make the log end in a newline; returns (last line, new end, what was cut away or None).

    A torn tail that is a whole record missing only its newline (the writer died between the
    two) is completed; anything else is cut: it is an unfinished write that no caller was ever
    told had been logged. The cut bytes' length and sha256 go into the next record.
    """
    last, torn = _tail(fd, end)
    if not torn:
        return last, end, None
    if _is_record(torn):
        os.write(fd, b"\n")
        return torn, end + 1, None
    if last is not None:
        _next_seq(last, path)  # a log that cannot be extended anyway is left exactly as it is
    os.ftruncate(fd, end - len(torn))
    cut = {"bytes": len(torn), "sha256": hashlib.sha256(torn).hexdigest(),
           "reason": "a torn last line (an interrupted write) was cut away"}
    return last, end - len(torn), cut


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte or raise; a short write with no error is a full disk."""
    done = 0
    while done < len(data):
        n = os.write(fd, data[done:])
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += n


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
    end = -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last, end, cut = _repair_tail(fd, os.lseek(fd, 0, os.SEEK_END), p)
        if last is None:
            prev, seq = GENESIS, 1
        else:
            seq = _next_seq(last, p)
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
        if cut is not None:
            record["repaired"] = cut
        record["hash"] = record_hash(record)
        line = canonical(record)
        _write_all(fd, line + b"\n")
        os.fsync(fd)
    except OSError as exc:
        cutback = ""
        if end >= 0:  # undo a partial line, so a full disk never leaves the log unreadable
            try:
                os.ftruncate(fd, end)
                cutback = "; the partial record was cut away, the log is as it was"
            except OSError as again:
                cutback = f"; cutting the partial record away failed too ({again.strerror})"
        raise AuditError(f"cannot write audit log: {exc.strerror}{cutback}", path=p) from exc
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
    notes: list[AuditProblem] = []
    hashes: list[str] = []
    prev_line_hash = GENESIS
    head: str | None = None
    records = 0
    torn = 0
    seen_heads: set[str] = set()
    for number, line, terminated in _lines(data):
        line_hash = hashlib.sha256(line).hexdigest()
        if not terminated:
            torn = len(line)
            problems.append(AuditProblem(
                number,
                f"torn: the last line was truncated mid-write ({torn} bytes, no newline): an "
                "interrupted or failed write, not a changed record; the next append cuts it away "
                "and records that it did",
            ))
            break
        hashes.append(line_hash)
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
        repaired = record.get("repaired")
        if isinstance(repaired, dict):
            notes.append(AuditProblem(
                number, f"this record's writer cut away a torn last line of {repaired.get('bytes')} byte(s) "
                "left by an interrupted write",
            ))
        prev_line_hash = line_hash
        head = line_hash
        seen_heads.add(line_hash)
    if expect_head is not None:
        expected = expect_head.strip().lower().removeprefix("sha256:")
        if expected not in seen_heads:
            problems.append(
                AuditProblem(records + 1, f"expected head {expected[:16]}… is not in the log: records were removed from its end, or it was rewritten")
            )
    return LogCheck(path=str(path), records=records, head=head, problems=tuple(problems), torn_tail=torn,
                    notes=tuple(notes), line_hashes=tuple(hashes))


def summary(records: Sequence[tuple[int, dict[str, Any] | None]]) -> dict[str, int]:
    """Counts of verdicts, for `audit show`."""
    counts: dict[str, int] = {}
    for _, rec in records:
        key = str(rec.get("verdict")) if rec else "unreadable"
        counts[key] = counts.get(key, 0) + 1
    return counts
