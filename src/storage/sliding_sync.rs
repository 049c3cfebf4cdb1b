//! The reads behind sliding sync's room lists (`services/sync/sliding.rs`): every room of a user
//! with what lists sort and filter it by, in one query.

use rusqlite::{Connection, params};

/// A room of the user as a sliding sync list sees it.
pub struct ListedRoom {
    pub room_id: String,
    pub membership: String,
    /// The user's membership event.
    pub event_id: String,
    pub membership_stream: i64,
    /// For a joined room, the newest event that moves it up a list (see [`BUMP_TYPES`]).
    /// Other rooms sort by their membership event (as in Synapse): a new invite or a leave
    /// comes to the top, where the client sees it.
    pub bump_stamp: Option<i64>,
    /// Whether the room's state has `m.room.encryption`.
    pub encrypted: bool,
    /// `m.room.create`'s `content.type` (`m.space`, …).
    pub room_type: Option<String>,
}

/// Event types that bump a room to the top of a list, as Synapse and MSC4186 suggest.
const BUMP_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

/// Keeps `room_list_facts` (migration 0021) up to date as an event is stored: a bump event
/// moves the room's bump position forward (never back: a backfilled event may come later with
/// an older position), and the create event gives the room its type.
pub fn note_event(
    conn: &Connection,
    event: &super::rooms::NewEventRow<'_>,
    stream: i64,
) -> rusqlite::Result<()> {
    if !BUMP_TYPES.contains(&event.event_type) {
        return Ok(());
    }
    let create = event.event_type == "m.room.create" && event.state_key == Some("");
    conn.prepare_cached(
        "INSERT INTO room_list_facts (room_id, bump_stream, room_type)
         VALUES (?1, ?2, CASE WHEN ?3 AND json_type(?4, '$.content.type') = 'text'
                              THEN json_extract(?4, '$.content.type') END)
         ON CONFLICT (room_id) DO UPDATE SET
           bump_stream = CASE WHEN bump_stream IS NULL OR bump_stream < excluded.bump_stream
                              THEN excluded.bump_stream ELSE bump_stream END,
           room_type = CASE WHEN ?3 THEN excluded.room_type ELSE room_type END",
    )?
    .execute(params![event.room_id, stream, create, event.json])?;
    Ok(())
}

/// Every room the user is or was in (not forgotten), as of stream position `upto`. A joined
/// room's bump stamp is the one `room_list_facts` keeps, unless that one is newer than `upto`
/// (an event stored since the request began): then its stream index is walked backwards to
/// its newest bumping event at `upto`, as is that of a room without a stored bump.
///
/// The memberships come from their covering index, whether a room is encrypted from the small
/// index of encrypted rooms (migration 0024; SQLite would rather look it up in all of the
/// current state, hence `INDEXED BY`).
pub fn listed_rooms(
    conn: &Connection,
    user_id: &str,
    upto: i64,
) -> rusqlite::Result<Vec<ListedRoom>> {
    let bump_types = BUMP_TYPES.map(|t| format!("'{t}'")).join(", ");
    conn.prepare_cached(&format!(
        "SELECT m.room_id, m.membership, m.event_id, m.stream_ordering,
           CASE WHEN m.membership = 'join' THEN
             CASE WHEN f.bump_stream <= ?2 THEN f.bump_stream ELSE
               (SELECT e.stream_ordering FROM events e
                 WHERE e.room_id = m.room_id AND e.type IN ({bump_types})
                   AND e.stream_ordering <= ?2
                 ORDER BY e.stream_ordering DESC LIMIT 1) END END,
           EXISTS (SELECT 1 FROM current_state cs INDEXED BY current_state_encryption
                    WHERE cs.room_id = m.room_id
                      AND cs.type = 'm.room.encryption' AND cs.state_key = ''),
           f.room_type
         FROM memberships m LEFT JOIN room_list_facts f ON f.room_id = m.room_id
         WHERE m.user_id = ?1 AND m.forgotten = 0"
    ))?
    .query_map(params![user_id, upto], |row| {
        Ok(ListedRoom {
            room_id: row.get(0)?,
            membership: row.get(1)?,
            event_id: row.get(2)?,
            membership_stream: row.get(3)?,
            bump_stamp: row.get(4)?,
            encrypted: row.get(5)?,
            room_type: row.get(6)?,
        })
    })?
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::rooms::{self, NewEventRow};

    /// The stored bump position and room type give what walking the room's events gives, at
    /// the newest position and at one before the newest bump (an event stored after the
    /// request began). A room without stored facts (none of its bump events in the timeline)
    /// is walked.
    #[test]
    fn stored_bumps_agree_with_the_events() {
        let (_dir, path) = crate::storage::migrated_test_file();
        let conn = Connection::open(&path).unwrap();
        rooms::insert_room(&conn, "!r:x", "12", "@a:x", 0).unwrap();
        let group = rooms::new_state_group(&conn, "!r:x", None, &Default::default()).unwrap();
        let stream = |id: &str, kind: &str, state_key: Option<&str>, json: &str| {
            let event = NewEventRow {
                event_id: id,
                room_id: "!r:x",
                event_type: kind,
                state_key,
                sender: "@a:x",
                origin_server_ts: 0,
                depth: 1,
                redacts: None,
                relates_to: None,
                prev_events: &[],
                json,
            };
            rooms::insert_event(&conn, &event, group).unwrap()
        };
        let space = r#"{"content": {"type": "m.space"}}"#;
        stream("$create", "m.room.create", Some(""), space);
        let join = stream("$join", "m.room.member", Some("@a:x"), "{}");
        let first = stream("$m1", "m.room.message", None, "{}");
        stream("$topic", "m.room.topic", Some(""), "{}");
        let second = stream("$m2", "m.room.encrypted", None, "{}");
        let newest = stream("$name", "m.room.name", Some(""), "{}");
        rooms::set_membership(&conn, "!r:x", "@a:x", "join", "$join", join).unwrap();

        let listed = |upto| {
            let rooms = listed_rooms(&conn, "@a:x", upto).unwrap();
            assert_eq!(rooms.len(), 1);
            let room = &rooms[0];
            (room.bump_stamp, room.room_type.clone())
        };
        let space = Some("m.space".to_owned());
        assert_eq!(listed(newest), (Some(second), space.clone()));
        assert_eq!(listed(second - 1), (Some(first), space.clone()));
        conn.execute("DELETE FROM room_list_facts", []).unwrap();
        assert_eq!(listed(newest), (Some(second), None));
        assert_eq!(listed(second - 1), (Some(first), None));
    }
}
