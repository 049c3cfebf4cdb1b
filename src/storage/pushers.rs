//! Pushers (`0017_push.sql`) and the reads of push delivery and `/notifications`: the events of
//! a user's rooms that may notify them, in stream order.

use rusqlite::{Connection, params};

/// One pusher as delivery needs it.
#[derive(Debug, Clone)]
pub struct PusherRow {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    /// The pusher as the client set it (ruma's `Pusher` JSON).
    pub pusher: String,
    pub url: String,
    pub pushkey_ts: i64,
    pub last_stream_ordering: i64,
    pub failing_since: Option<i64>,
    pub retry_at: Option<i64>,
    pub backoff_ms: i64,
}

const COLUMNS: &str = "user_id, app_id, pushkey, pusher, url, pushkey_ts, last_stream_ordering,
                       failing_since, retry_at, backoff_ms";

fn row_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<PusherRow> {
    Ok(PusherRow {
        user_id: row.get(0)?,
        app_id: row.get(1)?,
        pushkey: row.get(2)?,
        pusher: row.get(3)?,
        url: row.get(4)?,
        pushkey_ts: row.get(5)?,
        last_stream_ordering: row.get(6)?,
        failing_since: row.get(7)?,
        retry_at: row.get(8)?,
        backoff_ms: row.get(9)?,
    })
}

/// What `POST /pushers/set` stores.
pub struct NewPusher<'a> {
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub app_id: &'a str,
    pub pushkey: &'a str,
    pub pusher: &'a str,
    pub url: &'a str,
    pub now_ms: i64,
    /// Where delivery starts for a new pusher: the current stream position (nothing older is
    /// pushed). A pusher set again keeps its position.
    pub position: i64,
}

/// Adds or replaces the user's pusher `(app_id, pushkey)`; unless `append`, the same pusher of
/// other users is removed (the spec's `append: false`, as Synapse). A replaced pusher keeps its
/// delivery position and starts afresh from any backoff.
pub fn set(conn: &Connection, pusher: &NewPusher<'_>, append: bool) -> rusqlite::Result<()> {
    if !append {
        conn.execute(
            "DELETE FROM pushers WHERE app_id = ?1 AND pushkey = ?2 AND user_id != ?3",
            [pusher.app_id, pusher.pushkey, pusher.user_id],
        )?;
    }
    conn.execute(
        "INSERT INTO pushers (user_id, device_id, app_id, pushkey, pusher, url, pushkey_ts,
                              last_stream_ordering)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET
             device_id = excluded.device_id, pusher = excluded.pusher, url = excluded.url,
             pushkey_ts = excluded.pushkey_ts, failing_since = NULL, retry_at = NULL,
             backoff_ms = 0",
        params![
            pusher.user_id,
            pusher.device_id,
            pusher.app_id,
            pusher.pushkey,
            pusher.pusher,
            pusher.url,
            pusher.now_ms,
            pusher.position
        ],
    )?;
    Ok(())
}

/// Removes one pusher of the user; whether it existed.
pub fn delete(
    conn: &Connection,
    user_id: &str,
    app_id: &str,
    pushkey: &str,
) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "DELETE FROM pushers WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3",
        [user_id, app_id, pushkey],
    )? == 1)
}

/// The user's pushers as set (`GET /pushers`), oldest first.
pub fn of_user(conn: &Connection, user_id: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached("SELECT pusher FROM pushers WHERE user_id = ?1 ORDER BY rowid")?
        .query_map([user_id], |row| row.get(0))?
        .collect()
}

/// Every pusher (delivery looks at them all after each commit: an appliance has few).
pub fn all(conn: &Connection) -> rusqlite::Result<Vec<PusherRow>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM pushers"))?
        .query_map([], row_of)?
        .collect()
}

/// Records that everything up to `position` was delivered (or needs no push) and clears any
/// backoff. Whether the pusher still exists. Never moves the position back.
pub fn advance(
    conn: &Connection,
    user_id: &str,
    app_id: &str,
    pushkey: &str,
    position: i64,
) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "UPDATE pushers SET last_stream_ordering = max(last_stream_ordering, ?4),
             failing_since = NULL, retry_at = NULL, backoff_ms = 0
         WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3",
        params![user_id, app_id, pushkey, position],
    )? == 1)
}

