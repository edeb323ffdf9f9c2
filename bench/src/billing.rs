//! Write request units as DynamoDB bills them, computed from the items each commit writes:
//! every item of a `TransactWriteItems` costs 2 units per started KB.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use runvoy_aws::dynamo::item;
use runvoy_core::ports::{Commit, HeadReader, LogReader, LogWriter};
use runvoy_core::{CommitError, Head, LogEvent, SourceEvent, StoreError};

/// Units of one item written in a transaction.
pub fn transactional_units(bytes: usize) -> u64 {
    2 * bytes.div_ceil(1024).max(1) as u64
}

/// Units of one item written with `BatchWriteItem` (the naive design).
pub fn plain_units(bytes: usize) -> u64 {
    bytes.div_ceil(1024).max(1) as u64
}

/// The naive design's item for one line (no idempotency, one item per line).
pub fn naive_item_bytes(execution_id: &str, message_len: usize) -> usize {
    let mut i = item::Item::new();
    i.insert("execution_id".into(), item::s(execution_id));
    i.insert("log_index".into(), item::n(123_456));
    i.insert("timestamp".into(), item::n(1_764_570_000_000i64));
    i.insert("message".into(), item::s("x".repeat(message_len)));
    i.insert("expires_at".into(), item::n(1_765_000_000i64));
    item::item_size(&i)
}

/// How runs are written: the store's layout (2), or the JSON of layout 1, for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    One,
    Two,
}

/// Units a commit costs with the store's layout: the head, the run (and its parts) and the
/// commit's idempotency records, all `Put`s in one transaction.
pub fn commit_units(c: &Commit) -> u64 {
    commit_units_with(c, Layout::Two)
}

/// Units a commit costs with runs in `layout`.
pub fn commit_units_with(c: &Commit, layout: Layout) -> u64 {
    let exec = &c.head.execution_id;
    let mut units = transactional_units(item::item_size(&item::head_to_item(&c.head)));
    let Some(first) = c.events.first() else {
        return units;
    };
    let run = match layout {
        Layout::One => item::encode_run_layout1(exec, &c.events, c.head.expires_at),
        Layout::Two => item::encode_run(exec, &c.events, c.head.expires_at),
    };
    units += transactional_units(item::item_size(&run.item));
    for p in &run.parts {
        units += transactional_units(item::item_size(p));
    }
    let pairs: Vec<(&str, i64)> = c
        .events
        .iter()
        .map(|e| (e.event_id.as_str(), e.timestamp))
        .collect();
    for r in item::encode_ids(exec, first.index, &pairs, c.head.expires_at) {
        units += transactional_units(item::item_size(&r));
    }
    units
}

/// Units of a commit's idempotency records alone.
pub fn records_units(c: &Commit) -> u64 {
    let Some(first) = c.events.first() else {
        return 0;
    };
    let pairs: Vec<(&str, i64)> = c
        .events
        .iter()
        .map(|e| (e.event_id.as_str(), e.timestamp))
        .collect();
    item::encode_ids(&c.head.execution_id, first.index, &pairs, c.head.expires_at)
        .iter()
        .map(|r| transactional_units(item::item_size(r)))
        .sum()
}

/// Wraps a store, adding up the units of successful commits and counting failed ones.
pub struct Billed<S> {
    pub inner: Arc<S>,
    pub units: AtomicU64,
    pub commits: AtomicU64,
    pub failed: AtomicU64,
}

impl<S> Billed<S> {
    pub fn new(inner: Arc<S>) -> Billed<S> {
        Billed {
            inner,
            units: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl<S: LogWriter + LogReader + 'static> HeadReader for Billed<S> {
    async fn head(&self, id: &str) -> Result<Option<Head>, StoreError> {
        self.inner.head(id).await
    }
}

#[async_trait]
impl<S: LogWriter + LogReader + 'static> LogWriter for Billed<S> {
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
    ) -> Result<HashSet<String>, StoreError> {
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
        let r = self.inner.commit(c.clone()).await;
        match &r {
            Ok(()) => {
                let units = commit_units(&c);
                self.units.fetch_add(units, Ordering::Relaxed);
                self.commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }
}

#[async_trait]
impl<S: LogWriter + LogReader + 'static> LogReader for Billed<S> {
    async fn read_bounded(
        &self,
        id: &str,
        a: u64,
        t: u64,
        l: usize,
        b: usize,
    ) -> Result<Vec<LogEvent>, StoreError> {
        self.inner.read_bounded(id, a, t, l, b).await
    }

    async fn recent(
        &self,
        after: i64,
        before: i64,
        limit: usize,
    ) -> Result<Vec<runvoy_core::ExecutionSummary>, StoreError> {
        self.inner.recent(after, before, limit).await
    }
}
