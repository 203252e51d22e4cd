#!/usr/bin/env bash
# Runs every test: sets up the Python venv the SDK tests need (idempotent), then the library,
# binary and integration tests (benchmarks are only compiled by clippy; `cargo bench` runs them).
# Ends with one summary line over all test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh
scripts/fetch-model.sh
export LLM_GATEWAY_TEST_PYTHON="$PWD/.venv/bin/python"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --lib --bins --tests "$@" 2>&1 | tee "$log"
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
