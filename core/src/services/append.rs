//! The index engine: commits source events exactly once (I2) at contiguous indexes (I1), in
//! timestamp order within a batch, stable for lines of one millisecond (I4), with optimistic retries on the head (I7).

use std::collections::HashSet;
use std::sync::Arc;

use crate::error::{CommitError, CoreError, StoreError};
use crate::model::{Head, LogEvent, SourceEvent};
use crate::ports::{Clock, Commit, LogWriter, Metric, Metrics};

/// Tunables of the engine; the defaults are what production uses.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Seconds a stored item lives after the last write to its execution (I8). Default 7 days.
    pub retention_secs: i64,
    /// Conflicting attempts per commit before the append gives up (and the invocation fails so
    /// that AWS retries it).
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// How long one commit keeps retrying while the store throttles it (one execution is one
    /// DynamoDB partition: 1,000 write units a second). A burst above the ceiling slows the
    /// writer down for this long before the append fails; below the forwarder's timeout.
    pub throttle_patience_ms: i64,
    /// The longest wait between throttled attempts: the partition's units refill every
    /// second, so a short wait finds some again.
    pub throttle_backoff_max_ms: u64,
    /// How long after an execution stopped a line written before the stop may still become
    /// readable in the source (CloudWatch's ingestion delay): completion re-reads the source
    /// only from then on. 0 for a source without delay (the local one).
    pub completion_grace_ms: i64,
    /// Seconds log items are written to outlive the head's expiry at the time (I8): an
    /// execution running longer than this has its items' expiry raised once per this much
    /// time, and its lines are deleted at most this long after the head. Default one day.
    pub expiry_allowance_secs: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            retention_secs: 7 * 24 * 3600,
            max_attempts: 64,
            backoff_base_ms: 5,
            backoff_max_ms: 1_000,
            throttle_patience_ms: 40_000,
            throttle_backoff_max_ms: 250,
            completion_grace_ms: 0,
            expiry_allowance_secs: 86_400,
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Events committed by this call, ascending by index.
    pub committed: Vec<LogEvent>,
    /// Events dropped because they were already committed.
    pub duplicates: usize,
    /// The head after this call's last commit (`None` when it committed nothing).
    pub head: Option<Head>,
}

/// Appends batches of source events to an execution.
#[derive(Clone)]
pub struct Appender {
    store: Arc<dyn LogWriter>,
    clock: Arc<dyn Clock>,
    metrics: Arc<dyn Metrics>,
    config: EngineConfig,
}

impl Appender {
    pub fn new(
        store: Arc<dyn LogWriter>,
        clock: Arc<dyn Clock>,
        metrics: Arc<dyn Metrics>,
        config: EngineConfig,
    ) -> Appender {
        Appender {
            store,
            clock,
            metrics,
            config,
        }
    }

    pub fn store(&self) -> &Arc<dyn LogWriter> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn expiry_from_now(&self) -> i64 {
        self.clock.now_ms() / 1000 + self.config.retention_secs
    }

