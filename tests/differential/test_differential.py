"""Differential fuzzing against the real loaders, on a bounded and reproducible budget.

Each example mutates a seed (torch.save output of both formats, a legacy tar, the malicious
corpus) with structure-aware mutators, and asks whether gpenguard passes something a loader
reads differently (tests/differential/oracle.py). Known OPEN differentials (DIFFERENTIALS.md)
are recognised by tests/differential/known.py; anything else fails with a reproducer.
`GG_DIFF_EXAMPLES` raises the budget for a longer local run; bench/differential.py runs the
coverage-guided campaign.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpenguard.findings import Verdict
from tests.differential import oracle, seeds
from tests.differential.inert import InertUnpickler, Recorded, Run, run_pickle
from tests.differential.known import classify
from tests.differential.mutators import mutate, seeded

BUDGET = settings(
    max_examples=int(os.environ.get("GG_DIFF_EXAMPLES", "300")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def new_differentials(data: bytes) -> list[str]:
    guard = oracle.guard_view(data)
    if guard.verdict is not Verdict.PASS:
        return []
    loader = oracle.loader_view(data)
    return [
        str(d)
        for d in oracle.differentials(guard, loader)
        if classify(data, guard, loader, d) is None
    ]


def _fail_with_reproducer(data: bytes, found: list[str]) -> None:
    path = Path(os.environ.get("GG_DIFF_OUT", tempfile.gettempdir())) / (
        f"gg-diff-{hashlib.sha256(data).hexdigest()[:12]}.bin"
    )
    path.write_bytes(data)
    pytest.fail(f"new parser differential (input saved to {path}):\n" + "\n".join(found))


@BUDGET
@given(
    benign=st.integers(0, 4),
    index=st.integers(0, 10_000),
    seed=st.integers(0, 2**32 - 1),
    rounds=st.integers(1, 3),
)
def test_mutated_seeds_read_alike(benign: int, index: int, seed: int, rounds: int) -> None:
    pool = seeds.benign() if benign else seeds.malicious()
    data = mutate(pool[index % len(pool)], seeded(seed), rounds=rounds)
    found = new_differentials(data)
    if found:
        _fail_with_reproducer(data, found)


# ---------------------------------------------------------------------------------------------
# the oracle itself: it sees what torch would import, and it never imports it


@pytest.mark.parametrize("seed", range(len(seeds.benign())))
def test_benign_seeds_agree_and_are_really_compared(seed: int) -> None:
    data = seeds.benign()[seed]
    guard = oracle.guard_view(data)
    loader = oracle.loader_view(data)
    assert guard.verdict is Verdict.PASS
    assert oracle.differentials(guard, loader) == []
    assert loader.pickles and all(p.run.error is None for p in loader.pickles[:1])
    compared = [t for t in loader.tensors.values() if t is not None]
    if guard.tensors is not None and compared:
        assert all(t == guard.tensors for t in compared)


def test_oracle_reports_a_global_gpenguard_did_not_see() -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    data = buf.getvalue()
    guard = oracle.guard_view(data)
    loader = oracle.loader_view(data)
    blind = [oracle.Judged(s.member, s.offset, s.data, frozenset()) for s in guard.streams]
    guard.streams = blind
    kinds = {d.kind for d in oracle.differentials(guard, loader)}
    assert kinds == {"globals"}


def test_oracle_reports_other_tensors() -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    data = buf.getvalue()
    guard = oracle.guard_view(data)
    assert guard.tensors is not None
    dtype, shape, raw = guard.tensors["w"]
    guard.tensors = {"w": (dtype, shape, bytes(len(raw)))}
    assert [d.kind for d in oracle.differentials(guard, oracle.loader_view(data))] == [
        "tensors",
        "tensors",
    ]


_TRAPPED: list[str] = []


def trap(*args: object) -> None:
    """Would record a call if a global were ever resolved and called."""
    _TRAPPED.append(repr(args))


def test_inert_unpickler_never_resolves_a_global() -> None:
    here = __name__
    program = b"c" + here.encode() + b"\ntrap\n(S'x'\ntR."
    assert sys.modules[here].trap is trap
    run = run_pickle(io.BytesIO(program))
    assert _TRAPPED == []
    assert run.raw_globals == [(here, "trap")]
    assert isinstance(run.value, Recorded)
    # NEWOBJ, BUILD, APPEND and SETITEM on recorders work the way the C unpickler needs
    protocol4 = pickle.dumps(torch.nn.Linear(1, 1), protocol=4)
    run = Run(start=0, end=None)
    value = InertUnpickler(io.BytesIO(protocol4), run).load()
    assert isinstance(value, Recorded) and "torch.nn.modules.linear.Linear" in run.globals
    assert _TRAPPED == []


def test_reproducer_payloads_are_seen_by_the_loader_view() -> None:
    from tests.differential import reproducers as r

    for build in (r.d001_legacy_magic_text_forms, r.d002_tar_storages_views_pickle):
        loader = oracle.loader_view(build())
        assert any("os.system" in p.run.globals for p in loader.pickles), build.__name__


def test_oracle_reports_another_storage_start_in_a_legacy_stream() -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    guard = oracle.guard_view(data)
    loader = oracle.loader_view(data)
    assert guard.legacy_tail is not None
    assert set(loader.legacy_tail.values()) == {guard.legacy_tail}
    guard.legacy_tail += 1
    assert {d.kind for d in oracle.differentials(guard, loader)} == {"bytes"}
