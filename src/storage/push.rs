//! Reads for notification counts: the unread events of a room for one user, judged against the
//! user's read receipts (unthreaded, main timeline, per thread), and the room facts push rules
//! look at. Push rules themselves are account data (`m.push_rules`, see `account_data`).

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

/// An event that may count as a notification.
pub struct UnreadEvent {
    pub stream_ordering: i64,
    /// Sent by the user themselves.
    pub own: bool,
    /// Who sent it (the reader's ignored users' events never count).
    pub sender: String,
    /// The thread root when the event is in a thread (`m.thread` relation), else `None`.
    pub thread_root: Option<String>,
}

/// The unread events among the newest `window` events of a room in `(after, upto]`, newest
/// first. An event is read when the user's `m.read` or `m.read.private` receipt, unthreaded or for
/// the event's own thread (`main` for events outside threads), points at it or at a later event.
/// The user's own events are included (they count as read receipts). Redacted events are left
/// out. The window bounds the work whatever the receipts: the scan is of at most `window` entries
/// of the room's stream index, which carries every column read here (no event row is read), and
/// needs no temporary table (the receipts are compared here, not joined in SQL).
pub fn unread_events(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
    after: i64,
    upto: i64,
    window: usize,
) -> rusqlite::Result<Vec<UnreadEvent>> {
    let read_up_to = read_positions(conn, room_id, user_id)?;
    let position_of = |thread: &str| read_up_to.get(thread).copied().unwrap_or(0);
    let after = after.max(position_of(""));
    let mut events = Vec::new();
    let mut statement = conn.prepare_cached(
        "SELECT stream_ordering, sender = ?2, CASE WHEN rel_type = 'm.thread' THEN relates_to END,
                redacted_by IS NOT NULL, sender
         FROM events WHERE room_id = ?1 AND stream_ordering > ?3 AND stream_ordering <= ?4
         ORDER BY stream_ordering DESC LIMIT ?5",
    )?;
    let mut rows = statement.query(params![room_id, user_id, after, upto, window as i64])?;
    while let Some(row) = rows.next()? {
        let event = UnreadEvent {
            stream_ordering: row.get(0)?,
            own: row.get(1)?,
            thread_root: row.get(2)?,
            sender: row.get(4)?,
        };
        let redacted: bool = row.get(3)?;
        let thread = event.thread_root.as_deref().unwrap_or("main");
        if !redacted && event.stream_ordering > position_of(thread) {
            events.push(event);
        }
    }
    Ok(events)
}

/// Up to where the user has read each thread of a room (`""`: unthreaded receipts, `"main"`:
/// the main timeline, else a thread root): the newest event of their `m.read` and
/// `m.read.private` receipts.
fn read_positions(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
) -> rusqlite::Result<HashMap<String, i64>> {
    let mut positions: HashMap<String, i64> = HashMap::new();
    let mut statement = conn.prepare_cached(
        "SELECT r.thread_id, e.stream_ordering FROM receipts r
         JOIN events e ON e.event_id = r.event_id
         WHERE r.room_id = ?1 AND r.user_id = ?2 AND r.receipt_type IN ('m.read', 'm.read.private')",
    )?;
    let mut rows = statement.query([room_id, user_id])?;
    while let Some(row) = rows.next()? {
        let position: i64 = row.get(1)?;
        let known = positions.entry(row.get(0)?).or_default();
        *known = (*known).max(position);
    }
    Ok(positions)
}

/// The JSON of the event at a stream position, for the unread events that push rules have to
/// be evaluated on (most outcomes are remembered, so most events are never read in full).
pub fn event_json(conn: &Connection, stream_ordering: i64) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT json FROM events WHERE stream_ordering = ?1")?
        .query_row([stream_ordering], |row| row.get(0))
        .optional()
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
        // The state of a room joined over federation may be outliers (`storage::pdus`).
        "SELECT coalesce(e.json, o.json) FROM current_state c
         LEFT JOIN events e ON e.event_id = c.event_id
         LEFT JOIN pdus_outside_timeline o ON o.event_id = c.event_id AND o.status != 'rejected'
         WHERE c.room_id = ?1 AND c.type = ?2 AND c.state_key = ?3
           AND coalesce(e.json, o.json) IS NOT NULL",
    )?
    .query_row([room_id, event_type, state_key], |row| row.get(0))
    .optional()
}
