"""sha256 of an input, over the very bytes the scanner walks (DESIGN invariant 2).

Hashing reads the `Source`'s read-only mapping rather than re-opening the path, so the digest
and the scan describe one set of bytes even if the file is replaced on disk meanwhile. The
mapping is fed to hashlib in large slices: hashlib releases the GIL for updates over 2 KiB and
a memoryview slice copies nothing, so throughput is that of sha256 itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

from gpenguard.errors import UsageError, VerificationError
from gpenguard.formats.source import Source

CHUNK = 16 * 2**20
"""Bytes per update: large enough that per-call overhead vanishes, small enough for a smooth
progress bar (about 20 updates a second on one core)."""

Progress = Callable[[int, int], None]
"""Called as ``progress(done_bytes, total_bytes)`` after each chunk (for the CLI's bar)."""


@dataclass(frozen=True)
class Digest:
    """The sha256 and size of exactly the bytes that were hashed."""

    sha256: str
    size: int


def check_size(source: Source, expected: int | None) -> None:
    """Refuse before hashing when the size is already wrong (no point reading 64 GiB)."""
    if expected is not None and source.size != expected:
        raise VerificationError(
            f"size is {source.size:,} bytes, the registry expects {expected:,}", path=source.name
        )


def hash_source(
    source: Source,
    *,
    expected_size: int | None = None,
    progress: Progress | None = None,
    chunk: int = CHUNK,
) -> Digest:
    """sha256 over `source.buf`; the size is checked against `expected_size` first."""
    check_size(source, expected_size)
    h = hashlib.sha256()
    buf = source.buf
    total = source.size
    # NOTE: performance hints only: the kernel reads the next chunk in while this one is hashed
    # (page faults would stall sha256), and the pages of a hashed chunk are dropped so a
    # multi-GB file does not stay resident (bench/hashing.py, bench/convert.py measure both).
    for start in range(0, total, chunk):
        source.advise(start + chunk, chunk, need=True)
        h.update(buf[start : start + chunk])
        source.advise(start, chunk, need=False)
        if progress is not None:
            progress(min(start + chunk, total), total)
    if progress is not None and total == 0:
        progress(0, 0)
    return Digest(sha256=h.hexdigest(), size=total)


def hash_file(
    path: str | os.PathLike[str],
    *,
    expected_size: int | None = None,
    progress: Progress | None = None,
) -> Digest:
    """Open `path` as a `Source` and hash it (for callers that do not scan the same bytes)."""
    with Source.open(path) as source:
        return hash_source(source, expected_size=expected_size, progress=progress)


def digests_equal(actual: str, expected: str) -> bool:
    """Compare hex digests (an optional ``sha256:`` prefix ignored) in constant time."""

    def norm(text: str) -> bytes:
        return text.strip().lower().removeprefix("sha256:").encode()

    return hmac.compare_digest(norm(actual), norm(expected))


def parse_sha256(text: str, *, what: str = "sha256") -> str:
    """Validate a 64-hex digest (an optional ``sha256:`` prefix is accepted) and normalise it."""
    value = text.strip().lower().removeprefix("sha256:")
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise UsageError(f"{what} must be 64 hex digits, got {text!r}")
    return value
