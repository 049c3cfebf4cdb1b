//! Tables `rooms`, `events`, `state_groups`, `state_group_entries`, `current_state`,
//! `memberships`, `forward_extremities`, `event_transactions` and `stream_position`.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

/// `(event type, state key)`.
pub type StateKey = (String, String);
/// State as a map from key to event ID.
pub type StateIds = HashMap<StateKey, String>;

/// Longest delta chain before a state group is written as a snapshot.
const MAX_STATE_CHAIN: i64 = 64;

pub fn next_stream_position(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "UPDATE stream_position SET position = position + 1 WHERE id = 1 RETURNING position",
    )?
    .query_row([], |row| row.get(0))
}

pub fn current_stream_position(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT position FROM stream_position WHERE id = 1")?
        .query_row([], |row| row.get(0))
}

// ---- rooms ----

pub fn insert_room(
    conn: &Connection,
    room_id: &str,
    version: &str,
    creator: &str,
    ts: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES (?1, ?2, ?3, ?4)",
        params![room_id, version, creator, ts],
    )?;
    Ok(())
}

pub fn room_version(conn: &Connection, room_id: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT room_version FROM rooms WHERE room_id = ?1")?
        .query_row([room_id], |row| row.get(0))
        .optional()
}

pub fn set_published(conn: &Connection, room_id: &str, published: bool) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "UPDATE rooms SET published = ?2 WHERE room_id = ?1",
        params![room_id, published],
    )? == 1)
}

// ---- events ----

/// An event as stored.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub stream_ordering: i64,
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub topological_ordering: i64,
    pub state_group: i64,
    pub redacted_by: Option<String>,
    pub json: String,
}

const EVENT_COLUMNS: &str = "stream_ordering, event_id, room_id, sender, topological_ordering, state_group, redacted_by, json";

fn event_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
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
}

pub fn get_event(conn: &Connection, event_id: &str) -> rusqlite::Result<Option<EventRow>> {
    conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?1"
    ))?
    .query_row([event_id], event_from_row)
    .optional()
}

/// What `insert_event` writes besides the JSON.
pub struct NewEventRow<'a> {
    pub event_id: &'a str,
    pub room_id: &'a str,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub sender: &'a str,
    pub origin_server_ts: i64,
    pub depth: i64,
    pub redacts: Option<&'a str>,
    pub relates_to: Option<(&'a str, &'a str)>,
    pub prev_events: &'a [String],
    pub json: &'a str,
}

/// Stores an event with the state after it, moves the room's forward extremities, and keeps the
/// current state and memberships up to date. Returns the event's stream position.
pub fn insert_event(
    conn: &Connection,
    event: &NewEventRow<'_>,
    state_group: i64,
) -> rusqlite::Result<i64> {
    let stream = next_stream_position(conn)?;
    insert_event_row(conn, event, state_group, stream)?;
    let mut remove = conn
        .prepare_cached("DELETE FROM forward_extremities WHERE room_id = ?1 AND event_id = ?2")?;
    for prev in event.prev_events {
        remove.execute([event.room_id, prev])?;
    }
    conn.prepare_cached("INSERT INTO forward_extremities (room_id, event_id) VALUES (?1, ?2)")?
        .execute([event.room_id, event.event_id])?;
    if let Some(state_key) = event.state_key {
        conn.prepare_cached(
            "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id",
        )?
        .execute([event.room_id, event.event_type, state_key, event.event_id])?;
    }
    Ok(stream)
}

/// Stores an event's row and its `prev_events` edges at a given stream position, and nothing
/// else: the caller moves extremities and current state.
pub fn insert_event_row(
    conn: &Connection,
    event: &NewEventRow<'_>,
    state_group: i64,
    stream: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, origin_server_ts,
                             topological_ordering, state_group, redacts, relates_to, rel_type, json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        stream,
        event.event_id,
        event.room_id,
        event.event_type,
        event.state_key,
        event.sender,
        event.origin_server_ts,
        event.depth,
        state_group,
        event.redacts,
        event.relates_to.map(|r| r.0),
        event.relates_to.map(|r| r.1),
        event.json,
    ])?;
    super::sliding_sync::note_event(conn, event, stream)?;
    super::pdus::insert_edges(conn, event.room_id, event.event_id, event.prev_events)
}

