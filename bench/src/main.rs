//! `cargo run --release -p runvoy-bench -- [append|density|fanout|framing|client|latency|functions|web|cost|all]`:
//! prints the tables of docs/performance.md. Not a test: numbers, not assertions.
//! `latency --env sim` measures the latency on the sim instead of the local stack.

mod billing;
mod corpus;
mod cost;
mod e2e;
mod latency_sim;
mod prices;
mod sim;

use std::sync::Arc;
use std::time::Instant;

use billing::{Billed, plain_units};
use runvoy_core::memory::{
    MemoryConnections, MemoryMetrics, MemorySource, MemoryStore, RecordingPusher,
};
use runvoy_core::ports::{LogStore, Metric};
use runvoy_core::services::{Appender, EngineConfig, FanOut, Forwarder};
use runvoy_core::{Connection, SourceEvent};
use runvoy_runtime::SystemClock;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let all = what == "all";
    let args: Vec<String> = std::env::args().skip(2).collect();
    let on_sim = args.windows(2).any(|w| w[0] == "--env" && w[1] == "sim")
        || args.iter().any(|a| a == "--env=sim");
    if all || what == "append" {
        append().await;
    }
    if all || what == "density" {
        density().await;
    }
    if what == "corpora" {
        corpora("##");
    }
    if all || what == "fanout" {
        fanout().await;
    }
    if all || what == "framing" {
        framing();
    }
    if all || what == "client" {
        e2e::client().await;
    }
    if all || (what == "latency" && !on_sim) {
        e2e::latency().await;
    }
    if all || (what == "latency" && on_sim) {
        latency_sim::latency().await;
    }
    if all || what == "functions" {
        e2e::functions().await;
    }
    if all || what == "web" {
        e2e::web().await;
    }
    if all || what == "cost" {
        cost::cost().await;
    }
}

/// What the CLI spends framing a dense page as it arrives (every head checked against the
/// messages, `LinesReader::feed`), next to walking each record of it (`Run::records`, what
/// framing did before), per line; pages of 25,000 lines, as the CLI asks for, hot in cache.
fn framing() {
    use runvoy_core::lines::{LinesReader, RunBuilder, parse_run};
    println!("## Framing a dense page in the CLI\n");
    println!(
        "| lines | bytes a line | frame (ns a line, best of 200) | walk every record (ns a line) |"
    );
    println!("|---|---|---|---|");
    for size in [54, 100, 1000] {
        const N: usize = 25_000;
        let mut run = RunBuilder::default();
        for e in lines(N, size, "framing") {
            run.push(e.timestamp, e.message.as_bytes());
        }
        let meta = runvoy_core::wire::LogsResponse {
            execution_id: "framing".into(),
            status: runvoy_core::Status::Running,
            events: Vec::new(),
            last_index: N as u64,
            has_more: false,
            final_index: None,
            exit_code: None,
            websocket_url: None,
        };
        let page = runvoy_core::lines::body(&meta, run.encoded())
            .unwrap()
            .into_bytes();
        let best = |f: &dyn Fn() -> usize| {
            // Half a second first, so the processor's clock is up before the timed runs.
            let warm = Instant::now();
            while warm.elapsed() < std::time::Duration::from_millis(500) {
                f();
            }
            (0..200)
                .map(|_| {
                    let start = Instant::now();
                    assert_eq!(f(), N);
                    start.elapsed()
                })
                .min()
                .unwrap()
                .as_nanos() as f64
                / N as f64
        };
        let frame = best(&|| {
            let mut reader = LinesReader::default();
            reader.feed(std::hint::black_box(&page));
            reader.finish(&page[..]).unwrap().len()
        });
        let framed = parse_run(&page, 0, 0).unwrap().unwrap();
        let walk = best(&|| framed.records(std::hint::black_box(&page)).count());
        println!(
            "| {N} | {:.0} | {frame:.1} | {walk:.1} |",
            page.len() as f64 / N as f64
        );
    }
    println!();
}

