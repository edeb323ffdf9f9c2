//! HTTP and WebSocket transport of the local stack (axum): translates requests to the core's
//! framework-free API and WebSocket services, plus the local-only producer endpoints.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use futures_util::{SinkExt, StreamExt};
use runvoy_core::api::{ApiError, HttpRequest, json, validate_execution_id};
use runvoy_core::ports::HeadReader;
use runvoy_core::{CoreError, StoreError};
use serde::Deserialize;

use crate::App;
use crate::response::respond;

/// Largest producer request body.
pub const MAX_PRODUCER_BODY: usize = 16 * 1024 * 1024;
/// Most events per producer request.
pub const MAX_EVENTS_PER_REQUEST: usize = 10_000;
/// CloudWatch's event size limit.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

pub fn router(app: Arc<App>, guard: Arc<crate::guard::Guard>) -> Router {
    Router::new()
        .route("/api/{*rest}", any(api))
        .route("/", any(page))
        .route("/executions/{*rest}", any(page))
        .route("/assets/{*rest}", any(page))
        .route("/ws", get(websocket))
        .route("/local/v1/executions", post(run_command))
        .route("/local/v1/streams/{id}/events", post(put_events))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|method: Method, uri: Uri| async move {
            respond(
                ApiError::new(
                    404,
                    "not_found",
                    format!("no route for {method} {}", uri.path()),
                )
                .into_response(),
            )
        })
        .with_state(app)
        .layer(axum::middleware::from_fn_with_state(
            guard,
            crate::guard::guard,
        ))
}

/// The log page and its assets (no key: the page asks for it and sends it to the API).
async fn page(State(app): State<Arc<App>>, method: Method, uri: Uri) -> Response {
    match runvoy_web::serve(method.as_str(), uri.path(), app.api.websocket_url()) {
        Some(p) => {
            let mut r = Response::new(Body::from(p.body));
            *r.status_mut() = StatusCode::from_u16(p.status).unwrap_or(StatusCode::NOT_FOUND);
            for (name, value) in p.headers {
                if let Ok(v) = header::HeaderValue::from_str(&value) {
                    r.headers_mut().insert(name, v);
                }
            }
            r
        }
        None => error(ApiError::new(
            404,
            "not_found",
            format!("no route for {method} {}", uri.path()),
        )),
    }
}

fn error(e: ApiError) -> Response {
    respond(e.into_response())
}

fn api_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Reads a body of at most `limit` bytes. A larger one is read on and discarded (up to a bound)
/// so the client gets to read the 413 instead of a reset connection.
async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(format!("the request body could not be read: {e}"))
        })?;
        seen += chunk.len();
        if seen <= limit {
            buf.extend_from_slice(&chunk);
        } else if seen > limit.saturating_mul(4).max(64 * 1024 * 1024) {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::new(
            413,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes; send smaller batches"),
        ));
    }
    Ok(buf)
}

async fn api(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // The key before the body: nobody without it makes the stack read (up to) a body.
    if let Err(denied) = app.keys.check(api_key(&headers).as_deref()) {
        return error(ApiError::from_denied(denied));
    }
    let body = match read_body(body, runvoy_core::api::MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => return error(e),
    };
    let req = HttpRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        api_key: api_key(&headers),
        accept: headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
    };
    respond(app.api.handle(req).await)
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.prometheus(),
    )
        .into_response()
}

fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    app.keys
        .check(api_key(headers).as_deref())
        .map_err(ApiError::from_denied)
}

async fn run_command(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        authorize(&app, &headers)?;
        let body = read_body(body, runvoy_core::api::MAX_BODY_BYTES).await?;
        let req: RunRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be JSON like {{\"command\":[\"sh\",\"-c\",\"echo hi\"]}}: {e}"
            ))
        })?;
        let id = crate::runner::start(app.clone(), req.command).await?;
        Ok::<_, ApiError>(json(
            201,
            &serde_json::json!({"execution_id": id, "status": "RUNNING"}),
        ))
    }
    .await;
    result.map_or_else(error, respond)
}

/// `POST /local/v1/streams/{id}/events`: the producer endpoint's body (shared with the sim).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutEvents {
    pub events: Vec<PutEvent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutEvent {
    /// Milliseconds; default now.
    pub timestamp: Option<i64>,
    pub message: String,
}

