//! The engine under AWS's timing, on the in-memory ports: lines readable only some time after
//! they were written (CloudWatch's ingestion delay), a store that throttles for a while (one
//! partition's 1,000 write units a second), a task that stopped without a line.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use runvoy_core::memory::{
    MemoryConnections, MemoryMetrics, MemorySource, MemoryStore, RecordingPusher, SimClock,
};
use runvoy_core::ports::{
    Clock, Commit, HeadReader, LogReader, LogSource, LogWriter, Metric, SourcePage,
};
use runvoy_core::services::{Appender, Completer, EngineConfig, FanOut, Reconciler};
use runvoy_core::{CommitError, CoreError, Head, SourceEvent, Status, StoreError};

const T0: i64 = 1_800_000_000_000;

struct World {
    clock: Arc<SimClock>,
    store: Arc<MemoryStore>,
    source: Arc<MemorySource>,
    completer: Completer,
}

/// A world whose source makes lines readable `lag_ms` after they were put, and whose
/// completion waits `grace_ms` after the stop.
fn world(lag_ms: i64, grace_ms: i64) -> World {
    let clock = Arc::new(SimClock::new(T0, 7));
    let store = Arc::new(MemoryStore::new().with_clock(clock.clone()));
    let source = Arc::new(MemorySource::new(4).with_lag(clock.clone(), lag_ms));
    let metrics = Arc::new(MemoryMetrics::new());
    let (appender, fanout) = common::engine(store.clone(), clock.clone(), metrics.clone());
    let completer = Completer::new(Reconciler::new(source.clone(), appender, metrics), fanout)
        .with_grace(grace_ms);
    World {
        clock,
        store,
        source,
        completer,
    }
}

/// `runvoy run -- sh -c 'echo first; echo last'`: both lines are written just before the task
/// stops and are readable only 3 s later; the stop is known at once. Completion waits out the
/// grace and its re-read finds both.
#[tokio::test]
async fn completion_waits_for_the_lines_written_just_before_the_stop() {
    let w = world(3_000, 5_000);
    w.source.put("short", T0 - 5, "first");
    w.source.put("short", T0 - 5, "last");
    let head = w
        .completer
        .complete("short", Status::Succeeded, Some(0), Some(T0), None)
        .await
        .unwrap();
    assert_eq!(head.final_index, Some(2), "the tail is not cut");
    assert_eq!(w.store.all_events("short").len(), 2);
    assert!(
        head.sweep_began_at.unwrap() >= T0 + 5_000,
        "the final re-read began after the grace"
    );
}

/// Without a grace (the old completion), the same stop ends the execution at index 0.
#[tokio::test]
async fn without_a_grace_the_tail_is_cut() {
    let w = world(3_000, 0);
    w.source.put("short", T0 - 5, "first");
    w.source.put("short", T0 - 5, "last");
    let head = w
        .completer
        .complete("short", Status::Succeeded, Some(0), Some(T0), None)
        .await
        .unwrap();
    assert_eq!(
        head.final_index,
        Some(0),
        "what a source with a lag does to it"
    );
}

/// A completion whose deadline comes before the grace has passed answers Unfinished (AWS
/// retries it); the retry, after the grace, completes with every line.
#[tokio::test]
async fn a_completion_that_cannot_wait_is_retried() {
    let w = world(3_000, 5_000);
    for i in 0..10 {
        w.source.put("tight", T0 - 100 + i, &format!("line {i}"));
    }
    let r = w
        .completer
        .complete("tight", Status::Failed, Some(2), Some(T0), Some(T0 + 1_000))
        .await;
    assert!(matches!(r, Err(CoreError::Unfinished(_))), "{r:?}");
    w.clock.advance(6_000);
    let head = w
        .completer
        .complete(
            "tight",
            Status::Failed,
            Some(2),
            Some(T0),
            Some(T0 + 60_000),
        )
        .await
        .unwrap();
    assert_eq!((head.status, head.final_index), (Status::Failed, Some(10)));
}

/// A re-read that began before the grace had passed (an earlier attempt, or a sweep from an
/// older layout) is started over, not continued past lines that became readable after it.
#[tokio::test]
async fn a_sweep_begun_too_early_is_started_over() {
    let w = world(3_000, 5_000);
    for i in 0..6 {
        w.source.put("early", T0 - 100 + i, &format!("line {i}"));
    }
    // An early sweep, as the old completion made it: it saw nothing yet, and saved the end.
    let reconciler = Reconciler::new(
        w.source.clone(),
        Appender::new(
            w.store.clone(),
            w.clock.clone(),
            Arc::new(MemoryMetrics::new()),
            EngineConfig::default(),
        ),
        Arc::new(MemoryMetrics::new()),
    );
    w.source.create_stream("early");
    let (early, done) = reconciler
        .sweep("early", T0, T0, Some(T0 + 1_000))
        .await
        .unwrap();
    assert!(done && early.recovered.is_empty());
    let head = w
        .completer
        .complete("early", Status::Succeeded, Some(0), Some(T0), None)
        .await
        .unwrap();
    assert_eq!(head.final_index, Some(6));
}

