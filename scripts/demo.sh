#!/usr/bin/env bash
# The whole pipeline on a fresh machine (Python 3.11+): a virtualenv in .venv/ with torch's CPU
# build and gpenguard[restore], then make a GPEN-BFR-2048 checkpoint
# (the real architecture, RANDOM weights: official weights cannot be downloaded here, so the
# "restored" image is noise) and a poisoned copy whose pickle runs os.system("true"), then:
#   1. scan both: the poisoned one is blocked, the call it would make is shown;
#   2. verify the clean one against the shipped registry (architecture fingerprint);
#   3. restore with the poisoned one: refused before any sandbox starts;
#   4. restore a sample image with the clean one inside the sandbox (Docker if an engine
#      answers, else bubblewrap), after the gate and the safetensors conversion.
# Exits 0 only when every step behaved as expected.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs into ./.venv (see scripts/_venv.sh: torch's CPU build, gpenguard[restore]).
# GPENGUARD_PYTHON=/path/to/python uses that interpreter as it is (nothing installed; the old
# GPENGUARD_DEMO_SKIP_INSTALL=1 means the same with python3); GPENGUARD_DEMO_DIR moves the files
# (default ./demo/, which git ignores); GPENGUARD_DEMO_BACKEND forces docker or bwrap.
if [ "${GPENGUARD_DEMO_SKIP_INSTALL:-0}" = "1" ] && [ -z "${GPENGUARD_PYTHON:-}" ]; then
    GPENGUARD_PYTHON=python3
fi
# shellcheck source=scripts/_venv.sh
. scripts/_venv.sh
gpenguard_venv restore
gg() { "$py" -m gpenguard "$@"; }
expect() {  # expect CODE DESCRIPTION -- command...
    local want=$1 what=$2; shift 3
    local got=0
    echo; echo "== $what (expect exit $want)"; echo "\$ gpenguard ${*:2}"
    "$@" || got=$?
    if [ "$got" -ne "$want" ]; then
        echo "demo FAILED: $what exited $got, expected $want" >&2
        exit 1
    fi
}

dir="${GPENGUARD_DEMO_DIR:-demo}"
rm -rf -- "$dir"
echo "== making a GPEN-BFR-2048-architecture checkpoint with RANDOM weights, a poisoned copy, a sample"
"$py" -c 'import sys; from gpenguard.demo import make_gpen_demo; make_gpen_demo(sys.argv[1])' "$dir"
clean="$dir/RANDOM-WEIGHTS/GPEN-BFR-2048.pth"
poisoned="$dir/RANDOM-WEIGHTS/GPEN-BFR-2048-POISONED.pth"
sample="$dir/sample-face-crop.png"

expect 0 "scan the clean checkpoint" -- gg scan "$clean"
expect 1 "scan the poisoned checkpoint" -- gg scan "$poisoned"
expect 0 "verify the clean checkpoint against the shipped registry" -- gg verify "$clean"
expect 1 "restore with the poisoned checkpoint" -- \
    gg restore "$sample" -o "$dir/out-poisoned" --weights "$poisoned" --mode aligned
if [ -e "$dir/out-poisoned" ] && [ -n "$(ls -A "$dir/out-poisoned")" ]; then
    echo "demo FAILED: the poisoned run left output behind" >&2
    exit 1
fi

# Only now, with the poisoned file refused, is a sandbox needed: pick one, build what it lacks.
backend="${GPENGUARD_DEMO_BACKEND:-}"
if [ -z "$backend" ]; then
    if "$py" -c 'import docker; docker.from_env().ping()' >/dev/null 2>&1; then
        backend=docker
    else
        if ! command -v bwrap >/dev/null 2>&1; then
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
                echo; echo "== no Docker engine answers and bubblewrap is missing: installing bubblewrap (apt-get)"
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null \
                    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null; }
            else
                echo "demo: no sandbox backend here: no Docker engine answers and bubblewrap is not installed." >&2
                echo "      Install one, then run this again:" >&2
                echo "        sudo apt-get install bubblewrap      # Debian/Ubuntu" >&2
                echo "        sudo dnf install bubblewrap          # Fedora/RHEL" >&2
                echo "      or start a Docker engine (the sandbox image is then built on first use)." >&2
                exit 2
            fi
        fi
        backend=bwrap
    fi
fi
if [ "$backend" = docker ] && ! "$py" -c 'import docker; docker.from_env().images.get("gpenguard-sandbox:latest")' >/dev/null 2>&1; then
    echo; echo "== building the sandbox image offline (first run only; takes a few minutes)"
    gg sandbox build
fi
expect 0 "restore the sample in the $backend sandbox" -- \
    gg restore "$sample" -o "$dir/out" --weights "$clean" --mode aligned --backend "$backend"
echo
echo "demo OK: the poisoned checkpoint was blocked at scan and never reached the sandbox;"
echo "the clean one was verified, converted to safetensors and run in the $backend sandbox:"
ls -l "$dir/out"
