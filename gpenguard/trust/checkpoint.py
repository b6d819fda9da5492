"""Signed checkpoints of an audit log's head: an anchor that no one has to remember.

A hash chain shows each record follows the last, but whoever can write the log can rewrite it
from any record onwards with fresh hashes, or drop records from its end. A checkpoint is a
DSSE envelope, signed by a key the log's writer does not hold (an auditor's, a cron job's on
another host), over ``{log, first, seq, head, time}``: the sha256 of the log's first line and
of its line `seq`. Verifying the log against it proves that the first `seq` lines are still the
ones that were signed; records appended since are fine, and a later checkpoint covers them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpenguard.audit import AuditProblem, LogCheck, verify_log
from gpenguard.errors import AuditError, InputError, SignatureError, UsageError
from gpenguard.fileio import read_regular
from gpenguard.trust import keys as keylib
from gpenguard.trust.dsse import DsseSignature, Envelope, pae, parse_envelope, serialize_envelope
from gpenguard.trust.model import Key, TrustRoot

PAYLOAD_TYPE = "application/vnd.gpenguard.audit-checkpoint+json"
CHECKPOINT_TYPE = "gpenguard-audit-checkpoint"
MAX_CHECKPOINT_BYTES = 64 * 1024


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: line `seq` of the log hashed to `head`, its line 1 to `first`."""

    log: str
    first: str
    seq: int
    head: str
    time: str
    signed_by: tuple[str, ...]


def _now(now: datetime | None) -> str:
    return keylib.as_utc(now).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def make_checkpoint(log: Path, private_key: keylib.PrivateKey, *, now: datetime | None = None) -> bytes:
    """A signed checkpoint of `log`'s current head; refuses a log that does not verify."""
    check = verify_log(log)
    if not check.ok:
        raise AuditError(
            f"the log does not verify ({len(check.problems)} problem(s)); refusing to sign its head",
            path=log,
            hint=f"run `gpenguard audit verify {log}`",
        )
    if not check.line_hashes:
        raise AuditError("the log is empty; there is no head to sign", path=log)
    payload = {
        "_type": CHECKPOINT_TYPE,
        "v": 1,
        "log": str(log.absolute()),
        "first": check.line_hashes[0],
        "seq": len(check.line_hashes),
        "head": check.line_hashes[-1],
        "time": _now(now),
    }
    data = json.dumps(payload, sort_keys=True, indent=2).encode()
    kid = keylib.key_id(private_key.public_key())
    sig = DsseSignature(keyid=kid, sig=keylib.sign(private_key, pae(PAYLOAD_TYPE, data)))
    return serialize_envelope(Envelope(PAYLOAD_TYPE, data, (sig,)))


def key_from_public(path: Path) -> Key:
    """A bare public key file as a one-key trust anchor."""
    public = keylib.load_public_key(path)
    return Key(key_id=keylib.key_id(public), type=keylib.key_type_of(public),
               public_key_pem=keylib.public_pem(public), owner=str(path))


def read_checkpoint(path: Path, anchor: TrustRoot, *, now: datetime | None = None) -> Checkpoint:
    """Parse and verify a checkpoint file; the anchor's threshold of its keys must have signed it."""
    from gpenguard.trust.signatures import count_envelope

    source = str(path)
    try:
        raw = read_regular(path, MAX_CHECKPOINT_BYTES)
    except OSError as exc:
        raise InputError(f"cannot read checkpoint: {exc.strerror or exc}", path=path) from exc
    envelope = parse_envelope(raw, source)
    if envelope.payload_type != PAYLOAD_TYPE:
        raise SignatureError(f"payloadType is {envelope.payload_type!r}, expected {PAYLOAD_TYPE!r}", path=source)
    valid, rejected = count_envelope(envelope, anchor.keys, keylib.as_utc(now), source)
    if len(valid) < anchor.threshold:
        why = "; ".join(r.reason for r in rejected) or "no signatures"
        raise SignatureError(
            f"checkpoint signature threshold not met: {len(valid)} of {anchor.threshold} ({why})", path=source
        )
    try:
        body: Any = json.loads(envelope.payload)
    except (ValueError, RecursionError) as exc:
        raise SignatureError(f"checkpoint payload is not JSON: {exc}", path=source) from exc
    if not isinstance(body, dict) or body.get("_type") != CHECKPOINT_TYPE or body.get("v") != 1:
        raise SignatureError("not a gpenguard audit checkpoint (version 1)", path=source)
    seq, first, head = body.get("seq"), body.get("first"), body.get("head")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise SignatureError(f"checkpoint seq must be a positive integer, got {seq!r}", path=source)
    if not all(isinstance(h, str) and len(h) == 64 for h in (first, head)):
        raise SignatureError("checkpoint first/head must be sha256 hex digests", path=source)
    return Checkpoint(log=str(body.get("log")), first=str(first), seq=seq, head=str(head),
                      time=str(body.get("time")), signed_by=tuple(valid))


def check_against(check: LogCheck, point: Checkpoint) -> LogCheck:
    """`check` with a problem added unless the log still holds the checkpoint's lines."""
    problem: AuditProblem | None = None
    hashes = check.line_hashes
    if not hashes or hashes[0] != point.first:
        problem = AuditProblem(1, f"the log's first line is not the one checkpointed at {point.time}: "
                                  "this is another log, or it was rewritten from the start")
    elif len(hashes) < point.seq:
        problem = AuditProblem(len(hashes) + 1, f"the checkpoint of {point.time} covers {point.seq} records, "
                                                f"the log has {len(hashes)}: records were removed from its end")
    elif hashes[point.seq - 1] != point.head:
        problem = AuditProblem(point.seq, f"line {point.seq} is not the one checkpointed at {point.time}: "
                                          "the log was rewritten at or before it")
    if problem is None:
        return check
    return LogCheck(path=check.path, records=check.records, head=check.head,
                    problems=(*check.problems, problem), torn_tail=check.torn_tail, notes=check.notes,
                    line_hashes=check.line_hashes)


def anchor_of(*, key: Path | None, trust_root: Path | None) -> TrustRoot:
    """The keys a checkpoint must be signed with: one public key, or a trust root's threshold."""
    if (key is None) == (trust_root is None):
        raise UsageError("a checkpoint is verified with exactly one of --key PUB or --trust-root ROOT")
    if key is not None:
        k = key_from_public(key)
        return TrustRoot(path=str(key), keys={k.key_id: k}, threshold=1)
    from gpenguard.trust.anchor import read_trust_root

    assert trust_root is not None
    return read_trust_root(trust_root)
