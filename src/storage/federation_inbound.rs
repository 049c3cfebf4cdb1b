//! Inbound federation transactions already answered (`federation_inbound_transactions`).

use rusqlite::{Connection, OptionalExtension, params};

/// The answer given to `origin`'s transaction `txn_id`, if it came before.
pub fn answer(conn: &Connection, origin: &str, txn_id: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT response FROM federation_inbound_transactions WHERE origin = ?1 AND txn_id = ?2",
    )?
    .query_row(params![origin, txn_id], |row| row.get(0))
    .optional()
}

/// Records the answer to a transaction and forgets those older than `keep_after_ts`.
pub fn remember(
    conn: &Connection,
    origin: &str,
    txn_id: &str,
    response: &str,
    now_ts: i64,
    keep_after_ts: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO federation_inbound_transactions
             (origin, txn_id, response, received_ts)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![origin, txn_id, response, now_ts])?;
    conn.prepare_cached("DELETE FROM federation_inbound_transactions WHERE received_ts < ?1")?
        .execute(params![keep_after_ts])?;
    Ok(())
}
