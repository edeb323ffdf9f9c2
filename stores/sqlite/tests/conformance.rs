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
