//! The store conformance suite, unchanged, against DynamoDB on moto; plus the costs of
//! redelivery measured in requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use runvoy_aws::testkit::{sdk_config, unique};
use runvoy_aws::{DynamoConnections, DynamoStore, create_tables};
use runvoy_core::memory::MemoryMetrics;
use runvoy_core::ports::{Commit, HeadReader, LogWriter};
use runvoy_core::services::{Appender, EngineConfig};
use runvoy_core::{CommitError, Head, SourceEvent, StoreError};
use tokio::sync::OnceCell;

static TABLES: OnceCell<(aws_sdk_dynamodb::Client, String, String)> = OnceCell::const_new();

async fn tables() -> &'static (aws_sdk_dynamodb::Client, String, String) {
    TABLES
        .get_or_init(|| async {
            let client = aws_sdk_dynamodb::Client::new(&sdk_config().await);
            let logs = unique("logs");
            let conns = unique("conns");
            create_tables(&client, &logs, &conns).await.unwrap();
            (client, logs, conns)
        })
        .await
}

async fn store() -> Arc<DynamoStore> {
    let (c, logs, _) = tables().await;
    Arc::new(DynamoStore::new(c.clone(), logs.clone()))
}

async fn connections() -> Arc<DynamoConnections> {
    let (c, _, conns) = tables().await;
    Arc::new(DynamoConnections::new(c.clone(), conns.clone()))
}

runvoy_core::store_conformance_suite!(store);
runvoy_core::connection_conformance_suite!(connections);

/// Counts commits and failed commits at the store boundary (each commit is one
/// `TransactWriteItems` request).
struct Counting {
    inner: Arc<DynamoStore>,
    commits: AtomicU64,
    failed: AtomicU64,
    batch_reads: AtomicU64,
}

#[async_trait]
impl HeadReader for Counting {
    async fn head(&self, id: &str) -> Result<Option<Head>, StoreError> {
        self.inner.head(id).await
    }
}

#[async_trait]
impl LogWriter for Counting {
    fn max_events_per_commit(&self) -> usize {
        self.inner.max_events_per_commit()
    }
    fn max_commit_bytes(&self) -> usize {
        self.inner.max_commit_bytes()
    }
    fn commit_spans(&self) -> (i64, usize) {
        self.inner.commit_spans()
    }
    async fn known_event_ids(
        &self,
        id: &str,
        ids: &[SourceEvent],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        self.batch_reads.fetch_add(1, Ordering::Relaxed);
        self.inner.known_event_ids(id, ids).await
    }
    async fn extend_expiry(
        &self,
        execution_id: &str,
        through: u64,
        at_least: i64,
        to: i64,
    ) -> Result<(), StoreError> {
        self.inner
            .extend_expiry(execution_id, through, at_least, to)
            .await
    }

