//! Behaviour of the API, WebSocket and fan-out services on the in-memory ports.

use std::sync::Arc;

use runvoy_core::api::{Api, ApiConfig, HttpRequest, HttpResponse};
use runvoy_core::auth::{ApiKeys, TokenSigner};
use runvoy_core::client::Follower;
use runvoy_core::lines::{LINES_CONTENT_TYPE, LinesPage};
use runvoy_core::memory::{
    MemoryConnections, MemoryMetrics, MemorySource, MemoryStore, RecordingPusher, SimClock,
};
use runvoy_core::ports::{Clock, LogStore, Metric, SourcePage};
use runvoy_core::services::{
    Appender, Completer, EngineConfig, FanOut, Reader, Reconciler, pack_messages,
};
use runvoy_core::wire::{LogsResponse, ServerMessage};
use runvoy_core::ws::WsService;
use runvoy_core::{LogEvent, SourceEvent, Status};
use serde_json::Value;

const KEY: &str = "k-123";

struct Env {
    clock: Arc<SimClock>,
    source: Arc<MemorySource>,
    pusher: Arc<RecordingPusher>,
    metrics: Arc<MemoryMetrics>,
    appender: Appender,
    fanout: FanOut,
    api: Api,
    ws: WsService,
    signer: TokenSigner,
}

fn env() -> Env {
    let clock = Arc::new(SimClock::new(1_700_000_000_000, 1));
    let store: Arc<dyn LogStore> = Arc::new(MemoryStore::new().with_clock(clock.clone()));
    let source = Arc::new(MemorySource::new(3));
    let pusher = Arc::new(RecordingPusher::new());
    let metrics = Arc::new(MemoryMetrics::new());
    let appender = Appender::new(
        store.clone(),
        clock.clone(),
        metrics.clone(),
        EngineConfig::default(),
    );
    let reader = Reader::new(store.clone(), clock.clone());
    let fanout = FanOut::new(
        store.clone(),
        Arc::new(MemoryConnections::new()),
        pusher.clone(),
        metrics.clone(),
        clock.clone(),
    );
    let reconciler = Reconciler::new(source.clone(), appender.clone(), metrics.clone());
    let completer = Completer::new(reconciler.clone(), fanout.clone());
    let signer = TokenSigner::new(b"s".to_vec(), 600);
    let api = Api::new(
        reader.clone(),
        reconciler,
        completer,
        fanout.clone(),
        ApiKeys::new(vec![KEY.into()]),
        signer.clone(),
        clock.clone(),
        ApiConfig {
            websocket_url: Some("ws://127.0.0.1:8787/ws".into()),
            reconcile_interval_ms: 0,
            ..ApiConfig::default()
        },
    );
    let ws = WsService::new(
        reader,
        fanout.clone(),
        pusher.clone(),
        signer.clone(),
        clock.clone(),
    );
    Env {
        clock,
        source,
        pusher,
        metrics,
        appender,
        fanout,
        api,
        ws,
        signer,
    }
}

async fn call(
    api: &Api,
    method: &str,
    path: &str,
    query: &str,
    key: Option<&str>,
    body: &str,
) -> HttpResponse {
    api.handle(HttpRequest {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        api_key: key.map(str::to_string),
        accept: None,
        body: body.as_bytes().to_vec(),
    })
    .await
}

fn error_code(r: &HttpResponse) -> String {
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        v["error"].as_str().is_some_and(|s| !s.is_empty()),
        "no sentence in {}",
        r.body
    );
    v["code"].as_str().unwrap().to_string()
}

fn write(e: &Env, exec: &str, n: usize) {
    for i in 0..n {
        // A minute before the clock: recent lines (older ones would be expired).
        e.source
            .put(exec, 1_699_999_940_000 + i as i64, &format!("line {i}"));
    }
}

#[tokio::test]
async fn first_read_populates_from_the_source_and_pages() {
    let e = env();
    write(&e, "ex1", 10);
    let r = call(
        &e.api,
        "GET",
        "/api/v1/executions/ex1/logs",
        "limit=4",
        Some(KEY),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let page: LogsResponse = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(page.has_more);
    assert_eq!(page.last_index, 4);
    assert!(
        page.websocket_url
            .unwrap()
            .contains("execution_id=ex1&token=")
    );
    let r = call(
        &e.api,
        "GET",
        "/api/v1/executions/ex1/logs",
        "since_index=8",
        Some(KEY),
        "",
    )
    .await;
    let page: LogsResponse = serde_json::from_str(&r.body).unwrap();
    assert_eq!(page.events.len(), 2);
    assert!(!page.has_more);
    // Past the end: empty, last_index echoes since_index.
    let r = call(
        &e.api,
        "GET",
        "/api/v1/executions/ex1/logs",
        "since_index=50",
        Some(KEY),
        "",
    )
    .await;
    let page: LogsResponse = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (page.events.len(), page.last_index, page.has_more),
        (0, 50, false)
    );
    assert_eq!(e.metrics.get(Metric::EventsReconciled), 10);
}

