//! [`SqliteSource`]: the local log source, with CloudWatch `GetLogEvents` token semantics
//! (forward token `f/<seq>`; at the end the same token comes back).

use async_trait::async_trait;
use runvoy_core::ports::{LogSource, SourcePage};
use runvoy_core::{SourceEvent, StoreError};
use rusqlite::{OptionalExtension, params};

use crate::{Db, sql};

/// Events per page (CloudWatch returns up to 10,000).
const PAGE: usize = 1_000;

#[derive(Clone)]
pub struct SqliteSource {
    db: Db,
    page: usize,
}

impl SqliteSource {
    pub fn new(db: Db) -> SqliteSource {
        SqliteSource { db, page: PAGE }
    }

    /// Creates the execution's stream if it does not exist.
    pub fn create_stream(&self, execution_id: &str, now_ms: i64) -> Result<(), StoreError> {
        self.db
            .lock()
            .execute(
                "INSERT OR IGNORE INTO source_streams (execution_id, created_at) VALUES (?1, ?2)",
                params![execution_id, now_ms],
            )
            .map_err(sql)?;
        Ok(())
    }

    /// Appends lines (timestamp in ms, message) to a stream, creating it if needed, and returns
    /// them as source events with their new ids.
    pub fn append(
        &self,
        execution_id: &str,
        lines: &[(i64, String)],
        now_ms: i64,
    ) -> Result<Vec<SourceEvent>, StoreError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(sql)?;
        tx.execute(
            "INSERT OR IGNORE INTO source_streams (execution_id, created_at) VALUES (?1, ?2)",
            params![execution_id, now_ms],
        )
        .map_err(sql)?;
        let mut out = Vec::with_capacity(lines.len());
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO source_events (execution_id, timestamp, message) VALUES (?1, ?2, ?3)",
                )
                .map_err(sql)?;
            for (ts, message) in lines {
                insert
                    .execute(params![execution_id, ts, message])
                    .map_err(sql)?;
                out.push(SourceEvent {
                    event_id: event_id(tx.last_insert_rowid()),
                    timestamp: *ts,
                    message: message.clone(),
                });
            }
        }
        tx.commit().map_err(sql)?;
        Ok(out)
    }
}

/// Event ids are the global arrival sequence, zero-padded so they sort like numbers.
fn event_id(seq: i64) -> String {
    format!("{seq:020}")
}

#[async_trait]
impl LogSource for SqliteSource {
    async fn exists(&self, execution_id: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = self
            .db
            .lock()
            .query_row(
                "SELECT 1 FROM source_streams WHERE execution_id = ?1",
                [execution_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        Ok(found.is_some())
    }

    async fn newest_timestamp(&self, execution_id: &str) -> Result<Option<i64>, StoreError> {
        self.db
            .lock()
            .query_row(
                "SELECT MAX(timestamp) FROM source_events WHERE execution_id = ?1",
                [execution_id],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map_err(sql)
    }

    async fn page(
        &self,
        execution_id: &str,
        token: Option<&str>,
    ) -> Result<SourcePage, StoreError> {
        let after: i64 = match token {
            None => 0,
            Some(t) => t
                .strip_prefix("f/")
                .and_then(|n| n.parse().ok())
                .ok_or(StoreError::InvalidToken)?,
        };
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, timestamp, message FROM source_events
                 WHERE execution_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map(params![execution_id, after, self.page as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(sql)?;
        let mut events = Vec::new();
        let mut last = after;
        for row in rows {
            let (seq, timestamp, message) = row.map_err(sql)?;
            last = seq;
            events.push(SourceEvent {
                event_id: event_id(seq),
                timestamp,
                message,
            });
        }
        Ok(SourcePage {
            live_end: events.len() < self.page,
            events,
            next_token: format!("f/{last}"),
        })
    }
}
