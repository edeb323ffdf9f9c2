//! [`SqliteStore`]: heads, log items and connections in SQLite. A commit is one `IMMEDIATE`
//! transaction that checks the head's version and the event ids before writing anything.

use std::collections::HashSet;

use async_trait::async_trait;
use runvoy_core::ports::{
    Commit, ConnectionStore, HeadReader, LogReader, LogWriter, check_read_item, fits_in_read,
};
use runvoy_core::{CommitError, Connection, Head, LogEvent, SourceEvent, StoreError};
use rusqlite::{OptionalExtension, params, params_from_iter};

use crate::{Db, sql, unix_now_secs};

/// Ids per `IN (…)` query: far below SQLite's 32,766 host-parameter limit.
const IDS_PER_QUERY: usize = 500;

#[derive(Clone)]
pub struct SqliteStore {
    db: Db,
}

impl SqliteStore {
    pub fn new(db: Db) -> SqliteStore {
        SqliteStore { db }
    }

    /// Executions that are not terminal (for the local stack's periodic reconciliation).
    pub fn running_executions(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare("SELECT head FROM heads").map_err(sql)?;
        let heads = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(sql)?;
        let mut out = Vec::new();
        for h in heads {
            let head = parse_head(&h.map_err(sql)?)?;
            if !head.status.is_terminal() {
                out.push(head.execution_id);
            }
        }
        Ok(out)
    }
}

fn parse_head(json: &str) -> Result<Head, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Backend(format!("a stored head is unreadable: {e}")))
}

#[async_trait]
impl HeadReader for SqliteStore {
    async fn head(&self, execution_id: &str) -> Result<Option<Head>, StoreError> {
        let conn = self.db.lock();
        let json: Option<String> = conn
            .query_row(
                "SELECT head FROM heads WHERE execution_id = ?1",
                [execution_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        json.as_deref().map(parse_head).transpose()
    }
}

fn known_in(
    conn: &rusqlite::Connection,
    execution_id: &str,
    ids: &[String],
) -> Result<HashSet<String>, rusqlite::Error> {
    let mut known = HashSet::new();
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let marks = vec!["?"; chunk.len()].join(",");
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT event_id FROM events WHERE execution_id = ? AND event_id IN ({marks})"
        ))?;
        let args = std::iter::once(execution_id).chain(chunk.iter().map(String::as_str));
        let rows = stmt.query_map(params_from_iter(args), |r| r.get::<_, String>(0))?;
        for id in rows {
            known.insert(id?);
        }
    }
    Ok(known)
}

#[async_trait]
impl LogWriter for SqliteStore {
    fn max_events_per_commit(&self) -> usize {
        1_000
    }

    async fn known_event_ids(
        &self,
        execution_id: &str,
        events: &[SourceEvent],
    ) -> Result<HashSet<String>, StoreError> {
        let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
        let conn = self.db.lock();
        known_in(&conn, execution_id, &ids).map_err(sql)
    }

    async fn commit(&self, commit: Commit) -> Result<(), CommitError> {
        let mut conn = self.db.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        let exec = commit.head.execution_id.as_str();
        let current: Option<u64> = tx
            .query_row(
                "SELECT version FROM heads WHERE execution_id = ?1",
                [exec],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        if current != commit.expected_version {
            return Err(CommitError::VersionConflict);
        }
        if !commit.events.is_empty() {
            let ids: Vec<String> = commit.events.iter().map(|e| e.event_id.clone()).collect();
            let known = known_in(&tx, exec, &ids).map_err(sql)?;
            if !known.is_empty() {
                return Err(CommitError::Duplicate(known.into_iter().collect()));
            }
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (execution_id, log_index, event_id, timestamp, message, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql)?;
            for e in &commit.events {
                insert
                    .execute(params![
                        exec,
                        e.index,
                        e.event_id,
                        e.timestamp,
                        e.message,
                        commit.head.expires_at
                    ])
                    .map_err(sql)?;
            }
        }
        let json = serde_json::to_string(&commit.head)
            .map_err(|e| StoreError::Backend(format!("cannot serialize a head: {e}")))?;
        tx.execute(
            "INSERT INTO heads (execution_id, version, head, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (execution_id) DO UPDATE SET version = ?2, head = ?3, expires_at = ?4",
            params![exec, commit.head.version, json, commit.head.expires_at],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(())
    }
}

#[async_trait]
impl LogReader for SqliteStore {
    async fn recent(
        &self,
        after_ms: i64,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<runvoy_core::ExecutionSummary>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT head FROM heads
                 WHERE json_extract(head, '$.created_at') >= ?1
                   AND json_extract(head, '$.created_at') < ?2
                 ORDER BY json_extract(head, '$.created_at') DESC, execution_id DESC
                 LIMIT ?3",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map(params![after_ms, before_ms, limit as i64], |r| {
                r.get::<_, String>(0)
            })
            .map_err(sql)?;
        let mut out = Vec::new();
        for row in rows {
            let head = parse_head(&row.map_err(sql)?)?;
            out.push(runvoy_core::ExecutionSummary::of(&head));
        }
        Ok(out)
    }

