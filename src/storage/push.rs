//! Reads for notification counts: the unread events of a room for one user, judged against the
//! user's read receipts (unthreaded, main timeline, per thread), and the room facts push rules
//! look at. Push rules themselves are account data (`m.push_rules`, see `account_data`).

use rusqlite::{Connection, OptionalExtension, params};

/// An event that may count as a notification.
pub struct UnreadEvent {
    pub stream_ordering: i64,
    /// Sent by the user themselves.
    pub own: bool,
    /// The thread root when the event is in a thread (`m.thread` relation), else `None`.
    pub thread_root: Option<String>,
    pub json: String,
}

/// The unread events among the newest `window` events of a room in `(after, upto]`, newest
/// first. An event is read when the user's `m.read` or `m.read.private` receipt, unthreaded or for
/// the event's own thread (`main` for events outside threads), points at it or at a later event.
/// The user's own events are included (they count as read receipts). Redacted events are left
/// out. The window bounds the work whatever the receipts: the scan is of at most `window` rows of
/// the `(room_id, stream_ordering)` index.
pub fn unread_events(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
    after: i64,
    upto: i64,
    window: usize,
) -> rusqlite::Result<Vec<UnreadEvent>> {
    conn.prepare_cached(
        "WITH read_up_to (thread_id, position) AS (
             SELECT r.thread_id, max(e.stream_ordering) FROM receipts r
             JOIN events e ON e.event_id = r.event_id
             WHERE r.room_id = ?1 AND r.user_id = ?2 AND r.receipt_type IN ('m.read', 'm.read.private')
             GROUP BY r.thread_id
         ),
         recent (stream_ordering) AS (
             SELECT stream_ordering FROM events
             WHERE room_id = ?1 AND stream_ordering <= ?4
               AND stream_ordering > max(?3, coalesce((SELECT position FROM read_up_to WHERE thread_id = ''), 0))
             ORDER BY stream_ordering DESC LIMIT ?5
         )
         SELECT ev.sender = ?2, CASE WHEN ev.rel_type = 'm.thread' THEN ev.relates_to END, ev.json,
                ev.stream_ordering
         FROM recent JOIN events ev ON ev.stream_ordering = recent.stream_ordering
         WHERE ev.redacted_by IS NULL
           AND ev.stream_ordering > coalesce((SELECT position FROM read_up_to WHERE thread_id =
                   CASE WHEN ev.rel_type = 'm.thread' THEN ev.relates_to ELSE 'main' END), 0)
         ORDER BY ev.stream_ordering DESC",
    )?
    .query_map(
        params![room_id, user_id, after, upto, window as i64],
        |row| {
            Ok(UnreadEvent {
                own: row.get(0)?,
                thread_root: row.get(1)?,
                json: row.get(2)?,
                stream_ordering: row.get(3)?,
            })
        },
    )?
    .collect()
}

/// How many users are joined to a room.
pub fn joined_member_count(conn: &Connection, room_id: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT count(*) FROM memberships WHERE room_id = ?1 AND membership = 'join'",
    )?
    .query_row([room_id], |row| row.get(0))
}

/// The JSON of the current state event `(event_type, state_key)` of a room.
pub fn current_state_json(
    conn: &Connection,
    room_id: &str,
    event_type: &str,
    state_key: &str,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
         WHERE c.room_id = ?1 AND c.type = ?2 AND c.state_key = ?3",
    )?
    .query_row([room_id, event_type, state_key], |row| row.get(0))
    .optional()
}
