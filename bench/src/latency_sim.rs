//! `bench latency --env sim`: where a line's time goes on the AWS path, and how much of it is
//! the project's own. On the sim with its delivery trace on (`/local/v1/sim/deliveries`), 200
//! lines are written 10 ms apart to an execution followed by 1, then 100 `runvoy logs --json`.
//! For each line and follower the trace gives when its batch was made, when the delivery began
//! (the sim invoked the forwarder), when the forwarder took it, how long the forwarder had
//! spent in moto, and when the push to that follower's connection left the forwarder; the
//! follower says when it printed the line. A follower's connection is found by its port: the
//! sim records each connection's client port, the bench reads its followers' sockets in /proc.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::sim::{Sim, reap};

const LINES: usize = 200;
const GAP: Duration = Duration::from_millis(10);
/// The target for the project's share at the 99th percentile.
const TARGET_P99_MS: f64 = 50.0;

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Samples of one segment, in milliseconds.
#[derive(Default)]
struct Segment(Vec<f64>);

impl Segment {
    fn add(&mut self, ms: f64) {
        self.0.push(ms);
    }

    /// `(samples, p50, p99, max)`.
    fn summary(&self) -> (usize, f64, f64, f64) {
        let mut v = self.0.clone();
        if v.is_empty() {
            return (0, f64::NAN, f64::NAN, f64::NAN);
        }
        v.sort_by(f64::total_cmp);
        let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
        (v.len(), pct(0.5), pct(0.99), v[v.len() - 1])
    }
}

/// The segments of one run, in the order they are printed.
const SEGMENTS: [&str; 8] = [
    "write → batch made (PutLogEvents into moto, the ingestion feed, the subscription filter: emulated)",
    "batch made → delivery begun (behind the stream's previous delivery: the sim delivers a stream's batches one at a time)",
    "**delivery begun → push left the forwarder (the project's share)**",
    "of which: delivery begun → the forwarder took the event (the sim's Lambda)",
    "of which: the forwarder's calls to moto before the push",
    "**the project's share without moto**",
    "push left the forwarder → printed (API Gateway emulated, the CLI)",
    "write → printed",
];

struct Measured {
    followers: usize,
    segments: Vec<Segment>,
    /// Line and follower pairs printed without a push from the forwarder (a gap filled over
    /// HTTP, a resume).
    not_pushed: usize,
    /// Mean moto time per delivery by call.
    moto_by_op: Vec<(String, f64, f64)>,
    dropped: u64,
}

pub async fn latency() {
    println!("## Latency on the sim: the project's own share\n");
    let sim = Sim::start("latency").await;
    let (status, answer) = sim.post("/local/v1/sim/deliveries", json!({})).await;
    assert_eq!(status, 200, "the sim traces deliveries: {answer}");
    let mut runs = Vec::new();
    for followers in [1usize, 100] {
        runs.push(measure(&sim, followers).await);
    }
    drop(sim);
    report(&runs);
}

/// The local TCP ports of a process's sockets (Linux: its fds, then /proc/net/tcp{,6}).
fn local_ports(pid: u32) -> HashSet<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().to_string();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut ports = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && inodes.contains(f[9]) {
                let port = f[1].rsplit(':').next().unwrap_or_default();
                if let Ok(p) = u16::from_str_radix(port, 16) {
                    ports.insert(p);
                }
            }
        }
    }
    ports
}

/// A follower printing with `--json`: when it printed each event id.
fn record(
    child: &mut Child,
    printed: Arc<Mutex<HashMap<String, i64>>>,
) -> std::thread::JoinHandle<()> {
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            let at = now_us();
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && let Some(id) = v["event_id"].as_str()
            {
                printed.lock().unwrap().entry(id.to_string()).or_insert(at);
            }
        }
    })
}

