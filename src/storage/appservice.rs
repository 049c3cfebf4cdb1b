//! The per-service push state of application services (`appservice_queue`, migration 0019).

use rusqlite::{Connection, OptionalExtension, params};

use super::rooms::EventRow;

/// One service's row.
#[derive(Debug, Clone)]
pub struct QueueRow {
    pub position: i64,
    /// `(txn_id, body JSON, position once delivered)`.
    pub pending: Option<(i64, String, i64)>,
    pub last_txn_ts: Option<i64>,
    pub failing_since: Option<i64>,
    pub retry_at: Option<i64>,
    pub backoff_ms: i64,
}

/// The row of a service, created at `position` (the stream position now: a new service gets
/// what happens from its registration on, as with Synapse) when missing.
pub fn get_or_create(conn: &Connection, id: &str, position: i64) -> rusqlite::Result<QueueRow> {
    conn.execute(
        "INSERT OR IGNORE INTO appservice_queue (id, position) VALUES (?1, ?2)",
        params![id, position],
    )?;
    get(conn, id).map(|row| row.expect("inserted above"))
}

pub fn get(conn: &Connection, id: &str) -> rusqlite::Result<Option<QueueRow>> {
    conn.prepare_cached(
        "SELECT position, pending_txn_id, pending_body, pending_position, last_txn_ts, \
         failing_since, retry_at, backoff_ms FROM appservice_queue WHERE id = ?1",
    )?
    .query_row([id], |row| {
        let pending = match (row.get(1)?, row.get(2)?, row.get(3)?) {
            (Some(txn), Some(events), Some(position)) => Some((txn, events, position)),
            _ => None,
        };
        Ok(QueueRow {
            position: row.get(0)?,
            pending,
            last_txn_ts: row.get(4)?,
            failing_since: row.get(5)?,
            retry_at: row.get(6)?,
            backoff_ms: row.get(7)?,
        })
    })
    .optional()
}

/// Events stored after `position` (live ones: backfilled events have negative positions and
/// are history, never pushed), oldest first.
pub fn events_after(
    conn: &Connection,
    position: i64,
    limit: i64,
) -> rusqlite::Result<Vec<EventRow>> {
    let mut statement = conn.prepare_cached(
        "SELECT stream_ordering, event_id, room_id, sender, topological_ordering, state_group, \
         redacted_by, json FROM events WHERE stream_ordering > ?1 \
         ORDER BY stream_ordering LIMIT ?2",
    )?;
    let rows = statement.query_map(params![position.max(0), limit], |row| {
        Ok(EventRow {
            stream_ordering: row.get(0)?,
            event_id: row.get(1)?,
            room_id: row.get(2)?,
            sender: row.get(3)?,
            topological_ordering: row.get(4)?,
            state_group: row.get(5)?,
            redacted_by: row.get(6)?,
            json: row.get(7)?,
        })
    })?;
    rows.collect()
}

/// How many events are stored after `position`: the backlog not examined yet.
pub fn events_count_after(conn: &Connection, position: i64) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT count(*) FROM events WHERE stream_ordering > ?1",
        [position.max(0)],
        |row| row.get(0),
    )
}

/// The local aliases of a room.
pub fn room_aliases(conn: &Connection, room_id: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached("SELECT alias FROM room_aliases WHERE room_id = ?1")?
        .query_map([room_id], |row| row.get(0))?
        .collect()
}

/// A receipt as pushed to application services.
pub struct Receipt {
    pub room_id: String,
    pub user_id: String,
    pub receipt_type: String,
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
}

/// The public receipts (not `m.read.private`) stored in `(from, to]`.
pub fn receipts_between(conn: &Connection, from: i64, to: i64) -> rusqlite::Result<Vec<Receipt>> {
    conn.prepare_cached(
        "SELECT room_id, user_id, receipt_type, thread_id, event_id, ts FROM receipts \
         WHERE stream_position > ?1 AND stream_position <= ?2 \
         AND receipt_type != 'm.read.private' ORDER BY stream_position",
    )?
    .query_map(params![from, to], |row| {
        Ok(Receipt {
            room_id: row.get(0)?,
            user_id: row.get(1)?,
            receipt_type: row.get(2)?,
            thread_id: row.get(3)?,
            event_id: row.get(4)?,
            ts: row.get(5)?,
        })
    })?
    .collect()
}

/// Stores the next transaction before it is sent; its ID.
pub fn set_pending(
    conn: &Connection,
    id: &str,
    body: &str,
    position: i64,
) -> rusqlite::Result<i64> {
    conn.query_row(
        "UPDATE appservice_queue SET pending_txn_id = next_txn_id, next_txn_id = next_txn_id + 1, \
         pending_body = ?2, pending_position = ?3 WHERE id = ?1 RETURNING pending_txn_id",
        params![id, body, position],
        |row| row.get(0),
    )
}