    /// Commits the events of one delivered batch that are not committed yet. `cursor`, when
    /// given, is stored in the head with the batch's last commit (reconciliation progress), and
    /// also creates the head of an execution that has no events yet.
    pub async fn append(
        &self,
        execution_id: &str,
        mut events: Vec<SourceEvent>,
        cursor: Option<Progress>,
    ) -> Result<AppendOutcome, CoreError> {
        // Lines older than the retention: their idempotency records (kept as long as the
        // retention from their own time at least) may be gone, so committing them could commit
        // them twice, and stored they would expire at once (I8). Counted, never committed.
        let before = events.len();
        events.retain(|e| !self.is_past_retention(e.timestamp));
        if events.len() < before {
            self.metrics
                .incr(Metric::ExpiredEvents, (before - events.len()) as u64);
        }
        // I4: timestamp order, and lines of one millisecond in the order the source gave them
        // (a stable sort: never by id, which may be a digest).
        events.sort_by_key(|e| e.timestamp);
        let before = events.len();
        let mut seen = HashSet::new();
        events.retain(|e| seen.insert(e.event_id.clone()));
        let mut outcome = AppendOutcome {
            duplicates: before - events.len(),
            ..AppendOutcome::default()
        };

        // Pre-filter known duplicates with a read, so a redelivered batch costs reads rather
        // than failed transactions.
        if !events.is_empty() {
            let before = events.len();
            let known = self.store.known_event_ids(execution_id, &events).await?;
            if !known.is_empty() {
                events.retain(|e| !known.contains(&e.event_id));
                outcome.duplicates += before - events.len();
            }
        }

        let chunks = chunk(
            events,
            Limits {
                events: self.store.max_events_per_commit().max(1),
                bytes: self.store.max_commit_bytes(),
                spans: self.store.commit_spans(),
            },
        );
        let last_chunk = chunks.len() - 1;
        // The patience with throttling is the batch's, not each commit's: a batch of several
        // commits must not wait several times as long as its invocation may run.
        let mut throttled = Throttled::default();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let chunk_cursor = if i == last_chunk {
                cursor.clone()
            } else {
                None
            };
            self.commit_chunk(
                execution_id,
                chunk,
                chunk_cursor,
                &mut outcome,
                &mut throttled,
            )
            .await?;
        }
        Ok(outcome)
    }

    async fn commit_chunk(
        &self,
        execution_id: &str,
        mut pending: Vec<SourceEvent>,
        cursor: Option<Progress>,
        outcome: &mut AppendOutcome,
        throttled: &mut Throttled,
    ) -> Result<(), CoreError> {
        let mut attempt = 0u32;
        loop {
            let current = self.store.head(execution_id).await?;
            let cursor_changes = match (&cursor, &current) {
                (Some(c), Some(h)) => !c.is_saved_in(h),
                (Some(_), None) => true,
                (None, _) => false,
            };
            if pending.is_empty() && !cursor_changes {
                return Ok(());
            }
            let expected = current.as_ref().map(|h| h.version);
            let now = self.clock.now_ms();
            let mut head =
                current.unwrap_or_else(|| Head::new(execution_id, now, self.expiry_from_now()));
            let terminal = head.status.is_terminal();
            let mut out_of_order = 0u64;
            let mut committed = Vec::with_capacity(pending.len());
            for ev in &pending {
                if ev.timestamp < head.last_timestamp {
                    out_of_order += 1;
                }
                head.last_index += 1;
                head.last_timestamp = head.last_timestamp.max(ev.timestamp);
                committed.push(LogEvent::from_source(head.last_index, ev.clone()));
            }
            if let Some(c) = &cursor {
                c.save_in(&mut head);
            }
            head.version += 1;
            head.updated_at = now;
            head.expires_at = head.expires_at.max(self.expiry_from_now());
            // The lines must outlive the head, and a line stamped ahead of now must keep its
            // idempotency record the retention from its own time.
            let newest = pending
                .iter()
                .map(|e| e.timestamp)
                .max()
                .unwrap_or(now)
                .max(now);
            let before = expected.map_or(0, |_| head.last_index - committed.len() as u64);
            match self
                .keep_items_until(
                    &mut head,
                    before,
                    newest.div_euclid(1000) + self.config.retention_secs,
                )
                .await
            {
                Ok(()) => {}
                Err(CoreError::Store(StoreError::Throttled)) => {
                    // The extension resumes where it stopped.
                    self.metrics.incr(Metric::Throttles, 1);
                    self.wait_throttled(throttled).await?;
                    continue;
                }
                Err(e) => return Err(e),
            }

            let commit = Commit {
                expected_version: expected,
                head: head.clone(),
                events: committed.clone(),
            };
            match self.store.commit(commit).await {
                Ok(()) => {
                    let n = committed.len() as u64;
                    self.metrics.incr(Metric::EventsAppended, n);
                    if out_of_order > 0 {
                        self.metrics.incr(Metric::OutOfOrder, out_of_order);
                    }
                    if terminal && n > 0 {
                        self.metrics.incr(Metric::EventsAfterCompletion, n);
                    }
                    outcome.committed.extend(committed);
                    outcome.head = Some(head);
                    return Ok(());
                }
                Err(CommitError::Duplicate(ids)) => {
                    // Another writer committed some of these events since the pre-filter: drop
                    // them and retry at once with the rest (no backoff, it is progress).
                    let ids: HashSet<String> = ids.into_iter().collect();
                    let before = pending.len();
                    pending.retain(|e| !ids.contains(&e.event_id));
                    let dropped = before - pending.len();
                    outcome.duplicates += dropped;
                    if dropped == 0 {
                        // The store named ids we did not send: re-check them all by reading.
                        let before = pending.len();
                        let known = self.store.known_event_ids(execution_id, &pending).await?;
                        pending.retain(|e| !known.contains(&e.event_id));
                        outcome.duplicates += before - pending.len();
                        self.backoff(execution_id, &mut attempt).await?;
                    }
                }
                Err(CommitError::VersionConflict) => {
                    self.metrics.incr(Metric::TransactionRetries, 1);
                    self.backoff(execution_id, &mut attempt).await?;
                }
                Err(CommitError::Store(StoreError::Throttled)) => {
                    self.metrics.incr(Metric::Throttles, 1);
                    self.wait_throttled(throttled).await?;
                }
                Err(CommitError::Store(e)) => {
                    self.metrics.incr(Metric::AppendFailures, 1);
                    return Err(e.into());
                }
            }
        }
    }

    /// Makes sure every item of `head`'s execution up to `through` lives until `until` (unix
    /// seconds) at least: when the items' floor is earlier, raises every item's expiry to
    /// `until` plus the allowance first, and records the new floor in `head` (whose commit
    /// then writes its own items with it). Executions shorter than the allowance never need
    /// it; a longer one pays a rewrite of its items once per allowance.
    pub async fn keep_items_until(
        &self,
        head: &mut Head,
        through: u64,
        until: i64,
    ) -> Result<(), CoreError> {
        let until = until.max(head.expires_at);
        let floor = head.items_floor(self.config.retention_secs);
        let raised = until + self.config.expiry_allowance_secs;
        if head.items_expire_at.is_some() && floor >= until {
            return Ok(());
        }
        if through == 0 {
            // No items yet: the first ones are written with the allowance.
            head.items_expire_at = Some(raised);
            return Ok(());
        }
        if floor >= until {
            // A head from before the floor was kept, whose items still outlive it.
            head.items_expire_at = Some(floor);
            return Ok(());
        }
        // Items already extended past `until` (an earlier, interrupted extension) are left
        // alone: a retry resumes, it does not start over with a later target.
        self.store
            .extend_expiry(&head.execution_id, through, until, raised)
            .await?;
        head.items_expire_at = Some(raised);
        Ok(())
    }

    /// Waits after a throttled commit (exponential from the base, capped low, jittered), or
    /// fails once the store has throttled this commit for longer than the patience: then the
    /// invocation fails and AWS retries it later.
    async fn wait_throttled(&self, t: &mut Throttled) -> Result<(), CoreError> {
        let now = self.clock.now_ms();
        let since = *t.since.get_or_insert(now);
        if now - since > self.config.throttle_patience_ms {
            self.metrics.incr(Metric::AppendFailures, 1);
            return Err(StoreError::Throttled.into());
        }
        t.count += 1;
        let cap = self
            .config
            .backoff_base_ms
            .saturating_mul(1u64 << t.count.min(16))
            .min(self.config.throttle_backoff_max_ms)
            .max(2);
        self.clock
            .sleep_ms(cap / 2 + self.clock.jitter(cap / 2 + 1))
            .await;
        Ok(())
    }

    /// Sleeps with capped exponential backoff and jitter (a wait drawn in `0..=cap`), or gives
    /// up after `max_attempts`.
    async fn backoff(&self, execution_id: &str, attempt: &mut u32) -> Result<(), CoreError> {
        *attempt += 1;
        if *attempt >= self.config.max_attempts {
            self.metrics.incr(Metric::AppendFailures, 1);
            return Err(CoreError::TooManyConflicts(
                execution_id.to_string(),
                *attempt,
            ));
        }
        let exp = self
            .config
            .backoff_base_ms
            .saturating_mul(1u64 << (*attempt).min(16));
        let cap = exp.min(self.config.backoff_max_ms).max(1);
        self.clock.sleep_ms(self.clock.jitter(cap + 1)).await;
        Ok(())
    }

    /// One attempt at rewriting the head with `change` (`None`: leave it): `Ok(false)` when
    /// another writer changed the head first, for callers that would rather skip than wait.
    pub async fn try_update_head<F>(&self, execution_id: &str, change: F) -> Result<bool, CoreError>
    where
        F: Fn(&Head) -> Option<Head>,
    {
        let Some(current) = self.store.head(execution_id).await? else {
            return Ok(false);
        };
        let Some(mut head) = change(&current) else {
            return Ok(false);
        };
        head.version = current.version + 1;
        head.updated_at = self.clock.now_ms();
        let commit = Commit {
            expected_version: Some(current.version),
            head,
            events: Vec::new(),
        };
        match self.store.commit(commit).await {
            Ok(()) => Ok(true),
            Err(CommitError::VersionConflict | CommitError::Store(StoreError::Throttled)) => {
                Ok(false)
            }
            Err(CommitError::Duplicate(_)) => Ok(false),
            Err(CommitError::Store(e)) => Err(e.into()),
        }
    }

    /// Rewrites the head with `change` under the same optimistic condition as appends, retrying
    /// on conflicts. `change` returns `None` to leave the head as it is.
    pub async fn update_head<F>(&self, execution_id: &str, change: F) -> Result<Head, CoreError>
    where
        F: Fn(&Head) -> Result<Option<Head>, CoreError> + Send + Sync,
    {
        let mut attempt = 0u32;
        let mut throttled = Throttled::default();
        loop {
            let Some(current) = self.store.head(execution_id).await? else {
                return Err(CoreError::NotFound(execution_id.to_string()));
            };
            let Some(mut head) = change(&current)? else {
                return Ok(current);
            };
            head.version = current.version + 1;
            head.updated_at = self.clock.now_ms();
            let commit = Commit {
                expected_version: Some(current.version),
                head: head.clone(),
                events: Vec::new(),
            };
            match self.store.commit(commit).await {
                Ok(()) => return Ok(head),
                Err(CommitError::VersionConflict) => {
                    self.metrics.incr(Metric::TransactionRetries, 1);
                    self.backoff(execution_id, &mut attempt).await?;
                }
                Err(CommitError::Store(StoreError::Throttled)) => {
                    self.metrics.incr(Metric::Throttles, 1);
                    self.wait_throttled(&mut throttled).await?;
                }
                Err(CommitError::Duplicate(_)) => {
                    return Err(CoreError::Store(StoreError::backend_message(
                        "the store reported duplicate events for a head-only commit",
                    )));
                }
                Err(CommitError::Store(e)) => return Err(e.into()),
            }
        }
    }

    /// Seconds-since-epoch expiry for an item written now (I8).
    pub fn expires_at_now(&self) -> i64 {
        self.expiry_from_now()
    }

    /// Whether a line stamped `timestamp_ms` is older than the retention: stored with it, it
    /// would have expired by now.
    pub fn is_past_retention(&self, timestamp_ms: i64) -> bool {
        timestamp_ms / 1000 + self.config.retention_secs < self.clock.now_ms() / 1000
    }
}

