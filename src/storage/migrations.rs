//! Versioned, forward-only schema migrations, embedded in the binary. The version lives in
//! SQLite's `user_version`; all pending steps run in one transaction.

use std::path::Path;

use rusqlite::Connection;

use super::OpenError;

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_accounts.sql"),
    include_str!("migrations/0002_rooms.sql"),
    include_str!("migrations/0003_search.sql"),
    include_str!("migrations/0004_presence.sql"),
    include_str!("migrations/0005_e2ee.sql"),
    include_str!("migrations/0006_media.sql"),
    include_str!("migrations/0007_read_indexes.sql"),
    include_str!("migrations/0008_server_keys.sql"),
    include_str!("migrations/0009_federated_rooms.sql"),
    include_str!("migrations/0010_federation_queue.sql"),
    include_str!("migrations/0011_federation_inbound.sql"),
    include_str!("migrations/0012_remote_memberships.sql"),
    include_str!("migrations/0013_remote_e2ee.sql"),
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(super) fn apply(conn: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let sqlite = |source| OpenError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .map_err(sqlite)?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite)?;
    if found > SCHEMA_VERSION {
        return Err(OpenError::TooNew {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tracing::info!(version = index + 1, "applying database migration");
        tx.execute_batch(sql).map_err(sqlite)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sqlite)?;
    tx.commit().map_err(sqlite)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Database;

    #[test]
    fn migrates_a_new_database_and_reopens_it() {
        let (_dir, path) = crate::storage::migrated_test_file();
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        drop(conn);
        Database::open(&path).unwrap();
    }

    #[test]
    fn refuses_a_database_from_a_newer_binary() {
        let (_dir, path) = crate::storage::migrated_test_file();
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = Database::open(&path)
            .err()
            .expect("a newer schema must be refused");
        assert!(matches!(err, OpenError::TooNew { .. }), "{err}");
    }
}
