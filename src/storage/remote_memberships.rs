//! Local users' memberships in rooms this server does not hold (`remote_memberships`): invites
//! from other servers, knocks through them, and the leaves that end them.
//!
//! A row (migration `0012_remote_memberships.sql`) holds the member PDU, the stripped state the
//! other server gave and the servers to ask; /sync shows the newest, by stream position, of this
//! row and the user's row in `memberships`.

use rusqlite::{Connection, OptionalExtension, params};

/// One row of `remote_memberships`.
#[derive(Debug, Clone)]
pub struct RemoteMembership {
    pub room_id: String,
    pub user_id: String,
    pub membership: String,
    pub event_id: String,
    pub room_version: String,
    pub event_json: String,
    /// JSON array of stripped state events.
    pub stripped_state: String,
    /// JSON array of server names.
    pub servers: String,
    pub stream_ordering: i64,
}

const COLUMNS: &str = "room_id, user_id, membership, event_id, room_version, event_json, \
                       stripped_state, servers, stream_ordering";

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RemoteMembership> {
    Ok(RemoteMembership {
        room_id: row.get(0)?,
        user_id: row.get(1)?,
        membership: row.get(2)?,
        event_id: row.get(3)?,
        room_version: row.get(4)?,
        event_json: row.get(5)?,
        stripped_state: row.get(6)?,
        servers: row.get(7)?,
        stream_ordering: row.get(8)?,
    })
}

/// Stores (or replaces) the user's membership in the room; it is no longer forgotten.
pub fn put(conn: &Connection, row: &RemoteMembership) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO remote_memberships ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,
             event_id = excluded.event_id, room_version = excluded.room_version,
             event_json = excluded.event_json, stripped_state = excluded.stripped_state,
             servers = excluded.servers, stream_ordering = excluded.stream_ordering,
             forgotten = 0"
    ))?
    .execute(params![
        row.room_id,
        row.user_id,
        row.membership,
        row.event_id,
        row.room_version,
        row.event_json,
        row.stripped_state,
        row.servers,
        row.stream_ordering,
    ])?;
    Ok(())
}

/// The user's membership row for the room, forgotten or not.
pub fn get(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
) -> rusqlite::Result<Option<RemoteMembership>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM remote_memberships WHERE room_id = ?1 AND user_id = ?2"
    ))?
    .query_row([room_id, user_id], from_row)
    .optional()
}

/// Every row of the user that is not forgotten.
pub fn of_user(conn: &Connection, user_id: &str) -> rusqlite::Result<Vec<RemoteMembership>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM remote_memberships WHERE user_id = ?1 AND forgotten = 0"
    ))?
    .query_map([user_id], from_row)?
    .collect()
}

/// Hides a left room from the user's syncs; `false` unless the row is a leave.
pub fn forget(conn: &Connection, room_id: &str, user_id: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "UPDATE remote_memberships SET forgotten = 1
         WHERE room_id = ?1 AND user_id = ?2 AND membership = 'leave'",
        [room_id, user_id],
    )? == 1)
}
