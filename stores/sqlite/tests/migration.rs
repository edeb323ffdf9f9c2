//! A database written when every line was a row of `events` opens with its lines packed into
//! runs: every line reads back the same, its ids still refuse a second commit, and the old
//! table is gone. A database of layout 2 (each line's head before its message) opens with its
//! runs rewritten, every line reading back the same.

use runvoy_core::CommitError;
use runvoy_core::ports::{Commit, HeadReader, LogReader, LogWriter};
use runvoy_core::testkit::{events, head_at};
use runvoy_sqlite::{Db, SqliteStore, rusqlite};

/// The tables as they were, with `lines` lines of execution `a` (expiring `first_expiry` for
/// the first 1,500 and later after them) and three of execution `b`.
fn old_database(path: &std::path::Path, lines: u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE heads (execution_id TEXT PRIMARY KEY, version INTEGER NOT NULL,
             head TEXT NOT NULL, expires_at INTEGER NOT NULL);
         CREATE TABLE events (execution_id TEXT NOT NULL, log_index INTEGER NOT NULL,
             event_id TEXT NOT NULL, timestamp INTEGER NOT NULL, message TEXT NOT NULL,
             expires_at INTEGER NOT NULL, PRIMARY KEY (execution_id, log_index)) WITHOUT ROWID;
         CREATE UNIQUE INDEX events_by_event_id ON events (execution_id, event_id);",
    )
    .unwrap();
    for (id, n) in [("a", lines), ("b", 3)] {
        let head = head_at(id, n, 1);
        conn.execute(
            "INSERT INTO heads VALUES (?1, 1, ?2, ?3)",
            rusqlite::params![id, serde_json::to_string(&head).unwrap(), head.expires_at],
        )
        .unwrap();
        for e in events(1, n, 40) {
            // Two expiries in one execution, as two commits a day apart would leave them.
            let expires_at = head.expires_at - i64::from(e.index <= 1_500);
            conn.execute(
                "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![id, e.index, e.event_id, e.timestamp, e.message, expires_at],
            )
            .unwrap();
        }
    }
}

/// A directory of its own for the test `tag`, and the path of a database file not there yet.
fn fresh_db(tag: &str, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.db"));
    let _ = std::fs::remove_file(&path);
    (dir, path)
}

