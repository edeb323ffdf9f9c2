//! DynamoDB implementations of the store ports (spec §5.2–5.6).
//!
//! Table `{project}-execution-logs` (`execution_id` S, `log_index` N, TTL `expires_at`):
//! - the head at `log_index = 0`;
//! - one run item per commit at its first index, holding the commit's lines in layout 2 (see
//!   [`item::encode_run`]; layout 1 is still read); bytes that do not fit continue in part
//!   items under `"{id}#part#{index}"`;
//! - immutable idempotency records under `"{id}#ids#{minute}"` (sort key: the record's latest
//!   millisecond in that minute, then the commit's first index), written in the transaction
//!   that assigns the indexes and named by the head (see `logs.rs` for why).

mod connections;
pub mod item;
mod logs;
mod tables;

pub use connections::DynamoConnections;
pub use logs::DynamoStore;
pub use tables::create_tables;

pub(crate) fn unix_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
