"""DSSE envelopes (secure-systems-lab/dsse v1): parse, serialise, and the bytes a signature covers.

A signature covers PAE(payloadType, payload), never the JSON around it, so the envelope can be
re-serialised and signatures merged without invalidating any of them.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from gpenguard.errors import SignatureError

MAX_ENVELOPE_BYTES = 64 * 2**20
MAX_SIGNATURES = 32
"""Most signatures read from one envelope, counted before any is decoded or verified. A
signature without a keyid is tried against every trusted key, so 250,000 of them cost minutes;
no threshold needs more than a few."""


@dataclass(frozen=True)
class DsseSignature:
    """One signature of an envelope; `keyid` may be empty (DSSE makes it optional)."""

    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope with its payload decoded."""

    payload_type: str
    payload: bytes
    signatures: tuple[DsseSignature, ...]


def pae(payload_type: str, payload: bytes) -> bytes:
    """Pre-authentication encoding: ``DSSEv1 SP len(type) SP type SP len(body) SP body``."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


def _b64(value: object, what: str, source: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureError(f"{what} must be a base64 string", path=source)
    try:
        # DSSE allows either alphabet; normalise URL-safe characters before strict decoding.
        text = value.replace("-", "+").replace("_", "/")
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"{what} is not valid base64", path=source) from exc


def envelope_from_obj(obj: Any, source: str) -> Envelope:
    """Validate a decoded JSON object as a DSSE envelope."""
    if not isinstance(obj, dict):
        raise SignatureError("DSSE envelope must be a JSON object", path=source)
    payload_type = obj.get("payloadType")
    if not isinstance(payload_type, str) or not payload_type:
        raise SignatureError("DSSE envelope has no payloadType", path=source)
    payload = _b64(obj.get("payload"), "DSSE payload", source)
    raw_sigs = obj.get("signatures")
    if not isinstance(raw_sigs, list) or not raw_sigs:
        raise SignatureError("DSSE envelope has no signatures", path=source)
    if len(raw_sigs) > MAX_SIGNATURES:
        raise SignatureError(
            f"DSSE envelope holds {len(raw_sigs)} signatures; at most {MAX_SIGNATURES} are read", path=source
        )
    sigs = []
    for i, raw in enumerate(raw_sigs):
        if not isinstance(raw, dict):
            raise SignatureError(f"DSSE signatures[{i}] must be an object", path=source)
        keyid = raw.get("keyid", "")
        if not isinstance(keyid, str):
            raise SignatureError(f"DSSE signatures[{i}].keyid must be a string", path=source)
        sigs.append(DsseSignature(keyid=keyid, sig=_b64(raw.get("sig"), f"DSSE signatures[{i}].sig", source)))
    return Envelope(payload_type=payload_type, payload=payload, signatures=tuple(sigs))


def parse_envelope(data: bytes, source: str) -> Envelope:
    """Parse envelope JSON bytes; every defect is a `SignatureError` naming `source`."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise SignatureError("DSSE envelope is too large", path=source)
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise SignatureError(f"DSSE envelope is not valid JSON: {exc}", path=source) from exc
    return envelope_from_obj(obj, source)


def envelope_to_obj(envelope: Envelope) -> dict[str, Any]:
    """The JSON object of an envelope (standard base64, as DSSE implementations emit)."""
    return {
        "payloadType": envelope.payload_type,
        "payload": base64.b64encode(envelope.payload).decode("ascii"),
        "signatures": [
            {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")} for s in envelope.signatures
        ],
    }


def serialize_envelope(envelope: Envelope) -> bytes:
    """Envelope JSON, indented for people reading diffs of a committed .sig file."""
    return (json.dumps(envelope_to_obj(envelope), indent=2) + "\n").encode("utf-8")
