//! Test kit shared by every store crate: the store conformance suite and helpers.
//! Enabled with the `testkit` feature (and always in this crate's own tests).

pub mod conformance;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::{Head, LogEvent};

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
