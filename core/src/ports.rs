//! Ports: the capabilities the services need, split so a handler asks only for what it uses.
//! In-memory implementations live in [`crate::memory`]; SQLite and DynamoDB ones in adapter crates.

use std::collections::HashSet;

use async_trait::async_trait;

use crate::error::{CommitError, StoreError};
use crate::model::{Connection, ExecutionSummary, Head, LogEvent, SourceEvent};

/// One atomic write: the new head (conditioned on `expected_version`) and the events it adds,
/// written to expire at [`Head::item_expiry`].
/// A head's `last_timestamp` is at least the timestamp of every event committed with it or
/// before it, and an event id always comes with the same timestamp (it names one source
/// event); stores may rely on both (DynamoDB looks up only ids no newer than the head).
///
/// A store applies all of it or nothing: the head must still be at `expected_version` (`None`:
/// must not exist), no event id may already be committed for this execution, and every event is
/// written with its idempotency record in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub expected_version: Option<u64>,
    pub head: Head,
    pub events: Vec<LogEvent>,
}

/// Reads the execution head with strong consistency.
#[async_trait]
pub trait HeadReader: Send + Sync {
    async fn head(&self, execution_id: &str) -> Result<Option<Head>, StoreError>;
}

/// Appends events and updates the head atomically.
#[async_trait]
pub trait LogWriter: HeadReader {
    /// Most events one [`Commit`] may carry (DynamoDB: 100 transaction actions).
    fn max_events_per_commit(&self) -> usize;

    /// Most message bytes one [`Commit`] may carry (DynamoDB: 4 MB per transaction). A single
    /// event larger than this still goes alone in its own commit.
    fn max_commit_bytes(&self) -> usize {
        usize::MAX
    }

    /// How far one [`Commit`]'s events may spread in time: over at most `.1` distinct spans
    /// of `.0` milliseconds of timestamps (DynamoDB: one idempotency record per minute, within
    /// 100 transaction actions).
    fn commit_spans(&self) -> (i64, usize) {
        (1, usize::MAX)
    }

    /// Which of `events` (compared by id) are already committed for this execution: a cheap
    /// pre-filter. Their timestamps may be used to locate the idempotency records.
    async fn known_event_ids(
        &self,
        execution_id: &str,
        events: &[SourceEvent],
    ) -> Result<HashSet<String>, StoreError>;

    async fn commit(&self, commit: Commit) -> Result<(), CommitError>;

    /// Every log item of the execution up to index `through` (lines, and whatever holds their
    /// bytes) that expires before `at_least` (unix seconds) is made to expire at `to`
    /// (`to >= at_least`); items already at `at_least` or later are left alone, so an
    /// interrupted extension resumes where it stopped. Idempotency records need not follow:
    /// they live the retention from their lines' own time, and older lines are never
    /// committed again.
    async fn extend_expiry(
        &self,
        execution_id: &str,
        through: u64,
        at_least: i64,
        to: i64,
    ) -> Result<(), StoreError>;
}

