//! The forwarder step shared by the Lambda and the local emulator: append one delivered batch
//! exactly once, count what was redelivered, then fan the new lines out.

use std::sync::Arc;

use crate::error::CoreError;
use crate::model::SourceEvent;
use crate::ports::{Metric, Metrics};
use crate::services::{AppendOutcome, Appender, FanOut};

#[derive(Clone)]
pub struct Forwarder {
    appender: Appender,
    fanout: FanOut,
    metrics: Arc<dyn Metrics>,
}

impl Forwarder {
    pub fn new(appender: Appender, fanout: FanOut, metrics: Arc<dyn Metrics>) -> Forwarder {
        Forwarder {
            appender,
            fanout,
            metrics,
        }
    }

    /// Commits a subscription batch and pushes it. An append error is returned (the invocation
    /// must fail so it is retried); a fan-out error is not, since the lines are committed and
    /// clients recover pushes over HTTP.
    pub async fn forward(
        &self,
        execution_id: &str,
        events: Vec<SourceEvent>,
    ) -> Result<AppendOutcome, CoreError> {
        // Lines past the retention are never committed (the appender counts them), so an
        // execution whose stored lines expired does not come back as a fragment (I8).
        let out = self.appender.append(execution_id, events, None).await?;
        if out.duplicates > 0 {
            self.metrics
                .incr(Metric::DuplicatesDropped, out.duplicates as u64);
        }
        if let Some(head) = &out.head {
            let _ = self.fanout.notify(head, &out.committed).await;
        }
        Ok(out)
    }
}
