//! Benchmarks through real processes and sockets: the CLI into a pipe, ingest→stdout latency on
//! the local stack, and the functions' artifacts and start-up.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runvoy_core::function::Function;
use runvoy_local::{LocalConfig, LocalStack};
use serde_json::{Value, json};

pub(crate) fn bin(name: &str) -> String {
    std::env::var(format!("RUNVOY_BENCH_{}", name.to_uppercase())).unwrap_or_else(|_| {
        // The functions as deployed (profile `lambda`); the CLI as users build it.
        let profile = if name == "runvoy" {
            "release"
        } else {
            "lambda"
        };
        format!("target/{profile}/{name}")
    })
}

/// A local stack on a state directory of its own, removed when the [`StateDir`] is dropped
/// (a million-line backlog leaves a few hundred MB).
async fn stack(tag: &str) -> (LocalStack, StateDir) {
    let dir = std::env::temp_dir().join(runvoy_aws::testkit::unique(tag));
    let stack = LocalStack::start(LocalConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        state_dir: dir.clone(),
        ..LocalConfig::default()
    })
    .await
    .unwrap();
    (stack, StateDir(dir))
}

struct StateDir(std::path::PathBuf);

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn post(s: &LocalStack, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", s.http_url()))
        .header("X-API-Key", &s.api_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn last_index(s: &LocalStack, id: &str) -> u64 {
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/executions/{id}", s.http_url()))
        .header("X-API-Key", &s.api_key)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    v["last_index"].as_u64().unwrap_or(0)
}

/// Writes `n` lines of ~60 bytes into an execution and waits until all are committed.
async fn backlog(s: &LocalStack, id: &str, n: usize) {
    for start in (0..n).step_by(10_000) {
        let events: Vec<Value> = (start..(start + 10_000).min(n))
            .map(|i| json!({"message": format!("{i:09} the quick brown fox jumps over the lazy dog")}))
            .collect();
        post(
            s,
            &format!("/local/v1/streams/{id}/events"),
            json!({ "events": events }),
        )
        .await;
    }
    while last_index(s, id).await < n as u64 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    post(
        s,
        &format!("/api/v1/executions/{id}/complete"),
        json!({"status": "SUCCEEDED"}),
    )
    .await;
}

/// Fetches the backlog's dense pages of 25,000 lines one after another, as the CLI asks for
/// them, reading only each page's JSON line; returns (seconds, bytes fetched).
async fn pages_only(s: &LocalStack, id: &str, n: usize) -> (f64, usize) {
    let http = reqwest::Client::new();
    let start = Instant::now();
    let mut fetched = 0usize;
    let mut since = 0u64;
    loop {
        let body = http
            .get(format!(
                "{}/api/v1/executions/{id}/logs?since_index={since}&limit=25000",
                s.http_url()
            ))
            .header("X-API-Key", &s.api_key)
            .header("Accept", runvoy_core::lines::LINES_CONTENT_TYPE)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        fetched += body.len();
        // The page's JSON is its last line.
        let json = body[..body.len() - 1]
            .rsplit(|b| *b == b'\n')
            .next()
            .unwrap();
        let page: Value = serde_json::from_slice(json).unwrap();
        let last = page["last_index"].as_u64().unwrap();
        assert!(last > since, "page after {since}: {page}");
        since = last;
        if page["has_more"] != true {
            break;
        }
    }
    assert_eq!(since, n as u64, "every line fetched");
    (start.elapsed().as_secs_f64(), fetched)
}

/// Runs a command with stdout into a pipe we drain; returns (seconds, bytes, lines, peak RSS KB).
fn drain(mut cmd: Command) -> (f64, usize, usize, Option<u64>) {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let (mut bytes, mut lines) = (0usize, 0usize);
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        bytes += n;
        lines += buf[..n].iter().filter(|b| **b == b'\n').count();
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    child.wait().unwrap();
    let secs = start.elapsed().as_secs_f64();
    let rss = err.lines().last().and_then(|l| l.trim().parse().ok());
    (secs, bytes, lines, rss)
}

fn timed(program: &str, args: &[&str], s: &LocalStack) -> Command {
    let mut c = Command::new("/usr/bin/time");
    c.args(["-f", "%M", program])
        .args(args)
        .env("RUNVOY_API_URL", s.http_url())
        .env("RUNVOY_API_KEY", &s.api_key);
    c
}

/// Runs of each program in `bench client`, taken in turn (runvoy, the server alone, cat) so
/// that a busy spell of the shared machine falls on all three; the median is reported.
const CLIENT_RUNS: usize = 7;

/// The median and the range of `secs`.
fn spread(secs: &mut [f64]) -> (f64, f64, f64) {
    secs.sort_by(f64::total_cmp);
    (secs[secs.len() / 2], secs[0], secs[secs.len() - 1])
}

pub async fn client() {
    println!("## Client: the CLI into a pipe, next to cat of the same bytes\n");
    println!(
        "| backlog lines | program | seconds (median of {CLIENT_RUNS}) | fastest–slowest | lines/s | MB/s | peak RSS (KB) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let (s, _dir) = stack("bench-client").await;
    let mut ratios = Vec::new();
    for n in [100_000usize, 1_000_000] {
        let id = format!("backlog-{n}");
        backlog(&s, &id, n).await;
        // For `perf record`: keep the stack with its million-line backlog up for an hour.
        if std::env::var_os("RUNVOY_BENCH_HOLD").is_some() && n == 1_000_000 {
            eprintln!("holding: {} {} {id}", s.http_url(), s.api_key);
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let file = std::env::temp_dir().join(format!("runvoy-bench-{n}.txt"));
        let body: String = (0..n)
            .map(|i| format!("{i:09} the quick brown fox jumps over the lazy dog\n"))
            .collect();
        std::fs::write(&file, body).unwrap();
        let runvoy = bin("runvoy");
        let (mut ours, mut server, mut cat) = (Vec::new(), Vec::new(), Vec::new());
        let (mut bytes, mut fetched, mut rss, mut cat_rss) = (0, 0, 0, 0);
        for _ in 0..CLIENT_RUNS {
            let (secs, b, lines, r) = tokio::task::block_in_place(|| {
                drain(timed(&runvoy, &["logs", &id, "--no-follow"], &s))
            });
            assert_eq!(lines, n, "the CLI printed every line");
            (bytes, rss) = (b, rss.max(r.unwrap_or(0)));
            ours.push(secs);
            // The server alone: every page fetched over one connection, not decoded.
            let (secs, f) = pages_only(&s, &id, n).await;
            fetched = f;
            server.push(secs);
            // The same bytes through cat.
            let (secs, b, lines, r) =
                tokio::task::block_in_place(|| drain(timed("cat", &[file.to_str().unwrap()], &s)));
            assert_eq!((b, lines), (bytes, n), "cat printed the same bytes");
            cat_rss = cat_rss.max(r.unwrap_or(0));
            cat.push(secs);
        }
        let rows = [
            ("runvoy logs", spread(&mut ours), bytes, rss.to_string()),
            (
                "HTTP dense pages only (server, not decoded)",
                spread(&mut server),
                fetched,
                String::new(),
            ),
            ("cat", spread(&mut cat), bytes, cat_rss.to_string()),
        ];
        let _ = std::fs::remove_file(&file);
        for (program, (median, fastest, slowest), b, rss) in &rows {
            println!(
                "| {n} | {program} | {median:.3} | {fastest:.3}–{slowest:.3} | {:.0} | {:.1} | {rss} |",
                n as f64 / median,
                *b as f64 / median / 1e6,
            );
        }
        ratios.push((n, rows[2].1.0 / rows[0].1.0));
    }
    println!();
    for (n, ratio) in ratios {
        println!("{n} lines: runvoy logs at {ratio:.2}× the speed of cat (medians).");
    }
    println!();
    s.stop().await;
}

pub async fn latency() {
    println!("## Ingest → stdout latency on the local stack\n");
    println!("| followers | lines | samples | p50 (ms) | p99 (ms) | max (ms) |");
    println!("|---|---|---|---|---|---|");
    for followers in [1usize, 100] {
        let (s, _dir) = stack("bench-latency").await;
        let id = format!("latency-{followers}");
        post(
            &s,
            &format!("/local/v1/streams/{id}/events"),
            json!({"events": [{"message": "start"}]}),
        )
        .await;
        while last_index(&s, &id).await < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let samples = Arc::new(Mutex::new(Vec::new()));
        let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut children = Vec::new();
        for _ in 0..followers {
            let mut child = Command::new(bin("runvoy"))
                .args(["logs", &id, "--json"])
                .env("RUNVOY_API_URL", s.http_url())
                .env("RUNVOY_API_KEY", &s.api_key)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let out = child.stdout.take().unwrap();
            let (samples, ready) = (samples.clone(), ready.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { return };
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as i64;
                    let v: Value = serde_json::from_str(&line).unwrap();
                    if v["message"] == "start" {
                        ready.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    } else {
                        samples
                            .lock()
                            .unwrap()
                            .push(now - v["timestamp"].as_i64().unwrap());
                    }
                }
            });
            children.push(child);
        }
        while ready.load(std::sync::atomic::Ordering::SeqCst) < followers {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let every follower finish subscribing before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let total = 200;
        for i in 0..total {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            post(
                &s,
                &format!("/local/v1/streams/{id}/events"),
                json!({"events": [{"message": format!("L{i}"), "timestamp": now}]}),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        post(
            &s,
            &format!("/api/v1/executions/{id}/complete"),
            json!({"status": "SUCCEEDED"}),
        )
        .await;
        for mut c in children {
            let _ = tokio::task::block_in_place(|| c.wait());
        }
        let mut v = samples.lock().unwrap().clone();
        v.sort_unstable();
        let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
        println!(
            "| {followers} | {total} | {} | {} | {} | {} |",
            v.len(),
            pct(0.5),
            pct(0.99),
            v.last().unwrap()
        );
        s.stop().await;
    }
    println!();
}

pub async fn functions() {
    // `deploy build --env <env> --artifacts DIR` writes them; RUNVOY_BENCH_ZIPS=DIR.
    let zips = std::env::var("RUNVOY_BENCH_ZIPS").unwrap_or_else(|_| "target/lambda-arm64".into());
    println!("## Functions: arm64 zip size (profile `lambda`, from {zips})\n");
    println!("| function | bootstrap.zip (bytes) |");
    println!("|---|---|");
    for f in Function::ALL.map(Function::name) {
        let path = format!("{zips}/{f}/bootstrap.zip");
        match std::fs::metadata(&path) {
            Ok(m) => println!("| {f} | {} |", m.len()),
            Err(_) => {
                println!("| {f} | not built (run `cargo run -p deploy -- build --env <env>`) |")
            }
        }
    }
    println!();
    println!(
        "## Functions: process start to ready (x86_64 binary of profile `lambda`, until it asks the Runtime API for work)\n"
    );
    println!("| function | runs | median (ms) | max (ms) |");
    println!("|---|---|---|---|");
    let moto = runvoy_aws::testkit::moto_endpoint();
    for f in Function::ALL.map(Function::name) {
        let program = bin(f);
        if !std::path::Path::new(&program).exists() {
            println!("| {f} | 0 | not built (cargo build --profile lambda -p {f}) | |");
            continue;
        }
        let mut times = Vec::new();
        for _ in 0..10 {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let start = Instant::now();
            let mut child = Command::new(&program)
                .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
                .env("AWS_LAMBDA_FUNCTION_NAME", f)
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
                .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_ENDPOINT_URL", &moto)
                .env("RUNVOY_LOGS_TABLE", "t")
                .env("RUNVOY_CONNECTIONS_TABLE", "c")
                .env("RUNVOY_LOG_GROUP", "/g")
                .env("RUNVOY_WEBSOCKET_ENDPOINT", &moto)
                .env("RUNVOY_SECRET_ARN", secret_arn().await)
                .env("RUNVOY_TOKEN_SECRET_ARN", secret_arn().await)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            listener.set_nonblocking(false).unwrap();
            let accepted = tokio::task::block_in_place(|| listener.accept());
            let elapsed = start.elapsed().as_secs_f64() * 1000.0;
            let _ = child.kill();
            let _ = child.wait();
            if accepted.is_ok() {
                times.push(elapsed);
            }
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "| {f} | {} | {:.1} | {:.1} |",
            times.len(),
            times[times.len() / 2],
            times.last().unwrap()
        );
    }
    println!();
}

/// A secret in moto shaped like the stack's, for the functions that read it at start.
async fn secret_arn() -> String {
    static ARN: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    ARN.get_or_init(|| async {
        let sdk = runvoy_aws::testkit::sdk_config().await;
        let out = aws_sdk_secretsmanager::Client::new(&sdk)
            .create_secret()
            .name(runvoy_aws::testkit::unique("bench-secret"))
            .secret_string(
                r#"{"api_keys":["0123456789abcdef0123"],"token_secret":"0123456789abcdef0123"}"#,
            )
            .send()
            .await
            .unwrap();
        out.arn().unwrap().to_string()
    })
    .await
    .clone()
}

/// The log page in headless Chromium opening a finished execution of `n` lines: time until
/// every line is loaded, JavaScript heap after a garbage collection, DOM size, and a jump to
/// the middle.
pub async fn web() {
    println!("## Web page: a late open of a long execution in headless Chromium\n");
    println!(
        "| lines | load to last line (s) | lines/s | JS heap used (MB) | DOM elements | rows in DOM | jump to #L{{n/2}} (ms) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for n in [100_000usize, 1_000_000] {
        let (s, _dir) = stack("bench-web").await;
        let id = format!("web-{n}");
        backlog(&s, &id, n).await;
        let browser =
            StateDir(std::env::temp_dir().join(runvoy_aws::testkit::unique("bench-web-browser")));
        std::fs::create_dir_all(&browser.0).unwrap();
        let b = runvoy_webdriver::Browser::start(&browser.0).await;
        // The key, as the page keeps it, then the page itself.
        b.goto(&format!("{}/", s.http_url())).await;
        b.script(
            "localStorage.setItem('runvoy.apiKey', arguments[0])",
            vec![json!(s.api_key)],
        )
        .await;
        let started = Instant::now();
        b.goto(&format!("{}/executions/{id}", s.http_url())).await;
        b.wait_for(
            "every line",
            &format!("return document.body.dataset.last === '{n}' && document.body.dataset.status"),
            Duration::from_secs(900),
        )
        .await;
        let load = started.elapsed().as_secs_f64();
        let v = b
            .script(
                "window.gc(); return { heap: performance.memory.usedJSHeapSize, \
                   elements: document.getElementsByTagName('*').length, \
                   rows: document.querySelectorAll('#log .line').length }",
                vec![],
            )
            .await;
        let jump = Instant::now();
        b.script(&format!("location.hash = '#L{}'", n / 2), vec![])
            .await;
        b.wait_for(
            "the middle line",
            &format!(
                "return !!document.querySelector(\"#log .line.hl[data-line='{}']\")",
                n / 2
            ),
            Duration::from_secs(60),
        )
        .await;
        let jump_ms = jump.elapsed().as_secs_f64() * 1000.0;
        println!(
            "| {n} | {load:.1} | {:.0} | {:.1} | {} | {} | {jump_ms:.0} |",
            n as f64 / load,
            v["heap"].as_f64().unwrap_or(0.0) / 1e6,
            v["elements"],
            v["rows"],
        );
        // The browser ends before its profile directory goes.
        drop(b);
        drop(browser);
    }
    println!(
        "\nLines of ~56 bytes from the local stack; the page pages over HTTP (10,000 lines a page), \
         keeps every line as a string and renders only the visible rows.\n"
    );
}
