#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine (the README's test command).
# torch is pinned so pip takes the CPU build instead of several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check "torch==2.13.0" -e ".[test]"
python3 -m ruff check gpenguard tests bench
python3 -m mypy
python3 -m pytest "$@"
