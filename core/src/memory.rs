//! In-memory implementations of every port: the reference store for the conformance suite, the
//! interleaving tests' world, and handy for handler tests. Every operation is atomic under one lock
//! and may yield before and after it, so a scheduler can interleave callers at every await.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::task::{Context, Poll};

use async_trait::async_trait;

use crate::error::{CommitError, StoreError};
use crate::model::{Connection, ExecutionSummary, Head, LogEvent, SourceEvent};
use crate::ports::{
    Clock, Commit, ConnectionStore, HeadReader, LogReader, LogSource, LogWriter, Metric, Metrics,
    PushError, Pusher, Resumed, SourcePage, check_read_item, fits_in_read,
};

/// A future that is pending once, then ready: an await point a scheduler can switch at.
#[derive(Debug, Default)]
pub struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn unix_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[derive(Default)]
struct ExecState {
    head: Option<Head>,
    /// index → (event, expires_at)
    events: BTreeMap<u64, (LogEvent, i64)>,
    ids: HashSet<String>,
}

/// The in-memory log store.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<HashMap<String, ExecState>>,
    yields: AtomicBool,
    /// Test hook: skip the idempotency check (to prove the suites catch it).
    pub break_idempotency: AtomicBool,
    /// Test hook: skip the version condition (to prove the suites catch it).
    pub break_version_check: AtomicBool,
    max_events: usize,
    clock: Option<std::sync::Arc<dyn Clock>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore {
            max_events: 49,
            ..MemoryStore::default()
        }
    }

    /// Yield before and after every operation (for the interleaving tests' scheduler).
    pub fn with_yields(self) -> MemoryStore {
        self.yields.store(true, Ordering::Relaxed);
        self
    }

    /// Judge item expiry by `clock` instead of the system time.
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn Clock>) -> MemoryStore {
        self.clock = Some(clock);
        self
    }

    fn now_secs(&self) -> i64 {
        self.clock
            .as_ref()
            .map_or_else(unix_now_secs, |c| c.now_ms() / 1000)
    }

    pub fn with_max_events_per_commit(mut self, n: usize) -> MemoryStore {
        self.max_events = n;
        self
    }

    async fn point(&self) {
        if self.yields.load(Ordering::Relaxed) {
            YieldNow::default().await;
        }
    }

    /// Every committed event of an execution, ascending (for invariant checks).
    pub fn all_events(&self, execution_id: &str) -> Vec<LogEvent> {
        let state = self.state.lock().expect("memory store lock");
        state
            .get(execution_id)
            .map(|s| s.events.values().map(|(e, _)| e.clone()).collect())
            .unwrap_or_default()
    }
}

#[async_trait]
impl HeadReader for MemoryStore {
    async fn head(&self, execution_id: &str) -> Result<Option<Head>, StoreError> {
        self.point().await;
        let head = {
            let state = self.state.lock().expect("memory store lock");
            state.get(execution_id).and_then(|s| s.head.clone())
        };
        self.point().await;
        Ok(head)
    }
}

#[async_trait]
impl LogWriter for MemoryStore {
    fn max_events_per_commit(&self) -> usize {
        self.max_events
    }

    async fn known_event_ids(
        &self,
        execution_id: &str,
        events: &[SourceEvent],
    ) -> Result<HashSet<String>, StoreError> {
        self.point().await;
        let known = {
            let state = self.state.lock().expect("memory store lock");
            match state.get(execution_id) {
                Some(s) => events
                    .iter()
                    .filter(|e| s.ids.contains(&e.event_id))
                    .map(|e| e.event_id.clone())
                    .collect(),
                None => HashSet::new(),
            }
        };
        self.point().await;
        Ok(known)
    }

    async fn commit(&self, commit: Commit) -> Result<(), CommitError> {
        self.point().await;
        let result = {
            let mut state = self.state.lock().expect("memory store lock");
            let s = state.entry(commit.head.execution_id.clone()).or_default();
            let current = s.head.as_ref().map(|h| h.version);
            if current != commit.expected_version
                && !self.break_version_check.load(Ordering::Relaxed)
            {
                Err(CommitError::VersionConflict)
            } else {
                let dups: Vec<String> = if self.break_idempotency.load(Ordering::Relaxed) {
                    Vec::new()
                } else {
                    commit
                        .events
                        .iter()
                        .filter(|e| s.ids.contains(&e.event_id))
                        .map(|e| e.event_id.clone())
                        .collect()
                };
                if !dups.is_empty() {
                    Err(CommitError::Duplicate(dups))
                } else {
                    let expires_at = commit.head.item_expiry();
                    for e in commit.events {
                        s.ids.insert(e.event_id.clone());
                        s.events.insert(e.index, (e, expires_at));
                    }
                    s.head = Some(commit.head);
                    Ok(())
                }
            }
        };
        self.point().await;
        result
    }

