# Sourced by scripts/demo.sh and scripts/test.sh: make (or reuse) this checkout's virtualenv,
# install what the caller asks for into it, and set $py to its interpreter.
#
#   gpenguard_venv EXTRAS          e.g. "restore" (demo) or "test" (test suite)
#
# Needs only Python 3.11+ on the machine. Settings (environment):
#   PYTHON=python3.12              the interpreter that creates the venv (default: python3)
#   GPENGUARD_VENV=.venv           where the venv lives (default: .venv/ in the checkout)
#   GPENGUARD_PYTHON=/path/python  use this interpreter as it is: no venv, nothing installed
#   TORCH_SPEC=torch==2.13.0       the torch to install (tests and restore need it on the host)
#   TORCH_INDEX_URL=URL            where torch's CPU build comes from; default
#                                  https://download.pytorch.org/whl/cpu when it answers, else
#                                  PyPI (set TORCH_INDEX_URL= to go straight to PyPI). On PyPI
#                                  the Linux wheel is the CUDA build (several GB of GPU libraries).

gpenguard_venv() {
    local extras=$1
    if [ -n "${GPENGUARD_PYTHON:-}" ]; then
        py=$GPENGUARD_PYTHON
        echo "== using $py as it is (GPENGUARD_PYTHON set): nothing installed"
        return 0
    fi
    local base=${PYTHON:-python3}
    if ! command -v "$base" >/dev/null 2>&1; then
        echo "setup: $base not found; install Python 3.11 or newer (or set PYTHON=...)" >&2
        exit 2
    fi
    if ! "$base" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "setup: $base is Python $("$base" -c 'import sys; print(sys.version.split()[0])'); gpenguard needs 3.11 or newer (set PYTHON=python3.11 ...)" >&2
        exit 2
    fi
    local venv=${GPENGUARD_VENV:-.venv}
    if [ ! -x "$venv/bin/python" ]; then
        echo "== creating a virtualenv in $venv (with $base)"
        if ! "$base" -m venv "$venv"; then
            echo "setup: could not create a virtualenv. On Debian/Ubuntu: apt-get install python3-venv" >&2
            exit 2
        fi
    fi
    py="$(cd "$venv" && pwd)/bin/python"  # absolute: tests run subprocesses from other folders
    local quiet=(--quiet --disable-pip-version-check)
    local torch_spec=${TORCH_SPEC:-torch==2.13.0}
    if ! "$py" -c 'import torch' >/dev/null 2>&1; then
        local index=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}
        if [ -n "$index" ] && "$py" - "$index" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=8).close()
PY
        then
            echo "== installing $torch_spec, CPU build, from $index"
            "$py" -m pip install "${quiet[@]}" --index-url "$index" "$torch_spec"
        else
            echo "== installing $torch_spec from the default index (${index:-TORCH_INDEX_URL empty}${index:+ did not answer})"
            "$py" -m pip install "${quiet[@]}" "$torch_spec"
        fi
    fi
    echo "== installing gpenguard[$extras] (editable) into $venv"
    "$py" -m pip install "${quiet[@]}" -e ".[$extras]"
}
