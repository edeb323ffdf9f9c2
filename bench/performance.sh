#!/usr/bin/env bash
# Regenerates docs/performance.md with one command: builds what the benchmarks run, then reruns
# every `<!-- bench: … -->` block of the document (or those naming one of the arguments).
#
# usage: bench/performance.sh [SECTION...]    e.g. bench/performance.sh fanout web peers
# Takes about an hour for every section (the million-line runs, the sim, the arm64 zips).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p runvoy-bench -p runvoy
cargo build --profile test --bins   # the sim benches run target/debug
python3 bench/performance.py "$@"
