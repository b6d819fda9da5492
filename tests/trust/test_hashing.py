"""Hashing reads the Source's mapping, checks size first, and reports progress."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from gpenguard.errors import InputError, UsageError, VerificationError
from gpenguard.formats.source import Source
from gpenguard.trust.hashing import digests_equal, hash_file, hash_source, parse_sha256


def test_digest_equals_hashlib_over_several_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 + 17)
    p = tmp_path / "w.pth"
    p.write_bytes(data)
    seen: list[tuple[int, int]] = []
    with Source.open(p) as src:
        d = hash_source(src, chunk=1024, progress=lambda done, total: seen.append((done, total)))
    assert d.sha256 == hashlib.sha256(data).hexdigest()
    assert d.size == len(data)
    assert seen == [(1024, len(data)), (2048, len(data)), (3072, len(data)), (len(data), len(data))]


def test_empty_file_hashes_to_the_empty_digest(tmp_path: Path) -> None:
    p = tmp_path / "empty"
    p.write_bytes(b"")
    assert hash_file(p).sha256 == hashlib.sha256(b"").hexdigest()


def test_wrong_size_is_refused_before_any_byte_is_hashed(tmp_path: Path) -> None:
    p = tmp_path / "w.pth"
    p.write_bytes(b"x" * 100)
    calls: list[int] = []
    with Source.open(p) as src, pytest.raises(VerificationError, match="100 bytes, the registry expects 101"):
        hash_source(src, expected_size=101, progress=lambda done, total: calls.append(done))
    assert calls == []


def test_hash_is_of_the_mapped_bytes_not_a_replacement_on_disk(tmp_path: Path) -> None:
    p = tmp_path / "w.pth"
    p.write_bytes(b"A" * 4096)
    with Source.open(p) as src:
        # An attacker swaps the path for another file after it was opened.
        tmp = tmp_path / "evil"
        tmp.write_bytes(b"B" * 4096)
        tmp.replace(p)
        d = hash_source(src)
    assert d.sha256 == hashlib.sha256(b"A" * 4096).hexdigest()


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        hash_file(tmp_path / "nope.pth")


def test_digest_helpers() -> None:
    h = hashlib.sha256(b"x").hexdigest()
    assert parse_sha256("SHA256:" + h.upper()) == h
    assert digests_equal(h.upper(), h)
    assert not digests_equal(h, hashlib.sha256(b"y").hexdigest())
    with pytest.raises(UsageError):
        parse_sha256("abc")
