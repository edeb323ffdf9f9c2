"""Peers side by side on one backend: `runvoy logs` on the sim next to `aws logs get-log-events`
(the loop a script writes: next token until it repeats) and the pip `awslogs` tool, both reading
the same CloudWatch stream in the sim's moto. Prints the table of docs/performance.md.

Run by bench/peers.sh (which starts the sim); not a test: numbers, not assertions."""

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

url, key, moto, stack, bin_dir = sys.argv[1:6]
N = int(os.environ.get("N", "100000"))
RATE, SECONDS = 20, 20  # lines per second and duration of the following runs
group = f"/aws/ecs/{stack}/runner"
aws_env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1")
aws_env.pop("AWS_PROFILE", None)


def api(method, path, body=None):
    req = urllib.request.Request(url + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"null")


def put(eid, messages):
    for i in range(0, len(messages), 5000):
        api("POST", f"/local/v1/streams/{eid}/events",
            {"events": [{"message": m} for m in messages[i:i + 5000]]})


def complete(eid):
    """Completes as a producer does: a long re-read answers 503 with its progress kept; repeat."""
    for _ in range(100):
        try:
            return api("POST", f"/api/v1/executions/{eid}/complete", {"status": "SUCCEEDED"})
        except urllib.error.HTTPError as e:
            if e.code != 503:
                raise
    raise SystemExit(f"completing {eid} never finished")


def committed(eid):
    try:
        return api("GET", f"/api/v1/executions/{eid}")["last_index"]
    except Exception:
        return 0


class Proxy(threading.Thread):
    """A TCP proxy counting the bytes the server sends to the client."""

    def __init__(self, target):
        super().__init__(daemon=True)
        host, port = target.split("//")[1].split(":")
        self.target = (host, int(port.rstrip("/")))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.down = 0
        self.lock = threading.Lock()
        self.start()

    def run(self):
        while True:
            c, _ = self.sock.accept()
            s = socket.create_connection(self.target)
            threading.Thread(target=self.pipe, args=(c, s, False), daemon=True).start()
            threading.Thread(target=self.pipe, args=(s, c, True), daemon=True).start()

    def pipe(self, a, b, count):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                if count:
                    with self.lock:
                        self.down += len(data)
                b.sendall(data)
        except OSError:
            pass
        finally:
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self):
        with self.lock:
            n, self.down = self.down, 0
        return n


def stream(eid):
    return f"task/runner/{eid}"


def runvoy_cmd(eid, proxy, extra=()):
    env = dict(os.environ, RUNVOY_API_URL=proxy.url, RUNVOY_API_KEY=key)
    return [f"{bin_dir}/runvoy", "logs", eid, *extra], env


AWS_LOOP = r'''
import json, subprocess, sys, time
group, stream, endpoint, follow, start = sys.argv[1:6]
token = None
while True:
    cmd = ["aws", "logs", "get-log-events", "--log-group-name", group, "--log-stream-name", stream,
           "--endpoint-url", endpoint, "--output", "json"]
    cmd += ["--next-token", token] if token else (["--start-time", start] if start != "-" else ["--start-from-head"])
    page = json.loads(subprocess.run(cmd, capture_output=True, check=True).stdout)
    for e in page["events"]:
        print(e["timestamp"], e["message"], flush=True)
    if page["nextForwardToken"] == token and not page["events"]:
        if follow != "1":
            break
        time.sleep(1)
    token = page["nextForwardToken"]
'''


def aws_cmd(eid, proxy, follow=False, start="-"):
    return [sys.executable, "-c", AWS_LOOP, group, stream(eid), proxy.url, "1" if follow else "0", start], aws_env


def awslogs_cmd(eid, proxy, follow=False, start="1d"):
    cmd = ["awslogs", "get", group, stream(eid), "--aws-endpoint-url", proxy.url, "-G", "-S",
           "--timestamp", "--color", "never", "-s", start]
    if follow:
        cmd += ["--watch", "--watch-interval", "1"]
    return cmd, aws_env


def message_of(tool, line):
    """The log message in a line a tool printed."""
    if tool == "aws":
        return line.split(" ", 1)[1]
    if tool == "awslogs":
        return line.split(" ", 1)[1]
    return line


def backlog(tools):
    eid = "peers-backlog"
    lines = [f"{i:09d} the quick brown fox jumps over the lazy dog" for i in range(1, N + 1)]
    put(eid, lines)
    while committed(eid) < N:
        time.sleep(0.5)
    complete(eid)
    print(f"## Peers: printing a {N:,}-line backlog (same CloudWatch stream, moto under the sim)\n")
    print("| client | seconds | lines/s | lines printed | unique | bytes fetched | bytes per line | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for tool, (make, proxy) in tools.items():
        cmd, env = make(eid, proxy)
        proxy.take()
        t0 = time.time()
        out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], env=env, capture_output=True, text=True)
        secs = time.time() - t0
        rss = int(out.stderr.strip().splitlines()[-1]) / 1024
        got = [message_of(tool, l) for l in out.stdout.splitlines()]
        fetched = proxy.take()
        print(f"| {tool} | {secs:.1f} | {len(got) / secs:,.0f} | {len(got):,} | {len(set(got)):,} | {fetched:,} | "
              f"{fetched / max(1, len(got)):.0f} | {rss:.1f} |")
    print()


