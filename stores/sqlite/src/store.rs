//! [`SqliteStore`]: heads, log items and connections in SQLite. A commit is one `IMMEDIATE`
//! transaction that checks the head's version and the event ids before writing anything.

use std::collections::HashSet;

use async_trait::async_trait;
use runvoy_core::lines;
use runvoy_core::model::{BASE64_ABOVE, travels_base64};
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
    serde_json::from_str(json).map_err(|e| StoreError::backend("a stored head is unreadable", e))
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
            "SELECT event_id FROM event_ids WHERE execution_id = ? AND event_id IN ({marks})"
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
                .prepare_cached("INSERT INTO event_ids (execution_id, event_id) VALUES (?1, ?2)")
                .map_err(sql)?;
            for e in &commit.events {
                insert.execute(params![exec, e.event_id]).map_err(sql)?;
            }
            let mut run: Option<Run> = None;
            for e in &commit.events {
                if let Some(r) = run.as_mut().filter(|r| r.last + 1 == e.index) {
                    r.push(&e.event_id, e.timestamp, &e.message);
                    continue;
                }
                if let Some(r) = run.take() {
                    r.insert(&tx, exec).map_err(sql)?;
                }
                let mut r = Run::new(e.index, commit.head.item_expiry());
                r.push(&e.event_id, e.timestamp, &e.message);
                run = Some(r);
            }
            if let Some(r) = run {
                r.insert(&tx, exec).map_err(sql)?;
            }
        }
        let json = serde_json::to_string(&commit.head)
            .map_err(|e| StoreError::backend("cannot serialize a head", e))?;
        tx.execute(
            "INSERT INTO heads (execution_id, version, head, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (execution_id) DO UPDATE SET version = ?2, head = ?3, expires_at = ?4",
            params![exec, commit.head.version, json, commit.head.expires_at],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(())
    }

    async fn extend_expiry(
        &self,
        execution_id: &str,
        through: u64,
        at_least: i64,
        to: i64,
    ) -> Result<(), StoreError> {
        let conn = self.db.lock();
        conn.execute(
            "UPDATE runs SET expires_at = max(expires_at, ?4)
             WHERE execution_id = ?1 AND first_index <= ?2 AND expires_at < ?3",
            params![execution_id, through, at_least, to],
        )
        .map_err(sql)?;
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
                "SELECT first_index, expires_at, lines, ids FROM runs
                 WHERE execution_id = ?1 AND last_index > ?2 ORDER BY last_index",
            )
            .map_err(sql)?;
        let mut rows = stmt.query(params![execution_id, after]).map_err(sql)?;
        let now = unix_now_secs();
        let mut out = Vec::with_capacity(limit.min(through.saturating_sub(after) as usize));
        let mut bytes = 0usize;
        'runs: while let Some(row) = rows.next().map_err(sql)? {
            let first: u64 = row.get(0).map_err(sql)?;
            let expires_at: i64 = row.get(1).map_err(sql)?;
            let run = row.get_ref(2).and_then(|v| Ok(v.as_blob()?)).map_err(sql)?;
            let ids: Vec<String> = serde_json::from_str(
                row.get_ref(3)
                    .map_err(sql)?
                    .as_str()
                    .map_err(|e| sql(e.into()))?,
            )
            .map_err(|e| unreadable(execution_id, first, e))?;
            let records = lines::events_of(run).map_err(|e| unreadable(execution_id, first, e))?;
            if records.len() != ids.len() {
                return Err(unreadable(
                    execution_id,
                    first,
                    "its ids and lines differ in number",
                ));
            }
            for ((index, (timestamp, message)), event_id) in (first..).zip(records).zip(ids) {
                if index <= after {
                    continue;
                }
                if index > through || out.len() == limit {
                    break 'runs;
                }
                check_read_item(execution_id, after, out.len(), index, expires_at, now)?;
                let message = std::str::from_utf8(message)
                    .map_err(|e| unreadable(execution_id, first, e))?
                    .to_string();
                let e = LogEvent {
                    index,
                    event_id,
                    timestamp,
                    message,
                };
                if !fits_in_read(out.len(), bytes, &e, max_bytes) {
                    break 'runs;
                }
                bytes += e.wire_size();
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Copies the runs as they are stored: a run that goes out whole is read into `out` by
    /// SQLite's blob I/O (one copy, its events not read one by one); the runs at the page's
    /// edges are read aside, walked, and their stretch inside the page goes out as a run of its
    /// own. Bounded by the runs' own bytes (the local stack's pages never cross a Lambda
    /// response).
    async fn read_dense(
        &self,
        execution_id: &str,
        after: u64,
        through: u64,
        limit: usize,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT rowid, first_index, last_index, expires_at, longest FROM runs
                 WHERE execution_id = ?1 AND last_index > ?2 ORDER BY last_index",
            )
            .map_err(sql)?;
        let mut rows = stmt.query(params![execution_id, after]).map_err(sql)?;
        let now = unix_now_secs();
        let start_len = out.len();
        let mut count = 0usize;
        let mut blob: Option<rusqlite::blob::Blob<'_>> = None;
        let mut edge = Vec::new();
        while let Some(row) = rows.next().map_err(sql)? {
            let rowid: i64 = row.get(0).map_err(sql)?;
            let first: u64 = row.get(1).map_err(sql)?;
            let last: u64 = row.get(2).map_err(sql)?;
            let expires_at: i64 = row.get(3).map_err(sql)?;
            let longest: usize = row.get(4).map_err(sql)?;
            let stored = match blob.as_mut() {
                Some(b) => {
                    b.reopen(rowid).map_err(sql)?;
                    b
                }
                None => blob.insert(
                    conn.blob_open("main", "runs", "lines", rowid, true)
                        .map_err(sql)?,
                ),
            };
            let size = stored.len();
            let n = (last + 1 - first) as usize;
            if first == after + 1 + count as u64
                && last <= through
                && count + n <= limit
                && expires_at > now
                && longest.saturating_mul(7) <= BASE64_ABOVE
                && out.len() - start_len + size <= max_bytes
            {
                let at = out.len();
                out.resize(at + size, 0);
                stored.read_at_exact(&mut out[at..], 0).map_err(sql)?;
                count += n;
                continue;
            }
            edge.clear();
            edge.resize(size, 0);
            stored.read_at_exact(&mut edge, 0).map_err(sql)?;
            let run = lines::parse_run(&edge, 0, 0)
                .and_then(|r| r.ok_or_else(|| "cut short".to_string()))
                .map_err(|e| unreadable(execution_id, first, e))?;
            let records: Vec<lines::Record> = run.records(&edge).collect();
            // Its heads end where its first message starts.
            let heads_end = records.first().map_or(0, |r| r.start);
            // The stretch of this run's records that goes out: `from..to` of `records`.
            let mut from = None::<usize>;
            let mut to = 0usize;
            let mut stretch_bytes = 0usize;
            let mut done = false;
            for (k, (index, r)) in (first..).zip(&records).enumerate() {
                if index <= after {
                    continue;
                }
                if index > through || count == limit {
                    done = true;
                    break;
                }
                check_read_item(execution_id, after, count, index, expires_at, now)?;
                let head_end = records.get(k + 1).map_or(heads_end, |n| n.head());
                let bytes = (head_end - r.head()) + r.len + 1;
                // 96: more than a run's header line (at most 63 bytes) and its first
                // timestamp written whole (at most 18 bytes more than relative) take.
                if count > 0 && out.len() - start_len + 96 + stretch_bytes + bytes > max_bytes {
                    done = true;
                    break;
                }
                if travels_base64(&edge[r.start..r.start + r.len]) {
                    // Travels as base64 in JSON: that page is not dense.
                    out.truncate(start_len);
                    return Ok(None);
                }
                from.get_or_insert(k);
                to = k + 1;
                stretch_bytes += bytes;
                count += 1;
            }
            if let Some(from) = from {
                let heads_to = records.get(to).map_or(heads_end, |n| n.head());
                lines::push_part(out, &edge, &records[from..to], heads_to);
            }
            if done {
                break;
            }
        }
        Ok(Some(count))
    }
}

