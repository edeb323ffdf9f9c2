//! WebSocket connections and fan-out on the in-memory ports: token scope, pushes of contiguous
//! runs only, packing under the frame, resumes at most once a second, token expiry, connections
//! served side by side, one shared read for those behind, and nothing sent after a failed push.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use async_trait::async_trait;
use common::{Env, KEY, call, env, write};
use runvoy_core::client::Follower;
use runvoy_core::memory::{
    MemoryConnections, MemoryMetrics, MemoryStore, RecordingPusher, SimClock, YieldNow,
};
use runvoy_core::ports::{
    Clock, ConnectionStore, HeadReader, LogReader, Metric, PushError, Pusher,
};
use runvoy_core::services::{Appender, EngineConfig, FANOUT_CONCURRENCY, FanOut, pack_messages};
use runvoy_core::wire::ServerMessage;
use runvoy_core::{ExecutionSummary, Head, LogEvent, SourceEvent, StoreError};

#[tokio::test]
async fn websocket_connect_checks_token_scope_and_pushes_from_cursor() {
    let e = env();
    write(&e, "ex4", 3);
    write(&e, "ex5", 1);
    for id in ["ex4", "ex5"] {
        call(
            &e.api,
            "GET",
            &format!("/api/v1/executions/{id}/logs"),
            "",
            Some(KEY),
            "",
        )
        .await;
    }
    let t4 = e.signer.sign("ex4", 1_700_000_000);
    let denied =
        e.ws.connect("c0", &format!("execution_id=ex5&token={t4}"))
            .await
            .unwrap_err();
    assert_eq!(denied.status, 403);
    let denied =
        e.ws.connect("c0", "execution_id=ex4&token=forged.sig")
            .await
            .unwrap_err();
    assert_eq!(denied.status, 401);
    let denied = e.ws.connect("c0", "execution_id=ex4").await.unwrap_err();
    assert_eq!(denied.status, 401);
    let bad =
        e.ws.connect("c0", &format!("execution_id=ex4&token={t4}&since_index=x"))
            .await
            .unwrap_err();
    assert_eq!(bad.status, 400);
    assert!(e.fanout.connections().get("c0").await.unwrap().is_none());

    e.ws.connect("c1", &format!("execution_id=ex4&token={t4}&since_index=1"))
        .await
        .unwrap();
    e.ws.message("c1", r#"{"action":"resume","since_index":1}"#)
        .await
        .unwrap();
    let msgs = e.pusher.take("c1");
    let mut f = Follower::new(1);
    for m in &msgs {
        if let ServerMessage::Logs { events, .. } = serde_json::from_str(m).unwrap() {
            assert!(!f.accept(events).gap);
        }
    }
    assert_eq!(f.last(), 3);
    e.ws.message("c1", r#"{"action":"ping"}"#).await.unwrap();
    assert!(e.pusher.take("c1").is_empty());
    e.ws.message("c1", "garbage").await.unwrap();
    let err = e.pusher.take("c1");
    assert!(err[0].contains(r#""type":"error""#) && err[0].contains("bad_message"));
    // A 410 while the connection may still be inside `$connect` does not drop it.
    e.clock.advance(runvoy_core::ws::RESUME_INTERVAL_MS);
    e.pusher.mark_gone("c1");
    e.ws.message("c1", r#"{"action":"resume","since_index":0}"#)
        .await
        .unwrap();
    assert!(e.fanout.connections().get("c1").await.unwrap().is_some());
    assert_eq!(e.metrics.get(Metric::ConnectionsPruned), 0);
    // Past the handshake, a gone connection is pruned on the next push.
    e.clock.advance(runvoy_core::services::HANDSHAKE_GRACE_MS);
    e.ws.message("c1", r#"{"action":"resume","since_index":0}"#)
        .await
        .unwrap();
    assert!(e.fanout.connections().get("c1").await.unwrap().is_none());
    assert_eq!(e.metrics.get(Metric::ConnectionsPruned), 1);
    // A resume on a connection without a record is answered, so the client reconnects.
    e.ws.message("c9", r#"{"action":"resume","since_index":0}"#)
        .await
        .unwrap();
    let err = e.pusher.take("c9");
    assert!(
        err.len() == 1 && err[0].contains(r#""code":"not_connected""#),
        "{err:?}"
    );
}

#[tokio::test]
async fn fan_out_pushes_only_contiguous_runs_and_claims_only_what_it_sends() {
    let e = env();
    write(&e, "ex6", 3);
    call(
        &e.api,
        "GET",
        "/api/v1/executions/ex6/logs",
        "",
        Some(KEY),
        "",
    )
    .await;
    let token = e.signer.sign("ex6", 1_700_000_000);
    let conn =
        e.ws.connect(
            "c6",
            &format!("execution_id=ex6&token={token}&since_index=3"),
        )
        .await
        .unwrap();
    let head = |last: u64| {
        let mut h = runvoy_core::Head::new("ex6", 0, i64::MAX);
        h.last_index = last;
        h
    };
    let ev = |i: u64, size: usize| LogEvent {
        index: i,
        event_id: format!("f{i}"),
        timestamp: 0,
        message: "m".repeat(size),
    };
    // Fresh events with a hole at 6: only 4 and 5 go out, and the cursor claims just them.
    e.fanout
        .deliver(&conn, &head(7), &[ev(4, 1), ev(5, 1), ev(7, 1)])
        .await
        .unwrap();
    let pushed: Vec<u64> = e
        .pusher
        .take("c6")
        .iter()
        .flat_map(|m| match serde_json::from_str(m).unwrap() {
            ServerMessage::Logs { events, .. } => events.into_iter().map(|e| e.index).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(pushed, [4, 5]);
    assert_eq!(
        e.fanout
            .connections()
            .get("c6")
            .await
            .unwrap()
            .unwrap()
            .cursor,
        5
    );
    // An event too big for one message ends the run before it.
    let conn = e.fanout.connections().get("c6").await.unwrap().unwrap();
    e.fanout
        .deliver(&conn, &head(8), &[ev(6, 1), ev(7, 200 * 1024), ev(8, 1)])
        .await
        .unwrap();
    let msgs = e.pusher.take("c6");
    assert!(
        msgs.iter()
            .all(|m| !m.contains(r#""index":7"#) && !m.contains(r#""index":8"#))
    );
    assert_eq!(
        e.fanout
            .connections()
            .get("c6")
            .await
            .unwrap()
            .unwrap()
            .cursor,
        6
    );
}

#[test]
fn packing_stays_under_the_frame_and_stops_at_an_oversized_event() {
    let events: Vec<LogEvent> = (1..=200)
        .map(|i| LogEvent {
            index: i,
            event_id: format!("{i}"),
            timestamp: 0,
            message: "m".repeat(900),
        })
        .collect();
    let msgs = pack_messages("x", &events, 32 * 1024);
    assert!(
        msgs.len() >= 6 && msgs.len() <= 8,
        "{} messages",
        msgs.len()
    );
    let mut seen = Vec::new();
    for m in &msgs {
        assert!(m.len() <= 32 * 1024);
        if let ServerMessage::Logs { events, .. } = serde_json::from_str(m).unwrap() {
            seen.extend(events.into_iter().map(|e| e.index));
        }
    }
    assert_eq!(seen, (1..=200).collect::<Vec<_>>());
    let mut big = events[..3].to_vec();
    big[1].message = "b".repeat(200 * 1024);
    let msgs = pack_messages("x", &big, 32 * 1024);
    let joined = msgs.join("");
    assert!(joined.contains(r#""index":1"#));
    assert!(
        !joined.contains("bbbb") && !joined.contains(r#""index":3"#),
        "what is sent stays contiguous"
    );
}

/// One `resume` costs at most one backlog page, and not more than one per second is served:
/// a token holder cannot make the server re-read and re-push a whole backlog at will.
#[tokio::test]
async fn a_resume_pushes_one_page_at_most_once_a_second() {
    let e = env();
    write(&e, "ex9", 2_500);
    let all = e.source.events("ex9");
    e.appender.append("ex9", all, None).await.unwrap();
    let token = e.signer.sign("ex9", 1_700_000_000);
    e.ws.connect("c9", &format!("execution_id=ex9&token={token}"))
        .await
        .unwrap();
    let pushed = |e: &Env| -> (usize, Vec<String>) {
        let mut lines = 0;
        let mut errors = Vec::new();
        for m in e.pusher.take("c9") {
            match serde_json::from_str(&m).unwrap() {
                ServerMessage::Logs { events, .. } => lines += events.len(),
                ServerMessage::Error { code, .. } => errors.push(code),
                ServerMessage::Status { .. } => {}
            }
        }
        (lines, errors)
    };
    let resume = |since: u64| format!(r#"{{"action":"resume","since_index":{since}}}"#);
    e.ws.message("c9", &resume(0)).await.unwrap();
    assert_eq!(
        pushed(&e),
        (runvoy_core::services::BACKLOG_PAGE, vec![]),
        "one page, not the backlog of 2,500"
    );
    e.ws.message("c9", &resume(0)).await.unwrap();
    assert_eq!(
        pushed(&e),
        (0, vec![runvoy_core::ws::RATE_LIMITED.to_string()])
    );
    e.clock.advance(runvoy_core::ws::RESUME_INTERVAL_MS);
    e.ws.message("c9", &resume(2_000)).await.unwrap();
    assert_eq!(
        pushed(&e),
        (500, vec![]),
        "the next page from where the client is"
    );
}

/// A connection lives as long as its token: after it expires, the next push closes the
/// connection instead of sending (its client reconnects with a fresh token).
#[tokio::test]
async fn a_connection_is_closed_when_its_token_expires() {
    let e = env();
    write(&e, "ex10", 2);
    let first: Vec<SourceEvent> = e.source.events("ex10").into_iter().take(1).collect();
    e.appender.append("ex10", first, None).await.unwrap();
    let now_secs = e.clock.now_ms() / 1000;
    let token = e.signer.sign("ex10", now_secs);
    let conn =
        e.ws.connect(
            "c10",
            &format!("execution_id=ex10&token={token}&since_index=1"),
        )
        .await
        .unwrap();
    assert_eq!(
        conn.expires_at,
        now_secs + 600,
        "the token's expiry, not 2 h"
    );
    // Past the token's expiry, a new line is not sent: the connection is closed.
    e.clock.advance(601_000);
    let rest: Vec<SourceEvent> = e.source.events("ex10").into_iter().skip(1).collect();
    let out = e.appender.append("ex10", rest, None).await.unwrap();
    let head = e.appender.store().head("ex10").await.unwrap().unwrap();
    e.fanout.notify(&head, &[]).await.unwrap();
    let _ = out;
    assert!(
        e.pusher.take("c10").is_empty(),
        "nothing after the token expired"
    );
    assert!(e.pusher.was_closed("c10"));
    assert!(e.fanout.connections().get("c10").await.unwrap().is_none());
    assert_eq!(e.metrics.get(Metric::ConnectionsExpired), 1);
}

/// One execution `ex` on the memory store, its appender and connections, for fan-out tests
/// with pushers and readers of their own.
struct Room {
    clock: Arc<SimClock>,
    store: Arc<MemoryStore>,
    metrics: Arc<MemoryMetrics>,
    appender: Appender,
    connections: Arc<MemoryConnections>,
}

impl Room {
    fn new() -> Room {
        let clock = Arc::new(SimClock::new(1_700_000_000_000, 1));
        let store = Arc::new(MemoryStore::new().with_clock(clock.clone()));
        let metrics = Arc::new(MemoryMetrics::new());
        let appender = Appender::new(
            store.clone(),
            clock.clone(),
            metrics.clone(),
            EngineConfig::default(),
        );
        Room {
            clock,
            store,
            metrics,
            appender,
            connections: Arc::new(MemoryConnections::new()),
        }
    }

    async fn connect(&self, id: &str, cursor: u64) {
        self.connections
            .put(runvoy_core::Connection {
                connection_id: id.into(),
                execution_id: "ex".into(),
                cursor,
                connected_at: self.clock.now_ms(),
                expires_at: self.clock.now_ms() / 1000 + 600,
                resumed_at: 0,
            })
            .await
            .unwrap();
    }

    fn fanout(&self, reader: Arc<dyn LogReader>, pusher: Arc<dyn Pusher>) -> FanOut {
        FanOut::new(
            reader,
            self.connections.clone(),
            pusher,
            self.metrics.clone(),
            self.clock.clone(),
        )
    }

    /// Commits lines `from..from + n` of `bytes` bytes each and notifies `fanout`.
    async fn write(&self, fanout: &FanOut, from: i64, n: i64, bytes: usize) -> u64 {
        let events = (from..from + n)
            .map(|i| SourceEvent {
                event_id: format!("e{i}"),
                timestamp: self.clock.now_ms() - 10_000 + i,
                message: format!("{i:0>bytes$}"),
            })
            .collect();
        let out = self.appender.append("ex", events, None).await.unwrap();
        let head = out.head.unwrap();
        fanout.notify(&head, &out.committed).await.unwrap();
        head.last_index
    }
}

/// The last index a connection that had `from` reached with what was pushed to it, every push
/// continuing the one before.
fn reached(pusher: &RecordingPusher, id: &str, from: u64) -> u64 {
    let mut f = Follower::new(from);
    for m in pusher.take(id) {
        if let ServerMessage::Logs { events, .. } = serde_json::from_str(&m).unwrap() {
            assert!(!f.accept(events).gap, "{id} was pushed a jump");
        }
    }
    f.last()
}

/// A pusher that takes a few scheduler turns per push and counts the pushes in flight.
#[derive(Default)]
struct SlowPusher {
    inner: RecordingPusher,
    in_flight: AtomicUsize,
    most: AtomicUsize,
}

#[async_trait]
impl Pusher for SlowPusher {
    async fn push(&self, connection_id: &str, text: &str) -> Result<(), PushError> {
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        for _ in 0..5 {
            YieldNow::default().await;
        }
        self.in_flight.fetch_sub(1, SeqCst);
        self.inner.push(connection_id, text).await
    }

    async fn close(&self, connection_id: &str) -> Result<(), PushError> {
        self.inner.close(connection_id).await
    }
}

#[tokio::test]
async fn fan_out_serves_connections_side_by_side_and_reaches_every_one() {
    let room = Room::new();
    let followers = 3 * FANOUT_CONCURRENCY;
    for i in 0..followers {
        room.connect(&format!("c{i}"), 0).await;
    }
    let pusher = Arc::new(SlowPusher::default());
    let fanout = room.fanout(room.store.clone(), pusher.clone());
    room.write(&fanout, 0, 3, 8).await;

    let most = pusher.most.load(SeqCst);
    assert!(
        most > 1 && most <= FANOUT_CONCURRENCY,
        "{most} pushes in flight at most; expected 2..={FANOUT_CONCURRENCY}"
    );
    for i in 0..followers {
        assert_eq!(reached(&pusher.inner, &format!("c{i}"), 0), 3, "c{i}");
    }
}

/// A reader that counts the pages read through it.
struct CountingReader {
    inner: Arc<MemoryStore>,
    pages: AtomicUsize,
}

#[async_trait]
impl HeadReader for CountingReader {
    async fn head(&self, execution_id: &str) -> Result<Option<Head>, StoreError> {
        self.inner.head(execution_id).await
    }
}

#[async_trait]
impl LogReader for CountingReader {
    async fn read_bounded(
        &self,
        execution_id: &str,
        after: u64,
        through: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEvent>, StoreError> {
        self.pages.fetch_add(1, SeqCst);
        self.inner
            .read_bounded(execution_id, after, through, limit, max_bytes)
            .await
    }

    async fn recent(
        &self,
        after_ms: i64,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<ExecutionSummary>, StoreError> {
        self.inner.recent(after_ms, before_ms, limit).await
    }
}

#[tokio::test]
async fn connections_behind_the_fresh_lines_share_one_read() {
    let room = Room::new();
    let reader = Arc::new(CountingReader {
        inner: room.store.clone(),
        pages: AtomicUsize::new(0),
    });
    let pusher = Arc::new(RecordingPusher::new());
    let fanout = room.fanout(reader.clone(), pusher.clone());
    room.write(&fanout, 0, 50, 8).await;
    // Twenty connections at lines 10..29: each is missing more than the next batch holds.
    for i in 0..20u64 {
        room.connect(&format!("c{i}"), 10 + i).await;
    }
    let before = reader.pages.load(SeqCst);
    assert_eq!(room.write(&fanout, 50, 5, 8).await, 55);

    assert_eq!(
        reader.pages.load(SeqCst) - before,
        1,
        "one read served the twenty"
    );
    for i in 0..20u64 {
        assert_eq!(reached(&pusher, &format!("c{i}"), 10 + i), 55, "c{i}");
    }
    // Caught up: the next batch is pushed from what was committed, with no read.
    room.write(&fanout, 55, 2, 8).await;
    assert_eq!(reader.pages.load(SeqCst) - before, 1);
}

/// A pusher whose first push to `c0` fails (not gone: throttled, say).
#[derive(Default)]
struct FailsFirst {
    inner: RecordingPusher,
    failed: AtomicBool,
}

#[async_trait]
impl Pusher for FailsFirst {
    async fn push(&self, connection_id: &str, text: &str) -> Result<(), PushError> {
        if connection_id == "c0" && !self.failed.swap(true, SeqCst) {
            return Err(PushError::Failed("429".into()));
        }
        self.inner.push(connection_id, text).await
    }

    async fn close(&self, connection_id: &str) -> Result<(), PushError> {
        self.inner.close(connection_id).await
    }
}

#[tokio::test]
async fn after_a_failed_push_nothing_more_is_sent_that_would_arrive_after_the_hole() {
    let room = Room::new();
    room.connect("c0", 0).await;
    room.connect("c1", 0).await;
    let pusher = Arc::new(FailsFirst::default());
    let fanout = room.fanout(room.store.clone(), pusher.clone());
    // Three lines of 20 KB: three messages under the 32 KB frame.
    room.write(&fanout, 0, 3, 20 * 1024).await;
    assert_eq!(
        pusher.inner.take("c0").len(),
        0,
        "nothing after the failed first message"
    );
    assert_eq!(
        pusher.inner.take("c1").len(),
        3,
        "the other connection got its three"
    );
    assert_eq!(room.metrics.get(Metric::PushFailures), 1);
}
