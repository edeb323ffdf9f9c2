//! DynamoDB implementations of the store ports (spec §5).
//!
//! Table `{project}-execution-logs` (`execution_id` S, `log_index` N, TTL `expires_at`):
//! - the head at `log_index = 0`;
//! - one log item per line at its index; a message over [`item::INLINE_MAX`] bytes is gzipped, and
//!   if still too big its compressed bytes continue in part items under `"{id}#part#{index}"`;
//! - one idempotency item per source event under `"{id}#event#{event_id}"`, `log_index = 0`,
//!   written with `attribute_not_exists` in the same transaction that assigns the index.

mod connections;
pub mod item;
mod logs;
mod tables;

pub use connections::DynamoConnections;
pub use logs::{DynamoStore, buckets_of};
pub use tables::create_tables;

use std::time::Duration;

/// Sleeps before retry `attempt` (1-based) of a batch call: capped exponential, full jitter.
pub(crate) async fn backoff(attempt: u32) {
    let cap = (25u64 << attempt.min(6)).min(2_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    tokio::time::sleep(Duration::from_millis(nanos % (cap + 1))).await;
}

pub(crate) fn unix_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