/// The pending transaction was delivered: the cursor moves past it and the failures end.
pub fn delivered(conn: &Connection, id: &str, txn_id: i64, now: i64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE appservice_queue SET position = pending_position, pending_txn_id = NULL, \
         pending_body = NULL, pending_position = NULL, last_txn_ts = ?3, \
         failing_since = NULL, retry_at = NULL, backoff_ms = 0 \
         WHERE id = ?1 AND pending_txn_id = ?2",
        params![id, txn_id, now],
    )?;
    Ok(())
}

/// A failed attempt: no new one before `retry_at`.
pub fn failed(
    conn: &Connection,
    id: &str,
    now: i64,
    retry_at: i64,
    backoff_ms: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE appservice_queue SET failing_since = coalesce(failing_since, ?2), \
         retry_at = ?3, backoff_ms = ?4 WHERE id = ?1",
        params![id, now, retry_at, backoff_ms],
    )?;
    Ok(())
}

/// A to-device message waiting in a local device's inbox.
pub struct InboxMessage {
    pub stream_position: i64,
    pub user_id: String,
    pub device_id: String,
    pub sender: String,
    pub event_type: String,
    /// JSON object.
    pub content: String,
}

/// The to-device messages stored in `(from, to]` for any local device, oldest first, at most
/// `limit`. They stay in the inbox: the device may also sync them (as with Synapse).
pub fn to_device_between(
    conn: &Connection,
    from: i64,
    to: i64,
    limit: i64,
) -> rusqlite::Result<Vec<InboxMessage>> {
    conn.prepare_cached(
        "SELECT stream_position, user_id, device_id, sender, type, content FROM to_device_inbox \
         WHERE stream_position > ?1 AND stream_position <= ?2 ORDER BY stream_position LIMIT ?3",
    )?
    .query_map(params![from, to, limit], |row| {
        Ok(InboxMessage {
            stream_position: row.get(0)?,
            user_id: row.get(1)?,
            device_id: row.get(2)?,
            sender: row.get(3)?,
            event_type: row.get(4)?,
            content: row.get(5)?,
        })
    })?
    .collect()
}

/// The users whose device lists changed in `(from, to]` in a way everyone sharing a room with
/// them may see (not the signatures only their signer sees).
pub fn device_list_changes_between(
    conn: &Connection,
    from: i64,
    to: i64,
) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT DISTINCT user_id FROM device_list_changes \
         WHERE stream_position > ?1 AND stream_position <= ?2 AND visible_to IS NULL \
         ORDER BY user_id",
    )?
    .query_map(params![from, to], |row| row.get(0))?
    .collect()
}

/// How many unclaimed one-time keys of an algorithm a device has.
pub struct DeviceKeyCount {
    pub device_id: String,
    /// `None` (count 0) for a device without any.
    pub algorithm: Option<String>,
    pub count: i64,
}

/// The unclaimed one-time keys of each device of the user, counted by algorithm; a device
/// without any has one row with no algorithm (MSC3202 lists it with no counts).
pub fn one_time_key_counts(
    conn: &Connection,
    user_id: &str,
) -> rusqlite::Result<Vec<DeviceKeyCount>> {
    conn.prepare_cached(
        "SELECT d.device_id, k.algorithm, count(k.key_id) FROM devices d \
         LEFT JOIN one_time_keys k ON k.user_id = d.user_id AND k.device_id = d.device_id \
         WHERE d.user_id = ?1 GROUP BY d.device_id, k.algorithm ORDER BY d.device_id",
    )?
    .query_map([user_id], |row| {
        Ok(DeviceKeyCount {
            device_id: row.get(0)?,
            algorithm: row.get(1)?,
            count: row.get(2)?,
        })
    })?
    .collect()
}

/// The algorithm of an unused fallback key of a device.
pub struct DeviceFallbackKey {
    pub device_id: String,
    /// `None` for a device without any.
    pub algorithm: Option<String>,
}

/// The unused fallback keys of each device of the user; a device without any has one row with
/// no algorithm.
pub fn unused_fallback_key_types(
    conn: &Connection,
    user_id: &str,
) -> rusqlite::Result<Vec<DeviceFallbackKey>> {
    conn.prepare_cached(
        "SELECT d.device_id, f.algorithm FROM devices d \
         LEFT JOIN fallback_keys f ON f.user_id = d.user_id AND f.device_id = d.device_id \
         AND f.used = 0 WHERE d.user_id = ?1 ORDER BY d.device_id, f.algorithm",
    )?
    .query_map([user_id], |row| {
        Ok(DeviceFallbackKey {
            device_id: row.get(0)?,
            algorithm: row.get(1)?,
        })
    })?
    .collect()
}
