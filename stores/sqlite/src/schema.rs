//! The database schema, applied idempotently at open.

/// Per-connection settings (outside any transaction: the journal mode cannot change inside one).
pub const PRAGMAS: &str = r#"
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = ON;
-- Pages are read from a mapping of the file rather than copied in by a read call each (a page
-- of 10,000 lines otherwise spends a sixth of its time in the kernel's copy).
PRAGMA mmap_size = 268435456;
"#;

/// The layout this code writes, kept in `PRAGMA user_version`: 3 since a run keeps its heads
/// and its messages apart (2: log lines packed in runs, each line's head before its message;
/// 0: one row per line in `events`). A database of a later layout is refused at open.
pub const LAYOUT: i64 = 3;

/// Applied after a database of an earlier layout was migrated. A view named `events` makes a
/// binary of layout 0 fail at open (its schema indexes `events`) instead of recreating the
/// table and committing lines beside the runs, where this layout's idempotency check would not
/// see them; a binary of layout 2 refuses the later layout.
pub const AFTER_MIGRATION: &str = r#"
CREATE VIEW IF NOT EXISTS events AS SELECT 'log lines are in runs since layout 2' AS moved;
PRAGMA user_version = 3;
"#;

/// Tables and indexes, applied in one `BEGIN IMMEDIATE` transaction.
pub const SCHEMA: &str = r#"
-- The execution head (log_index = 0 in DynamoDB terms), serialized, with its version.
CREATE TABLE IF NOT EXISTS heads (
    execution_id TEXT PRIMARY KEY,
    version      INTEGER NOT NULL,
    head         TEXT NOT NULL,
    expires_at   INTEGER NOT NULL
);
-- Listing recent executions (`LogReader::recent`) without reading every head.
CREATE INDEX IF NOT EXISTS heads_by_creation ON heads (json_extract(head, '$.created_at'));

-- Committed log items, packed: one row per run of consecutive lines a commit wrote, keyed by
-- its first index. `lines` holds the run as a dense page carries it (`runvoy_core::lines`: a
-- header line, the heads, then the messages), `ids` the JSON array of their event ids,
-- `longest` the bytes of its longest message.
CREATE TABLE IF NOT EXISTS runs (
    execution_id TEXT NOT NULL,
    first_index  INTEGER NOT NULL,
    last_index   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    longest      INTEGER NOT NULL,
    lines        BLOB NOT NULL,
    ids          TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_by_last_index ON runs (execution_id, last_index);
-- The idempotency records: one per committed event id.
CREATE TABLE IF NOT EXISTS event_ids (
    execution_id TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    PRIMARY KEY (execution_id, event_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS connections (
    connection_id TEXT PRIMARY KEY,
    execution_id  TEXT NOT NULL,
    cursor        INTEGER NOT NULL,
    connected_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    resumed_at    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS connections_by_execution ON connections (execution_id);

-- The local log source: streams and their events in arrival order (seq).
CREATE TABLE IF NOT EXISTS source_streams (
    execution_id TEXT PRIMARY KEY,
    created_at   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS source_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL,
    timestamp    INTEGER NOT NULL,
    message      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS source_events_by_stream ON source_events (execution_id, seq);

-- Commands the local stack runs as executions, to settle the ones a restart interrupted.
CREATE TABLE IF NOT EXISTS local_runs (
    execution_id TEXT PRIMARY KEY,
    command      TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    finished     INTEGER NOT NULL DEFAULT 0
);
"#;
