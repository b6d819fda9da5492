"""Find the official OASIS SARIF 2.1.0 JSON schema for validation tests, without the network.

It is public spec text, not committed here. Two published copies are accepted, each pinned by
sha256 (`KNOWN`): the OASIS errata01 schema (oasis-tcs/sarif-spec,
``sarif-2.1/schema/sarif-schema-2.1.0.json``), and the 2.1.0-rtm.5 schema that npm ships inside
``@microsoft/jest-sarif@1.0.0-beta.0`` (``lib/schemas/sarif-2.1.0-rtm.5.json``), which
``scripts/test.sh`` fetches into a cache and names in ``$SARIF_SCHEMA_PATH``. Lookup order:

1. ``$SARIF_SCHEMA_PATH``;
2. ``shared/sarif-schema-2.1.0.json`` in the checkout or any folder above it.

Without it the schema tests skip, unless ``REQUIRE_SARIF_SCHEMA=1`` (CI), where they fail.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

NAME = "sarif-schema-2.1.0.json"
KNOWN = {
    "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e": "OASIS 2.1.0 errata01",
    "2d99159ae54a3eea97f81781cff48780548657c35949f4b7f25e99a2ba4de4f8": "2.1.0-rtm.5 (npm)",
}
ROOT = Path(__file__).resolve().parents[2]


def find() -> Path | None:
    env = os.environ.get("SARIF_SCHEMA_PATH")
    if env:
        return Path(env) if Path(env).is_file() else None
    for folder in (ROOT, *ROOT.parents):
        candidate = folder / "shared" / NAME
        if candidate.is_file():
            return candidate
    return None


def load() -> dict[str, Any]:
    """The schema, or skip (fail under REQUIRE_SARIF_SCHEMA=1) when it cannot be found."""
    path = find()
    if path is None:
        if os.environ.get("REQUIRE_SARIF_SCHEMA") == "1":
            pytest.fail("REQUIRE_SARIF_SCHEMA=1 but the SARIF 2.1.0 schema was not found")
        pytest.skip("official SARIF 2.1.0 schema not available (set SARIF_SCHEMA_PATH)")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert digest in KNOWN, f"{path} (sha256 {digest}) is not a known SARIF 2.1.0 schema"
    schema: dict[str, Any] = json.loads(data)
    return schema
