//! Reconciliation: read the log source from the head's cursor and append what is missing (I2).
//! Runs on first read (lazy population), at completion, and periodically while watched.

use std::sync::Arc;

use crate::error::{CoreError, StoreError};
use crate::model::{Head, LogEvent};
use crate::ports::{LogSource, Metric, Metrics};
use crate::services::Appender;
use crate::services::append::Progress;

/// What one reconciliation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileOutcome {
    /// Events this reconciliation committed (they were missing: dropped or not yet delivered).
    pub recovered: Vec<LogEvent>,
    pub pages: usize,
    /// The head after the last commit, if any commit happened.
    pub head: Option<Head>,
    /// Whether the read reached the end of the source (it may stop at a deadline first).
    pub caught_up: bool,
}

/// Where a read of the source ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// At the lines being written now (`SourcePage::live_end`): forward reconciliation.
    LiveEnd,
    /// Only where the source hands back the token it was given: a completion sweep, which must
    /// read past a late line with an old timestamp.
    TokenReturns,
}

#[derive(Clone)]
pub struct Reconciler {
    source: Arc<dyn LogSource>,
    appender: Appender,
    metrics: Arc<dyn Metrics>,
    /// Safety bound on pages read in one call, so a stream written faster than it is read cannot
    /// keep one call busy forever; the next call continues from the saved cursor.
    max_pages: usize,
}

impl Reconciler {
    pub fn new(source: Arc<dyn LogSource>, appender: Appender, metrics: Arc<dyn Metrics>) -> Self {
        Reconciler {
            source,
            appender,
            metrics,
            max_pages: 100_000,
        }
    }

    pub fn source(&self) -> &Arc<dyn LogSource> {
        &self.source
    }

    pub fn appender(&self) -> &Appender {
        &self.appender
    }

    /// Whether the execution is known at all: a head exists, or the source has its stream.
    pub async fn exists(&self, execution_id: &str) -> Result<bool, CoreError> {
        if self.appender.store().head(execution_id).await?.is_some() {
            return Ok(true);
        }
        Ok(self.source.exists(execution_id).await?)
    }

    /// Reads the source forward from the stored cursor to its end, committing every event that
    /// is not committed yet. Each page's cursor is saved in the same commit as its last events.
    pub async fn reconcile(&self, execution_id: &str) -> Result<ReconcileOutcome, CoreError> {
        self.reconcile_until(execution_id, None).await
    }

    /// [`Reconciler::reconcile`], stopping after the page that ends past `deadline_ms` (clock
    /// time): a stream written faster than it can be read must not hold a request past its
    /// integration timeout. The next reconciliation continues from the saved cursor.
    pub async fn reconcile_until(
        &self,
        execution_id: &str,
        deadline_ms: Option<i64>,
    ) -> Result<ReconcileOutcome, CoreError> {
        let head = self.appender.store().head(execution_id).await?;
        if head.is_none() {
            self.refuse_expired(execution_id).await?;
        }
        let (mut outcome, caught_up) = self
            .read_from(
                execution_id,
                head.and_then(|h| h.source_cursor),
                &Progress::Forward,
                Until::LiveEnd,
                deadline_ms,
            )
            .await?;
        outcome.caught_up = caught_up;
        Ok(outcome)
    }

    /// An execution without a head whose newest line is older than the retention had its
    /// stored lines deleted by TTL while the source kept them: it is expired (I8), never
    /// indexed again as a new, running execution.
    pub async fn refuse_expired(&self, execution_id: &str) -> Result<(), CoreError> {
        if let Some(newest) = self.source.newest_timestamp(execution_id).await?
            && self.appender.is_past_retention(newest)
        {
            return Err(StoreError::Expired(execution_id.to_string()).into());
        }
        Ok(())
    }

    /// Reads the whole source (completion: catches events that arrived behind the cursor, e.g.
    /// ingested late with old timestamps), continuing where an earlier, interrupted sweep
    /// stopped. Known events cost only the pre-filter's reads. Stops before `deadline_ms`
    /// (clock time) with what it did and `false` when the end was not reached; calling again
    /// continues from the saved progress.
    ///
    /// `stopped_at` is when the execution stopped; only a re-read that began at or after
    /// `not_before` (the stop plus the ingestion grace) is continued, an earlier one starts
    /// over: lines written before the stop could still have been unreadable when it passed.
    pub async fn sweep(
        &self,
        execution_id: &str,
        stopped_at: i64,
        not_before: i64,
        deadline_ms: Option<i64>,
    ) -> Result<(ReconcileOutcome, bool), CoreError> {
        let head = self.appender.store().head(execution_id).await?;
        let (token, began_at) = match head {
            Some(h) if h.sweep_began_at.is_some_and(|b| b >= not_before) => {
                (h.sweep_cursor, h.sweep_began_at.unwrap_or(not_before))
            }
            _ => (None, self.appender.clock().now_ms()),
        };
        let progress = move |token| Progress::Sweep {
            token,
            began_at,
            stopped_at,
        };
        self.read_from(
            execution_id,
            token,
            &progress,
            Until::TokenReturns,
            deadline_ms,
        )
        .await
    }

    async fn read_from(
        &self,
        execution_id: &str,
        mut token: Option<String>,
        progress: &(dyn Fn(String) -> Progress + Send + Sync),
        until: Until,
        deadline_ms: Option<i64>,
    ) -> Result<(ReconcileOutcome, bool), CoreError> {
        let mut outcome = ReconcileOutcome::default();
        while outcome.pages < self.max_pages {
            // At least one page per call, so every call makes progress.
            if outcome.pages > 0 && deadline_ms.is_some_and(|d| self.appender.clock().now_ms() >= d)
            {
                return Ok((outcome, false));
            }
            let page = match self.source.page(execution_id, token.as_deref()).await {
                Ok(p) => p,
                Err(StoreError::InvalidToken) if token.is_some() => {
                    // Tokens expire (24 h on CloudWatch): start over; idempotency absorbs it.
                    token = None;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            outcome.pages += 1;
            let at_end = token.as_deref() == Some(page.next_token.as_str())
                || (until == Until::LiveEnd && page.live_end);
            let appended = self
                .appender
                .append(
                    execution_id,
                    page.events,
                    Some(progress(page.next_token.clone())),
                )
                .await?;
            if !appended.committed.is_empty() {
                self.metrics
                    .incr(Metric::EventsReconciled, appended.committed.len() as u64);
            }
            outcome.recovered.extend(appended.committed);
            if appended.head.is_some() {
                outcome.head = appended.head;
            }
            if at_end {
                return Ok((outcome, true));
            }
            token = Some(page.next_token);
        }
        Ok((outcome, false))
    }
}
