//! The WebSocket protocol of spec §4.2, independent of transport: `$connect` checks the token and
//! records the connection with its cursor, messages serve `resume` and `ping`, `$disconnect`
//! forgets it. Pushes go through the [`FanOut`] (the pusher port).

use std::sync::Arc;

use crate::api::{ApiError, parse_index, parse_query, validate_execution_id};
use crate::auth::TokenSigner;
use crate::error::CoreError;
use crate::model::Connection;
use crate::ports::{Clock, Pusher};
use crate::services::{FanOut, Reader};
use crate::wire::{ClientMessage, ServerMessage};

/// Connections are dropped by API Gateway after 2 h; keep their records a little longer.
pub const CONNECTION_TTL_SECS: i64 = 2 * 3600 + 600;
/// The code of the error frame that tells a client its connection has no record.
pub const NOT_CONNECTED: &str = "not_connected";
/// Largest client message accepted.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 4 * 1024;
/// The code of the error frame that refuses a `resume` sent too soon after the last one.
pub const RATE_LIMITED: &str = "rate_limited";
/// Least time between two `resume`s of a connection that are served.
pub const RESUME_INTERVAL_MS: i64 = 1_000;
/// Connections one execution may have at once: each costs every forwarder batch a push, so one
/// token (valid an hour) must not be able to open hundreds.
pub const MAX_CONNECTIONS_PER_EXECUTION: usize = 100;
/// The code of the error that refuses a connection past that number.
pub const TOO_MANY_CONNECTIONS: &str = "too_many_connections";

#[derive(Clone)]
pub struct WsService {
    reader: Reader,
    fanout: FanOut,
    pusher: Arc<dyn Pusher>,
    signer: TokenSigner,
    clock: Arc<dyn Clock>,
}

impl WsService {
    pub fn new(
        reader: Reader,
        fanout: FanOut,
        pusher: Arc<dyn Pusher>,
        signer: TokenSigner,
        clock: Arc<dyn Clock>,
    ) -> WsService {
        WsService {
            reader,
            fanout,
            pusher,
            signer,
            clock,
        }
    }

    /// `$connect`: validates `execution_id`, `token` and `since_index` from the query string
    /// and stores the connection. Nothing may be pushed yet (API Gateway forbids it).
    pub async fn connect(
        &self,
        connection_id: &str,
        raw_query: &str,
    ) -> Result<Connection, ApiError> {
        let query = parse_query(raw_query)?;
        let execution_id = query
            .get("execution_id")
            .ok_or_else(|| ApiError::bad_request("the execution_id query parameter is required"))?;
        validate_execution_id(execution_id)?;
        let token = query.get("token").map(String::as_str);
        let now_secs = self.clock.now_ms() / 1000;
        let token_expiry = match token {
            Some(t) => self
                .signer
                .verify(t, execution_id, now_secs)
                .map_err(ApiError::from_denied)?,
            None => return Err(ApiError::from_denied(crate::auth::Denied::Unauthorized)),
        };
        let since = parse_index("since_index", query.get("since_index"), 0)?;
        let Some(head) = self.reader.head(execution_id).await? else {
            return Err(CoreError::NotFound(execution_id.clone()).into());
        };
        let open = self
            .fanout
            .connections()
            .list(execution_id)
            .await?
            .into_iter()
            .filter(|c| c.expires_at > now_secs)
            .count();
        if open >= MAX_CONNECTIONS_PER_EXECUTION {
            return Err(ApiError::new(
                429,
                TOO_MANY_CONNECTIONS,
                format!(
                    "execution {execution_id} has {open} WebSocket connections, the most it may have; close one, or follow it over HTTP"
                ),
            ));
        }
        let conn = Connection {
            connection_id: connection_id.to_string(),
            execution_id: execution_id.clone(),
            // Pushes start at most one backlog page behind the end: a client that asked for
            // more reads it over HTTP, as it does anyway (a jump is a gap it fills).
            cursor: clamp_cursor(since, head.last_index),
            connected_at: self.clock.now_ms(),
            // The connection lives as long as its token (or API Gateway's 2 h, if shorter).
            expires_at: token_expiry.min(now_secs + CONNECTION_TTL_SECS),
            resumed_at: 0,
        };
        self.fanout.connections().put(conn.clone()).await?;
        Ok(conn)
    }