#[tokio::test]
async fn lines_stored_one_per_row_read_back_the_same_after_opening() {
    let (dir, path) = fresh_db("runvoy-migration", "old");
    old_database(&path, 2_345);

    let store = SqliteStore::new(Db::open(&path).unwrap());
    assert_eq!(
        store.read_range("a", 0, 2_345, 10_000).await.unwrap(),
        events(1, 2_345, 40)
    );
    assert_eq!(
        store.read_range("a", 1_499, 1_502, 10).await.unwrap(),
        events(1_500, 1_502, 40)
    );
    assert_eq!(
        store.read_range("b", 0, 3, 10).await.unwrap(),
        events(1, 3, 40)
    );
    let mut dense = Vec::new();
    let n = store
        .read_dense("a", 999, 2_345, 10_000, usize::MAX, &mut dense)
        .await
        .unwrap();
    assert_eq!(n, Some(1_346));

    // The ids are still known: a redelivered line is refused, not given a second index.
    let head = store.head("a").await.unwrap().unwrap();
    let mut next = head_at("a", 2_346, 2);
    next.expires_at = head.expires_at;
    let mut again = events(2_346, 2_346, 40);
    again[0].event_id = "e7".into();
    match store
        .commit(Commit {
            expected_version: Some(1),
            head: next.clone(),
            events: again,
        })
        .await
    {
        Err(CommitError::Duplicate(ids)) => assert_eq!(ids, ["e7"]),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    store
        .commit(Commit {
            expected_version: Some(1),
            head: next,
            events: events(2_346, 2_346, 40),
        })
        .await
        .unwrap();
    assert_eq!(
        store.read_range("a", 2_340, 2_346, 10).await.unwrap(),
        events(2_341, 2_346, 40)
    );

    // Opened again: nothing left to migrate, nothing migrated twice.
    drop(store);
    let store = SqliteStore::new(Db::open(&path).unwrap());
    assert_eq!(
        store.read_range("a", 0, 2_346, 10_000).await.unwrap(),
        events(1, 2_346, 40)
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let old: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'events' AND type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old, 0);
    let runs: i64 = conn
        .query_row(
            "SELECT count(*) FROM runs WHERE execution_id = 'a'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // 1,500 lines with one expiry (two runs of ≤ 1,000), 845 with the other (one), the new one.
    assert_eq!(runs, 4);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A binary of the old layout fails to open a migrated database (its schema indexes `events`)
/// rather than committing lines the new idempotency check would not see; a database of a later
/// layout is refused with a sentence.
#[tokio::test]
async fn other_layouts_refuse_each_others_databases() {
    let (dir, path) = fresh_db("runvoy-layouts", "new");
    drop(Db::open(&path).unwrap());

    let conn = rusqlite::Connection::open(&path).unwrap();
    let old_schema = "CREATE TABLE IF NOT EXISTS events (execution_id TEXT NOT NULL,
             log_index INTEGER NOT NULL, event_id TEXT NOT NULL, timestamp INTEGER NOT NULL,
             message TEXT NOT NULL, expires_at INTEGER NOT NULL,
             PRIMARY KEY (execution_id, log_index)) WITHOUT ROWID;
         CREATE UNIQUE INDEX IF NOT EXISTS events_by_event_id ON events (execution_id, event_id);";
    assert!(conn.execute_batch(old_schema).is_err());

    conn.execute_batch("PRAGMA user_version = 9").unwrap();
    drop(conn);
    let Err(e) = Db::open(&path) else {
        panic!("a database of layout 9 was opened")
    };
    assert!(e.to_string().contains("newer runvoy"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rewrites every run of the database at `path` as layout 2 kept it: each line's head, then its
/// message (`{timestamp} {length}\n{message}\n`), one after another.
fn as_layout_2(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let runs: Vec<(i64, Vec<u8>)> = conn
        .prepare("SELECT rowid, lines FROM runs")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (rowid, run) in runs {
        let mut old = Vec::new();
        for (timestamp, message) in runvoy_core::lines::events_of(&run).unwrap() {
            old.extend_from_slice(format!("{timestamp} {}\n", message.len()).as_bytes());
            old.extend_from_slice(message);
            old.push(b'\n');
        }
        conn.execute(
            "UPDATE runs SET lines = ?1 WHERE rowid = ?2",
            rusqlite::params![old, rowid],
        )
        .unwrap();
    }
    conn.execute_batch("PRAGMA user_version = 2").unwrap();
}

#[tokio::test]
async fn runs_of_layout_2_read_back_the_same_after_opening() {
    let (dir, path) = fresh_db("runvoy-layout2", "runs");
    let mut all = events(1, 2_500, 40);
    all[7].message = "two\nlines and a \"quote\"".into();
    all[8].message = String::new();
    all[9].message = "é 日本 🙂 \u{1b}[1m".into();
    {
        let store = SqliteStore::new(Db::open(&path).unwrap());
        for (k, chunk) in all.chunks(700).enumerate() {
            let k = k as u64;
            store
                .commit(Commit {
                    expected_version: (k > 0).then_some(k),
                    head: head_at("a", chunk.last().unwrap().index, k + 1),
                    events: chunk.to_vec(),
                })
                .await
                .unwrap();
        }
    }
    as_layout_2(&path);

    let store = SqliteStore::new(Db::open(&path).unwrap());
    assert_eq!(store.read_range("a", 0, 2_500, 10_000).await.unwrap(), all);
    let mut dense = Vec::new();
    let n = store
        .read_dense("a", 650, 2_500, 10_000, usize::MAX, &mut dense)
        .await
        .unwrap();
    assert_eq!(n, Some(1_850));
    let read: Vec<(i64, Vec<u8>)> = runvoy_core::lines::events_of(&dense)
        .unwrap()
        .into_iter()
        .map(|(t, m)| (t, m.to_vec()))
        .collect();
    let want: Vec<(i64, Vec<u8>)> = all[650..]
        .iter()
        .map(|e| (e.timestamp, e.message.clone().into_bytes()))
        .collect();
    assert_eq!(read, want);
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let layout: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(layout, 3);
    drop(conn);
    // Opened again: nothing rewritten twice.
    let store = SqliteStore::new(Db::open(&path).unwrap());
    assert_eq!(
        store.read_range("a", 2_000, 2_500, 10_000).await.unwrap(),
        all[2_000..]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
