//! Domain model: executions' heads, committed log events, source events and connections.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Lifecycle status of an execution (spec §4.1.7). Only `Running` is non-terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Running,
    Succeeded,
    Failed,
    Stopped,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "RUNNING",
            Status::Succeeded => "SUCCEEDED",
            Status::Failed => "FAILED",
            Status::Stopped => "STOPPED",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "RUNNING" => Some(Status::Running),
            "SUCCEEDED" => Some(Status::Succeeded),
            "FAILED" => Some(Status::Failed),
            "STOPPED" => Some(Status::Stopped),
            _ => None,
        }
    }
}

/// A line as the log source (CloudWatch Logs or its local analog) holds it, before it has an index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceEvent {
    pub event_id: String,
    pub timestamp: i64,
    pub message: String,
}

/// A committed line: immutable once written (I3).
///
/// On the wire it is `{"index","event_id","timestamp","message"}`; a message whose escaped form
/// would exceed [`BASE64_ABOVE`] bytes (1 MB of control characters escapes to 7 MB, more than a
/// Lambda response may hold) is sent as `"message_base64"` instead, which grows by a third at
/// most. Reading accepts either.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "WireEvent")]
pub struct LogEvent {
    pub index: u64,
    pub event_id: String,
    pub timestamp: i64,
    pub message: String,
}

/// Messages whose escaped size is above this travel base64-encoded.
pub const BASE64_ABOVE: usize = 1024 * 1024;

#[derive(Deserialize)]
struct WireEvent {
    index: u64,
    event_id: String,
    timestamp: i64,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    message_base64: Option<String>,
}

// Written field by field: pages serialise many events, and a conversion would copy each message.
impl Serialize for LogEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("LogEvent", 4)?;
        st.serialize_field("index", &self.index)?;
        st.serialize_field("event_id", &self.event_id)?;
        st.serialize_field("timestamp", &self.timestamp)?;
        if self.travels_base64() {
            st.serialize_field("message_base64", &STANDARD.encode(self.message.as_bytes()))?;
        } else {
            st.serialize_field("message", &self.message)?;
        }
        st.end()
    }
}

impl TryFrom<WireEvent> for LogEvent {
    type Error = String;

    fn try_from(w: WireEvent) -> Result<LogEvent, String> {
        let message = match (w.message, w.message_base64) {
            (Some(m), None) => m,
            (None, Some(b)) => STANDARD
                .decode(b.as_bytes())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or("message_base64 is not base64 of UTF-8 text")?,
            _ => return Err("an event has exactly one of message and message_base64".into()),
        };
        Ok(LogEvent {
            index: w.index,
            event_id: w.event_id,
            timestamp: w.timestamp,
            message,
        })
    }
}

/// A message's size as JSON inside a Lambda proxy response (see [`LogEvent::wire_size`]).
fn escaped_size(message: &[u8]) -> usize {
    // Most lines have nothing to escape; this check runs without a branch per byte.
    let special = message.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !special {
        return message.len();
    }
    message
        .iter()
        .map(|b| match b {
            b'"' | b'\\' => 4,
            b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 3,
            0..=0x1f => 7,
            _ => 1,
        })
        .sum()
}

/// Whether a message is sent as `message_base64` in JSON (escaping would blow it up).
pub fn travels_base64(message: &[u8]) -> bool {
    // Escaping grows a byte to 7 at most: shorter messages need no count.
    message.len() * 7 > BASE64_ABOVE && escaped_size(message) > BASE64_ABOVE
}

impl LogEvent {
    /// The message's size as JSON inside a Lambda proxy response: the page is JSON, and API
    /// Gateway's proxy response carries that JSON as a string, escaped a second time (a quote
    /// becomes `\\\"`, a control character `\\u0001`).
    fn escaped_size(&self) -> usize {
        escaped_size(self.message.as_bytes())
    }

    /// Whether the message is sent as `message_base64`.
    pub fn travels_base64(&self) -> bool {
        travels_base64(self.message.as_bytes())
    }

    /// At most how many bytes this event takes in a Lambda response. Used to bound pages below
    /// Lambda's 6 MB.
    pub fn wire_size(&self) -> usize {
        let message = if self.travels_base64() {
            self.message.len().div_ceil(3) * 4
        } else {
            self.escaped_size()
        };
        message + 2 * self.event_id.len() + 96
    }
}

impl LogEvent {
    pub fn from_source(index: u64, ev: SourceEvent) -> LogEvent {
        LogEvent {
            index,
            event_id: ev.event_id,
            timestamp: ev.timestamp,
            message: ev.message,
        }
    }
}

