//! The writes of a room upgrade outside the event graph: local aliases and the room directory
//! listing move from the old room to its replacement.

use rusqlite::{Connection, OptionalExtension, params};

/// Points every local alias of `from` at `to`; returns the aliases moved, sorted.
pub fn move_aliases(conn: &Connection, from: &str, to: &str) -> rusqlite::Result<Vec<String>> {
    let mut aliases: Vec<String> = conn
        .prepare_cached("UPDATE room_aliases SET room_id = ?2 WHERE room_id = ?1 RETURNING alias")?
        .query_map(params![from, to], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    aliases.sort();
    Ok(aliases)
}

/// Whether the room is listed in the room directory.
pub fn is_published(conn: &Connection, room_id: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("SELECT published FROM rooms WHERE room_id = ?1")?
        .query_row([room_id], |row| row.get::<_, bool>(0))
        .optional()?
        .unwrap_or(false))
}

/// The newest event of a room (its latest forward extremity by depth).
pub fn latest_event(conn: &Connection, room_id: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT event_id FROM events WHERE room_id = ?1
         ORDER BY topological_ordering DESC, stream_ordering DESC LIMIT 1",
    )?
    .query_row([room_id], |row| row.get(0))
    .optional()
}
