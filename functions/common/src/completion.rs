//! The completion function: EventBridge "ECS Task State Change" with `lastStatus = STOPPED` →
//! reconcile the tail, then publish the terminal status (I6).

use runvoy_core::services::Services;
use runvoy_core::{CoreError, Status};
use serde::Deserialize;
use serde_json::Value;
use tracing::{error, warn};

use crate::HandlerError;

#[derive(Debug, Deserialize)]
struct TaskChange {
    #[serde(rename = "detail-type", default)]
    detail_type: String,
    detail: Detail,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Detail {
    #[serde(default)]
    last_status: String,
    task_arn: String,
    #[serde(default)]
    containers: Vec<Container>,
    /// RFC 3339, e.g. `2026-12-07T12:03:30.123Z`.
    #[serde(default)]
    stopped_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    name: String,
    #[serde(default)]
    exit_code: Option<i32>,
}

/// What the event meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed {
        execution_id: String,
        status: Status,
        exit_code: Option<i32>,
        final_index: u64,
    },
    Ignored(String),
    /// The execution can never be completed by this event (its logs expired, the event is
    /// invalid): logged and acknowledged, since retrying cannot help.
    Refused(String),
}

/// The execution's terminal status from the runner container: exit 0 → SUCCEEDED, another
/// code → FAILED, no code (stopped before or without exiting) → STOPPED.
fn terminal(detail: &Detail, runner: &str) -> (Status, Option<i32>) {
    let code = detail
        .containers
        .iter()
        .find(|c| c.name == runner)
        .or_else(|| detail.containers.first())
        .and_then(|c| c.exit_code);
    match code {
        Some(0) => (Status::Succeeded, Some(0)),
        Some(c) => (Status::Failed, Some(c)),
        None => (Status::Stopped, None),
    }
}

/// Handles one event. `deadline_ms` (wall clock) bounds the re-read completion does: past it
/// the invocation fails with its progress saved, and Lambda's retry continues from there. Only
/// failures that retrying can fix fail the invocation; the others are [`Outcome::Refused`].
pub async fn handle(
    services: &Services,
    runner: &str,
    event: &Value,
    deadline_ms: Option<i64>,
) -> Result<Outcome, HandlerError> {
    let change: TaskChange = match serde_json::from_value(event.clone()) {
        Ok(c) => c,
        Err(e) => {
            warn!(
                error = ?e.to_string(),
                "ignoring an event that is not an ECS task state change"
            );
            return Ok(Outcome::Ignored(format!(
                "not an ECS task state change: {e}"
            )));
        }
    };
    if change.detail_type != "ECS Task State Change" || change.detail.last_status != "STOPPED" {
        return Ok(Outcome::Ignored(format!(
            "{} / {}",
            change.detail_type, change.detail.last_status
        )));
    }
    let execution_id = change
        .detail
        .task_arn
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let (status, exit_code) = terminal(&change.detail, runner);
    let stopped_at = change.detail.stopped_at.as_deref().and_then(rfc3339_ms);
    let completed = match services
        .completer
        .complete(&execution_id, status, exit_code, stopped_at, deadline_ms)
        .await
    {
        // A task that never logged a line (it failed to start, or printed nothing): its
        // followers wait for it, so it completes with no lines and its exit code.
        Err(CoreError::NotFound(_)) => {
            services
                .completer
                .complete_lineless(&execution_id, status, exit_code, deadline_ms)
                .await
        }
        other => other,
    };
    match completed {
        Ok(head) => Ok(Outcome::Completed {
            execution_id,
            status: head.status,
            exit_code: head.exit_code,
            final_index: head.final_index.unwrap_or(head.last_index),
        }),
        Err(e @ CoreError::AlreadyTerminal(..)) => Ok(Outcome::Ignored(e.to_string())),
        // The id is the task ARN's last segment, as the event carries it: escaped (`?`).
        Err(e) if e.is_retryable() => {
            warn!(
                execution_id = ?execution_id,
                error = ?e.to_string(),
                "completing failed; the invocation fails so Lambda retries it"
            );
            Err(e.into())
        }
        Err(e) => {
            error!(
                execution_id = ?execution_id,
                error = ?e.to_string(),
                "this event can never complete the execution; acknowledged"
            );
            Ok(Outcome::Refused(e.to_string()))
        }
    }
}

pub use runvoy_core::time::parse_rfc3339_ms as rfc3339_ms;
