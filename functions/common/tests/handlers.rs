//! Every fixture's expected behaviour, with each handler on the in-memory ports.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayWebsocketProxyRequest};
use runvoy_aws::{StreamNames, identity, subscription};
use runvoy_core::api::{Api, ApiConfig};
use runvoy_core::auth::{ApiKeys, TokenSigner};
use runvoy_core::memory::{
    MemoryConnections, MemorySource, MemoryStore, RecordingPusher, SimClock,
};
use runvoy_core::ports::{Commit, HeadReader, LogReader, LogSource, LogWriter, SourcePage};
use runvoy_core::services::{EngineConfig, Ports, Services};
use runvoy_core::ws::WsService;
use runvoy_core::{CommitError, ExecutionSummary, Head, LogEvent, SourceEvent, Status, StoreError};
use runvoy_lambda::completion::Outcome;
use runvoy_lambda::emf::EmfMetrics;
use runvoy_lambda::{api, completion, forwarder, websocket};
use serde_json::Value;

const EXEC: &str = "3f9c2b7a1d8e4c5b9a0f6e2d1c4b7a89";
const KEY: &str = "test-key-0123456789abcdef";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The in-memory source, with ids derived the way the CloudWatch source derives them.
struct CloudWatchLike(MemorySource);

#[async_trait]
impl LogSource for CloudWatchLike {
    async fn exists(&self, id: &str) -> Result<bool, StoreError> {
        self.0.exists(id).await
    }
    async fn newest_timestamp(&self, id: &str) -> Result<Option<i64>, StoreError> {
        self.0.newest_timestamp(id).await
    }
    async fn page(&self, id: &str, token: Option<&str>) -> Result<SourcePage, StoreError> {
        let p = self.0.page(id, token).await?;
        Ok(SourcePage {
            events: identity::with_ids(
                p.events
                    .into_iter()
                    .map(|e| (e.timestamp, e.message))
                    .collect(),
            ),
            next_token: p.next_token,
            live_end: p.live_end,
        })
    }
}

struct World {
    store: Arc<MemoryStore>,
    source: Arc<CloudWatchLike>,
    pusher: Arc<RecordingPusher>,
    metrics: Arc<EmfMetrics>,
    services: Services,
    api: Api,
    ws: WsService,
    signer: TokenSigner,
}

fn world() -> World {
    let clock = Arc::new(SimClock::new(1_764_570_000_000, 7));
    let store = Arc::new(MemoryStore::new().with_clock(clock.clone()));
    let source = Arc::new(CloudWatchLike(MemorySource::new(1_000)));
    let pusher = Arc::new(RecordingPusher::new());
    let metrics = Arc::new(EmfMetrics::new("test"));
    let services = Services::new(
        Ports {
            store: store.clone(),
            connections: Arc::new(MemoryConnections::new()),
            source: source.clone(),
            pusher: pusher.clone(),
            clock,
            metrics: metrics.clone(),
        },
        EngineConfig::default(),
    );
    let signer = TokenSigner::new(b"secret-secret-secret".to_vec(), 3600);
    let api = services.api(
        ApiKeys::new(vec![KEY.into()]),
        signer.clone(),
        ApiConfig {
            websocket_url: Some("wss://abc123.execute-api.us-east-1.amazonaws.com/prod".into()),
            ..ApiConfig::default()
        },
    );
    let ws = services.ws(signer.clone());
    World {
        store,
        source,
        pusher,
        metrics,
        services,
        api,
        ws,
        signer,
    }
}

/// Writes the fixture's three lines into the source (as CloudWatch holds them).
fn seed_source(w: &World) {
    let v: Value = serde_json::from_str(&fixture("subscription-data.json")).unwrap();
    let p = subscription::decode(v["awslogs"]["data"].as_str().unwrap()).unwrap();
    for e in p.log_events {
        w.source.0.put(EXEC, e.timestamp, &e.message);
    }
}

async fn forward(w: &World, event: &Value) -> forwarder::Forwarded {
    forwarder::handle(&w.services, &StreamNames::default(), &w.metrics, event)
        .await
        .unwrap()
}