/// Log-like lines of about `size` bytes: words, numbers and ids, so compression sees realistic
/// text (about 3x), not padding.
fn lines(n: usize, size: usize, tag: &str) -> Vec<SourceEvent> {
    use corpus::WORDS;
    let mut state = 0x2545_F491_4F6C_DD1Du64 ^ size as u64;
    // Recent timestamps, one a millisecond: lines older than the retention are refused.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 3_600_000;
    (0..n)
        .map(|i| {
            let mut message = format!("{tag} {i} ");
            while message.len() < size {
                let r = runvoy_core::memory::splitmix64(&mut state);
                if r.is_multiple_of(4) {
                    message.push_str(&format!("{:x} ", r >> 20));
                } else {
                    message.push_str(WORDS[(r % WORDS.len() as u64) as usize]);
                    message.push(' ');
                }
            }
            message.truncate(size);
            SourceEvent {
                event_id: format!("{tag}-{i:08}"),
                timestamp: base + i as i64,
                message,
            }
        })
        .collect()
}

/// An appender on `store`, with the store wrapped to count the write units of its commits.
fn billed_appender<S: LogStore + 'static>(store: Arc<S>) -> (Arc<Billed<S>>, Appender) {
    let billed = Arc::new(Billed::new(store));
    let appender = Appender::new(
        billed.clone(),
        Arc::new(SystemClock),
        Arc::new(MemoryMetrics::new()),
        EngineConfig::default(),
    );
    (billed, appender)
}

