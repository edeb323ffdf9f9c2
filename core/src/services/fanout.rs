//! Fan-out: pushes newly committed events to every connection of an execution, each from its own
//! cursor, packed into as few WebSocket messages as the frame size allows.

use std::sync::Arc;

use crate::error::CoreError;
use crate::model::{Connection, Head, LogEvent};
use crate::ports::{ConnectionStore, LogReader, Metric, Metrics, PushError, Pusher};
use crate::wire::ServerMessage;

/// API Gateway bills (and frames) WebSocket messages per 32 KB.
pub const FRAME_BYTES: usize = 32 * 1024;
/// API Gateway refuses messages above 128 KB.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// Events read from the store per backlog page.
const BACKLOG_PAGE: usize = 1_000;

#[derive(Clone)]
pub struct FanOut {
    reader: Arc<dyn LogReader>,
    connections: Arc<dyn ConnectionStore>,
    pusher: Arc<dyn Pusher>,
    metrics: Arc<dyn Metrics>,
}

impl FanOut {
    pub fn new(
        reader: Arc<dyn LogReader>,
        connections: Arc<dyn ConnectionStore>,
        pusher: Arc<dyn Pusher>,
        metrics: Arc<dyn Metrics>,
    ) -> FanOut {
        FanOut {
            reader,
            connections,
            pusher,
            metrics,
        }
    }

    pub fn connections(&self) -> &Arc<dyn ConnectionStore> {
        &self.connections
    }

    /// Brings every connection of the execution up to `head` (and pushes the terminal status
    /// when `head` is terminal). `fresh` are events just committed, used instead of a store read
    /// when they cover what a connection is missing.
    pub async fn notify(&self, head: &Head, fresh: &[LogEvent]) -> Result<(), CoreError> {
        let connections = self.connections.list(&head.execution_id).await?;
        for conn in connections {
            self.deliver(&conn, head, fresh).await?;
        }
        Ok(())
    }

    /// Pushes to one connection what it has not been sent, up to `head.last_index`.
    ///
    /// The range is claimed first (the cursor is raised atomically), so concurrent forwarders
    /// never send the same range twice to a connection; a range whose push fails is recovered by
    /// the client's gap fill over HTTP (spec §6).
    pub async fn deliver(
        &self,
        conn: &Connection,
        head: &Head,
        fresh: &[LogEvent],
    ) -> Result<(), CoreError> {
        let target = head.last_index;
        let previous = match self.connections.advance(conn, target).await? {
            Some(prev) => prev,
            None => return Ok(()),
        };
        let mut sent_ok = true;
        if previous < target {
            sent_ok = self.push_range(conn, previous, target, fresh).await?;
        }
        if sent_ok && let (true, Some(final_index)) = (head.status.is_terminal(), head.final_index)
        {
            let msg = ServerMessage::Status {
                execution_id: head.execution_id.clone(),
                status: head.status,
                exit_code: head.exit_code,
                final_index,
            };
            self.push(conn, &msg.to_json()).await?;
        }
        Ok(())
    }

    /// Pushes `(after, through]`; returns false when the connection turned out to be gone.
    async fn push_range(
        &self,
        conn: &Connection,
        after: u64,
        through: u64,
        fresh: &[LogEvent],
    ) -> Result<bool, CoreError> {
        let mut cursor = after;
        while cursor < through {
            let events: Vec<LogEvent> = match fresh.first() {
                Some(first) if first.index <= cursor + 1 => fresh
                    .iter()
                    .filter(|e| e.index > cursor && e.index <= through)
                    .cloned()
                    .collect(),
                _ => {
                    self.reader
                        .read_range(&conn.execution_id, cursor, through, BACKLOG_PAGE)
                        .await?
                }
            };
            let Some(last) = events.last().map(|e| e.index) else {
                break;
            };
            for text in pack_messages(&conn.execution_id, &events, FRAME_BYTES) {
                if !self.push(conn, &text).await? {
                    return Ok(false);
                }
            }
            cursor = last;
        }
        Ok(true)
    }

    /// Returns false when the connection is gone (and prunes it).
    async fn push(&self, conn: &Connection, text: &str) -> Result<bool, CoreError> {
        match self.pusher.push(&conn.connection_id, text).await {
            Ok(()) => {
                self.metrics.incr(Metric::PushesSent, 1);
                Ok(true)
            }
            Err(PushError::Gone) => {
                self.connections.remove(&conn.connection_id).await?;
                self.metrics.incr(Metric::ConnectionsPruned, 1);
                Ok(false)
            }
            Err(PushError::Failed(_)) => {
                // The client notices the gap at its next message or idle poll and fills it over
                // HTTP; fan-out is best effort by design (spec §6).
                self.metrics.incr(Metric::PushFailures, 1);
                Ok(true)
            }
        }
    }
}

/// Packs contiguous events into `logs` messages of at most `frame` bytes each. An event too big
/// for one message of [`MAX_MESSAGE_BYTES`] is left out: the client sees the jump and fetches it
/// over HTTP, which returns events whole.
pub fn pack_messages(execution_id: &str, events: &[LogEvent], frame: usize) -> Vec<String> {
    let envelope = ServerMessage::Logs {
        execution_id: execution_id.to_string(),
        events: Vec::new(),
    }
    .to_json();
    // `…"events":[]}` — the events go between the brackets.
    let (prefix, suffix) = envelope.split_at(envelope.len() - 2);
    let mut out = Vec::new();
    let mut body = String::new();
    for e in events {
        let json = serde_json::to_string(e).expect("log events always serialize");
        let alone = prefix.len() + json.len() + suffix.len();
        if alone > MAX_MESSAGE_BYTES {
            flush(&mut out, &mut body, prefix, suffix);
            continue;
        }
        let with = prefix.len() + body.len() + 1 + json.len() + suffix.len();
        if !body.is_empty() && with > frame {
            flush(&mut out, &mut body, prefix, suffix);
        }
        if !body.is_empty() {
            body.push(',');
        }
        body.push_str(&json);
    }
    flush(&mut out, &mut body, prefix, suffix);
    out
}

fn flush(out: &mut Vec<String>, body: &mut String, prefix: &str, suffix: &str) {
    if !body.is_empty() {
        out.push(format!("{prefix}{body}{suffix}"));
        body.clear();
    }
}