#[tokio::test]
async fn subscription_data_is_appended_once_even_when_redelivered() {
    let w = world();
    let event: Value = serde_json::from_str(&fixture("subscription-data.json")).unwrap();
    let first = forward(&w, &event).await;
    assert_eq!(
        (
            first.execution_id.as_deref(),
            first.appended,
            first.duplicates
        ),
        (Some(EXEC), 3, 0)
    );
    let again = forward(&w, &event).await;
    assert_eq!((again.appended, again.duplicates), (0, 3));
    let events = w.store.all_events(EXEC);
    let got: Vec<(u64, &str)> = events
        .iter()
        .map(|e| (e.index, e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "Starting job"),
            (2, "step 1 done"),
            (3, "error: disk almost full")
        ]
    );
    let emf = w.metrics.take(0).unwrap();
    assert_eq!(
        (
            emf["events_appended"].as_u64(),
            emf["duplicates_dropped"].as_u64()
        ),
        (Some(3), Some(3))
    );
}

fn payload(stream: &str, events: &[(i64, &str)]) -> Value {
    let evs: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, (ts, m))| serde_json::json!({"id": format!("{ts}{i}"), "timestamp": ts, "message": m}))
        .collect();
    let p = serde_json::json!({"messageType":"DATA_MESSAGE","owner":"1","logGroup":"/g","logStream":stream,
        "subscriptionFilters":["f"],"logEvents":evs});
    serde_json::json!({"awslogs": {"data": subscription::encode(&p.to_string())}})
}

#[tokio::test]
async fn batches_in_reverse_order_keep_indexes_contiguous_and_batches_sorted() {
    let w = world();
    let stream = format!("task/runner/{EXEC}");
    // A minute before the clock: recent lines.
    let t = 1_764_569_940_000;
    let a = payload(&stream, &[(t + 10, "a1"), (t + 12, "a3"), (t + 11, "a2")]);
    let b = payload(&stream, &[(t + 20, "b1"), (t + 21, "b2")]);
    forward(&w, &b).await;
    forward(&w, &a).await;
    forward(&w, &b).await;
    let events = w.store.all_events(EXEC);
    let got: Vec<(u64, &str)> = events
        .iter()
        .map(|e| (e.index, e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![(1, "b1"), (2, "b2"), (3, "a1"), (4, "a2"), (5, "a3")]
    );
    let emf = w.metrics.take(0).unwrap();
    assert_eq!(
        emf["out_of_order_events"], 3,
        "a1..a3 arrived after newer lines"
    );
}

#[tokio::test]
async fn control_foreign_and_malformed_payloads_are_acknowledged_not_retried() {
    let w = world();
    let control: Value = serde_json::from_str(&fixture("subscription-control.json")).unwrap();
    assert_eq!(
        forward(&w, &control).await.skipped.as_deref(),
        Some("control message")
    );
    let foreign = payload("other/stream", &[(1, "x")]);
    assert!(
        forward(&w, &foreign)
            .await
            .skipped
            .unwrap()
            .contains("foreign stream")
    );
    let bad: Value = serde_json::from_str(&fixture("subscription-malformed.json")).unwrap();
    assert!(forward(&w, &bad).await.skipped.is_some());
    assert!(
        forward(&w, &serde_json::json!({"unexpected": true}))
            .await
            .skipped
            .is_some()
    );
    let emf = w.metrics.take(0).unwrap();
    assert_eq!(emf["poison_payloads"], 2);
    assert!(w.store.all_events(EXEC).is_empty());
}

fn http_event(name: &str, key: Option<&str>) -> ApiGatewayV2httpRequest {
    let mut v: Value = serde_json::from_str(&fixture(name)).unwrap();
    let headers = v["headers"].as_object_mut().unwrap();
    match key {
        Some(k) => {
            headers.insert("x-api-key".into(), Value::String(k.into()));
        }
        None => {
            headers.remove("x-api-key");
        }
    }
    serde_json::from_value(v).unwrap()
}

fn body(r: &aws_lambda_events::apigw::ApiGatewayV2httpResponse) -> Value {
    match &r.body {
        Some(aws_lambda_events::encodings::Body::Text(t)) => serde_json::from_str(t).unwrap(),
        other => panic!("unexpected body {other:?}"),
    }
}

#[tokio::test]
async fn http_requests_need_the_key_and_read_nothing_without_it() {
    let w = world();
    seed_source(&w);
    for key in [None, Some("wrong-key")] {
        let r = api::handle(&w.api, http_event("http-get-logs.json", key)).await;
        assert_eq!(r.status_code, 401);
        assert_eq!(body(&r)["code"], "unauthorized");
    }
    let no_key: ApiGatewayV2httpRequest =
        serde_json::from_str(&fixture("http-get-logs-no-key.json")).unwrap();
    assert_eq!(api::handle(&w.api, no_key).await.status_code, 401);
    assert!(
        w.store.all_events(EXEC).is_empty(),
        "no population without a valid key"
    );

    let r = api::handle(&w.api, http_event("http-get-logs.json", Some(KEY))).await;
    assert_eq!(r.status_code, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["vary"], "Accept");
    let page = body(&r);
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(
        (page["has_more"].as_bool(), page["last_index"].as_u64()),
        (Some(true), Some(2))
    );
    assert!(
        page["websocket_url"]
            .as_str()
            .unwrap()
            .starts_with("wss://abc123.execute-api.us-east-1.amazonaws.com/prod?execution_id=")
    );

    // The same page, dense when asked for: the same lines, and a response saying it varies.
    let mut dense = http_event("http-get-logs.json", Some(KEY));
    dense.headers.insert(
        "accept",
        runvoy_core::lines::LINES_CONTENT_TYPE.parse().unwrap(),
    );
    let r = api::handle(&w.api, dense).await;
    assert_eq!(
        (
            r.status_code,
            &r.headers["content-type"],
            &r.headers["vary"]
        ),
        (
            200,
            &runvoy_core::lines::LINES_CONTENT_TYPE.parse().unwrap(),
            &"Accept".parse().unwrap()
        )
    );
    let Some(aws_lambda_events::encodings::Body::Text(text)) = &r.body else {
        panic!("a dense page is text: {:?}", r.body)
    };
    let dense = runvoy_core::lines::LinesPage::parse(text.as_bytes()).unwrap();
    let messages: Vec<Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].clone())
        .collect();
    let read: Vec<Value> = dense
        .records()
        .map(|r| Value::from(std::str::from_utf8(dense.message(&r)).unwrap()))
        .collect();
    assert_eq!((dense.first_index(), read), (1, messages));

    let r = api::handle(&w.api, http_event("http-complete.json", Some(KEY))).await;
    assert_eq!(r.status_code, 200);
    assert_eq!(
        (
            body(&r)["status"].as_str(),
            body(&r)["final_index"].as_u64()
        ),
        (Some("FAILED"), Some(3))
    );
}