impl PutEvents {
    /// A producer request's body (shared by the local stack and the sim): JSON within
    /// [`MAX_PRODUCER_BODY`], 1 to [`MAX_EVENTS_PER_REQUEST`] events of at most
    /// [`MAX_EVENT_BYTES`] each, as `(timestamp, message)` lines (`now` when no timestamp).
    pub fn parse(body: &[u8], now: i64) -> Result<Vec<(i64, String)>, ApiError> {
        let req: PutEvents = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be JSON like {{\"events\":[{{\"timestamp\":1700000000000,\"message\":\"hi\"}}]}}: {e}"
            ))
        })?;
        if req.events.is_empty() || req.events.len() > MAX_EVENTS_PER_REQUEST {
            return Err(ApiError::bad_request(format!(
                "send between 1 and {MAX_EVENTS_PER_REQUEST} events per request"
            )));
        }
        if let Some(big) = req
            .events
            .iter()
            .find(|e| e.message.len() > MAX_EVENT_BYTES)
        {
            return Err(ApiError::new(
                413,
                "payload_too_large",
                format!(
                    "an event of {} bytes exceeds the {MAX_EVENT_BYTES}-byte limit of a log event; split it",
                    big.message.len()
                ),
            ));
        }
        Ok(req
            .events
            .into_iter()
            .map(|e| (e.timestamp.unwrap_or(now), e.message))
            .collect())
    }
}

/// `POST /local/v1/executions`: the command to run (shared with the sim).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub command: Vec<String>,
}

async fn put_events(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        authorize(&app, &headers)?;
        validate_execution_id(&id)?;
        let body = read_body(body, MAX_PRODUCER_BODY).await?;
        use runvoy_core::ports::Clock;
        let lines = PutEvents::parse(&body, app.clock.now_ms())?;
        if let Some(head) = app.store.head(&id).await?
            && head.status.is_terminal()
        {
            return Err(ApiError::new(
                409,
                "conflict",
                format!(
                    "execution {id} is already {}; write to a new execution",
                    head.status.as_str()
                ),
            ));
        }
        let events = app.write_source(&id, lines);
        if events.is_empty() {
            return Err(ApiError::new(
                503,
                "store_unavailable",
                "the log source could not be written; retry",
            ));
        }
        // The stream exists now; make sure the execution has a head so readers see it. The
        // source took the lines whatever happens next (as CloudWatch does): an execution past
        // its retention stays expired, which readers are told.
        if app.store.head(&id).await?.is_none() {
            match app.reconciler.reconcile(&id).await {
                Ok(_) | Err(CoreError::Store(StoreError::Expired(_))) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(json(
            200,
            &serde_json::json!({"execution_id": id, "accepted": events.len()}),
        ))
    }
    .await;
    result.map_or_else(error, respond)
}

async fn websocket(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let connection_id = runvoy_runtime::random_hex(12);
    // Register the session before the connection is stored, so no push can miss it.
    let rx = app.pusher.register(&connection_id);
    if let Err(e) = app
        .ws
        .connect(&connection_id, query.as_deref().unwrap_or(""))
        .await
    {
        app.pusher.unregister(&connection_id);
        return error(e);
    }
    if let Some(d) = app.connect_delay {
        // Pushes meanwhile wait in the session's queue.
        tokio::time::sleep(d).await;
    }
    let app2 = app.clone();
    ws.max_message_size(64 * 1024)
        .on_upgrade(move |socket| session(app2, connection_id, socket, rx))
}

async fn session(
    app: Arc<App>,
    connection_id: String,
    socket: WebSocket,
    mut outbox: tokio::sync::mpsc::Receiver<String>,
) {
    let (mut tx, mut rx) = socket.split();
    let mut stop = std::pin::pin!(crate::stopped(app.shutdown.clone()));
    let cut = app.ws_cut;
    let mut cut_at = std::pin::pin!(async move {
        match cut {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    });
    loop {
        tokio::select! {
            // Chaos: the connection drops without a close frame, as a network cut does.
            _ = &mut cut_at => break,
            out = outbox.recv() => match out {
                Some(text) => {
                    if tx.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                // Closed by the server (the token expired): say so, as API Gateway does.
                None => {
                    let _ = tx.send(Message::Close(Some(axum::extract::ws::CloseFrame {
                        code: 1000,
                        reason: "closed by the server; reconnect with a fresh token".into(),
                    }))).await;
                    break;
                }
            },
            incoming = rx.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let _ = app.ws.message(&connection_id, text.as_str()).await;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = &mut stop => {
                let _ = tx.send(Message::Close(Some(axum::extract::ws::CloseFrame {
                    code: 1001,
                    reason: "server shutting down".into(),
                }))).await;
                break;
            }
        }
    }
    app.pusher.unregister(&connection_id);
    let _ = app.ws.disconnect(&connection_id).await;
}