/// The execution's head, stored at `log_index = 0`: the single item every index assignment is
/// conditioned on (optimistic concurrency on `version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub execution_id: String,
    /// Highest committed index; indexes `1..=last_index` all exist (I1).
    pub last_index: u64,
    pub status: Status,
    /// Set together with a terminal status: every index up to it is committed (I6).
    pub final_index: Option<u64>,
    pub exit_code: Option<i32>,
    /// Where the last reconciliation stopped reading the log source (a forward token).
    pub source_cursor: Option<String>,
    /// How far completion's re-read of the whole source got (everything before it is
    /// committed), so an interrupted completion continues instead of starting over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep_cursor: Option<String>,
    /// When that re-read began (ms): only a re-read that began after the stop plus the
    /// ingestion grace may set `final_index` (a line written before the stop can become
    /// readable seconds after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep_began_at: Option<i64>,
    /// When the execution stopped (ms), as the first completion attempt learnt it (ECS's
    /// `stoppedAt`, or the time of `POST …/complete`), so its retries wait for the same moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<i64>,
    /// When a read may next reconcile this running execution (ms), and the wait after that:
    /// kept here, so every reader (every API instance) shares one schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile_after: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile_wait_ms: Option<i64>,
    /// Incremented by every commit; the condition of the next one.
    pub version: u64,
    /// Timestamp of the event at `last_index`, to count out-of-order arrivals.
    pub last_timestamp: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Unix seconds after which the store may delete this item (I8).
    pub expires_at: i64,
    /// Unix seconds: the expiry the execution's log items are written with, and the earliest
    /// any of them has. Kept at or after the head's own expiry (a commit or a completion that
    /// would outlive it first extends every item), so a line never expires before its
    /// execution does. `None` on heads written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_expire_at: Option<i64>,
}

impl Head {
    /// When the log items expire at the earliest. Heads written before this was kept wrote
    /// their items with the head's expiry at each commit: never before creation + retention.
    pub fn items_floor(&self, retention_secs: i64) -> i64 {
        self.items_expire_at
            .unwrap_or(self.created_at.div_euclid(1000) + retention_secs)
    }

    /// The expiry to write on items committed with this head.
    pub fn item_expiry(&self) -> i64 {
        self.items_expire_at.unwrap_or(self.expires_at)
    }
}

impl Head {
    pub fn new(execution_id: &str, now_ms: i64, expires_at: i64) -> Head {
        Head {
            execution_id: execution_id.to_string(),
            last_index: 0,
            status: Status::Running,
            final_index: None,
            exit_code: None,
            source_cursor: None,
            sweep_cursor: None,
            sweep_began_at: None,
            stopped_at: None,
            reconcile_after: None,
            reconcile_wait_ms: None,
            version: 0,
            last_timestamp: i64::MIN,
            created_at: now_ms,
            updated_at: now_ms,
            expires_at,
            items_expire_at: None,
        }
    }
}

/// A WebSocket connection following one execution, with the highest index already sent to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub connection_id: String,
    pub execution_id: String,
    /// Highest index pushed (or known to the client); pushes continue after it.
    pub cursor: u64,
    pub connected_at: i64,
    /// Unix seconds; connections never outlive API Gateway's 2 h maximum by much.
    pub expires_at: i64,
    /// When the client last sent `resume` (ms; 0: never), to limit how often it may.
    #[serde(default)]
    pub resumed_at: i64,
}

#[cfg(test)]
mod wire_tests {
    use super::*;

    fn event(message: String) -> LogEvent {
        LogEvent {
            index: 1,
            event_id: "e1".into(),
            timestamp: 5,
            message,
        }
    }

    /// `wire_size` bounds the event as it appears in a Lambda proxy response: the page's JSON
    /// carried as a JSON string, so escaped twice.
    #[test]
    fn wire_size_bounds_the_doubly_escaped_event() {
        for message in [
            "plain text, nothing to escape".to_string(),
            "a \"quoted\" word and a back\\slash".to_string(),
            "tab\there, bell\u{7}, escape\u{1b}[1m, newline\n".to_string(),
            "é ü 日本 🙂".to_string(),
            "\"".repeat(300),
            "\\".repeat(300),
            "\u{1}".repeat(300),
            String::new(),
        ] {
            let e = event(message);
            let shown: String = e.message.chars().take(20).collect();
            let once = serde_json::to_string(&e).unwrap();
            let twice = serde_json::to_string(&once).unwrap();
            assert!(
                e.wire_size() >= twice.len(),
                "{shown:?}…: wire_size {} < {} bytes in a proxy response",
                e.wire_size(),
                twice.len()
            );
            assert!(
                e.wire_size() <= twice.len() + 96,
                "{shown:?}…: a tight bound"
            );
        }
    }

    #[test]
    fn a_message_that_escaping_would_blow_up_travels_base64() {
        let hostile = event("\u{1}".repeat(1024 * 1024));
        let json = serde_json::to_string(&hostile).unwrap();
        assert!(json.contains("\"message_base64\":") && !json.contains("\"message\":"));
        assert!(json.len() < 1_500_000, "{} bytes, not 7 MB", json.len());
        assert!(hostile.wire_size() < 1_500_000);
        let back: LogEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, hostile, "byte-exact");
        // Ordinary lines, coloured ones included, keep `message`.
        let coloured = event("\u{1b}[31mred\u{1b}[0m".repeat(1000));
        let json = serde_json::to_string(&coloured).unwrap();
        assert!(json.contains("\"message\":"));
        assert!(
            serde_json::from_str::<LogEvent>(r#"{"index":1,"event_id":"e","timestamp":1}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<LogEvent>(
                r#"{"index":1,"event_id":"e","timestamp":1,"message_base64":"!!"}"#
            )
            .is_err()
        );
    }
}

/// One execution as listed by `GET /api/v1/executions`: what its head says, without its lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionSummary {
    pub execution_id: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_index: Option<u64>,
    pub created_at: i64,
}

impl ExecutionSummary {
    pub fn of(head: &Head) -> ExecutionSummary {
        ExecutionSummary {
            execution_id: head.execution_id.clone(),
            status: head.status,
            exit_code: head.exit_code,
            final_index: head.final_index,
            created_at: head.created_at,
        }
    }
}
