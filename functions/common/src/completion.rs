//! The completion function: EventBridge "ECS Task State Change" with `lastStatus = STOPPED` →
//! reconcile the tail, then publish the terminal status (I6).

use runvoy_core::services::Services;
use runvoy_core::{CoreError, Status};
use serde::Deserialize;
use serde_json::Value;

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
/// the invocation fails with its progress saved, and Lambda's retry continues from there.
pub async fn handle(
    services: &Services,
    runner: &str,
    event: &Value,
    deadline_ms: Option<i64>,
) -> Result<Outcome, HandlerError> {
    let change: TaskChange = match serde_json::from_value(event.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("completion: ignoring an event that is not an ECS task state change: {e}");
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
    match services
        .completer
        .complete(&execution_id, status, exit_code, stopped_at, deadline_ms)
        .await
    {
        Ok(head) => Ok(Outcome::Completed {
            execution_id,
            status: head.status,
            exit_code: head.exit_code,
            final_index: head.final_index.unwrap_or(head.last_index),
        }),
        Err(CoreError::NotFound(_)) => {
            // A task that never logged a line (it failed to start, or printed nothing): its
            // followers wait for it, so it completes with no lines and its exit code.
            let head = services
                .completer
                .complete_lineless(&execution_id, status, exit_code, deadline_ms)
                .await?;
            Ok(Outcome::Completed {
                execution_id,
                status: head.status,
                exit_code: head.exit_code,
                final_index: head.final_index.unwrap_or(head.last_index),
            })
        }
        Err(e @ CoreError::AlreadyTerminal(..)) => Ok(Outcome::Ignored(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Milliseconds since the epoch of an RFC 3339 time as AWS writes them in events
/// (`2026-12-07T12:03:30.123Z`, `…+00:00`); `None` when it is not one.
pub fn rfc3339_ms(text: &str) -> Option<i64> {
    let (date, rest) = text.split_once(['T', 't'])?;
    let mut d = date.splitn(3, '-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (clock, offset_ms) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = rest.rfind(['+', '-'])?;
        let (c, off) = rest.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        let minutes = oh.parse::<i64>().ok()? * 60 + om.parse::<i64>().ok()?;
        (c, sign * minutes * 60_000)
    };
    let mut c = clock.splitn(3, ':');
    let (h, min, sec): (i64, i64, &str) =
        (c.next()?.parse().ok()?, c.next()?.parse().ok()?, c.next()?);
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let s: i64 = whole.parse().ok()?;
    let ms: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3_600 + min * 60 + s) * 1_000 + ms) - offset_ms)
}

#[cfg(test)]
mod tests {
    use super::rfc3339_ms;

    #[test]
    fn aws_times_parse() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_ms("2026-12-07T12:03:30.123Z"),
            Some(1_796_645_010_123)
        );
        assert_eq!(
            rfc3339_ms("2026-12-07T13:03:30.1+01:00"),
            Some(1_796_645_010_100)
        );
        assert_eq!(
            rfc3339_ms("2020-02-29T23:59:59.999Z"),
            Some(1_583_020_799_999)
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "yesterday",
            "2026-12-07",
            "2026-12-07T25:00:00Z",
        ] {
            assert_eq!(rfc3339_ms(bad), None, "{bad}");
        }
    }
}
