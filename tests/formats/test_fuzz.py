"""Hostile bytes end in a result or a GpenguardError, quickly; nothing else escapes."""

from __future__ import annotations

import io
import os
import pickle
from functools import lru_cache

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpenguard.errors import GpenguardError
from gpenguard.formats import Limits, Source, read_container
from gpenguard.pickling.opcodes import OPCODE_BYTES, DecodeError, Decoder, extent
from gpenguard.pickling.walker import render, walk
from gpenguard.scan import Verdict, scan_source
from tests.corpus import ZipEntry, build_zip, legacy_stream, legacy_tar, npy_object, os_system_true

LIMITS = Limits(max_opcodes=20_000, max_members=64, max_uncompressed_bytes=8 * 2**20)
# GG_FUZZ_EXAMPLES raises the count for a longer local run; CI keeps it quick.
FUZZ = settings(
    max_examples=int(os.environ.get("GG_FUZZ_EXAMPLES", "200")),
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow],
)


@lru_cache(maxsize=1)
def seeds() -> list[bytes]:
    zipped = io.BytesIO()
    torch.save({"w": torch.arange(6.0), "n": {"a": [1, 2]}}, zipped)
    legacy = io.BytesIO()
    torch.save({"w": torch.arange(3.0)}, legacy, _use_new_zipfile_serialization=False)
    npy = io.BytesIO()
    np.save(npy, np.arange(4))
    return [
        zipped.getvalue(),
        legacy.getvalue(),
        legacy_stream(),
        legacy_tar(pickle_member=pickle.dumps({"a": 1}, protocol=2)),
        npy.getvalue(),
        npy_object(os_system_true(2)),
        build_zip(
            [
                ZipEntry("a/data.pkl", os_system_true(4), deflate=True),
                ZipEntry("a/x.npy", npy.getvalue()),
            ]
        ),
        os_system_true(0),
        os_system_true(5),
    ]


def _check(data: bytes) -> None:
    src = Source.from_bytes(data, "fuzz.bin")
    try:
        box = read_container(src, limits=LIMITS)
    except GpenguardError as exc:
        assert "fuzz.bin" in str(exc)
    else:
        assert box.path == "fuzz.bin"
    report = scan_source(src, limits=LIMITS)
    assert report.verdict in (Verdict.PASS, Verdict.BLOCK, Verdict.ERROR)
    if report.verdict is Verdict.ERROR:
        assert report.error


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    _check(data)


@FUZZ
@given(st.binary(max_size=2048).map(lambda b: b"PK\x03\x04" + b))
def test_random_after_zip_magic(data: bytes) -> None:
    _check(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    seed = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice"]))
        pos = draw(st.integers(0, max(0, len(seed) - 1)))
        if kind == "flip" and seed:
            seed[pos] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            seed[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del seed[pos : pos + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del seed[pos:]
        else:
            other = draw(st.sampled_from(seeds()))
            seed[pos:pos] = other[: draw(st.integers(1, 64))]
    return bytes(seed)


@FUZZ
@given(mutated())
def test_mutated_checkpoints(data: bytes) -> None:
    _check(data)


_OPS = sorted(OPCODE_BYTES)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(_OPS), st.binary(max_size=6)), max_size=200))
def test_opcode_soup_never_escapes_the_walker(program: list[tuple[int, bytes]]) -> None:
    data = b"".join(bytes([op]) + arg for op, arg in program) + b"."
    res = walk(memoryview(data))
    render(res.value)
    for g in res.imports:
        render(g.first_call)


@FUZZ
@given(
    st.recursive(
        st.none()
        | st.integers()
        | st.text(max_size=8)
        | st.binary(max_size=8)
        | st.floats(allow_nan=False),
        lambda kids: (
            st.lists(kids, max_size=4)
            | st.dictionaries(st.text(max_size=4), kids, max_size=4)
            | st.tuples(kids, kids)
        ),
        max_leaves=30,
    ),
    st.integers(0, 5),
)
def test_real_pickles_walk_clean(value: object, proto: int) -> None:
    res = walk(memoryview(pickle.dumps(value, protocol=proto)))
    assert res.complete
    assert not [p for p in res.problems if p.rule_id not in ("GG116",)]


def _decoder_end(data: bytes) -> tuple[int | None, str | None]:
    try:
        for op in Decoder(memoryview(data)):
            if op.name == "STOP":
                return op.end, None
    except DecodeError as exc:
        return None, exc.reason
    return None, None


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(_OPS), st.binary(max_size=6)), max_size=60))
def test_fast_extent_agrees_with_the_decoder(program: list[tuple[int, bytes]]) -> None:
    data = b"".join(bytes([op]) + arg for op, arg in program) + b"."
    full, reason = _decoder_end(data)
    fast, _ops, _imports = extent(memoryview(data), max_ops=10_000)
    if full is not None:
        assert fast == full
    elif fast is not None:
        # the fast path skips argument contents; only content errors may separate them
        assert reason is not None and ("UTF-8" in reason or "integer of" in reason), reason


_DATA = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(st.text(max_size=4), kids, max_size=4)
        | st.tuples(kids, kids)
        | st.frozensets(st.integers(), max_size=3)
        | st.sets(st.text(max_size=3), max_size=3)
    ),
    max_leaves=30,
)


@FUZZ
@given(_DATA, st.integers(0, 5))
def test_plain_data_pickles_pass_the_default_profile(value: object, proto: int) -> None:
    report = scan_source(Source.from_bytes(pickle.dumps(value, protocol=proto), "data.pkl"))
    assert report.verdict is Verdict.PASS, report.findings


class _Payload:
    """Pickles as ``os.system('true')``; never unpickled here."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


@FUZZ
@given(st.lists(_DATA, max_size=5), st.integers(0, 5), st.data())
def test_payload_anywhere_in_plain_data_is_blocked(
    items: list[object], proto: int, data: st.DataObject
) -> None:
    where = data.draw(st.integers(0, len(items)))
    items.insert(where, {"nested": (_Payload(),)})
    report = scan_source(Source.from_bytes(pickle.dumps(items, protocol=proto), "mixed.pkl"))
    assert report.verdict is Verdict.BLOCK
    hits = [f for f in report.findings if f.rule_id == "GG100"]
    assert hits and hits[0].global_name == "posix.system" and hits[0].call == "posix.system('true')"
