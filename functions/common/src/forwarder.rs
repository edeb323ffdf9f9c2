//! The forwarder: CloudWatch Logs subscription events → exactly-once append → fan-out.

use runvoy_aws::{StreamNames, identity, subscription};
use runvoy_core::ports::{Metric, Metrics};
use runvoy_core::services::Services;
use serde_json::Value;
use tracing::{error, info, warn};

use crate::HandlerError;
use crate::emf::EmfMetrics;

/// What one invocation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarded {
    pub execution_id: Option<String>,
    pub appended: usize,
    pub duplicates: usize,
    /// Why nothing was done (control message, foreign stream, poison payload or batch).
    pub skipped: Option<String>,
}

/// Handles one subscription event `{"awslogs":{"data":"<base64 gzip json>"}}`.
///
/// A payload that can never succeed (malformed, or a batch the core refuses for good, such as
/// one of an execution whose logs expired) is logged with context, counted as poison and
/// acknowledged; an append that retrying can fix is returned as [`HandlerError::Retryable`],
/// so the invocation fails and AWS retries it (then sends it to the on-failure destination).
pub async fn handle(
    services: &Services,
    names: &StreamNames,
    metrics: &EmfMetrics,
    event: &Value,
) -> Result<Forwarded, HandlerError> {
    let Some(data) = event.pointer("/awslogs/data").and_then(Value::as_str) else {
        return Ok(poison(
            metrics,
            "the event has no awslogs.data string".into(),
        ));
    };
    let payload = match subscription::decode(data) {
        Ok(p) => p,
        Err(e) => {
            return Ok(poison(
                metrics,
                format!("{e} (payload of {} bytes)", data.len()),
            ));
        }
    };
    if payload.is_control() {
        return Ok(Forwarded {
            skipped: Some("control message".into()),
            ..Forwarded::default()
        });
    }
    let Some(execution_id) = names.execution(&payload.log_stream) else {
        // Names come from whoever writes to the group: logged escaped (`?`), so a newline in
        // one cannot forge a log line (or a metric line) of this function's own.
        info!(
            stream = ?payload.log_stream,
            group = ?payload.log_group,
            "not an execution stream; ignored"
        );
        return Ok(Forwarded {
            skipped: Some(format!("foreign stream {}", payload.log_stream)),
            ..Forwarded::default()
        });
    };
    let now = services.ports.clock.now_ms();
    if let Some(newest) = payload.log_events.iter().map(|e| e.timestamp).max() {
        metrics.lag(now - newest);
    }
    let events = identity::with_ids(
        payload
            .log_events
            .into_iter()
            .map(|e| (e.timestamp, e.message))
            .collect(),
    );
    let out = match services.forwarder.forward(&execution_id, events).await {
        Ok(out) => out,
        Err(e) if e.is_retryable() => {
            warn!(
                execution_id = ?execution_id,
                error = ?e.to_string(),
                "appending failed; the invocation fails so Lambda retries it"
            );
            return Err(e.into());
        }
        Err(e) => {
            let mut refused = poison(metrics, format!("a batch that can never be appended: {e}"));
            refused.execution_id = Some(execution_id);
            return Ok(refused);
        }
    };
    Ok(Forwarded {
        execution_id: Some(execution_id),
        appended: out.committed.len(),
        duplicates: out.duplicates,
        skipped: None,
    })
}

fn poison(metrics: &EmfMetrics, why: String) -> Forwarded {
    // `why` quotes the payload's own words (a decoder's error, a stream's name): escaped.
    error!(why = ?why, "dropping a subscription event that can never succeed");
    metrics.incr(Metric::PoisonPayloads, 1);
    Forwarded {
        skipped: Some(why),
        ..Forwarded::default()
    }
}
