//! Delayed events (MSC4140; `delayed_events` and `delayed_event_transactions`, migration
//! `0023_delayed_events.sql`). Every statement that changes what is due answers the new earliest
//! due time ([`next_due`]), which the sending task sleeps until.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

/// A scheduled event.
#[derive(Debug, Clone)]
pub struct DelayedRow {
    pub delay_id: String,
    pub user_id: String,
    pub device_id: String,
    pub room_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub content: String,
    pub delay_ms: i64,
    pub send_ts: i64,
}

/// What a new delayed event is.
pub struct NewDelayed<'a> {
    pub delay_id: &'a str,
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub room_id: &'a str,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub content: &'a str,
    pub delay_ms: i64,
    pub now_ms: i64,
}

const COLUMNS: &str =
    "delay_id, user_id, device_id, room_id, event_type, state_key, content, delay_ms, send_ts";

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DelayedRow> {
    Ok(DelayedRow {
        delay_id: row.get(0)?,
        user_id: row.get(1)?,
        device_id: row.get(2)?,
        room_id: row.get(3)?,
        event_type: row.get(4)?,
        state_key: row.get(5)?,
        content: row.get(6)?,
        delay_ms: row.get(7)?,
        send_ts: row.get(8)?,
    })
}

/// The earliest time a delayed event not yet taken is due, if any.
pub fn next_due(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT MIN(send_ts) FROM delayed_events WHERE processing = 0")?
        .query_row([], |row| row.get(0))
}

/// How many delayed events a user has (taken ones included, as in Synapse).
pub fn count_for_user(conn: &Connection, user_id: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT COUNT(*) FROM delayed_events WHERE user_id = ?1")?
        .query_row([user_id], |row| row.get(0))
}

/// The due time after which the user's count drops below `limit` again: the latest of their
/// earliest `count - limit + 1` events.
pub fn due_when_under(
    conn: &Connection,
    user_id: &str,
    count: i64,
    limit: i64,
) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT MAX(send_ts) FROM (SELECT send_ts FROM delayed_events WHERE user_id = ?1 \
         ORDER BY send_ts LIMIT ?2)",
    )?
    .query_row(params![user_id, count - limit + 1], |row| row.get(0))
}

/// Stores a new delayed event, with the stream position it was scheduled at.
pub fn insert(tx: &Transaction<'_>, new: &NewDelayed<'_>) -> rusqlite::Result<()> {
    let position = super::rooms::current_stream_position(tx)?;
    tx.prepare_cached(
        "INSERT INTO delayed_events (delay_id, user_id, device_id, room_id, event_type, \
         state_key, content, delay_ms, send_ts, stream_at_creation) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        new.delay_id,
        new.user_id,
        new.device_id,
        new.room_id,
        new.event_type,
        new.state_key,
        new.content,
        new.delay_ms,
        new.now_ms.saturating_add(new.delay_ms),
        position
    ])?;
    Ok(())
}

/// The `delay_id` an earlier scheduling request with this transaction ID got.
pub fn txn_delay_id(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    txn_id: &str,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT delay_id FROM delayed_event_transactions \
         WHERE user_id = ?1 AND device_id = ?2 AND txn_id = ?3",
    )?
    .query_row([user_id, device_id, txn_id], |row| row.get(0))
    .optional()
}

pub fn insert_txn(
    tx: &Transaction<'_>,
    user_id: &str,
    device_id: &str,
    txn_id: &str,
    delay_id: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO delayed_event_transactions (user_id, device_id, txn_id, delay_id) \
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute([user_id, device_id, txn_id, delay_id])?;
    Ok(())
}

/// A user's delayed events not yet taken for sending, soonest first.
pub fn list_for_user(conn: &Connection, user_id: &str) -> rusqlite::Result<Vec<DelayedRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM delayed_events WHERE user_id = ?1 AND processing = 0 \
         ORDER BY send_ts"
    ))?
    .query_map([user_id], from_row)?
    .collect()
}

/// One of a user's delayed events not yet taken for sending.
pub fn get_for_user(
    conn: &Connection,
    delay_id: &str,
    user_id: &str,
) -> rusqlite::Result<Option<DelayedRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM delayed_events \
         WHERE delay_id = ?1 AND user_id = ?2 AND processing = 0"
    ))?
    .query_row([delay_id, user_id], from_row)
    .optional()
}

