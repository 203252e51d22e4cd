#!/usr/bin/env bash
# Runs every test: sets up the Python venv the SDK tests need (idempotent), then `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh
export LLM_GATEWAY_TEST_PYTHON="$PWD/.venv/bin/python"
cargo test --all-targets "$@"
