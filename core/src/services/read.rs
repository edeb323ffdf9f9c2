//! Reading committed events: head first (strongly consistent), never past its `last_index`.

use std::sync::Arc;

use crate::error::{CoreError, StoreError};
use crate::model::{Head, LogEvent};
use crate::ports::{Clock, LogReader};

/// Most bytes of events one page holds (as [`LogEvent::wire_size`] counts them): below Lambda's
/// 6 MB response with room for the rest of the JSON. A larger single event is still served
/// alone.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// One page of an execution's committed events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsPage {
    pub head: Head,
    pub events: Vec<LogEvent>,
    /// Highest index in `events`, or the requested `since_index` when there are none.
    pub last_index: u64,
    /// More committed events exist beyond `last_index`.
    pub has_more: bool,
}

#[derive(Clone)]
pub struct Reader {
    store: Arc<dyn LogReader>,
    clock: Arc<dyn Clock>,
}

/// Waits (ms) before reading again a range that looked incomplete while its items cannot have
/// expired: a commit's run can become visible a moment after its head (DynamoDB reads are
/// read-committed per item).
const NOT_YET_VISIBLE_WAITS_MS: [u64; 6] = [5, 10, 20, 40, 80, 160];

impl Reader {
    pub fn new(store: Arc<dyn LogReader>, clock: Arc<dyn Clock>) -> Reader {
        Reader { store, clock }
    }

    /// Whether a range of `head` reported missing may only not be visible yet: its items are
    /// known to live past now.
    fn may_be_unseen(&self, head: &Head) -> bool {
        head.items_expire_at
            .is_some_and(|f| f > self.clock.now_ms() / 1000)
    }

    pub fn store(&self) -> &Arc<dyn LogReader> {
        &self.store
    }

    pub async fn head(&self, execution_id: &str) -> Result<Option<Head>, CoreError> {
        Ok(self.store.head(execution_id).await?)
    }

    /// Events after `since_index`, at most `limit`. `Ok(None)`: the execution has no head yet.
    pub async fn page(
        &self,
        execution_id: &str,
        since_index: u64,
        limit: usize,
    ) -> Result<Option<LogsPage>, CoreError> {
        let Some(head) = self.store.head(execution_id).await? else {
            return Ok(None);
        };
        if head.expires_at <= self.clock.now_ms() / 1000 {
            return Err(StoreError::Expired(execution_id.to_string()).into());
        }
        let mut waits = NOT_YET_VISIBLE_WAITS_MS.iter();
        let events = loop {
            let read = if since_index < head.last_index && limit > 0 {
                self.store
                    .read_bounded(
                        execution_id,
                        since_index,
                        head.last_index,
                        limit,
                        MAX_PAGE_BYTES,
                    )
                    .await
                    .map_err(CoreError::from)
                    .and_then(|events| {
                        if events.is_empty() {
                            // The head promises lines the store does not show.
                            return Err(StoreError::Expired(execution_id.to_string()).into());
                        }
                        check_contiguous(execution_id, since_index, &events)?;
                        Ok(events)
                    })
            } else {
                Ok(Vec::new())
            };
            match read {
                Err(CoreError::Store(StoreError::Expired(_))) if self.may_be_unseen(&head) => {
                    match waits.next() {
                        Some(ms) => self.clock.sleep_ms(*ms).await,
                        None => return Err(StoreError::Expired(execution_id.to_string()).into()),
                    }
                }
                other => break other?,
            }
        };
        let last_index = events.last().map_or(since_index, |e| e.index);
        Ok(Some(LogsPage {
            has_more: last_index < head.last_index,
            last_index,
            events,
            head,
        }))
    }
}

/// A page whose events are dense records ([`crate::lines`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DensePage {
    /// The page without its events.
    pub page: LogsPage,
    /// Its events, as dense records.
    pub records: Vec<u8>,
}

impl Reader {
    /// [`Reader::page`] with its events as dense records. `Ok(None)`: the execution has no
    /// head yet, or these events cannot travel dense (ask for the JSON page).
    pub async fn dense_page(
        &self,
        execution_id: &str,
        since_index: u64,
        limit: usize,
    ) -> Result<Option<DensePage>, CoreError> {
        let Some(head) = self.store.head(execution_id).await? else {
            return Ok(None);
        };
        if head.expires_at <= self.clock.now_ms() / 1000 {
            return Err(StoreError::Expired(execution_id.to_string()).into());
        }
        // Room for the records, and the JSON line that follows them (an estimate: growing the
        // buffer would copy what was read).
        let mut records = Vec::with_capacity(limit.saturating_mul(80).min(MAX_PAGE_BYTES) + 2048);
        let mut count = 0;
        let mut waits = NOT_YET_VISIBLE_WAITS_MS.iter();
        let wanted = since_index < head.last_index && limit > 0;
        loop {
            if !wanted {
                break;
            }
            let read = self
                .store
                .read_dense(
                    execution_id,
                    since_index,
                    head.last_index,
                    limit,
                    MAX_PAGE_BYTES,
                    &mut records,
                )
                .await;
            let missing = match read {
                Ok(None) => return Ok(None),
                Ok(Some(0)) => true,
                Ok(Some(n)) => {
                    count = n as u64;
                    break;
                }
                Err(StoreError::Expired(_)) => true,
                Err(e) => return Err(e.into()),
            };
            // The head promises lines the store does not show: gone, or not visible yet.
            match waits.next() {
                Some(ms) if missing && self.may_be_unseen(&head) => {
                    records.clear();
                    self.clock.sleep_ms(*ms).await;
                }
                _ => return Err(StoreError::Expired(execution_id.to_string()).into()),
            }
        }
        let last_index = since_index + count;
        Ok(Some(DensePage {
            page: LogsPage {
                has_more: last_index < head.last_index,
                last_index,
                events: Vec::new(),
                head,
            },
            records,
        }))
    }
}

/// A store must return `since+1, since+2, …`; anything else means items are gone (I8) and the
/// page must not be presented as complete.
fn check_contiguous(execution_id: &str, since: u64, events: &[LogEvent]) -> Result<(), CoreError> {
    for (expected, e) in (since + 1..).zip(events) {
        if e.index != expected {
            return Err(StoreError::Expired(execution_id.to_string()).into());
        }
    }
    Ok(())
}
