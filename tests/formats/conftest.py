"""Helpers for container tests: read bytes or files through the public API."""

from __future__ import annotations

import os
from pathlib import Path

from gpenguard.formats import Container, Limits, Source, read_container

os.environ.setdefault("OMP_NUM_THREADS", "1")


def read_bytes(data: bytes, name: str = "blob.txt", limits: Limits | None = None) -> Container:
    return read_container(Source.from_bytes(data, name), limits=limits)


def read_path(path: Path, limits: Limits | None = None) -> Container:
    with Source.open(path) as src:
        return read_container(src, limits=limits)


def rule_ids(box: Container) -> set[str]:
    out = {f.rule_id for f in box.findings}
    for child in box.children:
        out |= rule_ids(child)
    return out