/// Reads committed events.
#[async_trait]
pub trait LogReader: HeadReader {
    /// Events with `after < index <= through`, ascending, at most `limit`, and no more than
    /// `max_bytes` of [`LogEvent::wire_size`] (but always the first one, however large). Callers
    /// pass a `through` no higher than the `last_index` of a head they read first (spec §5.3). A
    /// missing index inside the range is reported as [`StoreError::Expired`], never skipped.
    async fn read_bounded(
        &self,
        execution_id: &str,
        after: u64,
        through: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEvent>, StoreError>;

    /// Executions created in `[after_ms, before_ms)`, newest first, at most `limit`: the heads
    /// of a store, found through an index on their creation time (never a scan of log items).
    async fn recent(
        &self,
        after_ms: i64,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<ExecutionSummary>, StoreError>;

    /// The events [`LogReader::read_bounded`] reads, appended to `out` as dense runs
    /// ([`crate::lines`], one or more); returns how many. `Ok(None)` when they cannot travel dense (a message
    /// that travels as base64 in JSON); `out` is then left as it was. A store may bound the
    /// read by the records' own bytes instead of [`LogEvent::wire_size`] when its pages never
    /// cross a Lambda response (the local stack's).
    async fn read_dense(
        &self,
        execution_id: &str,
        after: u64,
        through: u64,
        limit: usize,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>, StoreError> {
        let events = self
            .read_bounded(execution_id, after, through, limit, max_bytes)
            .await?;
        if !crate::lines::fits_lines(&events) {
            return Ok(None);
        }
        let mut run = crate::lines::RunBuilder::default();
        for (expected, e) in (after + 1..).zip(&events) {
            if e.index != expected {
                return Err(StoreError::Expired(execution_id.to_string()));
            }
            run.push(e.timestamp, e.message.as_bytes());
        }
        run.append_to(out);
        Ok(Some(events.len()))
    }

    /// [`LogReader::read_bounded`] without a byte bound.
    async fn read_range(
        &self,
        execution_id: &str,
        after: u64,
        through: u64,
        limit: usize,
    ) -> Result<Vec<LogEvent>, StoreError> {
        self.read_bounded(execution_id, after, through, limit, usize::MAX)
            .await
    }
}

/// Whether a read that holds `bytes` already may take `next` too: always the first event, then
/// as long as the total stays within `max_bytes`.
pub fn fits_in_read(read_so_far: usize, bytes: usize, next: &LogEvent, max_bytes: usize) -> bool {
    read_so_far == 0 || bytes.saturating_add(next.wire_size()) <= max_bytes
}

/// The rule every [`LogReader`] applies to each item it reads for `(after, …]`: an item past its
/// expiry, or one that is not the next index, means the range is no longer complete (I8), and
/// is reported as [`StoreError::Expired`] rather than skipped.
pub fn check_read_item(
    execution_id: &str,
    after: u64,
    read_so_far: usize,
    index: u64,
    expires_at: i64,
    now_secs: i64,
) -> Result<(), StoreError> {
    if expires_at <= now_secs || index != after + 1 + read_so_far as u64 {
        return Err(StoreError::Expired(execution_id.to_string()));
    }
    Ok(())
}

/// Every store capability at once, for wiring.
pub trait LogStore: LogWriter + LogReader {}
impl<T: LogWriter + LogReader> LogStore for T {}

/// WebSocket connections per execution.
#[async_trait]
pub trait ConnectionStore: Send + Sync {
    async fn put(&self, connection: Connection) -> Result<(), StoreError>;
    async fn get(&self, connection_id: &str) -> Result<Option<Connection>, StoreError>;
    async fn remove(&self, connection_id: &str) -> Result<(), StoreError>;
    /// Every connection of the execution, strongly consistent; those past `expires_at` too
    /// (the fan-out closes them), as long as the store still holds them.
    async fn list(&self, execution_id: &str) -> Result<Vec<Connection>, StoreError>;
    /// Raises the connection's cursor to `cursor` if it is higher; returns the cursor it had
    /// (`None`: the connection is gone).
    async fn advance(
        &self,
        connection: &Connection,
        cursor: u64,
    ) -> Result<Option<u64>, StoreError>;

    /// A client's `resume`, in one conditional write: sets the cursor to `cursor` and
    /// `resumed_at` to `now` unless the last resume was less than `min_interval_ms` before
    /// `now`, so simultaneous resumes of one connection cannot all pass the limit.
    async fn resume(
        &self,
        connection: &Connection,
        cursor: u64,
        now: i64,
        min_interval_ms: i64,
    ) -> Result<Resumed, StoreError>;
}

/// What [`ConnectionStore::resume`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// The cursor is set.
    Done,
    /// The last resume was too recent: nothing changed.
    TooSoon,
    /// The connection is gone.
    Gone,
}

/// One page of the log source, CloudWatch `GetLogEvents` style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePage {
    pub events: Vec<SourceEvent>,
    /// The token for the next page. At the end of the stream it equals the token passed in.
    pub next_token: String,
    /// Whether this read reached the lines being written now: the end of the stream as it was
    /// when read, or (CloudWatch) a line ingested after the read began. A stream that keeps
    /// being written never hands back the token it was given, so a forward reconciliation stops
    /// here (what follows is the subscription's to deliver); a completion sweep does not (a
    /// late line with an old timestamp is met mid-stream) and reads on until the token returns.
    pub live_end: bool,
}

/// The log source an execution writes to (CloudWatch Logs or the local analog).
#[async_trait]
pub trait LogSource: Send + Sync {
    /// Whether the execution's stream exists at all (unknown executions are 404, not empty).
    async fn exists(&self, execution_id: &str) -> Result<bool, StoreError>;
    /// The timestamp (ms) of the stream's newest event; `None` when it has none (or no stream).
    /// Tells an execution whose stored lines expired from one never seen (I8).
    async fn newest_timestamp(&self, execution_id: &str) -> Result<Option<i64>, StoreError>;
    /// Reads forward from `token` (`None`: from the start of the stream).
    async fn page(&self, execution_id: &str, token: Option<&str>)
    -> Result<SourcePage, StoreError>;
}

/// Why a push did not reach its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushError {
    /// The connection is closed (API Gateway 410): forget it.
    Gone,
    /// Anything else; the message says what.
    Failed(String),
}