/// Deletes a delayed event not yet taken; whether there was one.
pub fn cancel(tx: &Transaction<'_>, delay_id: &str) -> rusqlite::Result<bool> {
    let deleted = tx
        .prepare_cached("DELETE FROM delayed_events WHERE delay_id = ?1 AND processing = 0")?
        .execute([delay_id])?;
    Ok(deleted > 0)
}

/// Deletes every delayed event of a user not yet taken (the account is being deactivated).
pub fn cancel_for_user(tx: &Transaction<'_>, user_id: &str) -> rusqlite::Result<usize> {
    tx.prepare_cached("DELETE FROM delayed_events WHERE user_id = ?1 AND processing = 0")?
        .execute([user_id])
}

/// Starts a delayed event's delay again from `now_ms`; whether there was one not yet taken.
pub fn restart(tx: &Transaction<'_>, delay_id: &str, now_ms: i64) -> rusqlite::Result<bool> {
    let updated = tx
        .prepare_cached(
            "UPDATE delayed_events SET send_ts = ?2 + delay_ms \
             WHERE delay_id = ?1 AND processing = 0",
        )?
        .execute(params![delay_id, now_ms])?;
    Ok(updated > 0)
}

/// Takes one delayed event for sending now, if it is not taken yet.
pub fn take(tx: &Transaction<'_>, delay_id: &str) -> rusqlite::Result<Option<DelayedRow>> {
    tx.prepare_cached(&format!(
        "UPDATE delayed_events SET processing = 1 WHERE delay_id = ?1 AND processing = 0 \
         RETURNING {COLUMNS}"
    ))?
    .query_row([delay_id], from_row)
    .optional()
}

/// Takes every delayed event due at `now_ms`, soonest first.
pub fn take_due(tx: &Transaction<'_>, now_ms: i64) -> rusqlite::Result<Vec<DelayedRow>> {
    let mut due: Vec<DelayedRow> = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM delayed_events WHERE processing = 0 AND send_ts <= ?1"
        ))?
        .query_map([now_ms], from_row)?
        .collect::<rusqlite::Result<_>>()?;
    tx.prepare_cached(
        "UPDATE delayed_events SET processing = 1 WHERE processing = 0 AND send_ts <= ?1",
    )?
    .execute([now_ms])?;
    due.sort_by(|a, b| (a.send_ts, &a.delay_id).cmp(&(b.send_ts, &b.delay_id)));
    Ok(due)
}

/// Puts a taken delayed event back, due at `send_ts` (its send was refused for a while).
pub fn release(tx: &Transaction<'_>, delay_id: &str, send_ts: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE delayed_events SET processing = 0, send_ts = ?2 WHERE delay_id = ?1",
    )?
    .execute(params![delay_id, send_ts])?;
    Ok(())
}

/// Deletes a delayed event that was sent (or could not be).
pub fn delete(tx: &Transaction<'_>, delay_id: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM delayed_events WHERE delay_id = ?1")?
        .execute([delay_id])?;
    Ok(())
}

/// At start-up: the events a stop cut off while they were being sent are due now.
pub fn release_all_taken(tx: &Transaction<'_>, now_ms: i64) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "UPDATE delayed_events SET processing = 0, send_ts = MIN(send_ts, ?1) \
         WHERE processing = 1",
    )?
    .execute([now_ms])
}

/// Whether any delayed state event waits (only then do state changes need looking at).
pub fn any_pending_state(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM delayed_events \
         WHERE state_key IS NOT NULL AND processing = 0)",
    )?
    .query_row([], |row| row.get(0))
}

/// Delayed state events whose state someone else has set since they were scheduled: the room's
/// current event of that type and state key came later into the stream and has another sender
/// (Synapse cancels on every such change of the current state).
const SUPERSEDED: &str = "SELECT d.delay_id FROM delayed_events d \
     JOIN current_state c ON c.room_id = d.room_id AND c.type = d.event_type \
         AND c.state_key = d.state_key \
     JOIN events e ON e.event_id = c.event_id \
     WHERE d.state_key IS NOT NULL AND d.processing = 0 \
         AND e.stream_ordering > d.stream_at_creation AND e.sender <> d.user_id";

/// The delay IDs of [`SUPERSEDED`] delayed state events.
pub fn superseded(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(SUPERSEDED)?
        .query_map([], |row| row.get(0))?
        .collect()
}

/// Deletes the [`SUPERSEDED`] delayed state events; how many.
pub fn cancel_superseded(tx: &Transaction<'_>) -> rusqlite::Result<usize> {
    tx.prepare_cached(&format!(
        "DELETE FROM delayed_events WHERE delay_id IN ({SUPERSEDED})"
    ))?
    .execute([])
}
