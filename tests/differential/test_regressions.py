"""One test per differential in /work/wt/DIFFERENTIALS.md: gpenguard blocks it or reads it as torch does.

OPEN entries are ``xfail(strict=True)``: the day a fix lands the test XPASSes, which fails the
run until the marker is dropped and the entry marked FIXED.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.differential import oracle
from tests.differential import reproducers as r

OPEN: dict[str, str] = {}

CASES: dict[str, Callable[[], bytes]] = {
    "D001": r.d001_legacy_magic_text_forms,
    "D002": r.d002_tar_storages_views_pickle,
    "D003": r.d003_zip_deflated_storage,
    "D004": r.d004_zip_directory_attribute,
    "D005": r.d005_zip_big_endian_byteorder,
}


def _case(key: str) -> object:
    marks = (
        [pytest.mark.xfail(strict=True, reason=f"{key} OPEN: {OPEN[key]}")] if key in OPEN else []
    )
    return pytest.param(key, id=key, marks=marks)


@pytest.mark.parametrize("key", [_case(k) for k in CASES])
def test_regression(key: str) -> None:
    found = oracle.check(CASES[key]())
    assert not found, "\n".join(map(str, found))
