#!/usr/bin/env bash
# What completing a long execution costs on the sim: `runvoy run -- seq 1 N` from start to the
# CLI's exit (it exits once the execution is complete), and the GetLogEvents calls each function
# made (the completion function re-reads the whole stream; the account's quota is ~25/s).
#
# usage: bench/completion-cost.sh [N=1000000]
# needs: the binaries in target/debug (scripts/test builds them; or cargo build --profile test --bins)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
project=cost
# shellcheck source=bench/sim.sh
source bench/sim.sh
start=$(date +%s.%N)
"$bin/runvoy" run -- sh -c "seq 1 $n" | tail -n 1 >"$dir/last"
end=$(date +%s.%N)
curl -s -H "X-API-Key: $key" "$url/local/v1/sim/stats" | python3 -c "
import json, sys
g = json.load(sys.stdin)['gate']
per = {f: a.get('logs:GetLogEvents', 0) for f, a in g['calls'].items()}
last = open('$dir/last').read().strip()
print(f'{$n} lines, last printed {last}, {float($end) - float($start):.1f} s from start to the CLI exit')
print('GetLogEvents calls by function: ' + ', '.join(f'{f} {c}' for f, c in sorted(per.items()) if c))
print(f'throttled: {g[\"throttled\"]}')"
