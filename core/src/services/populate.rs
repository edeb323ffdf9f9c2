//! Lazy population and the read-triggered reconciliation schedule (spec §6.2): a read of an
//! execution without a head populates it from the log source, and a read of a running one
//! reconciles it when the schedule kept in its head says one is due.

use std::sync::Arc;

use crate::error::CoreError;
use crate::model::Head;
use crate::ports::Clock;
use crate::services::{FanOut, Reader, Reconciler};

/// How often reads reconcile a running execution, and how long one read may spend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileSchedule {
    /// Least time between two read-triggered reconciliations of one running execution; it
    /// doubles (up to `max_interval_ms`) after every one that found nothing missing, and is
    /// back to this after one that recovered lines (evidence of loss).
    pub interval_ms: i64,
    pub max_interval_ms: i64,
    /// How long a read may spend reconciling (lazy population of a long stream, catching up)
    /// before it serves what is committed; the next read continues.
    pub budget_ms: i64,
}

/// The head a read serves: populated from the source on first sight, reconciled on schedule.
#[derive(Clone)]
pub struct Populator {
    reader: Reader,
    reconciler: Reconciler,
    fanout: FanOut,
    clock: Arc<dyn Clock>,
    schedule: ReconcileSchedule,
}

impl Populator {
    pub fn new(
        reader: Reader,
        reconciler: Reconciler,
        fanout: FanOut,
        clock: Arc<dyn Clock>,
        schedule: ReconcileSchedule,
    ) -> Populator {
        Populator {
            reader,
            reconciler,
            fanout,
            clock,
            schedule,
        }
    }

    /// Returns the head, populating the execution from the log source on first sight, and
    /// reconciling a running execution when its shared schedule says so.
    pub async fn head(&self, id: &str) -> Result<Head, CoreError> {
        let head = self.reader.head(id).await?;
        let now = self.clock.now_ms();
        let deadline = now + self.schedule.budget_ms;
        match head {
            None => {
                if !self.reconciler.source().exists(id).await? {
                    return Err(CoreError::NotFound(id.to_string()));
                }
                let outcome = self.reconciler.reconcile_until(id, Some(deadline)).await?;
                // The next reconciliation of this running execution waits the minimum; one
                // that stopped at its deadline continues at the next read.
                if outcome.caught_up {
                    let _ = self.schedule_reconcile(id, now, None).await;
                }
                let head = self
                    .reader
                    .head(id)
                    .await?
                    .ok_or_else(|| CoreError::NotFound(id.to_string()))?;
                self.fanout.notify(&head, &outcome.recovered).await?;
                Ok(head)
            }
            Some(h) if !h.status.is_terminal() && h.reconcile_after.is_none_or(|t| now >= t) => {
                // Best effort: serving what is committed beats failing the read.
                if self.claim_reconcile(id, now).await
                    && let Ok(outcome) = self.reconciler.reconcile_until(id, Some(deadline)).await
                {
                    if !outcome.recovered.is_empty() || !outcome.caught_up {
                        // Lines were missing (or more are to be read): look again soon.
                        let _ = self.schedule_reconcile(id, now, None).await;
                    }
                    if let Some(head) = outcome.head {
                        let _ = self.fanout.notify(&head, &outcome.recovered).await;
                        return Ok(head);
                    }
                }
                Ok(h)
            }
            Some(h) => Ok(h),
        }
    }

    /// Takes the execution's next reconciliation for this reader: only one of the readers
    /// that find it due wins (the head's version decides), and the one after it waits twice
    /// as long, up to the maximum.
    async fn claim_reconcile(&self, id: &str, now: i64) -> bool {
        self.schedule_reconcile(id, now, Some(now))
            .await
            .unwrap_or(false)
    }

    /// Sets the next reconciliation time; `due_at` = `Some(now)` claims a due one (and backs
    /// off), `None` resets the wait to the minimum. Returns whether this call changed it.
    async fn schedule_reconcile(
        &self,
        id: &str,
        now: i64,
        due_at: Option<i64>,
    ) -> Result<bool, CoreError> {
        let (min, max) = (self.schedule.interval_ms, self.schedule.max_interval_ms);
        // Executions started together would otherwise reconcile together: spread each wait over
        // ±25 % (the quota is per second).
        let spread = |wait: i64| wait * 3 / 4 + self.clock.jitter((wait / 2).max(1) as u64) as i64;
        // One attempt: a reader that loses to another writer skips rather than waits.
        self.reconciler
            .appender()
            .try_update_head(id, |current| {
                if current.status.is_terminal() {
                    return None;
                }
                let mut next = current.clone();
                match due_at {
                    Some(t) => {
                        if current.reconcile_after.is_some_and(|after| after > t) {
                            return None;
                        }
                        // Assume this one finds nothing (the usual case); one that recovers lines
                        // resets the wait afterwards.
                        let wait = current.reconcile_wait_ms.unwrap_or(min).saturating_mul(2);
                        let wait = wait.clamp(min, max);
                        next.reconcile_after = Some(now + spread(wait));
                        next.reconcile_wait_ms = Some(wait);
                    }
                    None => {
                        next.reconcile_after = Some(now + spread(min));
                        next.reconcile_wait_ms = Some(min);
                    }
                }
                Some(next)
            })
            .await
    }
}
