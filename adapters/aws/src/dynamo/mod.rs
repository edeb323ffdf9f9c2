//! DynamoDB implementations of the store ports (spec §5).
//!
//! Table `{project}-execution-logs` (`execution_id` S, `log_index` N, TTL `expires_at`):
//! - the head at `log_index = 0`;
//! - one run item per commit at its first index, holding the commit's lines (gzipped when
//!   smaller); compressed bytes that do not fit continue in part items under `"{id}#part#{index}"`;
//! - idempotency buckets under `"{id}#ids#{timestamp / 10 ms}"`: string sets of event ids, updated
//!   with `NOT contains` conditions in the same transaction that assigns the indexes.

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