/// Records a user's membership event. `stream_ordering` stays where the membership last
/// changed, so that a profile change (join → join) is not taken for a new join.
pub fn set_membership(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
    membership: &str,
    event_id: &str,
    stream: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_ordering) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,
             event_id = excluded.event_id, forgotten = 0,
             stream_ordering = CASE WHEN membership = excluded.membership THEN stream_ordering
                                    ELSE excluded.stream_ordering END",
    )?
    .execute(params![room_id, user_id, membership, event_id, stream])?;
    Ok(())
}

pub fn mark_redacted(
    conn: &Connection,
    event_id: &str,
    redaction_id: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE events SET redacted_by = ?2 WHERE event_id = ?1 AND redacted_by IS NULL",
        [event_id, redaction_id],
    )?;
    Ok(())
}

/// A forward extremity of a room: an event nothing stored points to yet.
pub struct Extremity {
    pub event_id: String,
    /// The event's depth.
    pub topological_ordering: i64,
}

pub fn forward_extremities(conn: &Connection, room_id: &str) -> rusqlite::Result<Vec<Extremity>> {
    conn.prepare_cached(
        "SELECT f.event_id, e.topological_ordering FROM forward_extremities f
         JOIN events e ON e.event_id = f.event_id WHERE f.room_id = ?1",
    )?
    .query_map([room_id], |row| {
        Ok(Extremity {
            event_id: row.get(0)?,
            topological_ordering: row.get(1)?,
        })
    })?
    .collect()
}

pub fn txn_event(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    txn_id: &str,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT event_id FROM event_transactions WHERE user_id = ?1 AND device_id = ?2 AND txn_id = ?3",
    )?
    .query_row([user_id, device_id, txn_id], |row| row.get(0))
    .optional()
}

pub fn insert_txn(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    txn_id: &str,
    event_id: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO event_transactions (user_id, device_id, txn_id, event_id) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute([user_id, device_id, txn_id, event_id])?;
    Ok(())
}

/// The transaction ID a device used for an event, for `unsigned.transaction_id`.
pub fn txn_of_event(
    conn: &Connection,
    event_id: &str,
    user_id: &str,
    device_id: &str,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT txn_id FROM event_transactions WHERE event_id = ?1 AND user_id = ?2 AND device_id = ?3",
    )?
    .query_row([event_id, user_id, device_id], |row| row.get(0))
    .optional()
}

// ---- timeline reads ----

/// Events of a room with `after < stream_ordering <= upto`, the newest `limit` of them, in
/// stream order.
pub fn room_events_between(
    conn: &Connection,
    room_id: &str,
    after: i64,
    upto: i64,
    limit: usize,
) -> rusqlite::Result<Vec<EventRow>> {
    let mut rows: Vec<EventRow> = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = ?1 AND stream_ordering > ?2 AND stream_ordering <= ?3
             ORDER BY stream_ordering DESC LIMIT ?4"
        ))?
        .query_map(params![room_id, after, upto, limit as i64], event_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    rows.reverse();
    Ok(rows)
}

/// A position in a room's topological order: `(topological_ordering, stream_ordering)`.
pub type TopoPosition = (i64, i64);

/// Pagination in topological order. Backwards: events strictly before `from`, newest first.
/// Forwards: events strictly after `from`, oldest first.
pub fn room_events_paginate(
    conn: &Connection,
    room_id: &str,
    from: TopoPosition,
    backwards: bool,
    limit: usize,
) -> rusqlite::Result<Vec<EventRow>> {
    let sql = if backwards {
        format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = ?1 AND (topological_ordering, stream_ordering) < (?2, ?3)
             ORDER BY topological_ordering DESC, stream_ordering DESC LIMIT ?4"
        )
    } else {
        format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = ?1 AND (topological_ordering, stream_ordering) > (?2, ?3)
             ORDER BY topological_ordering ASC, stream_ordering ASC LIMIT ?4"
        )
    };
    conn.prepare_cached(&sql)?
        .query_map(
            params![room_id, from.0, from.1, limit as i64],
            event_from_row,
        )?
        .collect()
}

