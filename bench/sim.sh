# Sourced by the bench scripts: starts `deploy up --env sim` from the binaries in target/debug
# (scripts/test builds them) with project $project in a fresh directory, and exports what a
# client needs. Sets: bin, dir, sim (its pid), key, url; RUNVOY_API_URL, RUNVOY_API_KEY,
# XDG_CONFIG_HOME. Stops the sim (and any background job) on exit.
bin=target/debug
dir=$(mktemp -d "/tmp/runvoy-$project-XXXX")
# Two free ports in a row: the sim's WebSocket API listens on the one after the HTTP API.
port=$(python3 -c '
import socket
while True:
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    try:
        b = socket.socket(); b.bind(("127.0.0.1", p + 1)); print(p); break
    except OSError:
        pass')
XDG_CONFIG_HOME=$dir/config "$bin/deploy" up --env sim --functions "$bin" --state-dir "$dir/state" \
  --listen "127.0.0.1:$port" --project "$project" >"$dir/sim.log" 2>&1 &
sim=$!
trap 'kill $(jobs -p) 2>/dev/null; kill $sim 2>/dev/null' EXIT
for _ in $(seq 1 300); do grep -q "Press Ctrl+C" "$dir/sim.log" && break; sleep 0.2; done
key=$(awk '/API key/ {print $3}' "$dir/sim.log")
url="http://127.0.0.1:$port"
export RUNVOY_API_URL=$url RUNVOY_API_KEY=$key XDG_CONFIG_HOME=$dir/config
