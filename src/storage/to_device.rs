//! Tables `to_device_inbox` and `to_device_transactions`.

use rusqlite::{Connection, params};

use super::rooms::next_stream_position;

/// Records a `/sendToDevice` transaction; `false` when it was seen before (a retry).
pub fn claim_transaction(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    txn_id: &str,
) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO to_device_transactions (user_id, device_id, txn_id) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
        )?
        .execute([user_id, device_id, txn_id])?
        == 1)
}

/// Device IDs of a local user (the recipients of a `*` message).
pub fn device_ids(conn: &Connection, user_id: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached("SELECT device_id FROM devices WHERE user_id = ?1")?
        .query_map([user_id], |row| row.get(0))?
        .collect()
}

pub fn device_exists(conn: &Connection, user_id: &str, device_id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM devices WHERE user_id = ?1 AND device_id = ?2")?
        .exists([user_id, device_id])
}

/// Queues a message for a local device; returns its stream position.
pub fn put_inbox(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    sender: &str,
    event_type: &str,
    content: &str,
) -> rusqlite::Result<i64> {
    let position = next_stream_position(conn)?;
    conn.prepare_cached(
        "INSERT INTO to_device_inbox (stream_position, user_id, device_id, sender, type, content)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        position, user_id, device_id, sender, event_type, content
    ])?;
    Ok(position)
}

pub struct InboxRow {
    pub stream_position: i64,
    pub sender: String,
    pub event_type: String,
    pub content: String,
}

/// The device's messages in `(after, upto]`, oldest first, at most `limit`.
pub fn inbox_between(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    after: i64,
    upto: i64,
    limit: usize,
) -> rusqlite::Result<Vec<InboxRow>> {
    conn.prepare_cached(
        "SELECT stream_position, sender, type, content FROM to_device_inbox
         WHERE user_id = ?1 AND device_id = ?2 AND stream_position > ?3 AND stream_position <= ?4
         ORDER BY stream_position LIMIT ?5",
    )?
    .query_map(
        params![user_id, device_id, after, upto, limit as i64],
        |row| {
            Ok(InboxRow {
                stream_position: row.get(0)?,
                sender: row.get(1)?,
                event_type: row.get(2)?,
                content: row.get(3)?,
            })
        },
    )?
    .collect()
}

/// Whether the device has messages at or before `upto` (that a sync from `upto` acknowledges).
pub fn has_inbox_upto(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    upto: i64,
) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT 1 FROM to_device_inbox WHERE user_id = ?1 AND device_id = ?2 AND stream_position <= ?3",
    )?
    .exists(params![user_id, device_id, upto])
}

/// Deletes the device's messages at or before `upto`: the client has them.
pub fn delete_inbox_upto(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    upto: i64,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM to_device_inbox WHERE user_id = ?1 AND device_id = ?2 AND stream_position <= ?3",
    )?
    .execute(params![user_id, device_id, upto])
}
