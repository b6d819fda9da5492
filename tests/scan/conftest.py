"""Corpora generated once per test session (never committed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.corpus import CorpusItem, make_benign_corpus, make_malicious_corpus

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def malicious(tmp_path_factory: pytest.TempPathFactory) -> list[CorpusItem]:
    return make_malicious_corpus(Path(tmp_path_factory.mktemp("malicious")))


@pytest.fixture(scope="session")
def benign(tmp_path_factory: pytest.TempPathFactory) -> list[CorpusItem]:
    return make_benign_corpus(Path(tmp_path_factory.mktemp("benign")))
