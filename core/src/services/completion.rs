//! Completion: reconcile the tail, then publish the terminal status with `final_index` (I6).

use crate::error::CoreError;
use crate::model::{Head, Status};
use crate::services::{FanOut, Reconciler};

#[derive(Clone)]
pub struct Completer {
    reconciler: Reconciler,
    fanout: FanOut,
}

impl Completer {
    pub fn new(reconciler: Reconciler, fanout: FanOut) -> Completer {
        Completer { reconciler, fanout }
    }

    /// Marks the execution terminal. Every event the source holds is committed first, so
    /// `final_index` covers them all; completing again with the same status is a no-op.
    ///
    /// The re-read of the source that this takes is saved as it goes: when `deadline_ms`
    /// (clock time) comes first, the call ends with [`CoreError::Unfinished`] and the next one
    /// continues where it stopped.
    pub async fn complete(
        &self,
        execution_id: &str,
        status: Status,
        exit_code: Option<i32>,
        deadline_ms: Option<i64>,
    ) -> Result<Head, CoreError> {
        if !status.is_terminal() {
            return Err(CoreError::BadRequest(format!(
                "status must be one of SUCCEEDED, FAILED or STOPPED to complete an execution, not {}",
                status.as_str()
            )));
        }
        if !self.reconciler.exists(execution_id).await? {
            return Err(CoreError::NotFound(execution_id.to_string()));
        }
        let appender = self.reconciler.appender();
        match appender.store().head(execution_id).await? {
            Some(head) if head.status.is_terminal() => {
                return Self::repeat(execution_id, head, status);
            }
            Some(_) => {}
            // Its stored lines may have expired: never rebuilt as a fragment (I8).
            None => self.reconciler.refuse_expired(execution_id).await?,
        }
        let (tail, done) = self.reconciler.sweep(execution_id, deadline_ms).await?;
        if !done {
            return Err(CoreError::Unfinished(format!(
                "completing execution {execution_id} re-reads its whole log stream and ran out of time after {} page(s); its progress is saved, so completing it again continues from there",
                tail.pages
            )));
        }
        let expires_at = appender.expires_at_now();
        let head = appender
            .update_head(execution_id, |current| {
                if current.status.is_terminal() {
                    return Ok(None);
                }
                let mut next = current.clone();
                next.status = status;
                next.exit_code = exit_code;
                next.final_index = Some(current.last_index);
                next.expires_at = current.expires_at.max(expires_at);
                Ok(Some(next))
            })
            .await?;
        if head.status != status {
            return Self::repeat(execution_id, head, status);
        }
        self.fanout.notify(&head, &tail.recovered).await?;
        Ok(head)
    }

    fn repeat(execution_id: &str, head: Head, status: Status) -> Result<Head, CoreError> {
        if head.status == status {
            Ok(head)
        } else {
            Err(CoreError::AlreadyTerminal(
                execution_id.to_string(),
                head.status.as_str(),
            ))
        }
    }
}