/// The topological position of the newest event of the room at or before a stream position.
pub fn topo_position_at_stream(
    conn: &Connection,
    room_id: &str,
    stream: i64,
) -> rusqlite::Result<Option<TopoPosition>> {
    conn.prepare_cached(
        "SELECT topological_ordering, stream_ordering FROM events WHERE room_id = ?1 AND stream_ordering <= ?2
         ORDER BY stream_ordering DESC LIMIT 1",
    )?
    .query_row(params![room_id, stream], |row| Ok((row.get(0)?, row.get(1)?)))
    .optional()
}

/// The state group after the newest event of the room at or before a stream position.
pub fn state_group_at_stream(
    conn: &Connection,
    room_id: &str,
    stream: i64,
) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT state_group FROM events WHERE room_id = ?1 AND stream_ordering <= ?2
         ORDER BY stream_ordering DESC LIMIT 1",
    )?
    .query_row(params![room_id, stream], |row| row.get(0))
    .optional()
}

/// Rooms with any event after `since`, among `rooms`.
pub fn rooms_with_events_after(
    conn: &Connection,
    user_id: &str,
    since: i64,
) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT DISTINCT e.room_id FROM memberships m JOIN events e ON e.room_id = m.room_id
         WHERE m.user_id = ?1 AND e.stream_ordering > ?2",
    )?
    .query_map(params![user_id, since], |row| row.get(0))?
    .collect()
}

// ---- state ----

pub fn current_state(conn: &Connection, room_id: &str) -> rusqlite::Result<StateIds> {
    conn.prepare_cached("SELECT type, state_key, event_id FROM current_state WHERE room_id = ?1")?
        .query_map([room_id], |row| {
            Ok(((row.get(0)?, row.get(1)?), row.get(2)?))
        })?
        .collect()
}

pub fn current_state_event(
    conn: &Connection,
    room_id: &str,
    event_type: &str,
    state_key: &str,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT event_id FROM current_state WHERE room_id = ?1 AND type = ?2 AND state_key = ?3",
    )?
    .query_row([room_id, event_type, state_key], |row| row.get(0))
    .optional()
}

/// A new state group: `prev` with `changes` laid over it.
pub fn new_state_group(
    conn: &Connection,
    room_id: &str,
    prev: Option<i64>,
    changes: &StateIds,
) -> rusqlite::Result<i64> {
    let prev_len = match prev {
        Some(prev) => conn
            .prepare_cached("SELECT chain_len FROM state_groups WHERE id = ?1")?
            .query_row([prev], |row| row.get::<_, i64>(0))?,
        None => 0,
    };
    // Past the bound, write the full state so that no read walks a long chain.
    let (prev, chain_len, rows) = if prev.is_some() && prev_len < MAX_STATE_CHAIN {
        (prev, prev_len + 1, changes.clone())
    } else {
        let mut full = match prev {
            Some(prev) => state_at_group(conn, prev)?,
            None => StateIds::new(),
        };
        full.extend(changes.iter().map(|(k, v)| (k.clone(), v.clone())));
        (None, 0, full)
    };
    let id: i64 = conn
        .prepare_cached("INSERT INTO state_groups (room_id, prev_group, chain_len) VALUES (?1, ?2, ?3) RETURNING id")?
        .query_row(params![room_id, prev, chain_len], |row| row.get(0))?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO state_group_entries (state_group, type, state_key, event_id) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for ((event_type, state_key), event_id) in &rows {
        insert.execute(params![id, event_type, state_key, event_id])?;
    }
    Ok(id)
}

