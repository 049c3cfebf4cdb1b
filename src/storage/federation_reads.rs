//! The reads behind the federation endpoints that serve room data to other servers (`/state`,
//! `/backfill`, `/timestamp_to_event`, …). Events themselves are read with `storage::rooms`.

use rusqlite::{Connection, OptionalExtension, params};

/// Has any user of `server` (user IDs ending in `:<server>`) joined the room?
pub fn server_has_joined_member(
    conn: &Connection,
    room_id: &str,
    server: &str,
) -> rusqlite::Result<bool> {
    let suffix = format!(":{server}");
    // `substr` with a negative start counts from the end; server names are ASCII, so lengths in
    // characters are lengths in bytes. `LIKE` would be case-insensitive and treat `_` specially.
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM memberships
                        WHERE room_id = ?1 AND membership = 'join' AND substr(user_id, -?3) = ?2)",
    )?
    .query_row(params![room_id, suffix, suffix.len() as i64], |row| {
        row.get(0)
    })
}

/// An event found by its `origin_server_ts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampMatch {
    pub event_id: String,
    pub origin_server_ts: i64,
}

/// The room's event closest to `ts`: the first at or after it (`forward`), or the last at or
/// before it; ties go to the event stored first (forward) or last (backward).
pub fn event_closest_to_ts(
    conn: &Connection,
    room_id: &str,
    ts: i64,
    forward: bool,
) -> rusqlite::Result<Option<TimestampMatch>> {
    let sql = if forward {
        "SELECT event_id, origin_server_ts FROM events WHERE room_id = ?1 AND origin_server_ts >= ?2
         ORDER BY origin_server_ts ASC, stream_ordering ASC LIMIT 1"
    } else {
        "SELECT event_id, origin_server_ts FROM events WHERE room_id = ?1 AND origin_server_ts <= ?2
         ORDER BY origin_server_ts DESC, stream_ordering DESC LIMIT 1"
    };
    conn.prepare_cached(sql)?
        .query_row(params![room_id, ts], |row| {
            Ok(TimestampMatch {
                event_id: row.get(0)?,
                origin_server_ts: row.get(1)?,
            })
        })
        .optional()
}

/// The `origin_server_ts` of a timeline event of the room (`None` for one not in its timeline).
pub fn timeline_event_ts(
    conn: &Connection,
    room_id: &str,
    event_id: &str,
) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT origin_server_ts FROM events WHERE event_id = ?1 AND room_id = ?2")?
        .query_row([event_id, room_id], |row| row.get(0))
        .optional()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::rooms::insert_room;

    #[test]
    fn joined_members_are_matched_by_the_whole_server_name() {
        let (_dir, path) = crate::storage::migrated_test_file();
        let conn = Connection::open(&path).unwrap();
        insert_room(&conn, "!r:x", "12", "@a:x", 0).unwrap();
        for (user, membership) in [
            ("@a:example.org", "join"),
            ("@b:sub.example.org", "join"),
            ("@c:other.org", "leave"),
            ("@d:localhost:8448", "join"),
        ] {
            conn.execute(
                "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_ordering)
                 VALUES ('!r:x', ?1, ?2, '$e', 1)",
                [user, membership],
            )
            .unwrap();
        }
        let joined = |server| server_has_joined_member(&conn, "!r:x", server).unwrap();
        assert!(joined("example.org"));
        assert!(joined("sub.example.org"));
        assert!(!joined("ample.org"), "a suffix of a name is another server");
        assert!(!joined("other.org"), "left");
        assert!(!joined("EXAMPLE.ORG"), "server names compare exactly");
        assert!(joined("localhost:8448"));
        assert!(!joined("localhost"));
        assert!(!server_has_joined_member(&conn, "!other:x", "example.org").unwrap());
    }
}
