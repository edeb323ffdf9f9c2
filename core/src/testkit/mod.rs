//! Test kit shared by every store crate: the store conformance suite and helpers.
//! Enabled with the `testkit` feature (and always in this crate's own tests).

pub mod conformance;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::{Head, LogEvent};
use crate::{CoreError, StoreError};

/// An execution id no other test in any process uses (stores may be shared between tests).
pub fn fresh_id(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{tag}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Unix seconds a day from now (a live item's expiry).
pub fn tomorrow() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
        + 86_400
}

/// A head at `last_index` / `version`, alive for a day.
pub fn head_at(execution_id: &str, last_index: u64, version: u64) -> Head {
    let mut h = Head::new(execution_id, 1_700_000_000_000, tomorrow());
    h.last_index = last_index;
    // As the engine keeps it: at least the timestamp of every committed event (see `events`).
    h.last_timestamp = 1_700_000_000_000 + last_index as i64;
    h.version = version;
    h
}

/// Events `from..=to` with ids `e<index>` and `message` repeated to `size` bytes.
pub fn events(from: u64, to: u64, size: usize) -> Vec<LogEvent> {
    (from..=to)
        .map(|i| LogEvent {
            index: i,
            event_id: format!("e{i}"),
            timestamp: 1_700_000_000_000 + i as i64,
            message: format!("line {i} {}", "x".repeat(size.saturating_sub(12))),
        })
        .collect()
}

/// Every store error with whether retrying can succeed. The match fails to compile when a
/// variant is added, so a new one cannot go unclassified.
pub fn store_errors() -> Vec<(StoreError, bool)> {
    let all = vec![
        // DynamoDB or SQLite asked to slow down: the next attempt may pass.
        (StoreError::Throttled, true),
        // The logs are gone: no attempt can bring them back.
        (StoreError::Expired("e".into()), false),
        // A read refused without any continuation token is refused again.
        (StoreError::InvalidToken, false),
        // The store could not be reached or failed (network, unavailable, timed out).
        (
            StoreError::backend(
                "DynamoDB TransactWriteItems failed",
                std::io::Error::other("connection reset by peer"),
            ),
            true,
        ),
        (
            StoreError::backend_message("DynamoDB item is malformed"),
            true,
        ),
    ];
    for (e, _) in &all {
        match e {
            StoreError::Throttled
            | StoreError::Expired(_)
            | StoreError::InvalidToken
            | StoreError::Backend { .. } => {}
        }
    }
    all
}

/// Every core error, and every store error inside one, with whether retrying can succeed (and
/// so whether a Lambda invocation fails). The match fails to compile when a variant is added.
pub fn core_errors() -> Vec<(CoreError, bool)> {
    let mut all = vec![
        // The execution does not exist: a retry finds nothing either.
        (CoreError::NotFound("e".into()), false),
        // A malformed or invalid request stays invalid.
        (
            CoreError::BadRequest("status must be terminal".into()),
            false,
        ),
        // Writers raced past the attempts: a later attempt meets fewer of them.
        (CoreError::TooManyConflicts("e".into(), 8), true),
        // The status is set for good; a different one is refused for good.
        (CoreError::AlreadyTerminal("e".into(), "SUCCEEDED"), false),
        // Saved progress ran out of time: the next attempt continues it.
        (
            CoreError::Unfinished("the sweep stopped at its deadline".into()),
            true,
        ),
    ];
    for (e, _) in &all {
        match e {
            CoreError::NotFound(_)
            | CoreError::BadRequest(_)
            | CoreError::TooManyConflicts(..)
            | CoreError::AlreadyTerminal(..)
            | CoreError::Unfinished(_)
            | CoreError::Store(_) => {}
        }
    }
    all.extend(
        store_errors()
            .into_iter()
            .map(|(e, r)| (CoreError::Store(e), r)),
    );
    all
}