/// A source whose every page takes a second of clock time.
struct Slow {
    inner: Arc<MemorySource>,
    clock: Arc<SimClock>,
}

#[async_trait]
impl LogSource for Slow {
    async fn exists(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.exists(id).await
    }
    async fn newest_timestamp(&self, id: &str) -> Result<Option<i64>, StoreError> {
        self.inner.newest_timestamp(id).await
    }
    async fn page(&self, id: &str, token: Option<&str>) -> Result<SourcePage, StoreError> {
        self.clock.advance(1_000);
        self.inner.page(id, token).await
    }
}

/// The stop an earlier attempt recorded is kept: a retry of `POST …/complete` (stop = now)
/// does not move the moment the final re-read must begin after, so it can continue that
/// re-read instead of starting over each time.
#[tokio::test]
async fn retries_keep_the_first_stop() {
    let mut w = world(0, 5_000);
    for i in 0..40 {
        w.source.put("keep", T0 - 1_000 + i, &format!("line {i}"));
    }
    let metrics = Arc::new(MemoryMetrics::new());
    let slow = Arc::new(Slow {
        inner: w.source.clone(),
        clock: w.clock.clone(),
    });
    w.completer = Completer::new(
        Reconciler::new(
            slow,
            Appender::new(
                w.store.clone(),
                w.clock.clone(),
                metrics.clone(),
                EngineConfig::default(),
            ),
            metrics.clone(),
        ),
        FanOut::new(
            w.store.clone(),
            Arc::new(MemoryConnections::new()),
            Arc::new(RecordingPusher::new()),
            metrics,
            w.clock.clone(),
        ),
    )
    .with_grace(5_000);
    // First attempt: waits the grace, reads part of the stream, runs out of time.
    let r = w
        .completer
        .complete("keep", Status::Succeeded, Some(0), None, Some(T0 + 7_001))
        .await;
    assert!(matches!(r, Err(CoreError::Unfinished(_))), "{r:?}");
    let first = w.store.head("keep").await.unwrap().unwrap();
    assert_eq!(first.stopped_at, Some(T0));
    // A retry later keeps the first stop and completes.
    w.clock.advance(60_000);
    let head = w
        .completer
        .complete("keep", Status::Succeeded, Some(0), None, None)
        .await
        .unwrap();
    assert_eq!(head.stopped_at, Some(T0));
    assert_eq!(head.final_index, Some(40));
}

/// A task that stopped without writing a line completes with no lines and its exit code.
#[tokio::test]
async fn a_task_without_lines_completes_with_its_exit_code() {
    let w = world(0, 0);
    let r = w
        .completer
        .complete("silent", Status::Failed, Some(3), Some(T0), None)
        .await;
    assert!(matches!(r, Err(CoreError::NotFound(_))), "{r:?}");
    let head = w
        .completer
        .complete_lineless("silent", Status::Failed, Some(3), None)
        .await
        .unwrap();
    assert_eq!(
        (
            head.status,
            head.exit_code,
            head.final_index,
            head.last_index
        ),
        (Status::Failed, Some(3), Some(0), 0)
    );
    // Done twice (EventBridge delivers at least once): the same answer.
    let again = w
        .completer
        .complete_lineless("silent", Status::Failed, Some(3), None)
        .await
        .unwrap();
    assert_eq!(again.final_index, Some(0));
}

/// A store that throttles every commit for the first `throttled_ms` of clock time, as a
/// DynamoDB partition at its 1,000 write units a second does during a burst.
struct Throttling {
    inner: Arc<MemoryStore>,
    clock: Arc<SimClock>,
    until: i64,
    refused: AtomicU32,
}

#[async_trait]
impl HeadReader for Throttling {
    async fn head(&self, id: &str) -> Result<Option<Head>, StoreError> {
        self.inner.head(id).await
    }
}

#[async_trait]
impl LogWriter for Throttling {
    fn max_events_per_commit(&self) -> usize {
        self.inner.max_events_per_commit()
    }

