#!/usr/bin/env bash
# Regenerates every figure of docs/BENCHMARKS.md: builds the release
# binaries and the flotilla:local image, installs etcd (Debian's
# etcd-server) where missing, runs each benchmark with the command the
# page gives, writing raw results and plots to docs/bench/, and rewrites
# the page's measured sections from them. Takes about 30 minutes on two
# cores; the Docker figures are skipped where no engine answers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v etcd >/dev/null; then
  echo "bench: installing etcd-server for the etcd comparison"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null
fi
# The package may start a system etcd on the ports the comparison uses.
pkill -x etcd 2>/dev/null || true
cargo build --release --bin flotilla --bin flotilla-bench
target="${CARGO_TARGET_DIR:-target}"
bench() { "$target/release/flotilla-bench" --out docs/bench "$@"; }

bench etcd --clients 1,16,64,256 --seconds 5 --runs 3
bench writes --clients 1,16,64 --seconds 10 --runs 3
bench writes --clients 1,16,64 --seconds 10 --runs 3 --via leader
bench failover --kills 20
bench heal --kills 20
bench start --pods 200
for nodes in 100 1000 5000; do
  bench schedule --nodes "$nodes" --pods 10000 --runs 3
done
if docker info >/dev/null 2>&1; then
  bash scripts/image.sh "$target/release/flotilla"
  bench start --pods 100 --runtime docker
  bench swarm --replicas 10,100 --runs 3
else
  echo "bench: no Docker engine answers: the docker runtime and Swarm figures are skipped"
fi
bench footprint --binary "$target/release/flotilla"
# Last, as it may not finish: at this size each peer holds several GiB.
bench schedule --nodes 5000 --pods 150000 --runs 1 || echo "bench: 150,000 Pods on 5,000 nodes did not complete"
# The page's tables, distribution plots and machine section, from the raw
# results just written; its prose is left as it is.
bench report --page docs/BENCHMARKS.md
