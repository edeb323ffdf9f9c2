//! Fan-out: pushes newly committed events to every connection of an execution, each from its own
//! cursor, packed into as few WebSocket messages as the frame size allows.

use std::sync::Arc;

use futures_util::{StreamExt, stream};

use crate::error::CoreError;
use crate::model::{Connection, Head, LogEvent};
use crate::ports::{Clock, ConnectionStore, LogReader, Metric, Metrics, PushError, Pusher};
use crate::wire::ServerMessage;

/// API Gateway bills (and frames) WebSocket messages per 32 KB.
pub const FRAME_BYTES: usize = 32 * 1024;
/// API Gateway refuses messages above 128 KB.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// Events (and bytes) read from the store per backlog page.
pub const BACKLOG_PAGE: usize = 1_000;
pub const BACKLOG_BYTES: usize = 2 * 1024 * 1024;
/// A connection this young may still be inside `$connect`, where API Gateway answers every push
/// with 410 although the connection is about to open: it is never pruned on a 410.
pub const HANDSHAKE_GRACE_MS: i64 = 30_000;
/// Connections one notification serves at once. Each costs a conditional write and a push of
/// a few milliseconds on AWS; served one after another, the hundredth follower of an execution
/// would wait for the 99 before it (bench latency --env sim measured 0.6 s at p99 with 100).
pub const FANOUT_CONCURRENCY: usize = 16;

#[derive(Clone)]
pub struct FanOut {
    reader: Arc<dyn LogReader>,
    connections: Arc<dyn ConnectionStore>,
    pusher: Arc<dyn Pusher>,
    metrics: Arc<dyn Metrics>,
    clock: Arc<dyn Clock>,
}

impl FanOut {
    pub fn new(
        reader: Arc<dyn LogReader>,
        connections: Arc<dyn ConnectionStore>,
        pusher: Arc<dyn Pusher>,
        metrics: Arc<dyn Metrics>,
        clock: Arc<dyn Clock>,
    ) -> FanOut {
        FanOut {
            reader,
            connections,
            pusher,
            metrics,
            clock,
        }
    }

    pub fn connections(&self) -> &Arc<dyn ConnectionStore> {
        &self.connections
    }

    /// Brings every connection of the execution up to `head` (and pushes the terminal status
    /// when `head` is terminal), [`FANOUT_CONCURRENCY`] connections at a time. `fresh` are
    /// events just committed, used instead of a store read when they cover what a connection is
    /// missing.
    pub async fn notify(&self, head: &Head, fresh: &[LogEvent]) -> Result<(), CoreError> {
        let connections = self.connections.list(&head.execution_id).await?;
        let page = self.shared_page(&connections, head, fresh).await;
        let fresh = page.as_deref().unwrap_or(fresh);
        // Every connection is tried, whatever another's outcome; the first error is reported.
        let outcomes: Vec<Result<(), CoreError>> = stream::iter(connections)
            .map(|conn| async move {
                if !self.close_if_expired(&conn).await? {
                    self.deliver(&conn, head, fresh).await?;
                }
                Ok(())
            })
            .buffer_unordered(FANOUT_CONCURRENCY)
            .collect()
            .await;
        outcomes.into_iter().collect()
    }

    /// When connections within a page of the head are missing more than `fresh` holds (a
    /// batch of another invocation was pushed first, a push was throttled), one read from the
    /// furthest behind of them to the head, to serve them all: read by each, the same page
    /// would be read once per connection, side by side, from one partition. `None` when
    /// `fresh` serves every connection, or the read fails or stops short of the head (each
    /// connection then reads what it needs).
    async fn shared_page(
        &self,
        connections: &[Connection],
        head: &Head,
        fresh: &[LogEvent],
    ) -> Option<Vec<LogEvent>> {
        let from = connections
            .iter()
            .map(|c| c.cursor)
            .filter(|&cursor| {
                cursor < head.last_index
                    && fresh.first().is_none_or(|f| f.index > cursor + 1)
                    && head.last_index - cursor <= BACKLOG_PAGE as u64
            })
            .min()?;
        let page = self
            .reader
            .read_bounded(
                &head.execution_id,
                from,
                head.last_index,
                BACKLOG_PAGE,
                BACKLOG_BYTES,
            )
            .await
            .ok()?;
        let whole = page.first().is_some_and(|e| e.index == from + 1)
            && page.last().is_some_and(|e| e.index >= head.last_index)
            && page.len() as u64 == head.last_index - from;
        whole.then_some(page)
    }

    /// A connection whose token expired gets nothing more: it is closed (its client reconnects
    /// with a fresh token) and forgotten. Returns whether it was.
    pub async fn close_if_expired(&self, conn: &Connection) -> Result<bool, CoreError> {
        if conn.expires_at > self.clock.now_ms() / 1000 {
            return Ok(false);
        }
        if let Err(PushError::Failed(_)) = self.pusher.close(&conn.connection_id).await {
            // Still open: keep the record, so the next push tries to close it again.
            self.metrics.incr(Metric::PushFailures, 1);
            return Ok(true);
        }
        self.connections.remove(&conn.connection_id).await?;
        self.metrics.incr(Metric::ConnectionsExpired, 1);
        Ok(true)
    }

