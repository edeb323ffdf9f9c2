#!/usr/bin/env bash
# Peers side by side on one backend: `runvoy logs` on the sim, `aws logs get-log-events` (a
# next-token loop) and the pip `awslogs` tool reading the same CloudWatch stream in the sim's moto:
# time and bytes to print a backlog, ingest → stdout latency while following, and duplicates
# and losses when the client is killed and started again.
#
# usage: bench/peers.sh [N=100000]     (PEERS=backlog,follow,restart to choose sections)
# needs: the binaries in target/debug (scripts/test builds them); installs awslogs with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v awslogs >/dev/null || python3 -m pip install --quiet awslogs
command -v aws >/dev/null || python3 -m pip install --quiet awscli boto3
project=peers
# shellcheck source=bench/sim.sh
source bench/sim.sh
moto=$(awk '/moto:/ {print $2}' "$dir/sim.log")
stack=$(sed -n 's/.*(stack \(.*\)).*/\1/p' "$dir/sim.log")
N=${1:-100000} python3 bench/peers.py "$url" "$key" "$moto" "$stack" "$bin"
