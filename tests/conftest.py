"""Shared fixtures and marker handling.

Tests that need Docker skip with a reason when no engine answers, unless
GPENGUARD_REQUIRE_DOCKER=1 (CI), where a missing engine is a failure instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep a developer's GPENGUARD_* settings (other than the CI switches) out of tests."""
    for key in list(os.environ):
        if key.startswith("GPENGUARD_") and key not in {"GPENGUARD_REQUIRE_DOCKER", "GPENGUARD_REQUIRE_BWRAP", "GPENGUARD_IMAGE"}:
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("GPENGUARD_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    monkeypatch.setenv("GPENGUARD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