fn ws_event(name: &str, token: Option<&str>) -> ApiGatewayWebsocketProxyRequest {
    let mut text = fixture(name);
    if let Some(t) = token {
        text = text.replace("TOKEN", t);
    }
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn websocket_routes_check_the_token_and_serve_resume() {
    let w = world();
    seed_source(&w);
    api::handle(&w.api, http_event("http-get-logs.json", Some(KEY))).await;
    let other = w.signer.sign("another-execution", 1_764_570_000);
    let r = websocket::handle(&w.ws, ws_event("ws-connect.json", Some(&other)))
        .await
        .unwrap();
    assert_eq!(r.status_code, 403);
    let r = websocket::handle(&w.ws, ws_event("ws-connect.json", Some("forged.token")))
        .await
        .unwrap();
    assert_eq!(r.status_code, 401);
    assert!(
        w.services
            .fanout
            .connections()
            .list(EXEC)
            .await
            .unwrap()
            .is_empty()
    );

    let token = w.signer.sign(EXEC, 1_764_570_000);
    let r = websocket::handle(&w.ws, ws_event("ws-connect.json", Some(&token)))
        .await
        .unwrap();
    assert_eq!(r.status_code, 200);
    assert_eq!(
        w.services
            .fanout
            .connections()
            .list(EXEC)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        w.pusher.take("L0SM9cOFvHcCIhw=").is_empty(),
        "nothing is pushed during $connect"
    );

    let r = websocket::handle(&w.ws, ws_event("ws-default-resume.json", None))
        .await
        .unwrap();
    assert_eq!(r.status_code, 200);
    let pushed = w.pusher.take("L0SM9cOFvHcCIhw=");
    let msg: Value = serde_json::from_str(&pushed[0]).unwrap();
    assert_eq!(
        (msg["type"].as_str(), msg["events"][0]["index"].as_u64()),
        (Some("logs"), Some(2))
    );

    websocket::handle(&w.ws, ws_event("ws-disconnect.json", None))
        .await
        .unwrap();
    assert!(
        w.services
            .fanout
            .connections()
            .list(EXEC)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_stopped_task_completes_the_execution_after_its_tail() {
    let w = world();
    seed_source(&w);
    // The subscription delivered only the first line; the rest is still only in the source.
    let stream = format!("task/runner/{EXEC}");
    forward(
        &w,
        &payload(&stream, &[(1_764_570_000_000, "Starting job")]),
    )
    .await;
    let running: Value = serde_json::from_str(&fixture("ecs-task-running.json")).unwrap();
    assert!(matches!(
        completion::handle(&w.services, "runner", &running, None)
            .await
            .unwrap(),
        Outcome::Ignored(_)
    ));
    let stopped: Value = serde_json::from_str(&fixture("ecs-task-stopped.json")).unwrap();
    let out = completion::handle(&w.services, "runner", &stopped, None)
        .await
        .unwrap();
    assert_eq!(
        out,
        Outcome::Completed {
            execution_id: EXEC.into(),
            status: Status::Failed,
            exit_code: Some(3),
            final_index: 3
        }
    );
    assert_eq!(
        w.store.all_events(EXEC).len(),
        3,
        "the tail was reconciled before the status"
    );
    // Redelivered completion events are harmless.
    assert!(matches!(
        completion::handle(&w.services, "runner", &stopped, None)
            .await
            .unwrap(),
        Outcome::Completed { .. }
    ));
    let emf = w.metrics.take(0).unwrap();
    assert_eq!(emf["events_reconciled"], 2);
}

/// The memory store, whose read of known ids fails with a chosen error: what a store reports
/// when it is throttled, cannot be reached, or finds the execution's logs expired.
struct FailingStore {
    inner: MemoryStore,
    error: Mutex<Option<StoreError>>,
}

#[async_trait]
impl HeadReader for FailingStore {
    async fn head(&self, id: &str) -> Result<Option<Head>, StoreError> {
        self.inner.head(id).await
    }
}

#[async_trait]
impl LogWriter for FailingStore {
    fn max_events_per_commit(&self) -> usize {
        self.inner.max_events_per_commit()
    }
    async fn known_event_ids(
        &self,
        id: &str,
        events: &[SourceEvent],
    ) -> Result<HashSet<String>, StoreError> {
        if let Some(e) = self.error.lock().unwrap().clone() {
            return Err(e);
        }
        self.inner.known_event_ids(id, events).await
    }
    async fn commit(&self, commit: Commit) -> Result<(), CommitError> {
        self.inner.commit(commit).await
    }
    async fn extend_expiry(
        &self,
        id: &str,
        through: u64,
        at_least: i64,
        to: i64,
    ) -> Result<(), StoreError> {
        self.inner.extend_expiry(id, through, at_least, to).await
    }
}

#[async_trait]
impl LogReader for FailingStore {
    async fn read_bounded(
        &self,
        id: &str,
        after: u64,
        through: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEvent>, StoreError> {
        self.inner
            .read_bounded(id, after, through, limit, max_bytes)
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

/// The source, whose pages fail with a chosen error.
struct FailingSource {
    inner: CloudWatchLike,
    error: Mutex<Option<StoreError>>,
}

#[async_trait]
impl LogSource for FailingSource {
    async fn exists(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.exists(id).await
    }
    async fn newest_timestamp(&self, id: &str) -> Result<Option<i64>, StoreError> {
        self.inner.newest_timestamp(id).await
    }
    async fn page(&self, id: &str, token: Option<&str>) -> Result<SourcePage, StoreError> {
        if let Some(e) = self.error.lock().unwrap().clone() {
            return Err(e);
        }
        self.inner.page(id, token).await
    }
}

fn failing_world() -> (
    Services,
    Arc<FailingStore>,
    Arc<FailingSource>,
    Arc<EmfMetrics>,
) {
    let clock = Arc::new(SimClock::new(1_764_570_000_000, 7));
    let store = Arc::new(FailingStore {
        inner: MemoryStore::new().with_clock(clock.clone()),
        error: Mutex::new(None),
    });
    let source = Arc::new(FailingSource {
        inner: CloudWatchLike(MemorySource::new(1_000)),
        error: Mutex::new(None),
    });
    let metrics = Arc::new(EmfMetrics::new("test"));
    let services = Services::new(
        Ports {
            store: store.clone(),
            connections: Arc::new(MemoryConnections::new()),
            source: source.clone(),
            pusher: Arc::new(RecordingPusher::new()),
            clock,
            metrics: metrics.clone(),
        },
        EngineConfig::default(),
    );
    (services, store, source, metrics)
}

#[tokio::test]
async fn a_batch_fails_the_invocation_only_when_a_retry_can_append_it() {
    let (services, store, _, metrics) = failing_world();
    let stream = format!("task/runner/{EXEC}");
    let batch = payload(&stream, &[(1_764_569_940_000, "a line")]);
    let names = StreamNames::default();
    for retryable in [
        StoreError::Throttled,
        StoreError::backend(
            "DynamoDB Query failed",
            std::io::Error::other("connection reset"),
        ),
    ] {
        *store.error.lock().unwrap() = Some(retryable.clone());
        let e = forwarder::handle(&services, &names, &metrics, &batch)
            .await
            .expect_err("the invocation fails, so Lambda retries it");
        assert!(e.is_retryable(), "{retryable:?}: {e}");
        assert!(e.to_string().contains(&retryable.to_string()), "{e}");
    }
    // Logs that expired stay expired: the batch is acknowledged and counted, not retried.
    *store.error.lock().unwrap() = Some(StoreError::Expired(EXEC.into()));
    let refused = forwarder::handle(&services, &names, &metrics, &batch)
        .await
        .expect("acknowledged");
    assert_eq!(refused.execution_id.as_deref(), Some(EXEC));
    assert!(
        refused
            .skipped
            .as_deref()
            .is_some_and(|s| s.contains("can never be appended")),
        "{refused:?}"
    );
    assert_eq!(metrics.take(0).unwrap()["poison_payloads"], 1);
    assert!(store.inner.all_events(EXEC).is_empty());

    // Once the store answers again, the retried batch is appended.
    *store.error.lock().unwrap() = None;
    let out = forwarder::handle(&services, &names, &metrics, &batch)
        .await
        .unwrap();
    assert_eq!(out.appended, 1);
}

#[tokio::test]
async fn a_completion_fails_the_invocation_only_when_a_retry_can_complete_it() {
    let (services, _, source, metrics) = failing_world();
    let stream = format!("task/runner/{EXEC}");
    source.inner.0.put(EXEC, 1_764_570_000_000, "Starting job");
    forwarder::handle(
        &services,
        &StreamNames::default(),
        &metrics,
        &payload(&stream, &[(1_764_570_000_000, "Starting job")]),
    )
    .await
    .unwrap();
    let stopped: Value = serde_json::from_str(&fixture("ecs-task-stopped.json")).unwrap();

    *source.error.lock().unwrap() = Some(StoreError::backend(
        "CloudWatch Logs GetLogEvents failed",
        std::io::Error::other("connection reset"),
    ));
    let e = completion::handle(&services, "runner", &stopped, None)
        .await
        .expect_err("the invocation fails, so Lambda retries it");
    assert!(e.is_retryable(), "{e}");

    // A source that refuses the read without any token refuses it on every retry.
    *source.error.lock().unwrap() = Some(StoreError::InvalidToken);
    let out = completion::handle(&services, "runner", &stopped, None)
        .await
        .expect("acknowledged");
    assert!(matches!(out, Outcome::Refused(_)), "{out:?}");

    *source.error.lock().unwrap() = None;
    let out = completion::handle(&services, "runner", &stopped, None)
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Completed { .. }), "{out:?}");
}

/// What a `tracing` subscriber writes, collected.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn names_from_outside_cannot_forge_a_log_or_metric_line() {
    let w = world();
    let log = Captured::default();
    // The functions' subscriber in its text format (lambda_runtime's default, without ANSI).
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let forged = "other\n{\"_aws\":{},\"poison_payloads\":1000}\nERROR forged";
    let foreign = payload(forged, &[(1, "x")]);
    let out = forward(&w, &foreign).await;
    assert!(out.skipped.unwrap().contains("foreign stream"));

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    assert!(
        text.contains("not an execution stream")
            && text.contains(
                r#"stream="other\n{\"_aws\":{},\"poison_payloads\":1000}\nERROR forged""#
            ),
        "{text}"
    );
}
