#!/usr/bin/env bash
# How often index order departs from source order on the sim, under each --chaos key alone:
# `runvoy run -- seq 1 N` and, in what it printed (index order), the lines not at their source
# position and the descents (a line printed after a later one). The sim knows the source order:
# seq writes 1..N. Usage: bench/order.sh [N] (default 50000). Builds nothing: run scripts/test
# (or cargo build --profile test --bins) first.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50000}
keys=(
  ""
  "dup=0.3"
  "drop=0.05"
  "reorder=0.3"
  "delay-ms=0-500"
  "ingest-lag-ms=2000"
  "txn-skew-ms=50"
  "throttle-wcu=1000"
  "lambda-dup=0.2"
  "sdk-retry=0.05"
)
echo "| --chaos | lines | out of place | descents | exit |"
echo "|---|---|---|---|---|"
for chaos in "${keys[@]}"; do
  (
    project="order$RANDOM"
    # shellcheck source=bench/sim.sh
    source bench/sim.sh
    out=$(mktemp)
    code=0
    "$bin/runvoy" run -- seq 1 "$n" >"$out" 2>/dev/null || code=$?
    python3 - "$out" "${chaos:-(none)}" "$code" <<'PY'
import sys
lines = [int(l) for l in open(sys.argv[1]) if l.strip()]
misplaced = sum(1 for i, v in enumerate(lines) if v != i + 1)
descents = sum(1 for a, b in zip(lines, lines[1:]) if b < a)
print(f"| `{sys.argv[2]}` | {len(lines)} | {misplaced} | {descents} | {sys.argv[3]} |")
PY
    rm -f "$out"
  )
done
