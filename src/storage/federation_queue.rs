//! The outbound federation queue: PDUs and EDUs waiting for each destination, the transaction in
//! flight to it, catch-up rows and backoff (migration `0010_federation_queue.sql`). No Matrix
//! rules here: `services/federation/sender/` decides what goes where.

use rusqlite::{Connection, OptionalExtension, params};

/// A queued PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedPdu {
    pub stream_ordering: i64,
    pub room_id: String,
    pub event_id: String,
}

/// A queued EDU: `json` is the whole EDU (`edu_type` and `content`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEdu {
    pub id: i64,
    pub json: String,
}

/// The newest local event of a room that a catching-up destination still has to get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchUpRow {
    pub room_id: String,
    pub event_id: String,
    pub stream_ordering: i64,
}

/// The transaction being sent to a destination: its ID and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnInFlight {
    pub txn_id: String,
    /// The queued PDUs up to this stream ordering (at most the batch limit of them).
    pub max_pdu: Option<i64>,
    /// The queued EDUs up to this id.
    pub max_edu: Option<i64>,
    /// Catching up: the JSON list of the event IDs it sends instead of queued PDUs.
    pub catch_up: Option<String>,
}

/// Backoff and progress of one destination (Synapse's `destinations` row).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DestinationState {
    pub destination: String,
    pub failure_ts: Option<i64>,
    pub retry_last_ts: i64,
    pub retry_interval: i64,
    pub last_success_ts: Option<i64>,
    pub catching_up: bool,
    pub txn_counter: i64,
    pub txn: Option<TxnInFlight>,
}

/// What `admin federation status` shows for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationStatus {
    pub state: DestinationState,
    pub queued_pdus: i64,
    pub queued_edus: i64,
    pub catch_up_rooms: i64,
}

/// A destination with something to send: when it may be tried next (ms, 0 = now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDestination {
    pub destination: String,
    pub retry_at: i64,
}

/// The servers (the part of the user ID after the first `:`) with a member of `membership`.
pub fn servers_in_room(
    conn: &Connection,
    room_id: &str,
    membership: &str,
) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT DISTINCT substr(user_id, instr(user_id, ':') + 1) FROM memberships
         WHERE room_id = ?1 AND membership = ?2",
    )?
    .query_map([room_id, membership], |row| row.get(0))?
    .collect()
}

/// The servers of everyone joined to a room `user_id` is joined to (the user's own included).
pub fn servers_sharing_a_room(conn: &Connection, user_id: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT DISTINCT substr(theirs.user_id, instr(theirs.user_id, ':') + 1)
         FROM memberships mine
         JOIN memberships theirs ON theirs.room_id = mine.room_id AND theirs.membership = 'join'
         WHERE mine.user_id = ?1 AND mine.membership = 'join'",
    )?
    .query_map([user_id], |row| row.get(0))?
    .collect()
}

pub fn enqueue_pdu(conn: &Connection, destination: &str, pdu: &QueuedPdu) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO federation_outbound_pdus
             (destination, stream_ordering, room_id, event_id) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        destination,
        pdu.stream_ordering,
        pdu.room_id,
        pdu.event_id
    ])?;
    Ok(())
}

/// How many PDUs are queued for `destination`, counting at most `cap + 1`.
pub fn queued_pdus_capped(conn: &Connection, destination: &str, cap: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT count(*) FROM (SELECT 1 FROM federation_outbound_pdus WHERE destination = ?1
         LIMIT ?2)",
    )?
    .query_row(params![destination, cap + 1], |row| row.get(0))
}

/// The stream ordering of the oldest PDU queued for `destination`.
pub fn oldest_queued_pdu_ts(conn: &Connection, destination: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT e.origin_server_ts FROM federation_outbound_pdus q
         JOIN events e ON e.stream_ordering = q.stream_ordering
         WHERE q.destination = ?1 ORDER BY q.stream_ordering LIMIT 1",
    )?
    .query_row([destination], |row| row.get(0))
    .optional()
}