    async fn read_bounded(
        &self,
        execution_id: &str,
        after: u64,
        through: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEvent>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT log_index, event_id, timestamp, message, expires_at FROM events
                 WHERE execution_id = ?1 AND log_index > ?2 AND log_index <= ?3
                 ORDER BY log_index LIMIT ?4",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map(params![execution_id, after, through, limit as i64], |r| {
                Ok((
                    LogEvent {
                        index: r.get(0)?,
                        event_id: r.get(1)?,
                        timestamp: r.get(2)?,
                        message: r.get(3)?,
                    },
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(sql)?;
        let now = unix_now_secs();
        let mut out = Vec::with_capacity(limit.min(through.saturating_sub(after) as usize));
        let mut bytes = 0usize;
        for row in rows {
            let (e, expires_at) = row.map_err(sql)?;
            check_read_item(execution_id, after, out.len(), e.index, expires_at, now)?;
            if !fits_in_read(out.len(), bytes, &e, max_bytes) {
                break;
            }
            bytes += e.wire_size();
            out.push(e);
        }
        Ok(out)
    }
}

fn row_to_connection(r: &rusqlite::Row<'_>) -> rusqlite::Result<Connection> {
    Ok(Connection {
        connection_id: r.get(0)?,
        execution_id: r.get(1)?,
        cursor: r.get(2)?,
        connected_at: r.get(3)?,
        expires_at: r.get(4)?,
        resumed_at: r.get(5)?,
    })
}

#[async_trait]
impl ConnectionStore for SqliteStore {
    async fn put(&self, c: Connection) -> Result<(), StoreError> {
        self.db
            .lock()
            .execute(
                "INSERT OR REPLACE INTO connections (connection_id, execution_id, cursor, connected_at, expires_at, resumed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![c.connection_id, c.execution_id, c.cursor, c.connected_at, c.expires_at, c.resumed_at],
            )
            .map_err(sql)?;
        Ok(())
    }

    async fn get(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
        self.db
            .lock()
            .query_row(
                "SELECT connection_id, execution_id, cursor, connected_at, expires_at, resumed_at
                 FROM connections WHERE connection_id = ?1",
                [connection_id],
                row_to_connection,
            )
            .optional()
            .map_err(sql)
    }

    async fn remove(&self, connection_id: &str) -> Result<(), StoreError> {
        self.db
            .lock()
            .execute(
                "DELETE FROM connections WHERE connection_id = ?1",
                [connection_id],
            )
            .map_err(sql)?;
        Ok(())
    }

    async fn list(&self, execution_id: &str) -> Result<Vec<Connection>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT connection_id, execution_id, cursor, connected_at, expires_at, resumed_at
                 FROM connections WHERE execution_id = ?1 ORDER BY connection_id",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map(params![execution_id], row_to_connection)
            .map_err(sql)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql)
    }

    async fn advance(&self, c: &Connection, cursor: u64) -> Result<Option<u64>, StoreError> {
        let connection_id = c.connection_id.as_str();
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(sql)?;
        let prev: Option<u64> = tx
            .query_row(
                "SELECT cursor FROM connections WHERE connection_id = ?1",
                [connection_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        if let Some(p) = prev
            && cursor > p
        {
            tx.execute(
                "UPDATE connections SET cursor = ?2 WHERE connection_id = ?1",
                params![connection_id, cursor],
            )
            .map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
        Ok(prev)
    }
}