async fn measure(sim: &Sim, followers: usize) -> Measured {
    let id = format!("latency-{followers}-{}", runvoy_runtime::random_hex(4));
    sim.write(&id, vec![json!({"message": "start"})]).await;
    let open_before = sim.open_connections().await;
    let mut children = Vec::new();
    let mut printed = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..followers {
        let mut child = sim.follower(&id, &["--json"]);
        let p = Arc::new(Mutex::new(HashMap::new()));
        readers.push(record(&mut child, p.clone()));
        printed.push(p);
        children.push(child);
    }
    let started = Instant::now();
    while !(printed.iter().all(|p| !p.lock().unwrap().is_empty())
        && sim.open_connections().await >= open_before + followers as u64)
    {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the followers of {id} did not connect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let every follower finish its catch-up and `resume` before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut ports: Vec<HashSet<u16>> = children.iter().map(|c| local_ports(c.id())).collect();
    // Each line alone, as a producer flushing every 10 ms would; `id` as the forwarder derives it.
    let mut written: HashMap<String, i64> = HashMap::new();
    for i in 0..LINES {
        let message = format!("L{i} {id}");
        let at = now_us();
        let ts = at / 1000;
        sim.write(&id, vec![json!({"message": message, "timestamp": ts})])
            .await;
        written.insert(
            format!("{ts}-0-{}", runvoy_aws::identity::digest(&message)),
            at,
        );
        tokio::time::sleep(GAP).await;
    }
    // Until every follower printed every line (or a minute passed).
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline
        && !printed
            .iter()
            .all(|p| written.keys().all(|k| p.lock().unwrap().contains_key(k)))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (p, c) in ports.iter_mut().zip(&children) {
        p.extend(local_ports(c.id()));
    }
    sim.complete(&id).await;
    reap(&mut children, Duration::from_secs(120)).await;
    for r in readers {
        let _ = r.join();
    }
    let trace = sim
        .get(&format!("/local/v1/sim/deliveries?execution={id}"))
        .await;
    let follower_of: HashMap<u16, usize> = ports
        .iter()
        .enumerate()
        .flat_map(|(f, ps)| ps.iter().map(move |p| (*p, f)))
        .collect();
    let printed: Vec<HashMap<String, i64>> =
        printed.iter().map(|p| p.lock().unwrap().clone()).collect();
    analyse(followers, &trace, &written, &printed, &follower_of)
}

fn analyse(
    followers: usize,
    trace: &Value,
    written: &HashMap<String, i64>,
    printed: &[HashMap<String, i64>],
    follower_of: &HashMap<u16, usize>,
) -> Measured {
    let ms = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let us_ms = |us: i64| us as f64 / 1000.0;
    let deliveries = trace["deliveries"].as_array().cloned().unwrap_or_default();
    let mut segments: Vec<Segment> = SEGMENTS.iter().map(|_| Segment::default()).collect();
    let mut not_pushed = 0;
    for line in trace["lines"].as_array().into_iter().flatten() {
        let event_id = line["event_id"].as_str().unwrap_or_default();
        let Some(&wrote) = written.get(event_id) else {
            continue;
        };
        let Some(d) = line["delivery"]
            .as_u64()
            .and_then(|i| deliveries.get(i as usize))
        else {
            continue;
        };
        let (made, begun, took) = (
            ms(&d["made_ms"]),
            ms(&d["invoked_ms"]),
            ms(&d["started_ms"]),
        );
        segments[0].add(made - us_ms(wrote));
        segments[1].add(begun - made);
        segments[3].add(took - begun);
        // The first push of the forwarder to each follower's connection.
        let mut pushed: HashMap<usize, (f64, f64)> = HashMap::new();
        for p in line["pushes"].as_array().into_iter().flatten() {
            if p["function"] != d["function"] {
                continue;
            }
            let port = p["peer_port"].as_u64().unwrap_or(0) as u16;
            if let Some(&f) = follower_of.get(&port) {
                pushed
                    .entry(f)
                    .or_insert((ms(&p["at_ms"]), ms(&p["moto_ms"])));
            }
        }
        for (f, seen) in printed.iter().enumerate() {
            let Some(&at) = seen.get(event_id) else {
                continue;
            };
            segments[7].add(us_ms(at - wrote));
            match pushed.get(&f) {
                Some(&(left, moto)) => {
                    segments[2].add(left - begun);
                    segments[4].add(moto);
                    segments[5].add(left - begun - moto);
                    segments[6].add(us_ms(at) - left);
                }
                None => not_pushed += 1,
            }
        }
    }
    // Mean moto time a delivery spends per call.
    let mut by_op: HashMap<String, (f64, f64)> = HashMap::new();
    let traced: Vec<&Value> = deliveries
        .iter()
        .filter(|d| d["ended_ms"].is_number())
        .collect();
    for d in &traced {
        for (op, v) in d["moto_by_op"].as_object().into_iter().flatten() {
            let e = by_op.entry(op.clone()).or_default();
            e.0 += ms(&v["ms"]);
            e.1 += v["calls"].as_f64().unwrap_or(0.0);
        }
    }
    let n = traced.len().max(1) as f64;
    let mut moto_by_op: Vec<(String, f64, f64)> = by_op
        .into_iter()
        .map(|(op, (total, calls))| (op, total / n, calls / n))
        .collect();
    moto_by_op.sort_by(|a, b| b.1.total_cmp(&a.1));
    Measured {
        followers,
        segments,
        not_pushed,
        moto_by_op,
        dropped: trace["dropped"].as_u64().unwrap_or(0),
    }
}

fn report(runs: &[Measured]) {
    println!(
        "{LINES} lines of one execution, written one at a time {} ms apart, each followed by \
         `runvoy logs --json`; test-profile x86_64 function binaries on moto, which serves one \
         request at a time. Per line for the sim's steps, per line and follower for the rest; \
         milliseconds.\n",
        GAP.as_millis()
    );
    println!("| followers | segment | samples | p50 | p99 | max |");
    println!("|---:|---|---:|---:|---:|---:|");
    for r in runs {
        for (name, s) in SEGMENTS.iter().zip(&r.segments) {
            let (n, p50, p99, max) = s.summary();
            println!(
                "| {} | {name} | {n} | {p50:.1} | {p99:.1} | {max:.1} |",
                r.followers
            );
        }
    }
    println!();
    for r in runs {
        let (_, _, p99, _) = r.segments[2].summary();
        let (_, _, p99_own, _) = r.segments[5].summary();
        let (_, p50_moto, _, _) = r.segments[4].summary();
        let (_, p50_share, _, _) = r.segments[2].summary();
        println!(
            "{} follower{}: the project's share p99 {p99:.1} ms, target ≤ {TARGET_P99_MS:.0} ms: {}; \
             {p99_own:.1} ms without moto ({}); moto is {:.0} % of the median share. \
             Moto per delivery (mean): {}.{}{}\n",
            r.followers,
            if r.followers == 1 { "" } else { "s" },
            if p99 <= TARGET_P99_MS {
                "met"
            } else {
                "not met"
            },
            if p99_own <= TARGET_P99_MS {
                "met"
            } else {
                "not met"
            },
            100.0 * p50_moto / p50_share,
            r.moto_by_op
                .iter()
                .map(|(op, ms, calls)| format!("{op} {ms:.1} ms in {calls:.1} calls"))
                .collect::<Vec<_>>()
                .join(", "),
            if r.not_pushed > 0 {
                format!(
                    " {} line-follower pairs printed without a push from the forwarder (not in the share).",
                    r.not_pushed
                )
            } else {
                String::new()
            },
            if r.dropped > 0 {
                format!(" The trace dropped {} records.", r.dropped)
            } else {
                String::new()
            },
        );
    }
}