    /// A client message. Malformed messages are answered with an `error` frame.
    pub async fn message(&self, connection_id: &str, text: &str) -> Result<(), CoreError> {
        let parsed = if text.len() > MAX_CLIENT_MESSAGE_BYTES {
            Err("the message is too large".to_string())
        } else {
            serde_json::from_str::<ClientMessage>(text).map_err(|e| e.to_string())
        };
        match parsed {
            Ok(ClientMessage::Ping) => Ok(()),
            Ok(ClientMessage::Resume { since_index }) => {
                self.resume(connection_id, since_index).await
            }
            Err(detail) => {
                let msg = ServerMessage::Error {
                    code: "bad_message".into(),
                    error: format!(
                        "messages must be {{\"action\":\"resume\",\"since_index\":N}} or {{\"action\":\"ping\"}}: {detail}"
                    ),
                };
                let _ = self.pusher.push(connection_id, &msg.to_json()).await;
                Ok(())
            }
        }
    }

    /// Moves the connection's cursor to `since_index` and pushes one backlog page after it (and
    /// the terminal status, when that page reaches the end); the client reads any more over
    /// HTTP. A `resume` within [`RESUME_INTERVAL_MS`] of the last one is refused with an error
    /// frame, so no client can make the server re-read and re-push faster than that. A
    /// connection without a record (pruned, or expired) is told so with an error frame, so its
    /// client reconnects instead of waiting for pushes.
    pub async fn resume(&self, connection_id: &str, since_index: u64) -> Result<(), CoreError> {
        let connections = self.fanout.connections();
        let Some(mut conn) = connections.get(connection_id).await? else {
            let msg = ServerMessage::Error {
                code: NOT_CONNECTED.into(),
                error: "this connection is not registered for any execution; reconnect".into(),
            };
            let _ = self.pusher.push(connection_id, &msg.to_json()).await;
            return Ok(());
        };
        let now = self.clock.now_ms();
        if self.fanout.close_if_expired(&conn).await? {
            return Ok(());
        }
        if conn.resumed_at != 0 && now - conn.resumed_at < RESUME_INTERVAL_MS {
            let msg = ServerMessage::Error {
                code: RATE_LIMITED.into(),
                error: format!(
                    "resume at most once per {RESUME_INTERVAL_MS} ms; read the lines after {since_index} over HTTP (GET /api/v1/executions/{}/logs?since_index={since_index})",
                    conn.execution_id
                ),
            };
            let _ = self.pusher.push(connection_id, &msg.to_json()).await;
            return Ok(());
        }
        let Some(head) = self.reader.head(&conn.execution_id).await? else {
            return Ok(());
        };
        let cursor = clamp_cursor(since_index, head.last_index);
        // One conditional write: of simultaneous resumes, one passes the limit.
        match connections
            .resume(&conn, cursor, now, RESUME_INTERVAL_MS)
            .await?
        {
            crate::ports::Resumed::Done => {
                conn.cursor = cursor;
                conn.resumed_at = now;
                self.fanout.deliver_one_page(&conn, &head).await?;
            }
            crate::ports::Resumed::TooSoon => {
                let msg = ServerMessage::Error {
                    code: RATE_LIMITED.into(),
                    error: format!(
                        "resume at most once per {RESUME_INTERVAL_MS} ms; read the lines after {since_index} over HTTP (GET /api/v1/executions/{}/logs?since_index={since_index})",
                        conn.execution_id
                    ),
                };
                let _ = self.pusher.push(connection_id, &msg.to_json()).await;
            }
            crate::ports::Resumed::Gone => {}
        }
        Ok(())
    }

    /// `$disconnect`.
    pub async fn disconnect(&self, connection_id: &str) -> Result<(), CoreError> {
        Ok(self.fanout.connections().remove(connection_id).await?)
    }
}

/// Where pushes start for a client that asked for `since`: never before one backlog page from
/// the end, never past the end.
fn clamp_cursor(since: u64, last_index: u64) -> u64 {
    since
        .max(last_index.saturating_sub(crate::services::BACKLOG_PAGE as u64))
        .min(last_index)
}
