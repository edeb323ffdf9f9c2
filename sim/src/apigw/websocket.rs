//! API Gateway WebSocket API, emulated from the template: the handshake runs the `$connect`
//! route (a non-2xx answer refuses it), messages are routed by the route selection expression
//! (`$request.body.action`, else `$default`), closing runs `$disconnect`. The `@connections`
//! management API serves pushes with AWS's rules: IAM `execute-api:ManageConnections` per
//! connection, 410 Gone for a connection that is closed or still inside `$connect`, 413 above
//! 128 KB. Connections close after 10 idle minutes and after 2 hours.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::to_bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::http::{message, percent_decode};
use crate::gate::{Caller, access_key};
use crate::iam::Check;
use crate::lambda::{Function, now_ms, uuid_like};
use crate::ledger::Ledger;
use crate::trace::{Trace, now_us};

/// API Gateway's WebSocket limits.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
pub const MAX_FRAME_BYTES: usize = 32 * 1024;
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(7200);

enum Outbound {
    Text(String),
    Close(u16, &'static str),
}

enum State {
    Connecting,
    Open(mpsc::UnboundedSender<Outbound>),
}

struct Conn {
    state: State,
    connected_at: i64,
    last_active: i64,
    source_ip: String,
    user_agent: String,
    /// The client's port (the delivery trace names connections by it too).
    peer_port: u16,
}

/// What the management API answered, counted.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct WsStats {
    pub connections: u64,
    pub refused_connects: u64,
    pub messages_in: u64,
    pub pushes: u64,
    pub gone: u64,
    pub gone_during_connect: u64,
    pub too_large: u64,
    pub cuts: u64,
}

pub struct WebSocketApi {
    pub api_id: String,
    pub stage: String,
    pub domain: String,
    pub account: String,
    pub region: String,
    /// Route key → integrated function.
    pub routes: HashMap<String, Arc<Function>>,
    /// Access key → caller, for the management API's IAM check.
    pub callers: Arc<HashMap<String, Caller>>,
    /// `--chaos ws-cut-ms=N`: every connection is cut (no close frame) after N ms.
    pub cut_every: Option<Duration>,
    /// `--chaos connect-ms=N`: a connection opens N ms after `$connect` succeeded.
    pub connect_delay: Option<Duration>,
    pub shutdown: watch::Receiver<bool>,
    conns: Mutex<HashMap<String, Conn>>,
    stats: Mutex<WsStats>,
    ledger: Arc<Ledger>,
    trace: Arc<Trace>,
}