/// A run being built: consecutive lines from `first`, as they are stored.
struct Run {
    first: u64,
    last: u64,
    expires_at: i64,
    /// Bytes of its longest message.
    longest: usize,
    lines: lines::RunBuilder,
    ids: Vec<String>,
}

impl Run {
    fn new(first: u64, expires_at: i64) -> Run {
        Run {
            first,
            last: first - 1,
            expires_at,
            longest: 0,
            lines: lines::RunBuilder::default(),
            ids: Vec::new(),
        }
    }

    fn push(&mut self, event_id: &str, timestamp: i64, message: &str) {
        self.lines.push(timestamp, message.as_bytes());
        self.ids.push(event_id.to_string());
        self.longest = self.longest.max(message.len());
        self.last += 1;
    }

    fn insert(&self, conn: &rusqlite::Connection, execution_id: &str) -> rusqlite::Result<()> {
        let ids = serde_json::to_string(&self.ids).expect("strings serialize");
        let encoded = self.lines.encoded();
        conn.prepare_cached(
            "INSERT INTO runs (execution_id, first_index, last_index, expires_at, longest, lines, ids)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            execution_id,
            self.first,
            self.last,
            self.expires_at,
            self.longest,
            encoded,
            ids
        ])?;
        Ok(())
    }
}

