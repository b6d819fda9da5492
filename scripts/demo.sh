#!/usr/bin/env bash
# The two-minute demo: install gpenguard, make a benign checkpoint and a poisoned copy of it
# (random weights; the payload is os.system("true")), and watch `gpenguard scan` pass one and
# block the other. Exits 0 only when both verdicts are the expected ones.
set -euo pipefail
cd "$(dirname "$0")/.."

# GPENGUARD_DEMO_SKIP_INSTALL=1 reuses an existing install (CI, tests); GPENGUARD_DEMO_DIR
# moves the generated files elsewhere (default ./demo/, which git ignores).
if [ "${GPENGUARD_DEMO_SKIP_INSTALL:-0}" != "1" ]; then
    python3 -m pip install --quiet --disable-pip-version-check "torch==2.13.0" -e .
fi

dir="${GPENGUARD_DEMO_DIR:-demo}"
rm -rf -- "$dir"
python3 -c 'import sys; from gpenguard.demo import make_demo_pair; make_demo_pair(sys.argv[1])' "$dir"
benign="$dir/demo-random-weights-benign.pth"
poisoned="$dir/demo-random-weights-POISONED-runs-os-system-true.pth"

status=0
echo "== gpenguard scan $benign  (expect: pass, exit 0)"
python3 -m gpenguard scan "$benign" || status=$?
if [ "$status" -ne 0 ]; then
    echo "demo FAILED: the benign checkpoint was not passed (exit $status)" >&2
    exit 1
fi

echo
echo "== gpenguard scan $poisoned  (expect: blocked, exit 1)"
status=0
python3 -m gpenguard scan "$poisoned" || status=$?
if [ "$status" -ne 1 ]; then
    echo "demo FAILED: the poisoned checkpoint was not blocked (exit $status, expected 1)" >&2
    exit 1
fi

echo
echo "demo OK: benign passed (exit 0), poisoned blocked (exit 1); nothing was loaded or run."
