#!/usr/bin/env bash
# GetLogEvents calls per second that idle followers cost on the sim (the account's quota is
# about 25/s for every reader of every execution). Starts a sim, N executions that print one
# line and then sleep, and one `runvoy logs` follower each; counts the calls the IAM gate saw.
#
# usage: bench/idle-followers.sh [N=100] [SECONDS=120]
# needs: the binaries in target/debug (scripts/test builds them; or cargo build --profile test --bins)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100}
secs=${2:-120}
project=idle
# shellcheck source=bench/sim.sh
source bench/sim.sh
ids=()
for _ in $(seq 1 "$n"); do
  ids+=("$(curl -s -X POST -H "X-API-Key: $key" "$url/local/v1/executions" \
    -d "{\"command\":[\"sh\",\"-c\",\"echo started; sleep $((secs + 60))\"]}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["execution_id"])')")
done
for id in "${ids[@]}"; do "$bin/runvoy" logs "$id" >/dev/null 2>&1 & done
calls() {
  curl -s -H "X-API-Key: $key" "$url/local/v1/sim/stats" | python3 -c '
import json, sys
g = json.load(sys.stdin)["gate"]
print(sum(a.get("logs:GetLogEvents", 0) for a in g["calls"].values()), g["throttled"])'
}
sleep 20
read -r c0 t0 <<<"$(calls)"
sleep "$secs"
read -r c1 t1 <<<"$(calls)"
python3 -c "print(f'$n idle followers, {$secs} s: {($c1-$c0)/$secs:.2f} GetLogEvents calls/s, {$t1-$t0} throttled')"
