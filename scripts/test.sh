#!/usr/bin/env bash
# Builds everything once and runs every test: unit tests of the pure cores
# and black-box tests against real peer processes with real RocksDB.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Arrows that must never exist between the crates (docs/ARCHITECTURE.md).
python3 scripts/arrows.py
# The black-box tests start the `flotilla` binary, so it is built first.
cargo build --workspace --all-targets
if cargo nextest --version >/dev/null 2>&1; then
  # Each black-box test runs a whole cluster; two at a time suits 2 cores.
  cargo nextest run --workspace --no-fail-fast --test-threads 2 "$@"
else
  cargo test --workspace --no-fail-fast "$@" -- --test-threads 2
fi
