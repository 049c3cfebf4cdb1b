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
const BUMP_TYPES: &str = "('m.room.create', 'm.room.message', 'm.room.encrypted', 'm.sticker', \
                          'm.call.invite', 'm.poll.start', 'm.beacon_info')";

/// Every room the user is or was in (not forgotten), as of stream position `upto`. A joined
/// room's bump stamp walks its stream index backwards to its newest bumping event.
pub fn listed_rooms(
    conn: &Connection,
    user_id: &str,
    upto: i64,
) -> rusqlite::Result<Vec<ListedRoom>> {
    conn.prepare_cached(&format!(
        "SELECT m.room_id, m.membership, m.event_id, m.stream_ordering,
           CASE WHEN m.membership = 'join' THEN
             (SELECT e.stream_ordering FROM events e
               WHERE e.room_id = m.room_id AND e.type IN {BUMP_TYPES} AND e.stream_ordering <= ?2
               ORDER BY e.stream_ordering DESC LIMIT 1) END,
           EXISTS (SELECT 1 FROM current_state cs WHERE cs.room_id = m.room_id
                     AND cs.type = 'm.room.encryption' AND cs.state_key = ''),
           (SELECT json_extract(e.json, '$.content.type') FROM current_state cs
              JOIN events e ON e.event_id = cs.event_id
             WHERE cs.room_id = m.room_id AND cs.type = 'm.room.create' AND cs.state_key = '')
         FROM memberships m WHERE m.user_id = ?1 AND m.forgotten = 0"
    ))?
    .query_map(params![user_id, upto], |row| {
        Ok(ListedRoom {
            room_id: row.get(0)?,
            membership: row.get(1)?,
            event_id: row.get(2)?,
            membership_stream: row.get(3)?,
            bump_stamp: row.get(4)?,
            encrypted: row.get(5)?,
            room_type: row
                .get::<_, Option<rusqlite::types::Value>>(6)?
                .and_then(|v| match v {
                    rusqlite::types::Value::Text(t) => Some(t),
                    _ => None,
                }),
        })
    })?
    .collect()
}