/// `GET …/logs?{query}` asking for a dense page.
async fn get_dense(api: &Api, exec: &str, query: &str) -> HttpResponse {
    api.handle(HttpRequest {
        method: "GET".into(),
        path: format!("/api/v1/executions/{exec}/logs"),
        query: query.into(),
        api_key: Some(KEY.into()),
        accept: Some(format!("application/json;q=0.5, {LINES_CONTENT_TYPE}")),
        body: Vec::new(),
    })
    .await
}

#[tokio::test]
async fn a_dense_page_is_served_when_asked_and_json_otherwise() {
    let e = env();
    write(&e, "exd", 10);
    // A line that travels as base64 in JSON (escaping could grow it sixfold).
    e.source
        .put("exd", 1_699_999_950_000, &"\u{1}".repeat(200_000));
    let json = call(
        &e.api,
        "GET",
        "/api/v1/executions/exd/logs",
        "since_index=2&limit=4",
        Some(KEY),
        "",
    )
    .await;
    assert_eq!(json.content_type, "application/json");
    let want: LogsResponse = serde_json::from_str(&json.body).unwrap();

    let r = get_dense(&e.api, "exd", "since_index=2&limit=4").await;
    assert_eq!(
        (r.status, r.content_type),
        (200, LINES_CONTENT_TYPE),
        "{}",
        r.body
    );
    let page = LinesPage::parse(r.body.as_bytes()).unwrap();
    assert_eq!((page.first_index(), page.len()), (3, 4));
    let got: Vec<(i64, &[u8])> = page
        .records()
        .map(|x| (page.timestamp(&x), page.message(&x)))
        .collect();
    let expected: Vec<(i64, &[u8])> = want
        .events
        .iter()
        .map(|x| (x.timestamp, x.message.as_bytes()))
        .collect();
    assert_eq!(got, expected);
    let mut meta = want.clone();
    meta.events.clear();
    // The websocket token is signed per response; the rest is the JSON page's.
    let mut dense_meta = page.meta.clone();
    dense_meta.websocket_url = meta.websocket_url.clone();
    assert_eq!(dense_meta, meta);
    assert!(page.meta.websocket_url.is_some());

    // A page holding that line stays JSON.
    let r = get_dense(&e.api, "exd", "since_index=9").await;
    assert_eq!(r.content_type, "application/json");
    let page: LogsResponse = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        page.events.iter().map(|x| x.index).collect::<Vec<_>>(),
        [10, 11]
    );
    assert!(page.events[1].travels_base64());
    let r = get_dense(&e.api, "exd", "limit=10").await;
    assert_eq!(r.content_type, LINES_CONTENT_TYPE);
}

