//! The Lambda Runtime API one execution environment talks to
//! (`AWS_LAMBDA_RUNTIME_API=127.0.0.1:{port}`): `next` hands out one invocation at a time,
//! `response` / `error` settle it, `init/error` reports a failed start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// Lambda's limit on a synchronous response (what AWS reports in the error).
pub const MAX_RESPONSE_BYTES: usize = 6_291_556;

/// How one invocation ended, as the runtime reported it.
#[derive(Debug)]
pub enum Settled {
    Response(Vec<u8>),
    Error { error_type: String, message: String },
    TooLarge(usize),
}

/// One invocation waiting for the runtime.
pub struct Invocation {
    pub request_id: String,
    pub payload: Vec<u8>,
    pub deadline_ms: i64,
    pub function_arn: String,
    /// Signalled when the runtime takes the invocation (its `next` call returns).
    pub picked: oneshot::Sender<()>,
    pub settled: oneshot::Sender<Settled>,
}

pub struct RuntimeApi {
    queue: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Settled>>>,
    /// Set by `init/error`.
    pub init_error: Mutex<Option<String>>,
}

impl RuntimeApi {
    pub fn new(queue: mpsc::Receiver<Invocation>) -> Arc<RuntimeApi> {
        Arc::new(RuntimeApi {
            queue: tokio::sync::Mutex::new(queue),
            pending: Mutex::default(),
            init_error: Mutex::default(),
        })
    }

    /// Forgets unsettled invocations: their callers see the environment die.
    pub fn abandon(&self) {
        self.pending.lock().expect("pending lock").clear();
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            // Bodies are read whole so that a response over Lambda's limit is refused here, by
            // size, as Lambda refuses it.
            .layer(axum::extract::DefaultBodyLimit::max(4 * MAX_RESPONSE_BYTES))
            .with_state(self)
    }

    fn settle(&self, id: &str, s: Settled) -> bool {
        match self.pending.lock().expect("pending lock").remove(id) {
            Some(tx) => tx.send(s).is_ok(),
            None => false,
        }
    }
}

async fn next(State(api): State<Arc<RuntimeApi>>) -> Response {
    let Some(inv) = api.queue.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    api.pending
        .lock()
        .expect("pending lock")
        .insert(inv.request_id.clone(), inv.settled);
    let _ = inv.picked.send(());
    let mut headers = HeaderMap::new();
    let mut set = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    };
    set("lambda-runtime-aws-request-id", inv.request_id.clone());
    set("lambda-runtime-deadline-ms", inv.deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", inv.function_arn);
    set(
        "lambda-runtime-trace-id",
        format!(
            "Root=1-{}-sim;Sampled=0",
            &inv.request_id[..8.min(inv.request_id.len())]
        ),
    );
    set("content-type", "application/json".into());
    (StatusCode::OK, headers, inv.payload).into_response()
}

async fn response(
    State(api): State<Arc<RuntimeApi>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if body.len() > MAX_RESPONSE_BYTES {
        api.settle(&id, Settled::TooLarge(body.len()));
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            r#"{"errorMessage":"Response payload size exceeded maximum allowed payload size (6291556 bytes).","errorType":"RequestEntityTooLarge"}"#,
        )
            .into_response();
    }
    if api.settle(&id, Settled::Response(body.to_vec())) {
        (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
    } else {
        unknown_request(&id)
    }
}

async fn error(
    State(api): State<Arc<RuntimeApi>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let settled = Settled::Error {
        error_type: v["errorType"].as_str().unwrap_or("Unhandled").to_string(),
        message: v["errorMessage"].as_str().map_or_else(
            || String::from_utf8_lossy(&body).into_owned(),
            str::to_string,
        ),
    };
    if api.settle(&id, settled) {
        (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
    } else {
        unknown_request(&id)
    }
}

async fn init_error(State(api): State<Arc<RuntimeApi>>, body: Bytes) -> Response {
    *api.init_error.lock().expect("init lock") = Some(String::from_utf8_lossy(&body).into_owned());
    (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
}

fn unknown_request(id: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        format!(r#"{{"errorMessage":"Invalid request ID: {id}","errorType":"InvalidRequestID"}}"#),
    )
        .into_response()
}
