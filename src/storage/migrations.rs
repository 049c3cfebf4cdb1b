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
    include_str!("migrations/0013_openid.sql"),
    include_str!("migrations/0014_remote_thumbnails.sql"),
    include_str!("migrations/0015_remote_e2ee.sql"),
    include_str!("migrations/0016_profile_updates.sql"),
    include_str!("migrations/0017_push.sql"),
    include_str!("migrations/0018_reports_guests.sql"),
    include_str!("migrations/0019_appservice.sql"),
    include_str!("migrations/0020_appservice_room_list.sql"),
    include_str!("migrations/0021_room_list_facts.sql"),
    include_str!("migrations/0022_user_reports.sql"),
    include_str!("migrations/0023_delayed_events.sql"),
    include_str!("migrations/0024_room_list_indexes.sql"),
    include_str!("migrations/0025_profile_fields.sql"),
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

/// An in-memory database with every migration applied, for unit tests of code that reads it.
#[cfg(test)]
pub fn migrated_in_memory() -> Connection {
    let conn = Connection::open_in_memory().expect("in-memory SQLite");
    for sql in MIGRATIONS {
        conn.execute_batch(sql).expect("migration");
    }
    conn
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

    /// 0015_remote_e2ee: to-device messages that waited in the old outbox for another server go
    /// on as `m.direct_to_device` EDUs of the federation sender's queue, in order.
    #[test]
    fn waiting_to_device_messages_move_into_the_edu_queue() {
        use ruma::api::federation::transactions::edu::Edu;

        // Found by content, so that renumbering the migration does not break the test.
        let ours = MIGRATIONS
            .iter()
            .position(|sql| sql.contains("CREATE TABLE remote_device_lists"))
            .unwrap();
        let conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..ours] {
            conn.execute_batch(sql).unwrap();
        }
        for (position, id) in [(5, "m1"), (6, "m2")] {
            conn.execute(
                "INSERT INTO to_device_outbox
                     (stream_position, destination, sender, type, message_id, messages)
                 VALUES (?1, 'there.example', '@alice:here', 'm.room_key_request', ?2,
                         '{\"@bob:there.example\": {\"*\": {\"action\": \"request\"}}}')",
                rusqlite::params![position, id],
            )
            .unwrap();
        }
        conn.execute_batch(MIGRATIONS[ours]).unwrap();
        let rows: Vec<(String, String, String)> = conn
            .prepare(
                "SELECT destination, edu_type, content FROM federation_outbound_edus ORDER BY id",
            )
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows.len(), 2);
        for ((destination, edu_type, content), id) in rows.iter().zip(["m1", "m2"]) {
            assert_eq!(
                (destination.as_str(), edu_type.as_str()),
                ("there.example", "m.direct_to_device")
            );
            let Ok(Edu::DirectToDevice(edu)) = serde_json::from_str::<Edu>(content) else {
                panic!("not an m.direct_to_device EDU: {content}");
            };
            assert_eq!(edu.message_id.as_str(), id);
            assert_eq!(edu.sender.as_str(), "@alice:here");
            assert_eq!(edu.ev_type.to_string(), "m.room_key_request");
            assert_eq!(edu.messages.len(), 1, "{content}");
        }
    }
}