/// One cell: `total` lines in batches of `batch`, by `appenders` concurrent appenders.
async fn run_append<S: LogStore + 'static>(
    store: Arc<S>,
    total: usize,
    size: usize,
    batch: usize,
    appenders: usize,
) -> (f64, f64, u64) {
    let (billed, appender) = billed_appender(store);
    let exec = runvoy_core::testkit::fresh_id("bench");
    let all = lines(total, size, &exec);
    let batches: Vec<Vec<SourceEvent>> = all.chunks(batch).map(|c| c.to_vec()).collect();
    let queue = Arc::new(std::sync::Mutex::new(batches));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let (q, a, e) = (queue.clone(), appender.clone(), exec.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let next = q.lock().unwrap().pop();
                let Some(b) = next else { return };
                a.append(&e, b, None).await.expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let units = billed.units.load(std::sync::atomic::Ordering::Relaxed) as f64;
    assert!(
        billed.commits.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "nothing was committed: the lines must be within the retention"
    );
    (
        total as f64 / secs,
        units / total as f64,
        billed.failed.load(std::sync::atomic::Ordering::Relaxed),
    )
}

async fn append() {
    println!("## Append: lines/s and DynamoDB write request units (WRU) per line\n");
    let exec = "3f9c2b7a1d8e4c5b9a0f6e2d1c4b7a89";
    let naive100 = plain_units(billing::naive_item_bytes(exec, 100));
    let naive1k = plain_units(billing::naive_item_bytes(exec, 1024));
    println!(
        "Naive design (one item per line, BatchWriteItem, not exactly-once): {naive100} WRU per 100-byte line, {naive1k} per 1 KB line.\n"
    );
    println!("| store | line | batch | appenders | lines | lines/s | WRU/line | failed commits |");
    println!("|---|---|---|---|---|---|---|---|");
    let sdk = runvoy_aws::testkit::sdk_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let dir = std::env::temp_dir().join(runvoy_aws::testkit::unique("bench-sqlite"));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = Arc::new(runvoy_sqlite::SqliteStore::new(
        runvoy_sqlite::Db::open(&dir.join("b.db")).unwrap(),
    ));
    for size in [100, 1024] {
        for batch in [1, 10, 100, 1000] {
            for appenders in [1, 4, 16] {
                let total = 2_000;
                let (r, u, f) =
                    run_append(Arc::new(MemoryStore::new()), total, size, batch, appenders).await;
                println!(
                    "| memory | {size} B | {batch} | {appenders} | {total} | {r:.0} | {u:.2} | {f} |"
                );
                let (r, u, f) = run_append(sqlite.clone(), total, size, batch, appenders).await;
                println!(
                    "| sqlite | {size} B | {batch} | {appenders} | {total} | {r:.0} | {u:.2} | {f} |"
                );
                // moto copies the whole table on every transaction: a fresh table per cell.
                let total = 100;
                let table = runvoy_aws::testkit::unique("bench-logs");
                let conns = runvoy_aws::testkit::unique("bench-conns");
                runvoy_aws::create_tables(&dynamo, &table, &conns)
                    .await
                    .unwrap();
                let store = Arc::new(runvoy_aws::DynamoStore::new(dynamo.clone(), table));
                let (r, u, f) = run_append(store, total, size, batch.min(total), appenders).await;
                println!(
                    "| dynamodb (moto) | {size} B | {batch} | {appenders} | {total} | {r:.0} | {u:.2} | {f} |"
                );
            }
        }
    }
    println!();
}

/// Write units per line by burst density (lines sharing one millisecond, as ECS output does),
/// on the DynamoDB store (moto), computed from the items each commit writes.
async fn density() {
    println!("## Write units by burst density (DynamoDB store on moto)\n");
    println!(
        "Lines per millisecond of timestamps; one appender; WRU per line from the items the DynamoDB store writes (head, run and its parts, idempotency records). Target: ≤ 0.2 WRU per 100 B line and ≤ 1.2 per 1 KB line at batches of 100 or more.\n"
    );
    println!("| line | lines/ms | batch | lines | commits | WRU/line | lines/s (moto) |");
    println!("|---|---|---|---|---|---|---|");
    let sdk = runvoy_aws::testkit::sdk_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    for size in [100, 1024] {
        for per_ms in [1usize, 100, 1_000, 10_000] {
            for batch in [1usize, 100, 1_000, 10_000] {
                let total = if batch == 1 { 200 } else { 20_000 };
                let table = runvoy_aws::testkit::unique("bench-density");
                let conns = runvoy_aws::testkit::unique("bench-density-conns");
                runvoy_aws::create_tables(&dynamo, &table, &conns)
                    .await
                    .unwrap();
                let store = Arc::new(runvoy_aws::DynamoStore::new(dynamo.clone(), table));
                let (billed, appender) = billed_appender(store);
                let exec = runvoy_core::testkit::fresh_id("density");
                let mut all = lines(total, size, &exec);
                // `per_ms` lines a millisecond, from the recent start `lines` gives.
                let base = all[0].timestamp;
                for (i, e) in all.iter_mut().enumerate() {
                    e.timestamp = base + (i / per_ms) as i64;
                }
                let start = Instant::now();
                for b in all.chunks(batch) {
                    appender
                        .append(&exec, b.to_vec(), None)
                        .await
                        .expect("append");
                }
                let secs = start.elapsed().as_secs_f64();
                let units = billed.units.load(std::sync::atomic::Ordering::Relaxed) as f64;
                let commits = billed.commits.load(std::sync::atomic::Ordering::Relaxed);
                println!(
                    "| {size} B | {per_ms} | {batch} | {total} | {commits} | {:.3} | {:.0} |",
                    units / total as f64,
                    total as f64 / secs
                );
            }
        }
    }
    println!();
    corpora("###");
}

/// Write units per line of each corpus, for runs in layout 1 (JSON, gzipped) and layout 2
/// (columns, derived ids not stored, deflated): the items of each commit as the DynamoDB
/// store writes them (head, run and parts, idempotency records; 2 units per started KB in a
/// transaction), computed without a store. Ids as the forwarder derives them; ten lines a
/// millisecond; commits as the DynamoDB store bounds them (2,000 lines, 200 KB of text).
fn corpora(heading: &str) {
    use billing::{Layout, commit_units_with};
    use runvoy_core::ports::Commit;
    println!("{heading} Write units per line by corpus and run layout (computed from the items)\n");
    println!(
        "Each corpus 20,000 lines, 10 a millisecond, ids as the forwarder derives them; WRU from the items of each commit (head, run and parts, idempotency records). Target: ≤ 0.03 WRU per 100 B of text at batches of 1,000 or more.\n"
    );
    println!(
        "| corpus | bytes a line | batch | layout 1 WRU/line | layout 2 WRU/line | layout 2 WRU per 100 B | of which idempotency records |"
    );
    println!("|---|---|---|---|---|---|---|");
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 3_600_000;
    for kind in corpus::KINDS {
        let text = corpus::lines(kind, 20_000);
        let avg = text.iter().map(String::len).sum::<usize>() as f64 / text.len() as f64;
        let events = runvoy_aws::identity::with_ids(
            text.into_iter()
                .enumerate()
                .map(|(i, m)| (base + i as i64 / 10, m))
                .collect(),
        );
        for batch in [100usize, 1_000, 10_000] {
            let (mut one, mut two, mut records) = (0u64, 0u64, 0u64);
            let mut head = runvoy_core::Head::new("corpus-exec-0001", base, base / 1000 + 604_800);
            for delivered in events.chunks(batch) {
                for commit in commits_of(delivered) {
                    let first = head.last_index + 1;
                    let committed: Vec<runvoy_core::LogEvent> = commit
                        .iter()
                        .enumerate()
                        .map(|(i, e)| {
                            runvoy_core::LogEvent::from_source(first + i as u64, e.clone())
                        })
                        .collect();
                    head.last_index += committed.len() as u64;
                    head.version += 1;
                    let c = Commit {
                        expected_version: Some(head.version - 1),
                        head: head.clone(),
                        events: committed,
                    };
                    one += commit_units_with(&c, Layout::One);
                    two += commit_units_with(&c, Layout::Two);
                    records += billing::records_units(&c);
                }
            }
            let n = events.len() as f64;
            println!(
                "| {kind} | {avg:.0} | {batch} | {:.3} | {:.3} | {:.3} | {:.3} |",
                one as f64 / n,
                two as f64 / n,
                two as f64 / n * 100.0 / avg,
                records as f64 / n
            );
        }
    }
    println!();
}

/// A delivered batch split as the DynamoDB store bounds a commit: 2,000 lines, 200,000 bytes
/// of text (a larger line goes alone).
fn commits_of(batch: &[SourceEvent]) -> Vec<&[SourceEvent]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, e) in batch.iter().enumerate() {
        let full = i - start == 2_000 || (i > start && bytes + e.message.len() > 200_000);
        if full {
            out.push(&batch[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += e.message.len();
    }
    if start < batch.len() {
        out.push(&batch[start..]);
    }
    out
}

async fn fanout() {
    println!("## Fan-out: WebSocket messages per line and bytes per message\n");
    println!(
        "| connections | lines | batch | messages | messages per line per connection | bytes per message |"
    );
    println!("|---|---|---|---|---|---|");
    for conns in [1usize, 100, 1_000] {
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
        let connections = Arc::new(MemoryConnections::new());
        let pusher = Arc::new(RecordingPusher::new());
        let metrics = Arc::new(MemoryMetrics::new());
        let appender = Appender::new(
            store.clone(),
            Arc::new(SystemClock),
            metrics.clone(),
            EngineConfig::default(),
        );
        let fanout = FanOut::new(
            store.clone(),
            connections.clone(),
            pusher.clone(),
            metrics.clone(),
            Arc::new(runvoy_runtime::SystemClock),
        );
        let forwarder = Forwarder::new(appender, fanout, metrics.clone());
        let exec = "fanout";
        let _ = MemorySource::new(1);
        for c in 0..conns {
            use runvoy_core::ports::ConnectionStore;
            connections
                .put(Connection {
                    connection_id: format!("c{c}"),
                    execution_id: exec.into(),
                    cursor: 0,
                    connected_at: 0,
                    expires_at: i64::MAX,
                    resumed_at: 0,
                })
                .await
                .unwrap();
        }
        let total = 1_000;
        let batch = 10;
        for chunk in lines(total, 100, exec).chunks(batch) {
            forwarder.forward(exec, chunk.to_vec()).await.unwrap();
        }
        let mut bytes = 0usize;
        let mut msgs = 0usize;
        for c in 0..conns {
            for m in pusher.take(&format!("c{c}")) {
                bytes += m.len();
                msgs += 1;
            }
        }
        assert_eq!(msgs as u64, metrics.get(Metric::PushesSent));
        println!(
            "| {conns} | {total} | {batch} | {msgs} | {:.3} | {} |",
            msgs as f64 / (total * conns) as f64,
            bytes / msgs.max(1)
        );
    }
    println!();
}