#[tokio::test]
async fn recent_executions_are_listed_newest_first() {
    let e = env();
    for id in ["first", "second", "third"] {
        write(&e, id, 2);
        // Reading an execution populates it: its head is created now (the clock ticks).
        let r = call(
            &e.api,
            "GET",
            &format!("/api/v1/executions/{id}/logs"),
            "",
            Some(KEY),
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = call(
        &e.api,
        "GET",
        "/api/v1/executions",
        "limit=2",
        Some(KEY),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let listed: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let ids: Vec<&str> = listed["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["execution_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["third", "second"]);
    assert_eq!(listed["executions"][0]["status"], "RUNNING");
    assert!(listed["executions"][0]["created_at"].is_i64());
}

#[tokio::test]
async fn bad_requests_get_the_error_json() {
    let e = env();
    write(&e, "ex2", 1);
    let p = "/api/v1/executions/ex2/logs";
    let cases = [
        ("GET", p, "", None, 401, "unauthorized"),
        ("GET", p, "", Some("wrong"), 401, "unauthorized"),
        ("GET", p, "since_index=-1", Some(KEY), 400, "bad_request"),
        ("GET", p, "since_index=abc", Some(KEY), 400, "bad_request"),
        (
            "GET",
            p,
            "since_index=18446744073709551615",
            Some(KEY),
            400,
            "bad_request",
        ),
        (
            "GET",
            p,
            "since_index=9007199254740992",
            Some(KEY),
            400,
            "bad_request",
        ),
        (
            "GET",
            p,
            "since_index=1&since_index=2",
            Some(KEY),
            400,
            "bad_request",
        ),
        ("GET", p, "limit=0", Some(KEY), 400, "bad_request"),
        ("GET", p, "limit=100001", Some(KEY), 400, "bad_request"),
        ("GET", p, "colour=red", Some(KEY), 400, "bad_request"),
        ("GET", p, "since_index=%zz", Some(KEY), 400, "bad_request"),
        (
            "GET",
            "/api/v1/executions/nope/logs",
            "",
            Some(KEY),
            404,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/executions/bad%20id/logs",
            "",
            Some(KEY),
            400,
            "bad_request",
        ),
        ("GET", "/api/v2/whatever", "", Some(KEY), 404, "not_found"),
        ("DELETE", p, "", Some(KEY), 405, "method_not_allowed"),
        ("GET", "/api/v1/executions", "", None, 401, "unauthorized"),
        (
            "GET",
            "/api/v1/executions",
            "limit=0",
            Some(KEY),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/executions",
            "limit=201",
            Some(KEY),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/executions",
            "days=0",
            Some(KEY),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/executions",
            "days=32",
            Some(KEY),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/executions",
            "since=1",
            Some(KEY),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/executions",
            "",
            Some(KEY),
            405,
            "method_not_allowed",
        ),
    ];
    for (m, path, q, key, status, code) in cases {
        let r = call(&e.api, m, path, q, key, "").await;
        assert_eq!(
            (r.status, error_code(&r)),
            (status, code.to_string()),
            "{m} {path}?{q}"
        );
    }
    let c = "/api/v1/executions/ex2/complete";
    let r = call(&e.api, "POST", c, "", Some(KEY), "{not json").await;
    assert_eq!((r.status, error_code(&r).as_str()), (400, "bad_request"));
    let r = call(&e.api, "POST", c, "", Some(KEY), r#"{"status":"RUNNING"}"#).await;
    assert_eq!((r.status, error_code(&r).as_str()), (400, "bad_request"));
    let big = format!(r#"{{"status":"FAILED","pad":"{}"}}"#, "x".repeat(70_000));
    let r = call(&e.api, "POST", c, "", Some(KEY), &big).await;
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (413, "payload_too_large")
    );
    // An unauthorized request reads nothing: no population happened.
    assert_eq!(e.metrics.get(Metric::EventsReconciled), 0);
}

#[tokio::test]
async fn completion_publishes_final_index_after_the_tail() {
    let e = env();
    write(&e, "ex3", 5);
    // Only two lines were delivered by the subscription; completion must reconcile the rest.
    let first: Vec<SourceEvent> = e.source.events("ex3").into_iter().take(2).collect();
    e.appender.append("ex3", first, None).await.unwrap();
    let r = call(
        &e.api,
        "POST",
        "/api/v1/executions/ex3/complete",
        "",
        Some(KEY),
        r#"{"status":"FAILED","exit_code":4}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (v["final_index"].as_u64(), v["exit_code"].as_i64()),
        (Some(5), Some(4))
    );
    // Same status again: idempotent. Another status: conflict.
    let again = call(
        &e.api,
        "POST",
        "/api/v1/executions/ex3/complete",
        "",
        Some(KEY),
        r#"{"status":"FAILED","exit_code":4}"#,
    )
    .await;
    assert_eq!(again.status, 200);
    let other = call(
        &e.api,
        "POST",
        "/api/v1/executions/ex3/complete",
        "",
        Some(KEY),
        r#"{"status":"SUCCEEDED"}"#,
    )
    .await;
    assert_eq!(
        (other.status, error_code(&other).as_str()),
        (409, "conflict")
    );
    let r = call(
        &e.api,
        "GET",
        "/api/v1/executions/ex3/logs",
        "",
        Some(KEY),
        "",
    )
    .await;
    let page: LogsResponse = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (page.status, page.final_index, page.exit_code),
        (Status::Failed, Some(5), Some(4))
    );
    assert!(page.websocket_url.is_none());
    let r = call(
        &e.api,
        "POST",
        "/api/v1/executions/ghost/complete",
        "",
        Some(KEY),
        r#"{"status":"FAILED"}"#,
    )
    .await;
    assert_eq!(r.status, 404);
}

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

#[test]
fn follower_prints_once_in_order_and_reports_gaps() {
    let ev = |i: u64| LogEvent {
        index: i,
        event_id: i.to_string(),
        timestamp: 0,
        message: String::new(),
    };
    let mut f = Follower::new(0);
    let a = f.accept(vec![ev(2), ev(1), ev(1)]);
    assert_eq!(
        a.print.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let a = f.accept(vec![ev(5)]);
    assert!(a.gap && a.print.is_empty());
    f.terminal(Status::Stopped, None, 3);
    assert!(!f.is_done());
    f.accept(vec![ev(3)]);
    assert_eq!((f.is_done(), f.exit_code()), (true, Some(1)));
}

#[test]
fn a_run_releases_only_what_continues_the_sequence() {
    let mut f = Follower::new(0);
    let r = f.accept_run(1, 3);
    assert_eq!((r.skip, r.take, r.gap, f.last()), (0, 3, false, 3));
    // Overlapping what was printed: only the new tail.
    let r = f.accept_run(2, 4);
    assert_eq!((r.skip, r.take, r.gap, f.last()), (2, 2, false, 5));
    // Wholly printed already.
    let r = f.accept_run(1, 5);
    assert_eq!((r.skip, r.take, r.gap, f.last()), (5, 0, false, 5));
    // Beyond a hole: nothing, and a gap.
    let r = f.accept_run(7, 2);
    assert_eq!((r.skip, r.take, r.gap, f.last()), (0, 0, true, 5));
    let r = f.accept_run(9, 0);
    assert_eq!((r.take, r.gap), (0, false));
    f.terminal(Status::Succeeded, Some(0), 6);
    f.accept_run(6, 1);
    assert_eq!(f.exit_code(), Some(0));
}

/// What a [`Tapped`] source does after each read: given the source, the execution, the read's
/// number and the page it read.
type Tap = Box<dyn Fn(&MemorySource, &str, usize, &mut SourcePage) + Send + Sync>;

/// A memory source that counts the pages read from it and runs a tap after each read (to move
/// a clock, write to the stream while it is read, or change what the page says).
struct Tapped {
    inner: Arc<MemorySource>,
    reads: std::sync::atomic::AtomicUsize,
    tap: Tap,
}

impl Tapped {
    fn new(
        inner: Arc<MemorySource>,
        tap: impl Fn(&MemorySource, &str, usize, &mut SourcePage) + Send + Sync + 'static,
    ) -> Tapped {
        Tapped {
            inner,
            reads: Default::default(),
            tap: Box::new(tap),
        }
    }

    /// Each read takes `page_ms` of (simulated) time.
    fn counting(inner: Arc<MemorySource>, clock: Arc<SimClock>, page_ms: i64) -> Tapped {
        Tapped::new(inner, move |_, _, _, _| clock.advance(page_ms))
    }

    fn pages(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl runvoy_core::ports::LogSource for Tapped {
    async fn exists(&self, id: &str) -> Result<bool, runvoy_core::StoreError> {
        self.inner.exists(id).await
    }
    async fn newest_timestamp(&self, id: &str) -> Result<Option<i64>, runvoy_core::StoreError> {
        self.inner.newest_timestamp(id).await
    }
    async fn page(
        &self,
        id: &str,
        token: Option<&str>,
    ) -> Result<SourcePage, runvoy_core::StoreError> {
        let mut page = self.inner.page(id, token).await?;
        let n = self
            .reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (self.tap)(&self.inner, id, n, &mut page);
        Ok(page)
    }
}

/// 25 lines of `id` in a source read in pages of 10 through `tap`, and a reconciler from it
/// into an empty store.
fn reconciler_of_25_lines(
    id: &str,
    tap: impl Fn(&MemorySource, &str, usize, &mut SourcePage) + Send + Sync + 'static,
) -> (Arc<dyn LogStore>, Reconciler) {
    let clock = Arc::new(SimClock::new(1_700_000_000_000, 1));
    let store: Arc<dyn LogStore> = Arc::new(MemoryStore::new().with_clock(clock.clone()));
    let inner = Arc::new(MemorySource::new(10));
    for i in 0..25 {
        inner.put(id, 1_699_999_000_000 + i, &format!("line {i}"));
    }
    let metrics = Arc::new(MemoryMetrics::new());
    let appender = Appender::new(
        store.clone(),
        clock,
        metrics.clone(),
        EngineConfig::default(),
    );
    let source = Arc::new(Tapped::new(inner, tap));
    (store, Reconciler::new(source, appender, metrics))
}

#[tokio::test]
async fn reconciling_a_stream_being_written_stops_at_the_end_it_read() {
    // The token at the end of a growing stream never repeats: reconciliation must stop at the
    // end of what it read, not chase the producer until its deadline (a first read of a live
    // execution took the whole 5 s budget, twice, before this).
    // A stream its producer keeps writing: a new line lands after every read.
    let (store, reconciler) = reconciler_of_25_lines("live", |src, id, n, _| {
        src.put(
            id,
            1_700_000_000_000 + n as i64,
            &format!("written during read {n}"),
        );
    });
    let outcome = reconciler.reconcile("live").await.unwrap();
    assert!(outcome.caught_up);
    assert_eq!(
        outcome.pages, 3,
        "25 lines in pages of 10 (and one line written after each read)"
    );
    assert_eq!(store.head("live").await.unwrap().unwrap().last_index, 27);
    // The next reconciliation continues from there.
    let again = reconciler.reconcile("live").await.unwrap();
    assert!(again.caught_up);
    assert_eq!(
        again.recovered.len(),
        1,
        "the line written after the last read"
    );
    assert_eq!(store.head("live").await.unwrap().unwrap().last_index, 28);
}

#[tokio::test]
async fn a_completion_sweep_reads_past_lines_written_during_it() {
    // Every page meets a line written during the read, as a CloudWatch read does when a late
    // line with an old timestamp lands in the middle of the stream.
    let (store, reconciler) = reconciler_of_25_lines("late", |_, _, _, page| page.live_end = true);
    // A forward read stops there: the rest is the subscription's (or the next read's).
    let forward = reconciler.reconcile("late").await.unwrap();
    assert_eq!((forward.pages, forward.recovered.len()), (1, 10));
    // The sweep that completion waits for reads on until the token comes back.
    let (swept, complete) = reconciler.sweep("late", 0, 0, None).await.unwrap();
    assert!(complete);
    assert_eq!(swept.recovered.len(), 15);
    assert_eq!(store.head("late").await.unwrap().unwrap().last_index, 25);
}

#[tokio::test]
async fn completion_that_runs_out_of_time_continues_where_it_stopped() {
    use runvoy_core::CoreError;
    let clock = Arc::new(SimClock::new(1_700_000_000_000, 1));
    let store: Arc<dyn LogStore> = Arc::new(MemoryStore::new().with_clock(clock.clone()));
    let inner = Arc::new(MemorySource::new(10));
    for i in 0..100 {
        inner.put("long", 1_699_999_000_000 + i, &format!("line {i}"));
    }
    let source = Arc::new(Tapped::counting(inner, clock.clone(), 1_000));
    let metrics = Arc::new(MemoryMetrics::new());
    let appender = Appender::new(
        store.clone(),
        clock.clone(),
        metrics.clone(),
        EngineConfig::default(),
    );
    let fanout = FanOut::new(
        store.clone(),
        Arc::new(MemoryConnections::new()),
        Arc::new(RecordingPusher::new()),
        metrics.clone(),
        clock.clone(),
    );
    let completer = Completer::new(
        Reconciler::new(source.clone(), appender, metrics.clone()),
        fanout,
    );
    let mut progress = Vec::new();
    for _ in 0..2 {
        let deadline = clock.now_ms() + 3_500;
        let r = completer
            .complete("long", Status::Succeeded, Some(0), None, Some(deadline))
            .await;
        assert!(matches!(r, Err(CoreError::Unfinished(_))), "{r:?}");
        let head = store.head("long").await.unwrap().unwrap();
        assert_eq!(
            head.status,
            Status::Running,
            "not terminal before the re-read ends"
        );
        assert!(head.sweep_cursor.is_some(), "progress is saved");
        progress.push(head.last_index);
    }
    assert!(progress[0] > 0 && progress[1] > progress[0], "{progress:?}");
    let head = completer
        .complete("long", Status::Succeeded, Some(0), None, None)
        .await
        .unwrap();
    assert_eq!(
        (head.status, head.final_index),
        (Status::Succeeded, Some(100))
    );
    let pages = source.pages();
    assert!(
        pages <= 12,
        "a retry continues instead of starting over: {pages} pages for 10"
    );
}

#[tokio::test]
async fn an_execution_whose_lines_expired_is_never_indexed_again() {
    let e = env();
    // The source still holds lines of an execution eight days old; its stored lines (and head)
    // are gone, as TTL leaves them: reading it answers 410, it does not come back RUNNING.
    let eight_days_ago = 1_700_000_000_000 - 8 * 86_400_000;
    for i in 0..3 {
        e.source.put("old", eight_days_ago + i, &format!("old {i}"));
    }
    let r = call(
        &e.api,
        "GET",
        "/api/v1/executions/old/logs",
        "",
        Some(KEY),
        "",
    )
    .await;
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (410, "expired"),
        "{}",
        r.body
    );
    let r = call(&e.api, "GET", "/api/v1/executions/old", "", Some(KEY), "").await;
    assert_eq!(r.status, 410, "{}", r.body);
    // A late subscription batch of it is refused and counted, not committed as a fragment.
    let forwarder = runvoy_core::services::Forwarder::new(
        e.appender.clone(),
        e.fanout.clone(),
        e.metrics.clone(),
    );
    let late = e.source.events("old");
    let out = forwarder.forward("old", late).await.unwrap();
    assert!(out.committed.is_empty());
    assert_eq!(e.metrics.get(Metric::ExpiredEvents), 3);
    assert!(e.appender.store().head("old").await.unwrap().is_none());
    // A recent execution is populated as before.
    write(&e, "new", 2);
    let r = call(
        &e.api,
        "GET",
        "/api/v1/executions/new/logs",
        "",
        Some(KEY),
        "",
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn idle_reads_reconcile_ever_less_often_until_lines_go_missing() {
    let clock = Arc::new(SimClock::new(1_700_000_000_000, 1));
    let store: Arc<dyn LogStore> = Arc::new(MemoryStore::new().with_clock(clock.clone()));
    let inner = Arc::new(MemorySource::new(100));
    let source = Arc::new(Tapped::counting(inner.clone(), clock.clone(), 0));
    let metrics = Arc::new(MemoryMetrics::new());
    let appender = Appender::new(
        store.clone(),
        clock.clone(),
        metrics.clone(),
        EngineConfig::default(),
    );
    let fanout = FanOut::new(
        store.clone(),
        Arc::new(MemoryConnections::new()),
        Arc::new(RecordingPusher::new()),
        metrics.clone(),
        clock.clone(),
    );
    let reconciler = Reconciler::new(source.clone(), appender, metrics.clone());
    let api = Api::new(
        Reader::new(store.clone(), clock.clone()),
        reconciler.clone(),
        Completer::new(reconciler, fanout.clone()),
        fanout,
        ApiKeys::new(vec![KEY.into()]),
        TokenSigner::new(b"s".to_vec(), 600),
        clock.clone(),
        ApiConfig {
            reconcile_interval_ms: 5_000,
            reconcile_max_interval_ms: 20_000,
            ..ApiConfig::default()
        },
    );
    inner.put("idle", 1_699_999_990_000, "first");
    // Whether a read at `after_ms` from now reads the source.
    let read_after = |after_ms: i64| {
        let (api, clock, source) = (&api, &clock, &source);
        async move {
            clock.advance(after_ms);
            let before = source.pages();
            let r = call(
                api,
                "GET",
                "/api/v1/executions/idle/logs",
                "",
                Some(KEY),
                "",
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.body);
            source.pages() > before
        }
    };
    // Each wait is spread over ±25 %: not due before 3/4 of it, due after 5/4.
    assert!(read_after(0).await, "the first read populates");
    assert!(!read_after(0).await, "at once again: nothing is due");
    assert!(
        !read_after(3_700).await,
        "nothing is due before 5 s (less 25 %)"
    );
    assert!(read_after(2_600).await, "after 5 s (plus 25 %)");
    assert!(!read_after(7_400).await, "the wait doubled to 10 s");
    assert!(read_after(5_200).await);
    assert!(!read_after(14_900).await, "then 20 s");
    assert!(read_after(10_200).await);
    assert!(!read_after(14_900).await, "20 s at most");
    // A line the subscription never delivered: found at the next reconcile, and the wait goes
    // back to the minimum.
    inner.put("idle", 1_699_999_995_000, "dropped");
    assert!(read_after(10_200).await);
    assert!(
        read_after(6_300).await,
        "back to 5 s after lines went missing"
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