/// Moves the whole PDU backlog of `destination` to catch-up rows (the newest event of each
/// room), forgets the transaction in flight and marks the destination as catching up.
pub fn drop_backlog_to_catch_up(conn: &Connection, destination: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO federation_catch_up (destination, room_id, event_id, stream_ordering)
         SELECT destination, room_id, event_id, max(stream_ordering) FROM federation_outbound_pdus
         WHERE destination = ?1 GROUP BY room_id
         ON CONFLICT (destination, room_id) DO UPDATE SET event_id = excluded.event_id,
             stream_ordering = excluded.stream_ordering
         WHERE excluded.stream_ordering > federation_catch_up.stream_ordering",
    )?
    .execute([destination])?;
    conn.prepare_cached("DELETE FROM federation_outbound_pdus WHERE destination = ?1")?
        .execute([destination])?;
    ensure_destination(conn, destination)?;
    conn.prepare_cached(
        "UPDATE federation_destinations SET catching_up = 1, txn_id = NULL, txn_max_pdu = NULL,
             txn_max_edu = NULL, txn_catch_up = NULL WHERE destination = ?1",
    )?
    .execute([destination])?;
    Ok(())
}

/// Records `pdu` as the newest event of its room for a catching-up destination.
pub fn set_catch_up(conn: &Connection, destination: &str, pdu: &QueuedPdu) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO federation_catch_up (destination, room_id, event_id, stream_ordering)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (destination, room_id) DO UPDATE SET event_id = excluded.event_id,
             stream_ordering = excluded.stream_ordering
         WHERE excluded.stream_ordering > federation_catch_up.stream_ordering",
    )?
    .execute(params![
        destination,
        pdu.room_id,
        pdu.event_id,
        pdu.stream_ordering
    ])?;
    Ok(())
}

/// The oldest catch-up rows of `destination` (at most `limit`).
pub fn catch_up_rows(
    conn: &Connection,
    destination: &str,
    limit: i64,
) -> rusqlite::Result<Vec<CatchUpRow>> {
    conn.prepare_cached(
        "SELECT room_id, event_id, stream_ordering FROM federation_catch_up
         WHERE destination = ?1 ORDER BY stream_ordering LIMIT ?2",
    )?
    .query_map(params![destination, limit], |row| {
        Ok(CatchUpRow {
            room_id: row.get(0)?,
            event_id: row.get(1)?,
            stream_ordering: row.get(2)?,
        })
    })?
    .collect()
}

/// Removes the catch-up rows that still name `event_id` (a newer event of the room stays), and
/// ends catching up when none is left.
pub fn delete_catch_up(
    conn: &Connection,
    destination: &str,
    event_ids: &[String],
) -> rusqlite::Result<()> {
    let mut delete = conn.prepare_cached(
        "DELETE FROM federation_catch_up WHERE destination = ?1 AND event_id = ?2",
    )?;
    for event_id in event_ids {
        delete.execute([destination, event_id])?;
    }
    conn.prepare_cached(
        "UPDATE federation_destinations SET catching_up = 0 WHERE destination = ?1
         AND NOT EXISTS (SELECT 1 FROM federation_catch_up WHERE destination = ?1)",
    )?
    .execute([destination])?;
    Ok(())
}

pub fn enqueue_edu(
    conn: &Connection,
    destination: &str,
    edu_type: &str,
    json: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO federation_outbound_edus (destination, edu_type, content) VALUES (?1, ?2, ?3)",
    )?
    .execute([destination, edu_type, json])?;
    Ok(())
}

/// The first queued PDUs of `destination` (at most `limit`, up to `max` when given), in order.
pub fn queued_pdus(
    conn: &Connection,
    destination: &str,
    max: Option<i64>,
    limit: i64,
) -> rusqlite::Result<Vec<QueuedPdu>> {
    conn.prepare_cached(
        "SELECT stream_ordering, room_id, event_id FROM federation_outbound_pdus
         WHERE destination = ?1 AND stream_ordering <= ?2 ORDER BY stream_ordering LIMIT ?3",
    )?
    .query_map(
        params![destination, max.unwrap_or(i64::MAX), limit],
        |row| {
            Ok(QueuedPdu {
                stream_ordering: row.get(0)?,
                room_id: row.get(1)?,
                event_id: row.get(2)?,
            })
        },
    )?
    .collect()
}

