//! Write request units as DynamoDB bills them, computed from the items each commit writes:
//! every item of a `TransactWriteItems` costs 2 units per started KB.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use runvoy_aws::dynamo::item;
use runvoy_core::ports::{Commit, HeadReader, LogReader, LogWriter};
use runvoy_core::{CommitError, Head, LogEvent, StoreError};

/// Units of one item written in a transaction.
pub fn transactional_units(bytes: usize) -> u64 {
    2 * bytes.div_ceil(1024).max(1) as u64
}

/// Units of one item written with `BatchWriteItem` (the naive design).
pub fn plain_units(bytes: usize) -> u64 {
    bytes.div_ceil(1024).max(1) as u64
}

/// Units a commit costs on DynamoDB with the store's item layout.
pub fn commit_units(c: &Commit) -> u64 {
    let exec = &c.head.execution_id;
    let mut units = transactional_units(item::item_size(&item::head_to_item(&c.head)));
    for e in &c.events {
        let enc = item::encode_event(exec, e, c.head.expires_at);
        units += transactional_units(item::item_size(&enc.item));
        for p in &enc.parts {
            units += transactional_units(item::item_size(p));
        }
        let idem = item::idempotency_item(exec, &e.event_id, e.index, c.head.expires_at);
        units += transactional_units(item::item_size(&idem));
    }
    units
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
        Billed { inner, units: AtomicU64::new(0), commits: AtomicU64::new(0), failed: AtomicU64::new(0) }
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
    async fn known_event_ids(&self, id: &str, ids: &[String]) -> Result<HashSet<String>, StoreError> {
        self.inner.known_event_ids(id, ids).await
    }
    async fn commit(&self, c: Commit) -> Result<(), CommitError> {
        let units = commit_units(&c);
        let r = self.inner.commit(c).await;
        match &r {
            Ok(()) => {
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
    async fn read_range(&self, id: &str, a: u64, t: u64, l: usize) -> Result<Vec<LogEvent>, StoreError> {
        self.inner.read_range(id, a, t, l).await
    }
}