/// Sends a text frame to a WebSocket connection.
#[async_trait]
pub trait Pusher: Send + Sync {
    async fn push(&self, connection_id: &str, text: &str) -> Result<(), PushError>;
    /// Closes the connection (its token expired); one already gone is not an error.
    async fn close(&self, connection_id: &str) -> Result<(), PushError>;
}

/// Time, waiting and randomness: injected so the interleaving tests can control them.
#[async_trait]
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
    async fn sleep_ms(&self, ms: u64);
    /// A pseudo-random number in `0..bound` (backoff jitter).
    fn jitter(&self, bound: u64) -> u64;
}

/// Counters the services emit (EMF on Lambda, Prometheus locally).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    EventsAppended,
    DuplicatesDropped,
    OutOfOrder,
    TransactionRetries,
    Throttles,
    PushesSent,
    PushFailures,
    ConnectionsPruned,
    /// Connections closed because their token expired.
    ConnectionsExpired,
    EventsReconciled,
    EventsAfterCompletion,
    AppendFailures,
    PoisonPayloads,
    /// Events of an execution whose stored lines expired, refused instead of re-indexed.
    ExpiredEvents,
}

impl Metric {
    pub const ALL: [Metric; 14] = [
        Metric::EventsAppended,
        Metric::DuplicatesDropped,
        Metric::OutOfOrder,
        Metric::TransactionRetries,
        Metric::Throttles,
        Metric::PushesSent,
        Metric::PushFailures,
        Metric::ConnectionsPruned,
        Metric::ConnectionsExpired,
        Metric::EventsReconciled,
        Metric::EventsAfterCompletion,
        Metric::AppendFailures,
        Metric::PoisonPayloads,
        Metric::ExpiredEvents,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::EventsAppended => "events_appended",
            Metric::DuplicatesDropped => "duplicates_dropped",
            Metric::OutOfOrder => "out_of_order_events",
            Metric::TransactionRetries => "transaction_retries",
            Metric::Throttles => "throttles",
            Metric::PushesSent => "pushes_sent",
            Metric::PushFailures => "push_failures",
            Metric::ConnectionsPruned => "connections_pruned",
            Metric::ConnectionsExpired => "connections_expired",
            Metric::EventsReconciled => "events_reconciled",
            Metric::EventsAfterCompletion => "events_after_completion",
            Metric::AppendFailures => "append_failures",
            Metric::PoisonPayloads => "poison_payloads",
            Metric::ExpiredEvents => "expired_events",
        }
    }
}

pub trait Metrics: Send + Sync {
    fn incr(&self, metric: Metric, by: u64);
}