/// The first queued EDUs of `destination` (at most `limit`, up to `max` when given), in order.
pub fn queued_edus(
    conn: &Connection,
    destination: &str,
    max: Option<i64>,
    limit: i64,
) -> rusqlite::Result<Vec<QueuedEdu>> {
    conn.prepare_cached(
        "SELECT id, content FROM federation_outbound_edus
         WHERE destination = ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
    )?
    .query_map(
        params![destination, max.unwrap_or(i64::MAX), limit],
        |row| {
            Ok(QueuedEdu {
                id: row.get(0)?,
                json: row.get(1)?,
            })
        },
    )?
    .collect()
}

/// The PDU JSON of a stored event.
pub fn event_json(conn: &Connection, event_id: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT json FROM events WHERE event_id = ?1")?
        .query_row([event_id], |row| row.get(0))
        .optional()
}

fn ensure_destination(conn: &Connection, destination: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO federation_destinations (destination) VALUES (?1)")?
        .execute([destination])?;
    Ok(())
}

pub fn destination_state(
    conn: &Connection,
    destination: &str,
) -> rusqlite::Result<Option<DestinationState>> {
    conn.prepare_cached(
        "SELECT destination, failure_ts, retry_last_ts, retry_interval, last_success_ts,
             catching_up, txn_counter, txn_id, txn_max_pdu, txn_max_edu, txn_catch_up
         FROM federation_destinations WHERE destination = ?1",
    )?
    .query_row([destination], read_state)
    .optional()
}

fn read_state(row: &rusqlite::Row<'_>) -> rusqlite::Result<DestinationState> {
    let txn_id: Option<String> = row.get(7)?;
    Ok(DestinationState {
        destination: row.get(0)?,
        failure_ts: row.get(1)?,
        retry_last_ts: row.get(2)?,
        retry_interval: row.get(3)?,
        last_success_ts: row.get(4)?,
        catching_up: row.get(5)?,
        txn_counter: row.get(6)?,
        txn: match txn_id {
            Some(txn_id) => Some(TxnInFlight {
                txn_id,
                max_pdu: row.get(8)?,
                max_edu: row.get(9)?,
                catch_up: row.get(10)?,
            }),
            None => None,
        },
    })
}

/// Whether `destination` is catching up (its backlog was dropped).
pub fn is_catching_up(conn: &Connection, destination: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("SELECT catching_up FROM federation_destinations WHERE destination = ?1")?
        .query_row([destination], |row| row.get::<_, bool>(0))
        .optional()?
        .unwrap_or(false))
}

/// Stores the transaction about to be sent (before it is sent: a retry reuses it) and bumps
/// the destination's transaction counter.
pub fn start_txn(conn: &Connection, destination: &str, txn: &TxnInFlight) -> rusqlite::Result<()> {
    ensure_destination(conn, destination)?;
    conn.prepare_cached(
        "UPDATE federation_destinations SET txn_counter = txn_counter + 1, txn_id = ?2,
             txn_max_pdu = ?3, txn_max_edu = ?4, txn_catch_up = ?5
         WHERE destination = ?1",
    )?
    .execute(params![
        destination,
        txn.txn_id,
        txn.max_pdu,
        txn.max_edu,
        txn.catch_up
    ])?;
    Ok(())
}

/// `txn_id` is done with: its contents leave the queue; when the destination acknowledged it
/// (`success`), the backoff is cleared. Nothing happens if `txn_id` is no longer the one in
/// flight (the backlog was dropped meanwhile).
pub fn finish_txn(
    conn: &Connection,
    destination: &str,
    txn_id: &str,
    now: i64,
    success: bool,
) -> rusqlite::Result<bool> {
    let Some(state) = destination_state(conn, destination)? else {
        return Ok(false);
    };
    let Some(txn) = state.txn.filter(|txn| txn.txn_id == txn_id) else {
        return Ok(false);
    };
    if let Some(max) = txn.max_pdu {
        conn.prepare_cached(
            "DELETE FROM federation_outbound_pdus WHERE destination = ?1 AND stream_ordering <= ?2",
        )?
        .execute(params![destination, max])?;
    }
    if let Some(max) = txn.max_edu {
        conn.prepare_cached(
            "DELETE FROM federation_outbound_edus WHERE destination = ?1 AND id <= ?2",
        )?
        .execute(params![destination, max])?;
    }
    if let Some(list) = &txn.catch_up {
        let event_ids: Vec<String> = serde_json::from_str(list).unwrap_or_default();
        delete_catch_up(conn, destination, &event_ids)?;
    }
    conn.prepare_cached(
        "UPDATE federation_destinations SET txn_id = NULL, txn_max_pdu = NULL, txn_max_edu = NULL,
             txn_catch_up = NULL WHERE destination = ?1",
    )?
    .execute([destination])?;
    if success {
        conn.prepare_cached(
            "UPDATE federation_destinations SET failure_ts = NULL, retry_last_ts = 0,
                 retry_interval = 0, last_success_ts = ?2
             WHERE destination = ?1",
        )?
        .execute(params![destination, now])?;
    }
    Ok(true)
}