/// How long one commit has been throttled.
#[derive(Debug, Default)]
struct Throttled {
    since: Option<i64>,
    count: u32,
}

/// Reading progress saved in the head together with the events read up to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Reconciliation's forward cursor ([`Head::source_cursor`]).
    Forward(String),
    /// Completion's re-read of the whole source ([`Head::sweep_cursor`]), when it began and
    /// when the execution stopped.
    Sweep {
        token: String,
        began_at: i64,
        stopped_at: i64,
    },
}

impl Progress {
    fn is_saved_in(&self, head: &Head) -> bool {
        match self {
            Progress::Forward(t) => head.source_cursor.as_deref() == Some(t.as_str()),
            Progress::Sweep {
                token,
                began_at,
                stopped_at,
            } => {
                head.sweep_cursor.as_deref() == Some(token.as_str())
                    && head.sweep_began_at == Some(*began_at)
                    && head.stopped_at == Some(*stopped_at)
            }
        }
    }

    fn save_in(&self, head: &mut Head) {
        match self {
            Progress::Forward(t) => head.source_cursor = Some(t.clone()),
            Progress::Sweep {
                token,
                began_at,
                stopped_at,
            } => {
                head.sweep_cursor = Some(token.clone());
                head.sweep_began_at = Some(*began_at);
                head.stopped_at = Some(*stopped_at);
            }
        }
    }
}

