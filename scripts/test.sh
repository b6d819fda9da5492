#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine (the README's test command): a
# virtualenv in .venv/ with torch's CPU build and gpenguard[test] (scripts/_venv.sh says how to
# change the interpreter, the venv or the torch index; GPENGUARD_PYTHON=... skips all setup).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/_venv.sh
. scripts/_venv.sh
gpenguard_venv test

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

# Subprocesses the tests start (`python -m gpenguard`, the bwrap worker) use this interpreter.
case "$py" in */*) PATH="$(cd "$(dirname "$py")" && pwd):$PATH"; export PATH ;; esac
"$py" -m ruff check gpenguard tests bench
"$py" -m mypy
"$py" -m pytest "$@"
