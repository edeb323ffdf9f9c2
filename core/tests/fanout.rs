//! WebSocket connections and fan-out on the in-memory ports: token scope, pushes of contiguous
//! runs only, packing under the frame, resumes at most once a second, and token expiry.

mod common;

use common::{Env, KEY, call, env, write};
use runvoy_core::LogEvent;
use runvoy_core::SourceEvent;
use runvoy_core::client::Follower;
use runvoy_core::ports::{Clock, HeadReader, LogReader, Metric};
use runvoy_core::services::pack_messages;
use runvoy_core::wire::ServerMessage;

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

/// A pusher that takes a few scheduler turns per push and counts the pushes in flight.
struct SlowPusher {
    inner: runvoy_core::memory::RecordingPusher,
    in_flight: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl runvoy_core::ports::Pusher for SlowPusher {
    async fn push(
        &self,
        connection_id: &str,
        text: &str,
    ) -> Result<(), runvoy_core::ports::PushError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        for _ in 0..5 {
            runvoy_core::memory::YieldNow::default().await;
        }
        self.in_flight.fetch_sub(1, SeqCst);
        self.inner.push(connection_id, text).await
    }

    async fn close(&self, connection_id: &str) -> Result<(), runvoy_core::ports::PushError> {
        self.inner.close(connection_id).await
    }
}

#[tokio::test]
async fn fan_out_serves_connections_side_by_side_and_reaches_every_one() {
    use runvoy_core::memory::{MemoryConnections, MemoryMetrics, MemoryStore, SimClock};
    use runvoy_core::ports::{ConnectionStore, LogStore};
    use runvoy_core::services::{Appender, EngineConfig, FANOUT_CONCURRENCY, FanOut};
    use std::sync::Arc;
    use std::sync::atomic::Ordering::SeqCst;

    let clock = Arc::new(SimClock::new(1_700_000_000_000, 1));
    let store: Arc<dyn LogStore> = Arc::new(MemoryStore::new().with_clock(clock.clone()));
    let metrics = Arc::new(MemoryMetrics::new());
    let appender = Appender::new(
        store.clone(),
        clock.clone(),
        metrics.clone(),
        EngineConfig::default(),
    );
    let connections = Arc::new(MemoryConnections::new());
    let pusher = Arc::new(SlowPusher {
        inner: runvoy_core::memory::RecordingPusher::new(),
        in_flight: Default::default(),
        most: Default::default(),
    });
    let fanout = FanOut::new(
        store.clone(),
        connections.clone(),
        pusher.clone(),
        metrics.clone(),
        clock.clone(),
    );
    let followers = 3 * FANOUT_CONCURRENCY;
    for i in 0..followers {
        connections
            .put(runvoy_core::Connection {
                connection_id: format!("c{i}"),
                execution_id: "ex".into(),
                cursor: 0,
                connected_at: clock.now_ms(),
                expires_at: clock.now_ms() / 1000 + 600,
                resumed_at: 0,
            })
            .await
            .unwrap();
    }
    let events = (0..3)
        .map(|i| SourceEvent {
            event_id: format!("e{i}"),
            timestamp: clock.now_ms() - 1_000 + i,
            message: format!("line {i}"),
        })
        .collect();
    let out = appender.append("ex", events, None).await.unwrap();
    fanout
        .notify(out.head.as_ref().unwrap(), &out.committed)
        .await
        .unwrap();

    let most = pusher.most.load(SeqCst);
    assert!(
        most > 1 && most <= FANOUT_CONCURRENCY,
        "{most} pushes in flight at most; expected 2..={FANOUT_CONCURRENCY}"
    );
    for i in 0..followers {
        let msgs = pusher.inner.take(&format!("c{i}"));
        let mut f = Follower::new(0);
        for m in &msgs {
            if let ServerMessage::Logs { events, .. } = serde_json::from_str(m).unwrap() {
                assert!(!f.accept(events).gap);
            }
        }
        assert_eq!(f.last(), 3, "connection c{i} got every line");
    }
}

