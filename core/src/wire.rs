//! Wire types of the external contract (spec §4.1, §4.2): HTTP bodies and WebSocket messages, with the
//! exact JSON field names other tools depend on. Optional fields are omitted when absent.

use serde::{Deserialize, Serialize};

use crate::model::{ExecutionSummary, LogEvent, Status};

/// `GET /api/v1/executions/{id}/logs` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsResponse {
    pub execution_id: String,
    pub status: Status,
    pub events: Vec<LogEvent>,
    pub last_index: u64,
    pub has_more: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket_url: Option<String>,
}

/// `GET /api/v1/executions/{id}` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub execution_id: String,
    pub status: Status,
    pub last_index: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `GET /api/v1/executions` response: the most recent executions, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionsResponse {
    pub executions: Vec<ExecutionSummary>,
}

/// `POST /api/v1/executions/{id}/complete` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// Every error response: one sentence saying what happened and what to do, and a machine code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub code: String,
}

/// Server → client WebSocket text frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage {
    Logs {
        execution_id: String,
        events: Vec<LogEvent>,
    },
    Status {
        execution_id: String,
        status: Status,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        final_index: u64,
    },
    Error {
        code: String,
        error: String,
    },
}

/// Client → server WebSocket messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum ClientMessage {
    Resume { since_index: u64 },
    Ping,
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }
}