impl WebSocketApi {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        api_id: String,
        stage: String,
        domain: String,
        account: String,
        region: String,
        routes: HashMap<String, Arc<Function>>,
        callers: Arc<HashMap<String, Caller>>,
        cut_every: Option<Duration>,
        connect_delay: Option<Duration>,
        shutdown: watch::Receiver<bool>,
    ) -> WebSocketApi {
        WebSocketApi {
            api_id,
            stage,
            domain,
            account,
            region,
            routes,
            callers,
            cut_every,
            connect_delay,
            shutdown,
            conns: Mutex::default(),
            stats: Mutex::default(),
            ledger: Arc::default(),
            trace: Arc::new(Trace::new("")),
        }
    }

    /// Counts messages and connection time in `ledger`.
    pub fn with_ledger(mut self, ledger: Arc<Ledger>) -> WebSocketApi {
        self.ledger = ledger;
        self
    }

    /// Tells `trace` about pushes.
    pub fn with_trace(mut self, trace: Arc<Trace>) -> WebSocketApi {
        self.trace = trace;
        self
    }

    pub fn stats(&self) -> WsStats {
        self.stats.lock().expect("stats lock").clone()
    }

    fn count(&self, f: impl FnOnce(&mut WsStats)) {
        f(&mut self.stats.lock().expect("stats lock"));
    }

    pub async fn serve(self: Arc<Self>, req: Request) -> Response {
        let path = req.uri().path().to_string();
        let stage_path = format!("/{}", self.stage);
        if path == stage_path {
            return self.handshake(req).await;
        }
        if let Some(id) = path
            .strip_prefix(&stage_path)
            .and_then(|p| p.strip_prefix("/@connections/"))
        {
            let id = percent_decode(id);
            return self.manage(req, &id).await;
        }
        message(StatusCode::FORBIDDEN, "Forbidden")
    }

    fn context(
        &self,
        route: &str,
        event_type: &str,
        connection_id: &str,
        connected_at: i64,
    ) -> Value {
        let now = now_ms();
        json!({
            "routeKey": route,
            "eventType": event_type,
            "extendedRequestId": uuid_like(),
            "requestTime": now.to_string(),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": connected_at,
            "requestTimeEpoch": now,
            "identity": {"sourceIp": "127.0.0.1"},
            "requestId": uuid_like(),
            "domainName": self.domain,
            "connectionId": connection_id,
            "apiId": self.api_id,
        })
    }

    async fn handshake(self: Arc<Self>, req: Request) -> Response {
        let (mut parts, _) = req.into_parts();
        let Ok(upgrade) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await else {
            return message(StatusCode::UPGRADE_REQUIRED, "Upgrade Required");
        };
        let id = connection_id();
        let now = now_ms();
        let peer_port = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or(0, |c| c.0.port());
        let headers = header_map(&parts.headers);
        let user_agent = headers.get("user-agent").cloned().unwrap_or_default();
        self.conns.lock().expect("conns lock").insert(
            id.clone(),
            Conn {
                state: State::Connecting,
                connected_at: now,
                last_active: now,
                source_ip: "127.0.0.1".into(),
                user_agent,
                peer_port,
            },
        );
        let mut qs: BTreeMap<String, String> = BTreeMap::new();
        for pair in parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            qs.insert(percent_decode(k), percent_decode(v));
        }
        let mut event = json!({
            "headers": headers,
            "multiValueHeaders": headers.iter().map(|(k, v)| (k.clone(), json!([v]))).collect::<BTreeMap<_, _>>(),
            "requestContext": self.context("$connect", "CONNECT", &id, now),
            "isBase64Encoded": false,
        });
        if !qs.is_empty() {
            event["queryStringParameters"] = json!(qs);
            event["multiValueQueryStringParameters"] = json!(
                qs.iter()
                    .map(|(k, v)| (k.clone(), json!([v])))
                    .collect::<BTreeMap<_, _>>()
            );
        }
        let refused = match self.routes.get("$connect") {
            None => None,
            Some(f) => match f.invoke(event.to_string().into_bytes()).await {
                Err(e) => {
                    eprintln!("sim: $connect failed: {e}");
                    Some((
                        StatusCode::INTERNAL_SERVER_ERROR,
                        json!({"message": "Internal server error"}).to_string(),
                    ))
                }
                Ok(bytes) => {
                    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let status = v["statusCode"].as_u64().unwrap_or(200) as u16;
                    (!(200..300).contains(&status)).then(|| {
                        (
                            StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
                            v["body"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                }
            },
        };
        if let Some((status, body)) = refused {
            self.conns.lock().expect("conns lock").remove(&id);
            self.count(|s| s.refused_connects += 1);
            return (status, body).into_response();
        }
        if let Some(d) = self.connect_delay {
            tokio::time::sleep(d).await;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(c) = self.conns.lock().expect("conns lock").get_mut(&id) {
            c.state = State::Open(tx);
        }
        self.count(|s| s.connections += 1);
        self.ledger.ws_opened(&id, now);
        let api = self.clone();
        upgrade
            .max_message_size(MAX_MESSAGE_BYTES)
            .max_frame_size(MAX_FRAME_BYTES)
            .on_upgrade(move |socket| api.session(id, socket, rx, headers))
    }

    async fn session(
        self: Arc<Self>,
        id: String,
        socket: WebSocket,
        mut outbox: mpsc::UnboundedReceiver<Outbound>,
        headers: BTreeMap<String, String>,
    ) {
        let (mut tx, mut rx) = socket.split();
        let connected = tokio::time::Instant::now();
        let mut last_in = connected;
        let mut shutdown = self.shutdown.clone();
        let cut = self.cut_every;
        let (code, reason) = loop {
            let idle_at = last_in + IDLE_TIMEOUT;
            let cut_at = cut.map(|c| connected + c);
            tokio::select! {
                out = outbox.recv() => match out {
                    Some(Outbound::Text(t)) => {
                        if tx.send(Message::Text(t.into())).await.is_err() {
                            break (1006, "Connection lost");
                        }
                    }
                    Some(Outbound::Close(code, reason)) => {
                        let _ = tx.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                        break (code, reason);
                    }
                    None => break (1006, "Connection lost"),
                },
                incoming = rx.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        last_in = tokio::time::Instant::now();
                        self.touch(&id);
                        self.route(&id, text.as_str().to_string());
                    }
                    Some(Ok(Message::Binary(b))) => {
                        last_in = tokio::time::Instant::now();
                        self.route(&id, String::from_utf8_lossy(&b).into_owned());
                    }
                    Some(Ok(Message::Close(frame))) => {
                        break (frame.map_or(1005, |f| f.code), "Client closed");
                    }
                    Some(Err(_)) => {
                        let _ = tx.send(Message::Close(Some(CloseFrame { code: 1009, reason: "Message too big".into() }))).await;
                        break (1009, "Message too big");
                    }
                    None => break (1006, "Connection lost"),
                    Some(Ok(_)) => {}
                },
                _ = tokio::time::sleep_until(idle_at) => {
                    let _ = tx.send(Message::Close(Some(CloseFrame { code: 1001, reason: "Going away".into() }))).await;
                    break (1001, "Going away");
                }
                _ = tokio::time::sleep_until(connected + MAX_CONNECTION_AGE) => {
                    let _ = tx.send(Message::Close(Some(CloseFrame { code: 1001, reason: "Going away".into() }))).await;
                    break (1001, "Going away");
                }
                _ = async { match cut_at { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    self.count(|s| s.cuts += 1);
                    break (1006, "Connection cut (chaos)");
                }
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                    let _ = tx.send(Message::Close(Some(CloseFrame { code: 1001, reason: "Going away".into() }))).await;
                    break (1001, "Going away");
                }
            }
        };
        drop(tx);
        drop(rx);
        let connected_at = self
            .conns
            .lock()
            .expect("conns lock")
            .remove(&id)
            .map_or(0, |c| c.connected_at);
        self.ledger.ws_closed(&id, now_ms());
        if let Some(f) = self.routes.get("$disconnect") {
            let mut ctx = self.context("$disconnect", "DISCONNECT", &id, connected_at);
            ctx["disconnectStatusCode"] = json!(code);
            ctx["disconnectReason"] = json!(reason);
            let event = json!({
                "headers": headers,
                "multiValueHeaders": headers.iter().map(|(k, v)| (k.clone(), json!([v]))).collect::<BTreeMap<_, _>>(),
                "requestContext": ctx,
                "isBase64Encoded": false,
            });
            let f = f.clone();
            tokio::spawn(async move {
                if let Err(e) = f.invoke(event.to_string().into_bytes()).await {
                    eprintln!("sim: $disconnect failed: {e}");
                }
            });
        }
    }

    fn touch(&self, id: &str) {
        if let Some(c) = self.conns.lock().expect("conns lock").get_mut(id) {
            c.last_active = now_ms();
        }
    }

    /// Runs the route the message selects (`$request.body.action`, else `$default`).
    fn route(self: &Arc<Self>, id: &str, body: String) {
        self.count(|s| s.messages_in += 1);
        self.ledger.ws_message(body.len());
        let action = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["action"].as_str().map(str::to_string));
        let route_key = match action {
            Some(a) if self.routes.contains_key(&a) => a,
            _ => "$default".to_string(),
        };
        let f = self.routes.get(&route_key).cloned();
        let connected_at = self
            .conns
            .lock()
            .expect("conns lock")
            .get(id)
            .map_or(0, |c| c.connected_at);
        let mut ctx = self.context(&route_key, "MESSAGE", id, connected_at);
        ctx["messageId"] = json!(uuid_like());
        let event = json!({"requestContext": ctx, "body": body, "isBase64Encoded": false});
        let api = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            match f {
                None => api.push(
                    &id,
                    json!({"message": "Forbidden", "connectionId": id, "requestId": uuid_like()})
                        .to_string(),
                ),
                Some(f) => {
                    if let Err(e) = f.invoke(event.to_string().into_bytes()).await {
                        eprintln!("sim: WebSocket route failed: {e}");
                        api.push(&id, json!({"message": "Internal server error", "connectionId": id, "requestId": uuid_like()}).to_string());
                    }
                }
            }
        });
    }

    fn push(&self, id: &str, text: String) {
        if let Some(Conn {
            state: State::Open(tx),
            ..
        }) = self.conns.lock().expect("conns lock").get(id)
        {
            let _ = tx.send(Outbound::Text(text));
        }
    }

    async fn manage(self: Arc<Self>, req: Request, id: &str) -> Response {
        let received_us = now_us();
        let method = req.method().clone();
        let key = access_key(req.headers());
        let Some(caller) = key.as_deref().and_then(|k| self.callers.get(k)) else {
            return error(
                StatusCode::FORBIDDEN,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            );
        };
        let check = Check::new(
            "execute-api:ManageConnections",
            format!(
                "arn:aws:execute-api:{}:{}:{}/{}/{}/@connections/{id}",
                self.region, self.account, self.api_id, self.stage, method
            ),
        );
        if let Err(msg) = caller.policy.check(&check) {
            eprintln!("sim: IAM denied {}: {msg}", caller.function);
            return error(StatusCode::FORBIDDEN, "AccessDeniedException", &msg);
        }
        let body = match to_bytes(req.into_body(), 1024 * 1024).await {
            Ok(b) => b,
            Err(_) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PayloadTooLargeException",
                    "Message too long",
                );
            }
        };
        let mut conns = self.conns.lock().expect("conns lock");
        let Some(conn) = conns.get_mut(id) else {
            drop(conns);
            self.count(|s| s.gone += 1);
            return error(StatusCode::GONE, "GoneException", "");
        };
        match (&method, &conn.state) {
            (_, State::Connecting) => {
                drop(conns);
                self.count(|s| s.gone_during_connect += 1);
                error(StatusCode::GONE, "GoneException", "")
            }
            (&Method::POST, State::Open(tx)) => {
                if body.len() > MAX_MESSAGE_BYTES {
                    drop(conns);
                    self.count(|s| s.too_large += 1);
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "PayloadTooLargeException",
                        "Message too long",
                    );
                }
                let text = String::from_utf8_lossy(&body).into_owned();
                if tx.send(Outbound::Text(text)).is_err() {
                    drop(conns);
                    self.count(|s| s.gone += 1);
                    return error(StatusCode::GONE, "GoneException", "");
                }
                let peer_port = conn.peer_port;
                drop(conns);
                self.count(|s| s.pushes += 1);
                self.ledger.ws_message(body.len());
                self.trace
                    .push(&caller.function, id, peer_port, received_us, &body);
                StatusCode::OK.into_response()
            }
            (&Method::GET, _) => {
                let v = json!({
                    "ConnectedAt": crate::lambda::rfc3339(conn.connected_at),
                    "Identity": {"SourceIp": conn.source_ip, "UserAgent": conn.user_agent},
                    "LastActiveAt": crate::lambda::rfc3339(conn.last_active),
                });
                (StatusCode::OK, v.to_string()).into_response()
            }
            (&Method::DELETE, State::Open(tx)) => {
                let _ = tx.send(Outbound::Close(1000, "Connection closed by the server"));
                StatusCode::NO_CONTENT.into_response()
            }
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "ForbiddenException",
                "Forbidden",
            ),
        }
    }
}

/// An error of the management API, typed the way the SDK reads it.
fn error(status: StatusCode, kind: &str, text: &str) -> Response {
    let body = if text.is_empty() {
        json!({"message": null})
    } else {
        json!({"message": text})
    };
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(kind) {
        r.headers_mut().insert("x-amzn-errortype", v);
    }
    r
}

fn header_map(h: &HeaderMap) -> BTreeMap<String, String> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// A connection id shaped like API Gateway's (`L0SM9cOFvHcCIhw=`).
fn connection_id() -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut s: String = (0..15)
        .map(|_| ALNUM[rand::random_range(0..ALNUM.len())] as char)
        .collect();
    s.push('=');
    s
}