/// Splits a sorted batch into commits of at most `max_events` events and `max_bytes` message
/// bytes (an event larger than `max_bytes` goes alone). Always at least one, possibly empty, chunk.
/// What one commit may hold.
#[derive(Debug, Clone, Copy)]
struct Limits {
    events: usize,
    bytes: usize,
    /// At most `.1` distinct spans of `.0` ms of timestamps.
    spans: (i64, usize),
}

/// Splits events (in commit order) into commits within the store's limits.
fn chunk(events: Vec<SourceEvent>, limits: Limits) -> Vec<Vec<SourceEvent>> {
    let mut chunks = vec![Vec::new()];
    let mut bytes = 0usize;
    let (span_ms, max_spans) = (limits.spans.0.max(1), limits.spans.1.max(1));
    let mut spans: HashSet<i64> = HashSet::new();
    for e in events {
        let current = chunks.last_mut().expect("never empty");
        let span = e.timestamp.div_euclid(span_ms);
        let new_span = !spans.contains(&span);
        if !current.is_empty()
            && (current.len() >= limits.events
                || bytes + e.message.len() > limits.bytes
                || (new_span && spans.len() >= max_spans))
        {
            chunks.push(Vec::new());
            bytes = 0;
            spans.clear();
        }
        bytes += e.message.len();
        spans.insert(span);
        chunks.last_mut().expect("never empty").push(e);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: usize, size: usize) -> SourceEvent {
        SourceEvent {
            event_id: n.to_string(),
            timestamp: 0,
            message: "x".repeat(size),
        }
    }

    #[test]
    fn chunks_by_count_and_bytes() {
        let sizes = |c: &Vec<Vec<SourceEvent>>| c.iter().map(Vec::len).collect::<Vec<_>>();
        let limits = |events, bytes| Limits {
            events,
            bytes,
            spans: (1, usize::MAX),
        };
        assert_eq!(sizes(&chunk(vec![], limits(3, 100))), vec![0]);
        assert_eq!(
            sizes(&chunk((0..7).map(|i| ev(i, 1)).collect(), limits(3, 100))),
            vec![3, 3, 1]
        );
        assert_eq!(
            sizes(&chunk((0..5).map(|i| ev(i, 40)).collect(), limits(10, 100))),
            vec![2, 2, 1]
        );
        assert_eq!(
            sizes(&chunk(
                vec![ev(0, 10), ev(1, 500), ev(2, 10)],
                limits(10, 100)
            )),
            vec![1, 1, 1]
        );
        // One event per second: at most three seconds per commit.
        let sparse: Vec<SourceEvent> = (0..7)
            .map(|i| SourceEvent {
                timestamp: i as i64 * 1_000,
                ..ev(i, 1)
            })
            .collect();
        let by_second = Limits {
            events: 100,
            bytes: 1_000,
            spans: (1_000, 3),
        };
        assert_eq!(sizes(&chunk(sparse, by_second)), vec![3, 3, 1]);
    }
}