/// Moves the position over events that needed no push; leaves any backoff as it is.
pub fn skip_to(
    conn: &Connection,
    user_id: &str,
    app_id: &str,
    pushkey: &str,
    position: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE pushers SET last_stream_ordering = max(last_stream_ordering, ?4)
         WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3",
    )?
    .execute(params![user_id, app_id, pushkey, position])?;
    Ok(())
}

/// Records a failed delivery: the next attempt is not before `retry_at`.
pub fn set_failing(
    conn: &Connection,
    user_id: &str,
    app_id: &str,
    pushkey: &str,
    failing_since: i64,
    retry_at: i64,
    backoff_ms: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE pushers SET failing_since = ?4, retry_at = ?5, backoff_ms = ?6
         WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3",
        params![
            user_id,
            app_id,
            pushkey,
            failing_since,
            retry_at,
            backoff_ms
        ],
    )?;
    Ok(())
}

/// An event that may notify a user: in a room they are joined to, after their join, or the
/// invite of the user; never the user's own, never redacted.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub stream_ordering: i64,
    pub room_id: String,
    pub event_id: String,
    pub origin_server_ts: i64,
}

fn candidate_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<Candidate> {
    Ok(Candidate {
        stream_ordering: row.get(0)?,
        room_id: row.get(1)?,
        event_id: row.get(2)?,
        origin_server_ts: row.get(3)?,
    })
}

/// The candidates in `(above, below)`, the oldest or the newest `limit` of them. Each joined room
/// is read on its own (a bounded range scan of its stream index) and the rooms merged here: one
/// query over all rooms would sort the user's whole history to find the newest few.
fn candidates(
    conn: &Connection,
    user_id: &str,
    above: i64,
    below: i64,
    limit: usize,
    newest_first: bool,
) -> rusqlite::Result<Vec<Candidate>> {
    let rooms: Vec<(String, i64)> = conn
        .prepare_cached(
            "SELECT room_id, stream_ordering FROM memberships
             WHERE user_id = ?1 AND membership = 'join'",
        )?
        .query_map([user_id], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let order = if newest_first { "DESC" } else { "ASC" };
    let mut in_room = conn.prepare_cached(&format!(
        "SELECT stream_ordering, room_id, event_id, origin_server_ts FROM events
         WHERE room_id = ?1 AND stream_ordering > ?2 AND stream_ordering < ?3
           AND sender != ?4 AND redacted_by IS NULL
         ORDER BY stream_ordering {order} LIMIT ?5"
    ))?;
    let mut found = Vec::new();
    for (room_id, joined_at) in rooms {
        // Only what came after the user's join (their latest membership event).
        let rows = in_room.query_map(
            params![room_id, above.max(joined_at), below, user_id, limit as i64],
            candidate_of,
        )?;
        for row in rows {
            found.push(row?);
        }
    }
    let invites = conn
        .prepare_cached(
            "SELECT e.stream_ordering, e.room_id, e.event_id, e.origin_server_ts
             FROM memberships m JOIN events e ON e.event_id = m.event_id
             WHERE m.user_id = ?1 AND m.membership = 'invite'
               AND e.stream_ordering > ?2 AND e.stream_ordering < ?3 AND e.sender != ?1",
        )?
        .query_map(params![user_id, above, below], candidate_of)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    found.extend(invites);
    found.sort_by_key(|candidate| candidate.stream_ordering);
    if newest_first {
        found.reverse();
    }
    found.truncate(limit);
    Ok(found)
}

/// The oldest `limit` candidates in `(after, upto]`: what delivery looks at next.
pub fn candidates_after(
    conn: &Connection,
    user_id: &str,
    after: i64,
    upto: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Candidate>> {
    candidates(conn, user_id, after, upto.saturating_add(1), limit, false)
}

/// The newest `limit` candidates before `before`: what `/notifications` looks at.
pub fn candidates_before(
    conn: &Connection,
    user_id: &str,
    before: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Candidate>> {
    candidates(conn, user_id, 0, before, limit, true)
}

/// The rooms the user is joined to, and how many invites they have (the badge of a push).
pub fn joined_rooms_and_invites(
    conn: &Connection,
    user_id: &str,
) -> rusqlite::Result<(Vec<String>, u64)> {
    let joined = conn
        .prepare_cached(
            "SELECT room_id FROM memberships WHERE user_id = ?1 AND membership = 'join'",
        )?
        .query_map([user_id], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let invites: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM memberships WHERE user_id = ?1 AND membership = 'invite'",
        )?
        .query_row([user_id], |row| row.get(0))?;
    Ok((joined, invites.max(0) as u64))
}
