# Sourced by the bench scripts: starts `deploy up --env sim` from the binaries in target/debug
# (scripts/test builds them) with project $project in a fresh directory, and exports what a
# client needs. Sets: bin, dir, sim (its pid), key, url; RUNVOY_API_URL, RUNVOY_API_KEY,
# XDG_CONFIG_HOME. `chaos` (optional) is passed as --chaos. Stops the sim, its moto (which
# outlives the sim by design) and any background job on exit.
bin=target/debug
dir=$(mktemp -d "/tmp/runvoy-$project-XXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
XDG_CONFIG_HOME=$dir/config "$bin/deploy" up --env sim --functions "$bin" --state-dir "$dir/state" \
  --listen "127.0.0.1:$port" --project "$project" ${chaos:+--chaos "$chaos"} >"$dir/sim.log" 2>&1 &
sim=$!
trap 'kill $(jobs -p) 2>/dev/null; kill $sim 2>/dev/null; "$bin/deploy" down --env sim --state-dir "$dir/state" >/dev/null 2>&1' EXIT
for _ in $(seq 1 300); do grep -q "Press Ctrl+C" "$dir/sim.log" && break; sleep 0.2; done
key=$(awk '/API key/ {print $3}' "$dir/sim.log")
url="http://127.0.0.1:$port"
export RUNVOY_API_URL=$url RUNVOY_API_KEY=$key XDG_CONFIG_HOME=$dir/config