    async fn known_event_ids(
        &self,
        id: &str,
        events: &[SourceEvent],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        self.inner.known_event_ids(id, events).await
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

    async fn commit(&self, commit: Commit) -> Result<(), CommitError> {
        if self.clock.now_ms() < self.until {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(CommitError::Store(StoreError::Throttled));
        }
        self.inner.commit(commit).await
    }
}

/// Twenty seconds of throttling, far more than 64 attempts: the writer slows down and commits
/// the batch instead of failing it.
#[tokio::test]
async fn a_throttled_partition_slows_the_writer_down_instead_of_failing_the_batch() {
    let clock = Arc::new(SimClock::new(T0, 3));
    let store = Arc::new(Throttling {
        inner: Arc::new(MemoryStore::new().with_clock(clock.clone())),
        clock: clock.clone(),
        until: T0 + 20_000,
        refused: AtomicU32::new(0),
    });
    let metrics = Arc::new(MemoryMetrics::new());
    let appender = Appender::new(
        store.clone(),
        clock.clone(),
        metrics.clone(),
        EngineConfig::default(),
    );
    let events: Vec<SourceEvent> = (0..30)
        .map(|i| SourceEvent {
            event_id: format!("e{i}"),
            timestamp: T0,
            message: format!("line {i}"),
        })
        .collect();
    let out = appender.append("hot", events, None).await.unwrap();
    assert_eq!(out.committed.len(), 30);
    let refused = store.refused.load(Ordering::Relaxed);
    assert!(
        refused > 64,
        "more throttles than conflicts may take: {refused}"
    );
    assert_eq!(metrics.get(Metric::Throttles), u64::from(refused));
    assert!(clock.now_ms() >= T0 + 20_000);

    // Throttled beyond the patience: the append fails (the invocation is retried by AWS).
    let store = Arc::new(Throttling {
        inner: Arc::new(MemoryStore::new().with_clock(clock.clone())),
        clock: clock.clone(),
        until: clock.now_ms() + 3_600_000,
        refused: AtomicU32::new(0),
    });
    let appender = Appender::new(store, clock.clone(), metrics, EngineConfig::default());
    let one = vec![SourceEvent {
        event_id: "x".into(),
        timestamp: T0,
        message: "x".into(),
    }];
    let r = appender.append("hot", one, None).await;
    assert!(
        matches!(r, Err(CoreError::Store(StoreError::Throttled))),
        "{r:?}"
    );
}

fn line(i: i64, at: i64) -> SourceEvent {
    SourceEvent {
        event_id: format!("l{i}"),
        timestamp: at,
        message: format!("line {i}"),
    }
}

/// An execution that runs four days under a one-day retention, a line every six hours: its
/// first lines are still there while it runs, and every line lives the retention after it
/// completes (I8), not the retention after its own commit.
#[tokio::test]
async fn lines_live_as_long_as_their_execution_whatever_its_length() {
    let clock = Arc::new(SimClock::new(T0, 5));
    let store = Arc::new(MemoryStore::new().with_clock(clock.clone()));
    let metrics = Arc::new(MemoryMetrics::new());
    let config = EngineConfig {
        retention_secs: 86_400,
        ..EngineConfig::default()
    };
    let appender = Appender::new(store.clone(), clock.clone(), metrics.clone(), config);
    let source = Arc::new(MemorySource::new(10));
    source.create_stream("long");
    let reconciler = Reconciler::new(source, appender.clone(), metrics.clone());
    let fanout = FanOut::new(
        store.clone(),
        Arc::new(MemoryConnections::new()),
        Arc::new(RecordingPusher::new()),
        metrics,
        clock.clone(),
    );
    let completer = Completer::new(reconciler, fanout);
    for i in 0..16 {
        appender
            .append("long", vec![line(i, clock.now_ms())], None)
            .await
            .unwrap();
        let all = store.read_range("long", 0, i as u64 + 1, 100).await;
        assert_eq!(
            all.map(|e| e.len()).map_err(|e| e.to_string()),
            Ok(i as usize + 1),
            "day {:.2}: every line is readable while the execution runs",
            (clock.now_ms() - T0) as f64 / 86_400_000.0
        );
        clock.advance(6 * 3_600_000);
    }
    let head = completer
        .complete("long", Status::Succeeded, Some(0), None, None)
        .await
        .unwrap();
    assert_eq!(head.final_index, Some(16));
    // Just before the retention after completion has passed: all there.
    clock.advance(86_400_000 - 60_000);
    assert_eq!(
        store.read_range("long", 0, 16, 100).await.unwrap().len(),
        16
    );
}

/// A line stamped two hours ahead (PutLogEvents accepts it) keeps its idempotency record the
/// retention from its own time: its item expiry is past that.
#[tokio::test]
async fn a_line_stamped_ahead_is_kept_the_retention_from_its_own_time() {
    let clock = Arc::new(SimClock::new(T0, 5));
    let store = Arc::new(MemoryStore::new().with_clock(clock.clone()));
    let config = EngineConfig {
        retention_secs: 3_600,
        expiry_allowance_secs: 60,
        ..EngineConfig::default()
    };
    let appender = Appender::new(
        store.clone(),
        clock.clone(),
        Arc::new(MemoryMetrics::new()),
        config,
    );
    let out = appender
        .append("ahead", vec![line(1, T0 + 2 * 3_600_000)], None)
        .await
        .unwrap();
    let head = out.head.unwrap();
    assert!(
        head.items_expire_at.unwrap() >= (T0 + 2 * 3_600_000) / 1000 + 3_600,
        "{head:?}"
    );
}
