#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine (the README's test command).
# torch is pinned so pip takes the CPU build instead of several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check "torch==2.13.0" -e ".[test]"

# The official SARIF 2.1.0 JSON schema, to validate our SARIF against: npm ships it inside
# @microsoft/jest-sarif (lib/schemas/sarif-2.1.0-rtm.5.json). It is fetched, not committed, and
# its sha256 is pinned in tests/report/sarif_schema.py. Without npm those tests skip with a
# reason (CI sets REQUIRE_SARIF_SCHEMA=1, which turns the skip into a failure).
if [ -z "${SARIF_SCHEMA_PATH:-}" ] && command -v npm >/dev/null 2>&1; then
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/gpenguard-test"
  schema="$cache/sarif-2.1.0-rtm.5.json"
  if [ ! -s "$schema" ]; then
    mkdir -p "$cache"
    work="$(mktemp -d)"
    (cd "$work" && npm pack --silent @microsoft/jest-sarif@1.0.0-beta.0 >/dev/null 2>&1 \
      && tar xzf microsoft-jest-sarif-1.0.0-beta.0.tgz package/lib/schemas/sarif-2.1.0-rtm.5.json \
      && mv package/lib/schemas/sarif-2.1.0-rtm.5.json "$schema.tmp" && mv "$schema.tmp" "$schema") \
      || echo "note: could not fetch the SARIF schema from npm; schema tests will skip" >&2
    rm -rf "$work"
  fi
  [ -s "$schema" ] && export SARIF_SCHEMA_PATH="$schema"
fi

python3 -m ruff check gpenguard tests bench
python3 -m mypy
python3 -m pytest "$@"