/// The full state of a group: its entries over those of the groups before it in its chain.
pub fn state_at_group(conn: &Connection, group: i64) -> rusqlite::Result<StateIds> {
    let mut state = StateIds::new();
    // One statement per group of the chain: its entries (none: one row of NULLs) and its parent.
    let mut entries = conn.prepare_cached(
        "SELECT g.prev_group, e.type, e.state_key, e.event_id
         FROM state_groups g LEFT JOIN state_group_entries e ON e.state_group = g.id
         WHERE g.id = ?1",
    )?;
    let mut next = Some(group);
    while let Some(group) = next.take() {
        let mut rows = entries.query([group])?;
        let mut known = false;
        while let Some(row) = rows.next()? {
            known = true;
            next = row.get(0)?;
            if let Some(event_type) = row.get::<_, Option<String>>(1)? {
                // The newest group in the chain wins.
                state
                    .entry((event_type, row.get(2)?))
                    .or_insert(row.get(3)?);
            }
        }
        if !known {
            // A chain never points at a missing group; the database is damaged.
            return Err(rusqlite::Error::QueryReturnedNoRows);
        }
    }
    Ok(state)
}

// ---- memberships ----

/// A user's membership of a room, as its row in `memberships` holds it.
pub struct MembershipRow {
    /// `join`, `invite`, `leave`, `ban` or `knock`.
    pub membership: String,
    /// The position of the member event that set it.
    pub stream_ordering: i64,
}

pub fn membership(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
) -> rusqlite::Result<Option<MembershipRow>> {
    conn.prepare_cached(
        "SELECT membership, stream_ordering FROM memberships WHERE room_id = ?1 AND user_id = ?2",
    )?
    .query_row([room_id, user_id], |row| {
        Ok(MembershipRow {
            membership: row.get(0)?,
            stream_ordering: row.get(1)?,
        })
    })
    .optional()
}

/// Whether `user_id` is joined to a room with one of this server's users (an account here).
///
/// The join order is forced (`CROSS JOIN`): the user's rooms, then this server's accounts, then
/// one primary-key lookup each. Left to itself SQLite walked every member of each of the user's
/// rooms, thousands in a big federated room, for every presence update and device-list change
/// of every remote member; an appliance has few accounts, so this order stays small.
pub fn shares_a_room_with_a_local_user(conn: &Connection, user_id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM memberships theirs
             CROSS JOIN users u
             CROSS JOIN memberships mine
             WHERE theirs.user_id = ?1 AND theirs.membership = 'join'
               AND mine.room_id = theirs.room_id AND mine.user_id = u.user_id
               AND mine.membership = 'join')",
    )?
    .query_row([user_id], |row| row.get(0))
}

/// A user's membership of one room, with the member event that set it.
pub struct UserMembership {
    pub room_id: String,
    pub membership: String,
    pub event_id: String,
    pub stream_ordering: i64,
}

/// The membership of every room the user is or was in (and has not forgotten).
pub fn memberships_of_user(
    conn: &Connection,
    user_id: &str,
) -> rusqlite::Result<Vec<UserMembership>> {
    conn.prepare_cached(
        "SELECT room_id, membership, event_id, stream_ordering FROM memberships WHERE user_id = ?1 AND forgotten = 0",
    )?
    .query_map([user_id], |row| {
        Ok(UserMembership {
            room_id: row.get(0)?,
            membership: row.get(1)?,
            event_id: row.get(2)?,
            stream_ordering: row.get(3)?,
        })
    })?
    .collect()
}

pub fn members_with(
    conn: &Connection,
    room_id: &str,
    membership: &str,
) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT user_id FROM memberships WHERE room_id = ?1 AND membership = ?2 ORDER BY user_id",
    )?
    .query_map([room_id, membership], |row| row.get(0))?
    .collect()
}

pub fn forget(conn: &Connection, room_id: &str, user_id: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "UPDATE memberships SET forgotten = 1 WHERE room_id = ?1 AND user_id = ?2 AND membership IN ('leave', 'ban')",
        [room_id, user_id],
    )? == 1)
}

// ---- aliases ----

/// Returns `false` when the alias is taken.
pub fn insert_alias(
    conn: &Connection,
    alias: &str,
    room_id: &str,
    creator: &str,
) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "INSERT INTO room_aliases (alias, room_id, creator) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        [alias, room_id, creator],
    )? == 1)
}

/// Where a local room alias points, and who made it.
pub struct AliasTarget {
    pub room_id: String,
    pub creator: String,
}

pub fn alias_room(conn: &Connection, alias: &str) -> rusqlite::Result<Option<AliasTarget>> {
    conn.prepare_cached("SELECT room_id, creator FROM room_aliases WHERE alias = ?1")?
        .query_row([alias], |row| {
            Ok(AliasTarget {
                room_id: row.get(0)?,
                creator: row.get(1)?,
            })
        })
        .optional()
}

