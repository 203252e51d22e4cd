#!/usr/bin/env bash
# Creates .venv at the repo root (if missing) and installs tests/sdk/requirements.txt into it.
# Idempotent and quiet: re-running only installs what changed. Any failure stops the script.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
requirements="$root/tests/sdk/requirements.txt"
python="${PYTHON:-python3}"

fail() {
    echo "setup-python: $*" >&2
    exit 1
}

[[ -f "$requirements" ]] || fail "missing $requirements"

if [[ ! -x "$venv/bin/python" ]]; then
    command -v "$python" >/dev/null 2>&1 || fail "'$python' not found; install Python 3 (with the venv module)"
    "$python" -m venv "$venv" || fail "'$python -m venv $venv' failed (on Debian: apt-get install python3-venv)"
fi

"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --requirement "$requirements" \
    || fail "pip install -r $requirements into $venv failed"
"$venv/bin/python" -c 'import openai, anthropic' || fail "openai or anthropic does not import from $venv"