    async fn extend_expiry(
        &self,
        execution_id: &str,
        through: u64,
        at_least: i64,
        to: i64,
    ) -> Result<(), StoreError> {
        self.point().await;
        if let Some(s) = self
            .state
            .lock()
            .expect("memory store lock")
            .get_mut(execution_id)
        {
            for (_, (_, e)) in s.events.range_mut(..=through) {
                if *e < at_least {
                    *e = to.max(*e);
                }
            }
        }
        self.point().await;
        Ok(())
    }
}

#[async_trait]
impl LogReader for MemoryStore {
    async fn read_bounded(
        &self,
        execution_id: &str,
        after: u64,
        through: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEvent>, StoreError> {
        self.point().await;
        let now = self.now_secs();
        let result = {
            let state = self.state.lock().expect("memory store lock");
            let mut out = Vec::new();
            let mut bytes = 0usize;
            if let Some(s) = state.get(execution_id).filter(|_| after < through) {
                for (idx, (e, exp)) in s.events.range(after + 1..=through).take(limit) {
                    check_read_item(execution_id, after, out.len(), *idx, *exp, now)?;
                    if !fits_in_read(out.len(), bytes, e, max_bytes) {
                        break;
                    }
                    bytes += e.wire_size();
                    out.push(e.clone());
                }
            }
            Ok(out)
        };
        self.point().await;
        result
    }

    async fn recent(
        &self,
        after_ms: i64,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<ExecutionSummary>, StoreError> {
        let mut found: Vec<ExecutionSummary> = {
            let state = self.state.lock().expect("memory store lock");
            state
                .values()
                .filter_map(|s| s.head.as_ref())
                .filter(|h| (after_ms..before_ms).contains(&h.created_at))
                .map(ExecutionSummary::of)
                .collect()
        };
        found.sort_by(|a, b| (b.created_at, &b.execution_id).cmp(&(a.created_at, &a.execution_id)));
        found.truncate(limit);
        Ok(found)
    }
}

/// In-memory connections.
#[derive(Default)]
pub struct MemoryConnections {
    map: Mutex<HashMap<String, Connection>>,
}

impl MemoryConnections {
    pub fn new() -> MemoryConnections {
        MemoryConnections::default()
    }
}

#[async_trait]
impl ConnectionStore for MemoryConnections {
    async fn put(&self, connection: Connection) -> Result<(), StoreError> {
        YieldNow::default().await;
        self.map
            .lock()
            .expect("connections lock")
            .insert(connection.connection_id.clone(), connection);
        Ok(())
    }

    async fn get(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
        Ok(self
            .map
            .lock()
            .expect("connections lock")
            .get(connection_id)
            .cloned())
    }

    async fn remove(&self, connection_id: &str) -> Result<(), StoreError> {
        self.map
            .lock()
            .expect("connections lock")
            .remove(connection_id);
        Ok(())
    }

    async fn list(&self, execution_id: &str) -> Result<Vec<Connection>, StoreError> {
        YieldNow::default().await;
        let mut v: Vec<Connection> = self
            .map
            .lock()
            .expect("connections lock")
            .values()
            .filter(|c| c.execution_id == execution_id)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
        Ok(v)
    }

    async fn advance(&self, conn: &Connection, cursor: u64) -> Result<Option<u64>, StoreError> {
        YieldNow::default().await;
        let mut map = self.map.lock().expect("connections lock");
        Ok(map.get_mut(&conn.connection_id).map(|c| {
            let prev = c.cursor;
            c.cursor = c.cursor.max(cursor);
            prev
        }))
    }

    async fn resume(
        &self,
        conn: &Connection,
        cursor: u64,
        now: i64,
        min_interval_ms: i64,
    ) -> Result<Resumed, StoreError> {
        YieldNow::default().await;
        let mut map = self.map.lock().expect("connections lock");
        Ok(match map.get_mut(&conn.connection_id) {
            None => Resumed::Gone,
            Some(c) if c.resumed_at != 0 && now - c.resumed_at < min_interval_ms => {
                Resumed::TooSoon
            }
            Some(c) => {
                c.cursor = cursor;
                c.resumed_at = now;
                Resumed::Done
            }
        })
    }
}

/// An in-memory log source with CloudWatch `GetLogEvents` token semantics: forward tokens
/// `f/<pos>`, the same token back at the end, and optionally an empty page before each real one.
pub struct MemorySource {
    streams: Mutex<HashMap<String, Vec<SourceEvent>>>,
    /// When each line of a stream becomes readable (clock ms), with an ingestion lag.
    readable_at: Mutex<HashMap<String, Vec<i64>>>,
    lag: Option<(std::sync::Arc<dyn Clock>, i64)>,
    page_size: usize,
    empty_pages: bool,
    next_id: AtomicI64,
}

impl MemorySource {
    pub fn new(page_size: usize) -> MemorySource {
        MemorySource {
            streams: Mutex::default(),
            readable_at: Mutex::default(),
            lag: None,
            page_size: page_size.max(1),
            empty_pages: false,
            next_id: AtomicI64::new(1),
        }
    }

    /// Return an empty page (with a new token) before every non-empty one, as CloudWatch may.
    pub fn with_empty_pages(mut self) -> MemorySource {
        self.empty_pages = true;
        self
    }

    /// Lines become readable only `lag_ms` (by `clock`) after they were put, as CloudWatch's
    /// are some time after `PutLogEvents` returned.
    pub fn with_lag(mut self, clock: std::sync::Arc<dyn Clock>, lag_ms: i64) -> MemorySource {
        self.lag = Some((clock, lag_ms));
        self
    }

    /// How many of a stream's lines are readable now (lines become readable in put order).
    fn readable(&self, execution_id: &str, len: usize) -> usize {
        let Some((clock, _)) = &self.lag else {
            return len;
        };
        let now = clock.now_ms();
        let at = self.readable_at.lock().expect("source lock");
        at.get(execution_id).map_or(len, |v| {
            v.iter().take_while(|t| **t <= now).count().min(len)
        })
    }

    /// Creates the stream if needed.
    pub fn create_stream(&self, execution_id: &str) {
        self.streams
            .lock()
            .expect("source lock")
            .entry(execution_id.to_string())
            .or_default();
    }

    /// Appends a line; returns the event with its new, unique id. Ids are not in stream order
    /// (CloudWatch's derived ids start with a digest), so nothing may order lines by id.
    pub fn put(&self, execution_id: &str, timestamp: i64, message: &str) -> SourceEvent {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let scrambled = (id as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
        let ev = SourceEvent {
            event_id: format!("{scrambled:016x}-{id}"),
            timestamp,
            message: message.to_string(),
        };
        self.streams
            .lock()
            .expect("source lock")
            .entry(execution_id.to_string())
            .or_default()
            .push(ev.clone());
        if let Some((clock, lag)) = &self.lag {
            self.readable_at
                .lock()
                .expect("source lock")
                .entry(execution_id.to_string())
                .or_default()
                .push(clock.now_ms() + lag);
        }
        ev
    }

    pub fn events(&self, execution_id: &str) -> Vec<SourceEvent> {
        self.streams
            .lock()
            .expect("source lock")
            .get(execution_id)
            .cloned()
            .unwrap_or_default()
    }
}

#[async_trait]
impl LogSource for MemorySource {
    async fn exists(&self, execution_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .streams
            .lock()
            .expect("source lock")
            .contains_key(execution_id))
    }

    async fn newest_timestamp(&self, execution_id: &str) -> Result<Option<i64>, StoreError> {
        let streams = self.streams.lock().expect("source lock");
        Ok(streams.get(execution_id).and_then(|events| {
            let n = self.readable(execution_id, events.len());
            events[..n].iter().map(|e| e.timestamp).max()
        }))
    }

    async fn page(
        &self,
        execution_id: &str,
        token: Option<&str>,
    ) -> Result<SourcePage, StoreError> {
        YieldNow::default().await;
        let streams = self.streams.lock().expect("source lock");
        let Some(all) = streams.get(execution_id) else {
            return Err(StoreError::backend_message(format!(
                "the log stream of execution {execution_id} does not exist"
            )));
        };
        let events = &all[..self.readable(execution_id, all.len())];
        let (kind, pos) = match token {
            None => ('f', 0usize),
            Some(t) => {
                let (k, p) = t.split_once('/').ok_or(StoreError::InvalidToken)?;
                let pos = p.parse::<usize>().map_err(|_| StoreError::InvalidToken)?;
                let kind = k.chars().next().ok_or(StoreError::InvalidToken)?;
                if !matches!(kind, 'f' | 'e') || pos > events.len() {
                    return Err(StoreError::InvalidToken);
                }
                (kind, pos)
            }
        };
        if pos >= events.len() {
            // At the end: the same token comes back.
            return Ok(SourcePage {
                events: Vec::new(),
                next_token: format!("f/{pos}"),
                live_end: true,
            });
        }
        if self.empty_pages && kind == 'f' {
            return Ok(SourcePage {
                events: Vec::new(),
                next_token: format!("e/{pos}"),
                live_end: false,
            });
        }
        let end = (pos + self.page_size).min(events.len());
        Ok(SourcePage {
            events: events[pos..end].to_vec(),
            next_token: format!("f/{end}"),
            live_end: end == events.len(),
        })
    }
}

/// Records every push; connections can be marked gone.
#[derive(Default)]
pub struct RecordingPusher {
    sent: Mutex<HashMap<String, Vec<String>>>,
    gone: Mutex<HashSet<String>>,
    closed: Mutex<HashSet<String>>,
}

impl RecordingPusher {
    pub fn new() -> RecordingPusher {
        RecordingPusher::default()
    }

    pub fn mark_gone(&self, connection_id: &str) {
        self.gone
            .lock()
            .expect("pusher lock")
            .insert(connection_id.to_string());
    }

    /// Whether the connection was closed by the server.
    pub fn was_closed(&self, connection_id: &str) -> bool {
        self.closed
            .lock()
            .expect("pusher lock")
            .contains(connection_id)
    }

    /// Messages pushed to a connection so far, taken out.
    pub fn take(&self, connection_id: &str) -> Vec<String> {
        self.sent
            .lock()
            .expect("pusher lock")
            .remove(connection_id)
            .unwrap_or_default()
    }
}

#[async_trait]
impl Pusher for RecordingPusher {
    async fn push(&self, connection_id: &str, text: &str) -> Result<(), PushError> {
        YieldNow::default().await;
        if self
            .gone
            .lock()
            .expect("pusher lock")
            .contains(connection_id)
        {
            return Err(PushError::Gone);
        }
        self.sent
            .lock()
            .expect("pusher lock")
            .entry(connection_id.to_string())
            .or_default()
            .push(text.to_string());
        Ok(())
    }

    async fn close(&self, connection_id: &str) -> Result<(), PushError> {
        self.closed
            .lock()
            .expect("pusher lock")
            .insert(connection_id.to_string());
        Ok(())
    }
}

/// A clock whose time only moves when someone sleeps; jitter from a seeded generator.
pub struct SimClock {
    now: AtomicI64,
    rng: Mutex<u64>,
}

impl SimClock {
    pub fn new(start_ms: i64, seed: u64) -> SimClock {
        SimClock {
            now: AtomicI64::new(start_ms),
            rng: Mutex::new(seed),
        }
    }

    pub fn advance(&self, ms: i64) {
        self.now.fetch_add(ms, Ordering::Relaxed);
    }
}

/// splitmix64: a tiny, good-enough generator for jitter and simulations.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[async_trait]
impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::Relaxed)
    }

    async fn sleep_ms(&self, ms: u64) {
        self.advance(ms as i64);
        YieldNow::default().await;
    }

    fn jitter(&self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        splitmix64(&mut self.rng.lock().expect("clock lock")) % bound
    }
}

/// Counters kept in memory (also what the local stack serves as Prometheus text).
#[derive(Default)]
pub struct MemoryMetrics {
    counters: Mutex<BTreeMap<Metric, u64>>,
}

impl MemoryMetrics {
    pub fn new() -> MemoryMetrics {
        MemoryMetrics::default()
    }

    pub fn get(&self, metric: Metric) -> u64 {
        *self
            .counters
            .lock()
            .expect("metrics lock")
            .get(&metric)
            .unwrap_or(&0)
    }

    /// Prometheus text exposition of every counter.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        for m in Metric::ALL {
            let name = format!("runvoy_{}_total", m.name());
            out.push_str(&format!("# TYPE {name} counter\n{name} {}\n", self.get(m)));
        }
        out
    }
}

impl Metrics for MemoryMetrics {
    fn incr(&self, metric: Metric, by: u64) {
        *self
            .counters
            .lock()
            .expect("metrics lock")
            .entry(metric)
            .or_insert(0) += by;
    }
}
