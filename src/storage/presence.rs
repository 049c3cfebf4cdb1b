//! Table `presence`: each user's latest presence, positioned in the shared stream so that /sync
//! reports changes since a token.

use rusqlite::{Connection, OptionalExtension, params};

use super::rooms::next_stream_position;

/// A user's stored presence.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceRow {
    pub user_id: String,
    /// `online`, `unavailable` or `offline`.
    pub state: String,
    pub status_msg: Option<String>,
    /// When the user was last active (ms since the epoch); 0 when never.
    pub last_active_ts: i64,
    pub currently_active: bool,
}

/// A stored presence with what /sync shows beside it.
pub struct PresenceUpdate {
    pub row: PresenceRow,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

const COLUMNS: &str = "p.user_id, p.state, p.status_msg, p.last_active_ts, p.currently_active";

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PresenceRow> {
    Ok(PresenceRow {
        user_id: row.get(0)?,
        state: row.get(1)?,
        status_msg: row.get(2)?,
        last_active_ts: row.get(3)?,
        currently_active: row.get(4)?,
    })
}

pub fn get(conn: &Connection, user_id: &str) -> rusqlite::Result<Option<PresenceRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM presence p WHERE p.user_id = ?1"
    ))?
    .query_row([user_id], from_row)
    .optional()
}

/// Stores a presence at a new stream position, which it returns.
pub fn put(conn: &Connection, row: &PresenceRow) -> rusqlite::Result<i64> {
    let position = next_stream_position(conn)?;
    conn.prepare_cached(
        "INSERT INTO presence (user_id, state, status_msg, last_active_ts, currently_active, stream_position)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg,
             last_active_ts = excluded.last_active_ts, currently_active = excluded.currently_active,
             stream_position = excluded.stream_position",
    )?
    .execute(params![
        row.user_id,
        row.state,
        row.status_msg,
        row.last_active_ts,
        row.currently_active,
        position
    ])?;
    Ok(position)
}

/// Everyone whose stored presence is not `offline` (what the timeouts look at).
pub fn not_offline(conn: &Connection) -> rusqlite::Result<Vec<PresenceRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM presence p WHERE p.state != 'offline'"
    ))?
    .query_map([], from_row)?
    .collect()
}

/// Presence stored in `(since, upto]` of the user and of everyone joined to a room the user is
/// joined to, oldest first, at most `limit`; `offline` ones are left out when `skip_offline`.
/// The scan starts from the changes (few, after a recent token), not from the co-members.
pub fn changed_for(
    conn: &Connection,
    user_id: &str,
    since: i64,
    upto: i64,
    skip_offline: bool,
    limit: usize,
) -> rusqlite::Result<Vec<PresenceUpdate>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS}, u.displayname, u.avatar_url
         FROM presence p LEFT JOIN users u ON u.user_id = p.user_id
         WHERE p.stream_position > ?2 AND p.stream_position <= ?3 AND (?4 = 0 OR p.state != 'offline')
           AND (p.user_id = ?1 OR EXISTS (SELECT 1 FROM memberships mine
               JOIN memberships theirs ON theirs.room_id = mine.room_id AND theirs.user_id = p.user_id
               WHERE mine.user_id = ?1 AND mine.membership = 'join' AND theirs.membership = 'join'))
         ORDER BY p.stream_position LIMIT ?5"
    ))?
    .query_map(
        params![user_id, since, upto, skip_offline, limit as i64],
        |row| {
            Ok(PresenceUpdate {
                row: from_row(row)?,
                displayname: row.get(5)?,
                avatar_url: row.get(6)?,
            })
        },
    )?
    .collect()
}

/// A user's presence with the stream position it was stored at.
pub struct PresenceChange {
    pub stream_position: i64,
    pub presence: PresenceRow,
}

/// Every presence stored in `(since, upto]`, oldest first, at most `limit` (what application
/// services are pushed, filtered by their interest).
pub fn changed_between(
    conn: &Connection,
    since: i64,
    upto: i64,
    limit: usize,
) -> rusqlite::Result<Vec<PresenceChange>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS}, p.stream_position FROM presence p
         WHERE p.stream_position > ?1 AND p.stream_position <= ?2
         ORDER BY p.stream_position LIMIT ?3"
    ))?
    .query_map(params![since, upto, limit as i64], |row| {
        Ok(PresenceChange {
            stream_position: row.get(5)?,
            presence: from_row(row)?,
        })
    })?
    .collect()
}

/// Whether two users are both joined to some room.
pub fn share_a_room(conn: &Connection, a: &str, b: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM memberships mine
             JOIN memberships theirs ON theirs.room_id = mine.room_id AND theirs.membership = 'join'
             WHERE mine.user_id = ?1 AND mine.membership = 'join' AND theirs.user_id = ?2)",
    )?
    .query_row([a, b], |row| row.get(0))
}

/// The stored presence of this server's users (accounts here) joined to `room_id`, offline ones
/// left out, at most `limit`.
pub fn local_members_presence(
    conn: &Connection,
    room_id: &str,
    limit: usize,
) -> rusqlite::Result<Vec<PresenceRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM memberships m
         JOIN users u ON u.user_id = m.user_id
         JOIN presence p ON p.user_id = m.user_id
         WHERE m.room_id = ?1 AND m.membership = 'join' AND p.state != 'offline'
         LIMIT ?2"
    ))?
    .query_map(params![room_id, limit as i64], from_row)?
    .collect()
}
