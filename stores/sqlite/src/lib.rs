//! SQLite implementation of every store port ([`SqliteStore`]) and of the log source
//! ([`SqliteSource`], the local CloudWatch analog). One database file holds all of it, so the
//! local stack's state survives restarts.

mod schema;
mod source;
mod store;

pub use rusqlite;
pub use source::SqliteSource;
pub use store::SqliteStore;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use runvoy_core::StoreError;

/// A shared handle on one SQLite database (WAL mode, one connection behind a lock).
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<rusqlite::Connection>>,
}

impl Db {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let conn = rusqlite::Connection::open(path).map_err(|e| {
            StoreError::backend(
                format!(
                    "cannot open the SQLite database {} (check the state directory is writable)",
                    path.display()
                ),
                e,
            )
        })?;
        Db::init(conn)
    }

    /// A private in-memory database (tests).
    pub fn in_memory() -> Result<Db, StoreError> {
        let conn = rusqlite::Connection::open_in_memory().map_err(sql)?;
        Db::init(conn)
    }

    fn init(mut conn: rusqlite::Connection) -> Result<Db, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        // Switching a new file to WAL needs it to itself, and SQLite answers "locked" at once
        // (no busy timeout) while another process opening it holds it: try again for a while.
        let started = std::time::Instant::now();
        while let Err(e) = conn.execute_batch(schema::PRAGMAS) {
            let e = sql(e);
            if e != StoreError::Throttled || started.elapsed() > std::time::Duration::from_secs(5) {
                return Err(e);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // The write lock first: a `CREATE … IF NOT EXISTS` that reads the schema and then has to
        // write, while another process (or handle) opening the same file creates it, would get
        // SQLITE_BUSY at once, without the busy timeout (a stale read cannot become a write).
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        let layout: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql)?;
        if layout > schema::LAYOUT {
            return Err(StoreError::backend_message(format!(
                "the database was written by a newer runvoy (layout {layout}, this one knows {}); \
                 upgrade runvoy or use another --state-dir",
                schema::LAYOUT
            )));
        }
        tx.execute_batch(schema::SCHEMA).map_err(sql)?;
        store::migrate_events(&tx).map_err(sql)?;
        if layout == 2 {
            store::migrate_interleaved_runs(&tx)?;
        }
        tx.execute_batch(schema::AFTER_MIGRATION).map_err(sql)?;
        // Databases made before `resumed_at` existed.
        let has_resumed_at: bool = tx
            .prepare("SELECT 1 FROM pragma_table_info('connections') WHERE name = 'resumed_at'")
            .and_then(|mut s| s.exists([]))
            .map_err(sql)?;
        if !has_resumed_at {
            tx.execute_batch(
                "ALTER TABLE connections ADD COLUMN resumed_at INTEGER NOT NULL DEFAULT 0",
            )
            .map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The raw connection, for tables of the embedding application (the local stack's runs).
    pub fn lock_conn(&self) -> MutexGuard<'_, rusqlite::Connection> {
        self.lock()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, rusqlite::Connection> {
        // A panic while holding the lock cannot leave a transaction half-applied (SQLite rolls
        // back an unfinished transaction), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Maps a SQLite error: "busy" is throttling (retry), anything else a backend failure.
pub(crate) fn sql(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e
        && matches!(
            f.code,
            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
        )
    {
        return StoreError::Throttled;
    }
    StoreError::backend("SQLite failed", e)
}

pub(crate) fn unix_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
