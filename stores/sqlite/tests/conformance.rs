//! The store conformance suite, unchanged, against SQLite: in memory and on a file shared by
//! two handles (as two processes would).

use std::sync::Arc;

use runvoy_sqlite::{Db, SqliteStore};

runvoy_core::store_conformance_suite!(|| async {
    Arc::new(SqliteStore::new(Db::in_memory().unwrap()))
});
runvoy_core::connection_conformance_suite!(|| async {
    Arc::new(SqliteStore::new(Db::in_memory().unwrap()))
});

mod on_file {
    use super::*;

    fn file_store() -> Arc<SqliteStore> {
        let dir = std::env::temp_dir().join(format!("runvoy-sqlite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Arc::new(SqliteStore::new(
            Db::open(&dir.join("conformance.db")).unwrap(),
        ))
    }

    runvoy_core::store_conformance_suite!(|| async { file_store() });
}

/// Processes (here: threads with their own handles) opening one new database file at once all
/// get it, schema applied: none is refused with "busy" while another creates the tables.
#[test]
fn concurrent_opens_of_a_new_file_all_succeed() {
    let dir = std::env::temp_dir().join(format!("runvoy-sqlite-open-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for round in 0..30 {
        let path = dir.join(format!("{round}.db"));
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let opened: Vec<_> = (0..8)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    Db::open(&path).map(|_| ())
                })
            })
            .collect();
        for t in opened {
            t.join().unwrap().unwrap();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
