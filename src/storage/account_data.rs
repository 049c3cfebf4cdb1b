//! Tables `account_data`, `receipts` and `filters`.

use rusqlite::{Connection, OptionalExtension, params};

use super::rooms::next_stream_position;

/// Stores account data (`room_id` empty for global data); returns its stream position.
pub fn put(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
    data_type: &str,
    content: &str,
) -> rusqlite::Result<i64> {
    let position = next_stream_position(conn)?;
    conn.prepare_cached(
        "INSERT INTO account_data (user_id, room_id, type, content, stream_position) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content,
             stream_position = excluded.stream_position",
    )?
    .execute(params![user_id, room_id, data_type, content, position])?;
    Ok(position)
}

pub fn get(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
    data_type: &str,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT content FROM account_data WHERE user_id = ?1 AND room_id = ?2 AND type = ?3",
    )?
    .query_row([user_id, room_id, data_type], |row| row.get(0))
    .optional()
}

/// One account data entry of a user, as stored.
pub struct AccountDataRow {
    /// Empty for global account data.
    pub room_id: String,
    pub data_type: String,
    /// The content's JSON.
    pub content: String,
}

/// The entries changed after `since`, oldest first.
pub fn changed_since(
    conn: &Connection,
    user_id: &str,
    since: i64,
) -> rusqlite::Result<Vec<AccountDataRow>> {
    conn.prepare_cached(
        "SELECT room_id, type, content FROM account_data WHERE user_id = ?1 AND stream_position > ?2 ORDER BY stream_position",
    )?
    .query_map(params![user_id, since], |row| {
        Ok(AccountDataRow {
            room_id: row.get(0)?,
            data_type: row.get(1)?,
            content: row.get(2)?,
        })
    })?
    .collect()
}

// ---- receipts ----

pub struct ReceiptRow {
    pub user_id: String,
    pub receipt_type: String,
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
}

pub fn put_receipt(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
    receipt_type: &str,
    thread_id: &str,
    event_id: &str,
    ts: i64,
) -> rusqlite::Result<i64> {
    let position = next_stream_position(conn)?;
    conn.prepare_cached(
        "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, stream_position)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET event_id = excluded.event_id,
             ts = excluded.ts, stream_position = excluded.stream_position",
    )?
    .execute(params![room_id, user_id, receipt_type, thread_id, event_id, ts, position])?;
    Ok(position)
}

/// Receipts of a room changed after `since` (all of them for `since` = 0).
pub fn receipts_since(
    conn: &Connection,
    room_id: &str,
    since: i64,
) -> rusqlite::Result<Vec<ReceiptRow>> {
    conn.prepare_cached(
        "SELECT user_id, receipt_type, thread_id, event_id, ts FROM receipts WHERE room_id = ?1 AND stream_position > ?2",
    )?
    .query_map(params![room_id, since], |row| {
        Ok(ReceiptRow { user_id: row.get(0)?, receipt_type: row.get(1)?, thread_id: row.get(2)?, event_id: row.get(3)?, ts: row.get(4)? })
    })?
    .collect()
}

// ---- filters ----

pub fn insert_filter(conn: &Connection, user_id: &str, json: &str) -> rusqlite::Result<i64> {
    let id: i64 = conn
        .prepare_cached("SELECT coalesce(max(filter_id), -1) + 1 FROM filters WHERE user_id = ?1")?
        .query_row([user_id], |row| row.get(0))?;
    conn.prepare_cached("INSERT INTO filters (user_id, filter_id, json) VALUES (?1, ?2, ?3)")?
        .execute(params![user_id, id, json])?;
    Ok(id)
}

pub fn get_filter(
    conn: &Connection,
    user_id: &str,
    filter_id: i64,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT json FROM filters WHERE user_id = ?1 AND filter_id = ?2")?
        .query_row(params![user_id, filter_id], |row| row.get(0))
        .optional()
}