/// A reader that counts the pages read through it.
struct CountingReader {
    inner: std::sync::Arc<runvoy_core::memory::MemoryStore>,
    pages: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl HeadReader for CountingReader {
    async fn head(
        &self,
        execution_id: &str,
    ) -> Result<Option<runvoy_core::Head>, runvoy_core::StoreError> {
        self.inner.head(execution_id).await
    }
}

#[async_trait::async_trait]
impl LogReader for CountingReader {
    async fn read_bounded(
        &self,
        execution_id: &str,
        after: u64,
        through: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEvent>, runvoy_core::StoreError> {
        self.pages.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner
            .read_bounded(execution_id, after, through, limit, max_bytes)
            .await
    }

    async fn recent(
        &self,
        after_ms: i64,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<runvoy_core::ExecutionSummary>, runvoy_core::StoreError> {
        self.inner.recent(after_ms, before_ms, limit).await
    }
}

#[tokio::test]
async fn connections_behind_the_fresh_lines_share_one_read() {
    use runvoy_core::memory::{
        MemoryConnections, MemoryMetrics, MemoryStore, RecordingPusher, SimClock,
    };
    use runvoy_core::ports::ConnectionStore;
    use runvoy_core::services::{Appender, EngineConfig, FanOut};
    use std::sync::Arc;
    use std::sync::atomic::Ordering::SeqCst;

    let clock = Arc::new(SimClock::new(1_700_000_000_000, 1));
    let store = Arc::new(MemoryStore::new().with_clock(clock.clone()));
    let metrics = Arc::new(MemoryMetrics::new());
    let appender = Appender::new(
        store.clone(),
        clock.clone(),
        metrics.clone(),
        EngineConfig::default(),
    );
    let batch = |from: i64, n: i64| -> Vec<SourceEvent> {
        (from..from + n)
            .map(|i| SourceEvent {
                event_id: format!("e{i}"),
                timestamp: clock.now_ms() - 10_000 + i,
                message: format!("line {i}"),
            })
            .collect()
    };
    appender.append("ex", batch(0, 50), None).await.unwrap();
    let connections = Arc::new(MemoryConnections::new());
    // Twenty connections at lines 10..29: each is missing more than the next batch holds.
    for i in 0..20u64 {
        connections
            .put(runvoy_core::Connection {
                connection_id: format!("c{i}"),
                execution_id: "ex".into(),
                cursor: 10 + i,
                connected_at: clock.now_ms(),
                expires_at: clock.now_ms() / 1000 + 600,
                resumed_at: 0,
            })
            .await
            .unwrap();
    }
    let reader = Arc::new(CountingReader {
        inner: store.clone(),
        pages: Default::default(),
    });
    let pusher = Arc::new(RecordingPusher::new());
    let fanout = FanOut::new(
        reader.clone(),
        connections.clone(),
        pusher.clone(),
        metrics.clone(),
        clock.clone(),
    );
    let out = appender.append("ex", batch(50, 5), None).await.unwrap();
    let head = out.head.unwrap();
    assert_eq!(head.last_index, 55);
    fanout.notify(&head, &out.committed).await.unwrap();

    assert_eq!(reader.pages.load(SeqCst), 1, "one read served the twenty");
    for i in 0..20u64 {
        let mut f = Follower::new(10 + i);
        for m in pusher.take(&format!("c{i}")) {
            if let ServerMessage::Logs { events, .. } = serde_json::from_str(&m).unwrap() {
                assert!(!f.accept(events).gap);
            }
        }
        assert_eq!(f.last(), 55, "connection c{i} got every line");
    }
    // Caught up: the next batch is pushed from what was committed, with no read.
    let out = appender.append("ex", batch(55, 2), None).await.unwrap();
    fanout
        .notify(out.head.as_ref().unwrap(), &out.committed)
        .await
        .unwrap();
    assert_eq!(reader.pages.load(SeqCst), 1);
}

/// A pusher whose first push to `c0` fails (not gone: throttled, say).
struct FailsFirst {
    inner: runvoy_core::memory::RecordingPusher,
    failed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl runvoy_core::ports::Pusher for FailsFirst {
    async fn push(
        &self,
        connection_id: &str,
        text: &str,
    ) -> Result<(), runvoy_core::ports::PushError> {
        if connection_id == "c0" && !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(runvoy_core::ports::PushError::Failed("429".into()));
        }
        self.inner.push(connection_id, text).await
    }

    async fn close(&self, connection_id: &str) -> Result<(), runvoy_core::ports::PushError> {
        self.inner.close(connection_id).await
    }
}

#[tokio::test]
async fn after_a_failed_push_nothing_more_is_sent_that_would_arrive_after_the_hole() {
    use runvoy_core::memory::{
        MemoryConnections, MemoryMetrics, MemoryStore, RecordingPusher, SimClock,
    };
    use runvoy_core::ports::{ConnectionStore, LogStore};
    use runvoy_core::services::{Appender, EngineConfig, FanOut};
    use std::sync::Arc;

    let clock = Arc::new(SimClock::new(1_700_000_000_000, 1));
    let store: Arc<dyn LogStore> = Arc::new(MemoryStore::new().with_clock(clock.clone()));
    let metrics = Arc::new(MemoryMetrics::new());
    let appender = Appender::new(
        store.clone(),
        clock.clone(),
        metrics.clone(),
        EngineConfig::default(),
    );
    let connections = Arc::new(MemoryConnections::new());
    for id in ["c0", "c1"] {
        connections
            .put(runvoy_core::Connection {
                connection_id: id.into(),
                execution_id: "ex".into(),
                cursor: 0,
                connected_at: clock.now_ms(),
                expires_at: clock.now_ms() / 1000 + 600,
                resumed_at: 0,
            })
            .await
            .unwrap();
    }
    let pusher = Arc::new(FailsFirst {
        inner: RecordingPusher::new(),
        failed: Default::default(),
    });
    let fanout = FanOut::new(
        store.clone(),
        connections,
        pusher.clone(),
        metrics.clone(),
        clock.clone(),
    );
    // Three lines of 20 KB: three messages under the 32 KB frame.
    let events = (0..3)
        .map(|i| SourceEvent {
            event_id: format!("e{i}"),
            timestamp: clock.now_ms() - 1_000 + i,
            message: "x".repeat(20 * 1024),
        })
        .collect();
    let out = appender.append("ex", events, None).await.unwrap();
    fanout
        .notify(out.head.as_ref().unwrap(), &out.committed)
        .await
        .unwrap();
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
    assert_eq!(metrics.get(Metric::PushFailures), 1);
}