    /// Pushes to one connection what it has not been sent, up to `head.last_index`: only a
    /// contiguous run that starts right after what the connection has, and only what can be
    /// sent (an event too large for one message ends the run; the client fetches it over HTTP
    /// and tells the server with `resume`).
    ///
    /// The range is claimed before it is sent (the cursor is raised atomically, to the end of
    /// what will be sent), so concurrent forwarders never send the same range twice to a
    /// connection; a push that fails leaves a hole the client fills over HTTP (spec §6.4, §7).
    ///
    /// A connection more than one backlog page behind gets nothing (not even a store read):
    /// its client reads over HTTP and says where it is with `resume`. So a forwarder batch
    /// costs each connection at most one page, whatever a client asked for.
    pub async fn deliver(
        &self,
        conn: &Connection,
        head: &Head,
        fresh: &[LogEvent],
    ) -> Result<(), CoreError> {
        let covered = fresh.first().is_some_and(|f| f.index <= conn.cursor + 1);
        if !covered && head.last_index.saturating_sub(conn.cursor) > BACKLOG_PAGE as u64 {
            return Ok(());
        }
        self.deliver_pages(conn, head, fresh, 1).await
    }

    /// [`FanOut::deliver`], stopping after one backlog page (at most [`BACKLOG_PAGE`] events and
    /// [`BACKLOG_BYTES`]): what a client's `resume` may cost; the client reads the rest over
    /// HTTP.
    pub async fn deliver_one_page(&self, conn: &Connection, head: &Head) -> Result<(), CoreError> {
        self.deliver_pages(conn, head, &[], 1).await
    }

    async fn deliver_pages(
        &self,
        conn: &Connection,
        head: &Head,
        fresh: &[LogEvent],
        pages: usize,
    ) -> Result<(), CoreError> {
        let target = head.last_index;
        let mut from = conn.cursor;
        for _ in 0..pages {
            let (events, whole) = self.sendable(conn, from, target, fresh).await?;
            let end = events.last().map_or(from, |e| e.index);
            let previous = match self.connections.advance(conn, end).await? {
                Some(prev) => prev,
                None => return Ok(()),
            };
            // Another writer (or a `resume`) moved the cursor meanwhile: send only what
            // continues from it.
            let run: Vec<LogEvent> = events.into_iter().filter(|e| e.index > previous).collect();
            if run.first().is_some_and(|e| e.index != previous + 1) {
                return Ok(());
            }
            for text in pack_messages(&conn.execution_id, &run, FRAME_BYTES) {
                if !self.push(conn, &text).await? {
                    return Ok(());
                }
            }
            let reached = run.last().map_or(previous, |e| e.index);
            if reached >= target {
                if let (true, Some(final_index)) = (head.status.is_terminal(), head.final_index) {
                    let msg = ServerMessage::Status {
                        execution_id: head.execution_id.clone(),
                        status: head.status,
                        exit_code: head.exit_code,
                        final_index,
                    };
                    self.push(conn, &msg.to_json()).await?;
                }
                return Ok(());
            }
            if !whole || reached <= from {
                return Ok(());
            }
            from = reached;
        }
        Ok(())
    }

    /// The contiguous events after `from`, up to `through`, that fit in messages — `fresh` when
    /// it covers them, else a page read from the store — and whether the run ended only
    /// because the page did (rather than at an event that cannot be pushed).
    async fn sendable(
        &self,
        conn: &Connection,
        from: u64,
        through: u64,
        fresh: &[LogEvent],
    ) -> Result<(Vec<LogEvent>, bool), CoreError> {
        if from >= through {
            return Ok((Vec::new(), false));
        }
        // Fresh events serve when they cover the whole range; otherwise the store does.
        let covers = fresh.first().is_some_and(|f| f.index <= from + 1)
            && fresh.last().is_some_and(|l| l.index >= through);
        let mut events: Vec<LogEvent> = if covers {
            fresh
                .iter()
                .filter(|e| e.index > from && e.index <= through)
                .cloned()
                .collect()
        } else {
            self.reader
                .read_bounded(
                    &conn.execution_id,
                    from,
                    through,
                    BACKLOG_PAGE,
                    BACKLOG_BYTES,
                )
                .await?
        };
        let read = events.len();
        let mut expected = from + 1;
        let contiguous = events
            .iter()
            .take_while(|e| {
                let ok = e.index == expected && fits_one_message(&conn.execution_id, e);
                expected += 1;
                ok
            })
            .count();
        events.truncate(contiguous);
        Ok((events, contiguous == read))
    }

    /// Whether to go on sending to the connection: not when it is gone (it is pruned, unless it
    /// may still be in its handshake) and not after a failed push.
    async fn push(&self, conn: &Connection, text: &str) -> Result<bool, CoreError> {
        match self.pusher.push(&conn.connection_id, text).await {
            Ok(()) => {
                self.metrics.incr(Metric::PushesSent, 1);
                Ok(true)
            }
            Err(PushError::Gone) => {
                if self.clock.now_ms() - conn.connected_at >= HANDSHAKE_GRACE_MS {
                    self.connections.remove(&conn.connection_id).await?;
                    self.metrics.incr(Metric::ConnectionsPruned, 1);
                }
                Ok(false)
            }
            Err(PushError::Failed(_)) => {
                // The client notices the gap at its next message or idle poll and fills it over
                // HTTP; fan-out is best effort by design (spec §6.4, §7). Nothing more is sent
                // to it now: what follows would arrive after a hole.
                self.metrics.incr(Metric::PushFailures, 1);
                Ok(false)
            }
        }
    }
}

/// Whether an event fits in one message of [`MAX_MESSAGE_BYTES`].
fn fits_one_message(execution_id: &str, e: &LogEvent) -> bool {
    // The envelope is about 50 bytes plus the id; the event's own JSON is within its wire size.
    e.wire_size() + execution_id.len() + 64 <= MAX_MESSAGE_BYTES
}

/// Packs contiguous events into `logs` messages of at most `frame` bytes each. Packing stops at
/// an event too big for one message of [`MAX_MESSAGE_BYTES`], so what is sent stays contiguous;
/// the client fetches the rest over HTTP, which returns events whole.
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
            break;
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
