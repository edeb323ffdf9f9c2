//! The janitor: on a schedule, the completion function takes back what Lambda gave up on.
//!
//! An asynchronous event whose every attempt failed (a completion whose re-reads met the
//! account's `GetLogEvents` quota three times while hundreds of tasks stopped at once; a
//! forwarder batch at a write ceiling) ends in its function's on-failure queue. Left there, its
//! execution would stay RUNNING and its followers would never exit. The janitor receives those
//! records, handles each original event again with the same handler, and deletes a record only
//! once that succeeded; a record that fails again becomes visible after the queue's visibility
//! timeout and is tried at the next run, until the queue's retention (that of the stack).

use aws_sdk_sqs::Client;
use runvoy_aws::StreamNames;
use runvoy_core::services::Services;
use serde_json::Value;
use tracing::{error, warn};

use crate::HandlerError;
use crate::emf::EmfMetrics;

/// What one run did, per queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Redriven {
    /// Records whose event was handled and deleted.
    pub handled: usize,
    /// Records whose event failed again (left for the next run).
    pub failed: usize,
    /// Records without their event (Lambda leaves it out when the record would exceed what
    /// the destination takes): deleted; the lines are recovered by reconciliation.
    pub without_event: usize,
    /// Records received [`GIVE_UP_AFTER`] times without success: deleted, and said loudly.
    pub abandoned: usize,
}

/// Receives of one record after which it is given up (about 13 hours of runs).
pub const GIVE_UP_AFTER: u32 = 50;

/// The function whose on-failure records a queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Completion,
    Forwarder,
}

/// Everything the janitor needs.
pub struct Janitor<'a> {
    pub sqs: &'a Client,
    pub services: &'a Services,
    pub names: &'a StreamNames,
    pub metrics: &'a EmfMetrics,
    pub runner: &'a str,
}

/// Time kept free at the end of a run to delete the last record and answer.
const MARGIN_MS: i64 = 30_000;

impl Janitor<'_> {
    /// Re-drives `queue_url`'s records until it is empty or `deadline_ms` (wall clock) is near.
    pub async fn redrive(
        &self,
        origin: Origin,
        queue_url: &str,
        deadline_ms: i64,
    ) -> Result<Redriven, HandlerError> {
        let mut done = Redriven::default();
        while crate::emf::now_ms() < deadline_ms - MARGIN_MS {
            // A second of long polling: a short poll may answer empty while records exist.
            let got = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_system_attribute_names(
                    aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
                )
                .send()
                .await
                .map_err(|e| {
                    HandlerError::call(format!("reading the on-failure queue {queue_url}"), e)
                })?;
            let messages = got.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                let record: Value = m
                    .body()
                    .and_then(|b| serde_json::from_str(b).ok())
                    .unwrap_or(Value::Null);
                let receives: u32 = m
                    .attributes()
                    .and_then(|a| {
                        a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                let outcome = match record.get("requestPayload") {
                    Some(event) if receives < GIVE_UP_AFTER => {
                        self.handle(origin, event, deadline_ms).await
                    }
                    Some(_) => {
                        done.abandoned += 1;
                        error!(
                            queue = queue_url,
                            receives,
                            "janitor: a record failed every time; given up (its execution may need `POST …/complete`, its lines a read)"
                        );
                        Ok(())
                    }
                    None => {
                        done.without_event += 1;
                        warn!(
                            queue = queue_url,
                            "janitor: a record has no requestPayload (Lambda leaves out an event too large for the destination); deleted, reconciliation recovers its lines"
                        );
                        Ok(())
                    }
                };
                match outcome {
                    Ok(()) => {
                        done.handled += 1;
                        if let Some(handle) = m.receipt_handle() {
                            self.sqs
                                .delete_message()
                                .queue_url(queue_url)
                                .receipt_handle(handle)
                                .send()
                                .await
                                .map_err(|e| {
                                    HandlerError::call(
                                        format!("deleting a record of {queue_url}"),
                                        e,
                                    )
                                })?;
                        }
                    }
                    Err(e) => {
                        done.failed += 1;
                        warn!(
                            queue = queue_url,
                            error = ?e.to_string(),
                            "janitor: an event failed again; left for the next run"
                        );
                    }
                }
            }
        }
        Ok(done)
    }

    async fn handle(
        &self,
        origin: Origin,
        event: &Value,
        deadline_ms: i64,
    ) -> Result<(), HandlerError> {
        match origin {
            Origin::Completion => {
                crate::completion::handle(self.services, self.runner, event, Some(deadline_ms))
                    .await
                    .map(|_| ())
            }
            Origin::Forwarder => {
                crate::forwarder::handle(self.services, self.names, self.metrics, event)
                    .await
                    .map(|_| ())
            }
        }
    }
}

/// Whether an event is EventBridge's scheduled event (the janitor's trigger).
pub fn is_schedule(event: &Value) -> bool {
    event["source"] == "aws.events" && event["detail-type"] == "Scheduled Event"
}