/// Databases made when every line was a row of `events`: their lines become runs (of up to
/// 1,000 consecutive lines with one expiry), their ids idempotency records, and `events` goes.
pub(crate) fn migrate_events(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let old = tx
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'")?
        .exists([])?;
    if !old {
        return Ok(());
    }
    tx.execute_batch(
        "INSERT OR IGNORE INTO event_ids (execution_id, event_id)
         SELECT execution_id, event_id FROM events",
    )?;
    {
        let mut stmt = tx.prepare(
            "SELECT execution_id, log_index, event_id, timestamp, message, expires_at
             FROM events ORDER BY execution_id, log_index",
        )?;
        let mut rows = stmt.query([])?;
        let mut run: Option<(String, Run)> = None;
        while let Some(r) = rows.next()? {
            let execution_id: String = r.get(0)?;
            let index: u64 = r.get(1)?;
            let expires_at: i64 = r.get(5)?;
            let continues = run.as_ref().is_some_and(|(id, run)| {
                *id == execution_id
                    && run.last + 1 == index
                    && run.expires_at == expires_at
                    && run.ids.len() < 1_000
            });
            if !continues {
                if let Some((id, done)) = run.take() {
                    done.insert(tx, &id)?;
                }
                run = Some((execution_id, Run::new(index, expires_at)));
            }
            let (_, current) = run.as_mut().expect("a run was just started");
            current.push(&r.get::<_, String>(2)?, r.get(3)?, &r.get::<_, String>(4)?);
        }
        if let Some((id, done)) = run {
            done.insert(tx, &id)?;
        }
    }
    tx.execute_batch("DROP TABLE events")
}

/// Databases of layout 2 kept each run's lines one after another (`{timestamp}
/// {length}\n{message}\n` each): every run is rewritten as the runs of layout 3 (its heads, then
/// its messages), in the schema's transaction.
pub(crate) fn migrate_interleaved_runs(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    let rowids: Vec<i64> = tx
        .prepare("SELECT rowid FROM runs")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(sql)?;
    for rowid in rowids {
        let (execution_id, first, old): (String, u64, Vec<u8>) = tx
            .query_row(
                "SELECT execution_id, first_index, lines FROM runs WHERE rowid = ?1",
                [rowid],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(sql)?;
        let mut run = lines::RunBuilder::default();
        let mut at = 0;
        while at < old.len() {
            let (timestamp, message, next) = interleaved_record(&old, at).ok_or_else(|| {
                unreadable(
                    &execution_id,
                    first,
                    "a damaged record; the database cannot be migrated",
                )
            })?;
            run.push(timestamp, message);
            at = next;
        }
        let encoded = run.encoded();
        tx.execute(
            "UPDATE runs SET lines = ?1 WHERE rowid = ?2",
            params![encoded, rowid],
        )
        .map_err(sql)?;
    }
    Ok(())
}

/// The record of layout 2 at `at`: its timestamp, its message and where the next one starts.
fn interleaved_record(bytes: &[u8], at: usize) -> Option<(i64, &[u8], usize)> {
    let newline = at + bytes.get(at..)?.iter().position(|b| *b == b'\n')?;
    let (timestamp, len) = std::str::from_utf8(&bytes[at..newline])
        .ok()?
        .split_once(' ')?;
    let (timestamp, len): (i64, usize) = (timestamp.parse().ok()?, len.parse().ok()?);
    let start = newline + 1;
    let end = start.checked_add(len)?;
    (bytes.get(end) == Some(&b'\n')).then(|| (timestamp, &bytes[start..end], end + 1))
}

fn unreadable(
    execution_id: &str,
    first: u64,
    why: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::backend(
        format!("the stored run of {execution_id} at line {first} is unreadable"),
        why,
    )
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

    async fn resume(
        &self,
        c: &Connection,
        cursor: u64,
        now: i64,
        min_interval_ms: i64,
    ) -> Result<runvoy_core::ports::Resumed, StoreError> {
        use runvoy_core::ports::Resumed;
        let conn = self.db.lock();
        let changed = conn
            .execute(
                "UPDATE connections SET cursor = ?2, resumed_at = ?3
                 WHERE connection_id = ?1 AND (resumed_at = 0 OR resumed_at <= ?3 - ?4)",
                params![c.connection_id, cursor, now, min_interval_ms],
            )
            .map_err(sql)?;
        if changed == 1 {
            return Ok(Resumed::Done);
        }
        let exists: Option<i64> = conn
            .query_row(
                "SELECT resumed_at FROM connections WHERE connection_id = ?1",
                [&c.connection_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        Ok(if exists.is_some() {
            Resumed::TooSoon
        } else {
            Resumed::Gone
        })
    }
}
