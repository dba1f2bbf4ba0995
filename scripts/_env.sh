# Sourced by demo.sh and test.sh: create .venv (Python 3.11+) and install the project into it.
# Usage: source scripts/_env.sh EXTRAS   (e.g. "jax,plot" or "test")
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
_step() { printf '==> %s\n' "$*" >&2; }
_env_start=$SECONDS
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Error [setup]: pyhf_dask needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2
    exit 2
  fi
  _step "creating .venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
_step "installing pyhf_dask[$1] into .venv (the first time takes a few minutes; full log: .venv/install.log)"
# pip's own lines, shortened to what it is doing: the packages it fetches and installs.
_pip() {
  python -m pip install --disable-pip-version-check --progress-bar off "$@" 2>&1 \
    | tee -a .venv/install.log \
    | while IFS= read -r line; do
        case "$line" in
          Collecting*) printf '    %s\n' "${line%% (*}" >&2 ;;
          "Installing collected packages"*) printf '    installing %s packages\n' \
            "$(tr ',' '\n' <<<"${line#*: }" | wc -l | tr -d ' ')" >&2 ;;
          ERROR*) printf '%s\n' "$line" >&2 ;;
        esac
      done
}
: >.venv/install.log
if ! _pip --upgrade pip || ! _pip -e ".[$1]"; then
  echo "Error [setup]: pip could not install pyhf_dask[$1]; the full log is .venv/install.log" >&2
  exit 1
fi
_step "environment ready in $((SECONDS - _env_start)) s ($(python --version), pyhf_dask $(python -c 'import pyhf_dask; print(pyhf_dask.__version__)'))"
