#!/usr/bin/env bash
# Builds Flotilla and starts a local three-peer cluster on loopback (the
# embedded default: no containers, no configuration), runs a Deployment,
# kills a peer and shows its Pods rescheduled. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bin flotilla
exec "${CARGO_TARGET_DIR:-target}/release/flotilla" up --demo "$@"