/// Records a failed attempt: the new backoff interval (Synapse's `set_destination_retry_timings`).
pub fn record_failure(
    conn: &Connection,
    destination: &str,
    now: i64,
    retry_interval: i64,
) -> rusqlite::Result<()> {
    ensure_destination(conn, destination)?;
    conn.prepare_cached(
        "UPDATE federation_destinations SET failure_ts = coalesce(failure_ts, ?2),
             retry_last_ts = ?2, retry_interval = ?3
         WHERE destination = ?1",
    )?
    .execute(params![destination, now, retry_interval])?;
    Ok(())
}

/// Clears the backoff of `destination` (it was heard from); whether it was backing off.
pub fn clear_backoff(conn: &Connection, destination: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE federation_destinations SET failure_ts = NULL, retry_last_ts = 0,
                 retry_interval = 0
             WHERE destination = ?1 AND retry_interval > 0",
        )?
        .execute([destination])?
        > 0)
}

/// The destinations that are backing off now.
pub fn failing_destinations(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached("SELECT destination FROM federation_destinations WHERE retry_interval > 0")?
        .query_map([], |row| row.get(0))?
        .collect()
}

/// Every destination with something queued, and when it may be tried.
pub fn pending_destinations(conn: &Connection) -> rusqlite::Result<Vec<PendingDestination>> {
    conn.prepare_cached(
        "WITH pending(destination) AS (
             SELECT DISTINCT destination FROM federation_outbound_pdus
             UNION SELECT DISTINCT destination FROM federation_outbound_edus
             UNION SELECT DISTINCT destination FROM federation_catch_up)
         SELECT p.destination, coalesce(d.retry_last_ts + d.retry_interval, 0)
         FROM pending p LEFT JOIN federation_destinations d ON d.destination = p.destination",
    )?
    .query_map([], |row| {
        Ok(PendingDestination {
            destination: row.get(0)?,
            retry_at: row.get(1)?,
        })
    })?
    .collect()
}

/// Every destination known to the sender with its counts, for `admin federation status`.
pub fn all_status(conn: &Connection) -> rusqlite::Result<Vec<DestinationStatus>> {
    let mut names: Vec<String> = conn
        .prepare_cached(
            "SELECT destination FROM federation_destinations
             UNION SELECT DISTINCT destination FROM federation_outbound_pdus
             UNION SELECT DISTINCT destination FROM federation_outbound_edus
             UNION SELECT DISTINCT destination FROM federation_catch_up",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for destination in names {
        let state = destination_state(conn, &destination)?.unwrap_or_else(|| DestinationState {
            destination: destination.clone(),
            ..DestinationState::default()
        });
        let count = |sql: &str| -> rusqlite::Result<i64> {
            conn.prepare_cached(sql)?
                .query_row([&destination], |row| row.get(0))
        };
        out.push(DestinationStatus {
            state,
            queued_pdus: count(
                "SELECT count(*) FROM federation_outbound_pdus WHERE destination = ?1",
            )?,
            queued_edus: count(
                "SELECT count(*) FROM federation_outbound_edus WHERE destination = ?1",
            )?,
            catch_up_rooms: count(
                "SELECT count(*) FROM federation_catch_up WHERE destination = ?1",
            )?,
        });
    }
    Ok(out)
}
