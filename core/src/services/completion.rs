//! Completion: reconcile the tail, then publish the terminal status with `final_index` (I6).

use crate::error::CoreError;
use crate::model::{Head, Status};
use crate::services::{FanOut, Reconciler};

/// The least time a completion keeps for its re-read after waiting out the grace: with less
/// before its deadline, it answers [`CoreError::Unfinished`] at once and is retried.
const MIN_SWEEP_MS: i64 = 2_000;

#[derive(Clone)]
pub struct Completer {
    reconciler: Reconciler,
    fanout: FanOut,
    /// How long after the stop a line written before it may still become readable
    /// (CloudWatch's ingestion delay); 0 for a source that has none.
    grace_ms: i64,
}

impl Completer {
    pub fn new(reconciler: Reconciler, fanout: FanOut) -> Completer {
        Completer {
            reconciler,
            fanout,
            grace_ms: 0,
        }
    }

    /// Finalises only from a re-read that began `grace_ms` after the stop.
    pub fn with_grace(mut self, grace_ms: i64) -> Completer {
        self.grace_ms = grace_ms.max(0);
        self
    }

    /// Marks the execution terminal. Every event the source holds is committed first, so
    /// `final_index` covers them all; completing again with the same status is a no-op.
    ///
    /// `stopped_at` (clock ms; default: now, or the stop an earlier attempt recorded) is when
    /// the execution stopped. A line written just before it can become readable only later
    /// (CloudWatch's ingestion delay), so the re-read that sets `final_index` must begin at
    /// least the grace after it: this call waits for that moment when its deadline allows,
    /// else answers [`CoreError::Unfinished`] to be retried.
    ///
    /// The re-read of the source that this takes is saved as it goes: when `deadline_ms`
    /// (clock time) comes first, the call ends with [`CoreError::Unfinished`] and the next one
    /// continues where it stopped.
    pub async fn complete(
        &self,
        execution_id: &str,
        status: Status,
        exit_code: Option<i32>,
        stopped_at: Option<i64>,
        deadline_ms: Option<i64>,
    ) -> Result<Head, CoreError> {
        if !status.is_terminal() {
            return Err(CoreError::BadRequest(format!(
                "status must be one of SUCCEEDED, FAILED or STOPPED to complete an execution, not {}",
                status.as_str()
            )));
        }
        let appender = self.reconciler.appender();
        let clock = appender.clock().clone();
        let head = appender.store().head(execution_id).await?;
        if let Some(h) = head.as_ref().filter(|h| h.status.is_terminal()) {
            return Self::repeat(execution_id, h.clone(), status);
        }
        let stopped_at = head
            .as_ref()
            .and_then(|h| h.stopped_at)
            .or(stopped_at)
            .unwrap_or_else(|| clock.now_ms());
        let ready_at = stopped_at.saturating_add(self.grace_ms);
        let now = clock.now_ms();
        if now < ready_at {
            if deadline_ms.is_some_and(|d| ready_at + MIN_SWEEP_MS > d) {
                // Keep the stop, so that a retry (a later `POST …/complete`) waits for the same
                // moment instead of a new one each time.
                if head.as_ref().is_some_and(|h| h.stopped_at.is_none()) {
                    let _ = appender
                        .try_update_head(execution_id, |current| {
                            (current.stopped_at.is_none() && !current.status.is_terminal()).then(
                                || {
                                    let mut next = current.clone();
                                    next.stopped_at = Some(stopped_at);
                                    next
                                },
                            )
                        })
                        .await;
                }
                return Err(CoreError::Unfinished(format!(
                    "completing execution {execution_id} waits until {} ms after it stopped, for lines written before the stop to become readable; try again",
                    self.grace_ms
                )));
            }
            clock.sleep_ms((ready_at - now) as u64).await;
        }
        if !self.reconciler.exists(execution_id).await? {
            return Err(CoreError::NotFound(execution_id.to_string()));
        }
        match appender.store().head(execution_id).await? {
            Some(head) if head.status.is_terminal() => {
                return Self::repeat(execution_id, head, status);
            }
            Some(_) => {}
            // Its stored lines may have expired: never rebuilt as a fragment (I8).
            None => self.reconciler.refuse_expired(execution_id).await?,
        }
        let (tail, done) = self
            .reconciler
            .sweep(execution_id, stopped_at, ready_at, deadline_ms)
            .await?;
        if !done {
            return Err(CoreError::Unfinished(format!(
                "completing execution {execution_id} re-reads its whole log stream and ran out of time after {} page(s); its progress is saved, so completing it again continues from there",
                tail.pages
            )));
        }
        let expires_at = appender.expires_at_now();
        // The lines live the retention after completion, as the head does (I8): an
        // execution that ran longer than the items' allowance has them extended first.
        let items_expire_at = match appender.store().head(execution_id).await? {
            Some(mut h) => {
                let through = h.last_index;
                appender
                    .keep_items_until(&mut h, through, expires_at)
                    .await?;
                h.items_expire_at
            }
            None => None,
        };
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
                next.items_expire_at = current.items_expire_at.max(items_expire_at);
                Ok(Some(next))
            })
            .await?;
        if head.status != status {
            return Self::repeat(execution_id, head, status);
        }
        self.fanout.notify(&head, &tail.recovered).await?;
        Ok(head)
    }

    /// Completes an execution the source never saw a line of (an ECS task that stopped
    /// before or without logging): its head is created terminal with `final_index` 0, so
    /// followers waiting for it exit with its code. Lines that still arrive are committed
    /// after it, as any line after completion. An execution that has a head meanwhile is
    /// completed the usual way.
    pub async fn complete_lineless(
        &self,
        execution_id: &str,
        status: Status,
        exit_code: Option<i32>,
        deadline_ms: Option<i64>,
    ) -> Result<Head, CoreError> {
        let appender = self.reconciler.appender();
        let now = appender.clock().now_ms();
        let mut head = Head::new(execution_id, now, appender.expires_at_now());
        head.status = status;
        head.exit_code = exit_code;
        head.final_index = Some(0);
        head.stopped_at = Some(now);
        head.version = 1;
        let commit = crate::ports::Commit {
            expected_version: None,
            head: head.clone(),
            events: Vec::new(),
        };
        match appender.store().commit(commit).await {
            Ok(()) => {
                self.fanout.notify(&head, &[]).await?;
                Ok(head)
            }
            Err(crate::error::CommitError::VersionConflict) => {
                self.complete(execution_id, status, exit_code, None, deadline_ms)
                    .await
            }
            Err(e) => Err(match e {
                crate::error::CommitError::Store(s) => s.into(),
                other => CoreError::Store(crate::error::StoreError::backend(
                    format!("the store refused the lineless completion of {execution_id}"),
                    other,
                )),
            }),
        }
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