def produce(eid, done):
    """RATE lines a second for SECONDS seconds, each carrying its sequence number and send time."""
    for i in range(1, RATE * SECONDS + 1):
        put(eid, [f"{i:06d} {time.time() * 1000:.0f}"])
        time.sleep(1 / RATE)
    done.set()


def follow(tools):
    print(f"## Peers: following ({RATE} lines/s for {SECONDS} s), ingest → stdout latency\n")
    print("| client | lines | p50 (ms) | p99 (ms) | max (ms) |")
    print("|---|---:|---:|---:|---:|")
    for tool, (make, proxy) in tools.items():
        eid = f"peers-follow-{tool}"
        put(eid, ["000000 start"])
        cmd, env = make(eid, proxy, follow=True) if tool != "runvoy" else make(eid, proxy)
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
        done = threading.Event()
        threading.Thread(target=produce, args=(eid, done), daemon=True).start()
        lat, seen = [], set()
        deadline = None
        for line in p.stdout:
            now = time.time() * 1000
            parts = message_of(tool, line.rstrip("\n")).split(" ")
            if len(parts) == 2 and parts[1].isdigit() and parts[0] not in seen:
                seen.add(parts[0])
                lat.append(now - int(parts[1]))
            if len(seen) >= RATE * SECONDS:
                break
            if done.is_set():
                deadline = deadline or time.time() + 30
                if time.time() > deadline:
                    break
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        if os.environ.get("PEERS_SAMPLES"):
            # Latencies in the order the lines arrived, to see where a tail comes from.
            print(f"{tool}: " + " ".join(f"{x:.0f}" for x in lat), file=sys.stderr)
        lat.sort()
        q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] if lat else float("nan")
        print(f"| {tool} | {len(seen)} | {q(0.5):.0f} | {q(0.99):.0f} | {lat[-1] if lat else float('nan'):.0f} |")
        if tool == "runvoy":
            complete(eid)
    print()


def restart(tools):
    print("## Peers: the client is killed mid-stream and started again from where it was\n")
    print("| client | how it resumes | lines written | printed (both runs) | duplicates | missing |")
    print("|---|---|---:|---:|---:|---:|")
    for tool, (make, proxy) in tools.items():
        eid = f"peers-restart-{tool}"
        put(eid, ["000000 start"])
        done = threading.Event()
        threading.Thread(target=produce, args=(eid, done), daemon=True).start()
        time.sleep(2)
        if tool == "runvoy":
            cmd, env = make(eid, proxy, ["--json"])
        else:
            cmd, env = make(eid, proxy, follow=True)
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
        first, t0 = [], time.time()
        for line in p.stdout:
            first.append(line.rstrip("\n"))
            if time.time() - t0 > 6:
                break
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        if tool == "runvoy":
            last = json.loads(first[-1])["index"]
            messages = [json.loads(l)["message"] for l in first]
            cmd, env = make(eid, proxy, ["--since-index", str(last)])
            how = "--since-index (last index printed)"
        else:
            last_ms = int(first[-1].split(" ", 1)[0]) if tool == "aws" else None
            messages = [message_of(tool, l) for l in first]
            if tool == "aws":
                cmd, env = make(eid, proxy, follow=True, start=str(last_ms))
                how = "--start-time (last timestamp printed)"
            else:
                cmd, env = make(eid, proxy, follow=True, start=first[-1].split(" ", 1)[0].replace("T", " "))
                how = "-s (last timestamp printed)"
        done.wait()
        complete(eid)
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
        t1 = time.time()
        expected = RATE * SECONDS + 1
        for line in p.stdout:
            messages.append(message_of(tool, line.rstrip("\n")))
            if len(set(messages)) >= expected or time.time() - t1 > 30:
                break
        if tool != "runvoy" or p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        dups = len(messages) - len(set(messages))
        print(f"| {tool} | {how} | {expected} | {len(messages)} | {dups} | {expected - len(set(messages))} |")
    print()


sim_proxy, moto_proxy = Proxy(url), Proxy(moto)
tools = {
    "runvoy": (runvoy_cmd, sim_proxy),
    "aws": (aws_cmd, moto_proxy),
    "awslogs": (awslogs_cmd, moto_proxy),
}
what = os.environ.get("PEERS", "backlog,follow,restart").split(",")
# PEERS_TOOLS=runvoy,aws runs only those clients.
only = os.environ.get("PEERS_TOOLS")
if only:
    tools = {t: v for t, v in tools.items() if t in only.split(",")}
if "backlog" in what:
    backlog(tools)
if "follow" in what:
    follow(tools)
if "restart" in what:
    restart(tools)