/// One key of the state of a group, without reading the whole state.
pub fn state_event_at_group(
    conn: &Connection,
    group: i64,
    event_type: &str,
    state_key: &str,
) -> rusqlite::Result<Option<String>> {
    // One statement per group of the chain: whether the group has a row for the key, the row's
    // event (NULL: the key was removed), and the group's parent.
    let mut step = conn.prepare_cached(
        "SELECT e.state_group IS NOT NULL, e.event_id, g.prev_group
         FROM state_groups g LEFT JOIN state_group_entries e
              ON e.state_group = g.id AND e.type = ?2 AND e.state_key = ?3
         WHERE g.id = ?1",
    )?;
    let mut next = Some(group);
    while let Some(group) = next {
        let (has_row, event_id, prev): (bool, Option<String>, Option<i64>) = step
            .query_row(params![group, event_type, state_key], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?;
        if has_row {
            return Ok(event_id);
        }
        next = prev;
    }
    Ok(None)
}

/// The JSON of several events at once, by ID: the events of a room's *state*. Besides timeline
/// events, these are the outliers (the state of a room joined over federation arrives as outliers)
/// and soft-failed events a later event's state took in; never rejected ones. Timeline reads
/// (by stream or topological order) never see any of them.
pub fn events_by_id(conn: &Connection, event_ids: &[String]) -> rusqlite::Result<Vec<EventRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?1"
    ))?;
    let mut outside = conn.prepare_cached(
        "SELECT 0, event_id, room_id, sender, depth, coalesce(state_group, 0), NULL, json
         FROM pdus_outside_timeline WHERE event_id = ?1 AND status IN ('outlier', 'soft_failed')",
    )?;
    let mut rows = Vec::with_capacity(event_ids.len());
    for id in event_ids {
        if let Some(row) = stmt.query_row([id], event_from_row).optional()? {
            rows.push(row);
        } else if let Some(row) = outside.query_row([id], event_from_row).optional()? {
            rows.push(row);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every group keeps the state at its step, across chains cut into snapshots, and reading one
    /// key agrees with reading the whole state.
    #[test]
    fn state_groups_keep_the_state_of_every_step() {
        let (_dir, path) = crate::storage::migrated_test_file();
        let conn = Connection::open(&path).unwrap();
        insert_room(&conn, "!r:x", "12", "@a:x", 0).unwrap();
        let topic = || ("m.room.topic".to_owned(), String::new());
        let mut state = StateIds::new();
        let mut groups = Vec::new();
        let mut prev = None;
        for step in 0..MAX_STATE_CHAIN * 2 + 5 {
            let mut changes = StateIds::new();
            changes.insert(
                ("m.room.member".to_owned(), format!("@u{step}:x")),
                format!("$join{step}"),
            );
            if step % 3 == 1 {
                changes.insert(topic(), format!("$topic{step}"));
            }
            state.extend(changes.clone());
            let group = new_state_group(&conn, "!r:x", prev, &changes).unwrap();
            groups.push((group, state.clone()));
            prev = Some(group);
        }
        let snapshots: i64 = conn
            .query_row(
                "SELECT count(*) FROM state_groups WHERE prev_group IS NULL",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(snapshots, 3, "the first group and one per full chain");
        for (group, expected) in &groups {
            assert_eq!(&state_at_group(&conn, *group).unwrap(), expected);
            assert_eq!(
                state_event_at_group(&conn, *group, "m.room.topic", "").unwrap(),
                expected.get(&topic()).cloned(),
            );
            assert_eq!(
                state_event_at_group(&conn, *group, "m.room.member", "@u0:x")
                    .unwrap()
                    .as_deref(),
                Some("$join0"),
            );
            assert_eq!(
                state_event_at_group(&conn, *group, "m.room.member", "@nobody:x").unwrap(),
                None,
            );
        }
        assert!(state_at_group(&conn, 1_000_000).is_err());
        assert!(state_event_at_group(&conn, 1_000_000, "m.room.topic", "").is_err());
    }
}