    async fn commit(&self, c: Commit) -> Result<(), CommitError> {
        self.commits.fetch_add(1, Ordering::Relaxed);
        let r = self.inner.commit(c).await;
        if r.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

async fn item_count(exec: &str) -> usize {
    let (c, logs, _) = tables().await;
    let mut total = 0;
    let mut start = None;
    loop {
        let r = c
            .scan()
            .table_name(logs)
            .filter_expression("begins_with(execution_id, :e)")
            .expression_attribute_values(
                ":e",
                aws_sdk_dynamodb::types::AttributeValue::S(exec.into()),
            )
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        total += r.count as usize;
        start = r.last_evaluated_key;
        if start.is_none() {
            return total;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_batch_of_1000_adds_nothing_and_fails_no_transaction() {
    let counting = Arc::new(Counting {
        inner: store().await,
        commits: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        batch_reads: AtomicU64::new(0),
    });
    let clock = Arc::new(runvoy_core::memory::SimClock::new(recent() + 60_000, 1));
    let appender = Appender::new(
        counting.clone(),
        clock,
        Arc::new(MemoryMetrics::new()),
        EngineConfig::default(),
    );
    let exec = runvoy_core::testkit::fresh_id("redeliver");
    let batch: Vec<SourceEvent> = (0..1000)
        .map(|i| SourceEvent {
            event_id: format!("ev{i:04}"),
            timestamp: recent() / 60_000 * 60_000 + i,
            message: format!("line {i}"),
        })
        .collect();
    let first = appender.append(&exec, batch.clone(), None).await.unwrap();
    assert_eq!(first.committed.len(), 1000);
    let items_before = item_count(&exec).await;
    // Head, one run, and one idempotency record (the timestamps fall in one minute).
    assert_eq!(items_before, 1 + 1 + 1);
    let commits_before = counting.commits.load(Ordering::Relaxed);
    let reads_before = counting.batch_reads.load(Ordering::Relaxed);

    let again = appender.append(&exec, batch, None).await.unwrap();
    assert_eq!((again.committed.len(), again.duplicates), (0, 1000));
    assert_eq!(item_count(&exec).await, items_before, "no item added");
    assert_eq!(
        counting.commits.load(Ordering::Relaxed),
        commits_before,
        "no transaction sent"
    );
    assert_eq!(
        counting.failed.load(Ordering::Relaxed),
        0,
        "no transaction failed"
    );
    let reads = counting.batch_reads.load(Ordering::Relaxed) - reads_before;
    assert_eq!(reads, 1, "the redelivery cost one pre-filter lookup");
}

/// Appends `batches` (subscription-sized) with one batch delivered twice, then reads every
/// line back through the reader: each exactly once, in source order.
async fn dense(tag: &str, batches: Vec<Vec<SourceEvent>>) {
    let store = store().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let appender = Appender::new(
        store.clone(),
        // Now: the reader refuses items past their expiry.
        Arc::new(runvoy_core::memory::SimClock::new(now, 1)),
        Arc::new(MemoryMetrics::new()),
        EngineConfig::default(),
    );
    let exec = runvoy_core::testkit::fresh_id(tag);
    let total: usize = batches.iter().map(Vec::len).sum();
    let again = batches[batches.len() / 2].clone();
    for b in batches {
        appender.append(&exec, b, None).await.unwrap();
    }
    let redelivered = appender.append(&exec, again.clone(), None).await.unwrap();
    assert_eq!(
        (redelivered.committed.len(), redelivered.duplicates),
        (0, again.len())
    );
    let head = store.head(&exec).await.unwrap().unwrap();
    assert_eq!(head.last_index, total as u64);
    let mut after = 0;
    while after < head.last_index {
        let page = runvoy_core::ports::LogReader::read_range(
            store.as_ref(),
            &exec,
            after,
            head.last_index,
            10_000,
        )
        .await
        .unwrap();
        for e in &page {
            assert_eq!(e.message, format!("{}", e.index), "index {}", e.index);
        }
        after = page.last().unwrap().index;
    }
}

/// A minute ago: lines older than the retention are not committed.
fn recent() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 60_000
}

/// `n` lines numbered from `from`, as CloudWatch derives their ids, at `timestamp`.
fn numbered(from: usize, n: usize, timestamp: i64) -> Vec<SourceEvent> {
    runvoy_aws::identity::with_ids(
        (from..from + n)
            .map(|i| (timestamp, i.to_string()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_lines_of_one_millisecond_commit_once_in_order() {
    let ts = recent();
    let batches = (0..20)
        .map(|b| numbered(1 + b * 10_000, 10_000, ts))
        .collect();
    dense("dense-ms", batches).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_lines_over_100_milliseconds_commit_once_in_order() {
    let ts = recent();
    let batches = (0..100)
        .map(|ms| numbered(1 + ms * 10_000, 10_000, ts + ms as i64))
        .collect();
    dense("dense-100ms", batches).await;
}

/// Runs written before layout 2 (JSON, plain and gzipped) are read beside new ones: an
/// execution whose first lines are old items and whose next lines were committed now reads
/// whole, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_layout_1_are_read_beside_layout_2() {
    use runvoy_aws::dynamo::item;
    use runvoy_core::ports::LogReader;
    let s = store().await;
    let (c, logs, _) = tables().await;
    let exec = runvoy_core::testkit::fresh_id("layout1");
    let t = recent();
    let old: Vec<runvoy_core::LogEvent> = numbered(0, 2_000, t)
        .into_iter()
        .enumerate()
        .map(|(i, e)| runvoy_core::LogEvent::from_source(1 + i as u64, e))
        .collect();
    let mut head = Head::new(&exec, t, t / 1000 + 86_400);
    head.last_index = old.len() as u64;
    head.version = 2;
    head.last_timestamp = t;
    // Two old runs: a small one (plain JSON) and a large one (gzipped JSON).
    for run in [&old[..3], &old[3..]] {
        let enc = item::encode_run_layout1(&exec, run, head.expires_at);
        assert!(enc.item.contains_key("events") || enc.item.contains_key("events_gz"));
        c.put_item()
            .table_name(logs)
            .set_item(Some(enc.item))
            .send()
            .await
            .unwrap();
    }
    c.put_item()
        .table_name(logs)
        .set_item(Some(item::head_to_item(&head)))
        .send()
        .await
        .unwrap();
    let appender = Appender::new(
        s.clone(),
        Arc::new(runvoy_core::memory::SimClock::new(t + 60_000, 1)),
        Arc::new(MemoryMetrics::new()),
        EngineConfig::default(),
    );
    appender
        .append(&exec, numbered(2_000, 10, t + 1), None)
        .await
        .unwrap();
    let read = s
        .read_bounded(&exec, 0, 2_010, 10_000, usize::MAX)
        .await
        .unwrap();
    assert_eq!(read.len(), 2_010);
    assert!(
        read.iter()
            .enumerate()
            .all(|(i, e)| e.index == 1 + i as u64)
    );
    assert_eq!(&read[..2_000], &old[..]);
    assert_eq!(read[2_000].event_id, numbered(2_000, 1, t + 1)[0].event_id);
}
