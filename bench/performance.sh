#!/usr/bin/env bash
# Regenerates docs/performance.md with one command: builds what the benchmarks run, then reruns
# every `<!-- bench: … -->` block of the document (or those naming one of the arguments). The
# document is rewritten after each block.
#
# usage: bench/performance.sh [SECTION...]    e.g. bench/performance.sh fanout web peers
# Takes about an hour for every section (the million-line runs, the sim, the idle followers).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p runvoy-bench -p runvoy
cargo build --profile test --bins   # the sim benches run target/debug
# `bench functions`: x86_64 binaries of profile `lambda` (start to ready) and the arm64 zips.
cargo build --profile lambda -p forwarder -p api -p websocket -p completion
target/debug/deploy build --env example --artifacts target/lambda-arm64
python3 bench/performance.py "$@"
