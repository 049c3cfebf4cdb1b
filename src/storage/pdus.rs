//! Tables `pdus_outside_timeline`, `event_edges`, `backward_extremities` and
//! `backfill_position`: what the room layer needs once events come from other servers.

use std::collections::BTreeSet;

use rusqlite::{Connection, OptionalExtension, params};

use super::rooms::StateIds;

/// Why an event is outside the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutsideStatus {
    Outlier,
    Rejected,
    SoftFailed,
}

impl OutsideStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outlier => "outlier",
            Self::Rejected => "rejected",
            Self::SoftFailed => "soft_failed",
        }
    }

    fn parse(s: &str) -> rusqlite::Result<Self> {
        match s {
            "outlier" => Ok(Self::Outlier),
            "rejected" => Ok(Self::Rejected),
            "soft_failed" => Ok(Self::SoftFailed),
            other => Err(rusqlite::Error::InvalidColumnType(
                0,
                format!("status {other}"),
                rusqlite::types::Type::Text,
            )),
        }
    }
}

/// What this server holds of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// In the timeline, with the state after it.
    Timeline { state_group: i64, depth: i64 },
    Outside {
        status: OutsideStatus,
        state_group: Option<i64>,
        depth: i64,
    },
}

/// Where an event is held, if anywhere.
pub fn held(conn: &Connection, event_id: &str) -> rusqlite::Result<Option<Held>> {
    let timeline = conn
        .prepare_cached("SELECT state_group, topological_ordering FROM events WHERE event_id = ?1")?
        .query_row([event_id], |row| {
            Ok(Held::Timeline {
                state_group: row.get(0)?,
                depth: row.get(1)?,
            })
        })
        .optional()?;
    if timeline.is_some() {
        return Ok(timeline);
    }
    conn.prepare_cached(
        "SELECT status, state_group, depth FROM pdus_outside_timeline WHERE event_id = ?1",
    )?
    .query_row([event_id], |row| {
        Ok(Held::Outside {
            status: OutsideStatus::parse(&row.get::<_, String>(0)?)?,
            state_group: row.get(1)?,
            depth: row.get(2)?,
        })
    })
    .optional()
}

/// An event's JSON for the authorization rules and state resolution: timeline events and
/// events outside it, with whether it was rejected.
#[derive(Debug, Clone)]
pub struct AuthPdu {
    pub json: String,
    pub rejected: bool,
}

pub fn auth_pdu(conn: &Connection, event_id: &str) -> rusqlite::Result<Option<AuthPdu>> {
    let timeline = conn
        .prepare_cached("SELECT json FROM events WHERE event_id = ?1")?
        .query_row([event_id], |row| {
            Ok(AuthPdu {
                json: row.get(0)?,
                rejected: false,
            })
        })
        .optional()?;
    if timeline.is_some() {
        return Ok(timeline);
    }
    conn.prepare_cached("SELECT json, status FROM pdus_outside_timeline WHERE event_id = ?1")?
        .query_row([event_id], |row| {
            Ok(AuthPdu {
                json: row.get(0)?,
                rejected: row.get::<_, String>(1)? == "rejected",
            })
        })
        .optional()
}

/// An event to keep outside the timeline.
pub struct NewOutsidePdu<'a> {
    pub event_id: &'a str,
    pub room_id: &'a str,
    pub status: OutsideStatus,
    pub reason: Option<&'a str>,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub sender: &'a str,
    pub depth: i64,
    pub state_group: Option<i64>,
    pub json: &'a str,
}

/// Stores (or re-files: an outlier found rejected or soft-failed) an event outside the timeline.
pub fn put_outside(conn: &Connection, pdu: &NewOutsidePdu<'_>) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO pdus_outside_timeline
             (event_id, room_id, status, reason, type, state_key, sender, depth, state_group, json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (event_id) DO UPDATE SET status = excluded.status, reason = excluded.reason,
             state_group = excluded.state_group",
    )?
    .execute(params![
        pdu.event_id,
        pdu.room_id,
        pdu.status.as_str(),
        pdu.reason,
        pdu.event_type,
        pdu.state_key,
        pdu.sender,
        pdu.depth,
        pdu.state_group,
        pdu.json,
    ])?;
    Ok(())
}

/// Drops an event from outside the timeline (an outlier that joins the timeline).
pub fn remove_outside(conn: &Connection, event_id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM pdus_outside_timeline WHERE event_id = ?1")?
        .execute([event_id])?;
    Ok(())
}

/// The status and reason of an event outside the timeline.
#[derive(Debug, Clone)]
pub struct OutsideInfo {
    pub status: OutsideStatus,
    pub reason: Option<String>,
}

pub fn outside_info(conn: &Connection, event_id: &str) -> rusqlite::Result<Option<OutsideInfo>> {
    conn.prepare_cached("SELECT status, reason FROM pdus_outside_timeline WHERE event_id = ?1")?
        .query_row([event_id], |row| {
            Ok(OutsideInfo {
                status: OutsideStatus::parse(&row.get::<_, String>(0)?)?,
                reason: row.get(1)?,
            })
        })
        .optional()
}

// ---- the graph ----

pub fn insert_edges(
    conn: &Connection,
    room_id: &str,
    event_id: &str,
    prev_events: &[String],
) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO event_edges (event_id, prev_event_id, room_id) VALUES (?1, ?2, ?3)",
    )?;
    for prev in prev_events {
        insert.execute([event_id, prev, room_id])?;
    }
    Ok(())
}

/// Whether a timeline event lists this one among its `prev_events`.
pub fn has_timeline_child(conn: &Connection, event_id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM event_edges g JOIN events e ON e.event_id = g.event_id
                        WHERE g.prev_event_id = ?1)",
    )?
    .query_row([event_id], |row| row.get(0))
}

/// Whether a timeline event is next to a gap in the history held before it: it, or one of its
/// `prev_events`, is a backward extremity (Synapse's `is_event_next_to_backward_gap`).
pub fn next_to_backward_gap(
    conn: &Connection,
    room_id: &str,
    event_id: &str,
) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM backward_extremities
                        WHERE room_id = ?1 AND (event_id = ?2 OR event_id IN
                            (SELECT prev_event_id FROM event_edges WHERE event_id = ?2)))",
    )?
    .query_row([room_id, event_id], |row| row.get(0))
}

/// Whether a timeline event is next to a gap in the history held after it: no timeline event
/// points at it and it is not one of the room's newest (a forward extremity), as Synapse's
/// `is_event_next_to_forward_gap`. The newest events are not before a gap: what comes after
/// them arrives by federation as usual.
pub fn next_to_forward_gap(
    conn: &Connection,
    room_id: &str,
    event_id: &str,
) -> rusqlite::Result<bool> {
    let newest: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM forward_extremities
                            WHERE room_id = ?1 AND event_id = ?2)",
        )?
        .query_row([room_id, event_id], |row| row.get(0))?;
    Ok(!newest && !has_timeline_child(conn, event_id)?)
}

/// After a timeline event: its `prev_events` are no longer forward extremities, and it is one
/// unless a timeline event already points at it (a backfilled event).
pub fn advance_forward_extremities(
    conn: &Connection,
    room_id: &str,
    event_id: &str,
    prev_events: &[String],
) -> rusqlite::Result<()> {
    let mut remove = conn
        .prepare_cached("DELETE FROM forward_extremities WHERE room_id = ?1 AND event_id = ?2")?;
    for prev in prev_events {
        remove.execute([room_id, prev])?;
    }
    if !has_timeline_child(conn, event_id)? {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO forward_extremities (room_id, event_id) VALUES (?1, ?2)",
        )?
        .execute([room_id, event_id])?;
    }
    Ok(())
}

/// A `prev_event` this server does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackwardExtremity {
    pub event_id: String,
    pub depth: i64,
}

/// Records `prev_events` not held (the caller knows they are not), and drops the event itself
/// from the room's backward extremities.
pub fn update_backward_extremities(
    conn: &Connection,
    room_id: &str,
    event_id: &str,
    depth: i64,
    missing_prev_events: &[String],
) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM backward_extremities WHERE room_id = ?1 AND event_id = ?2")?
        .execute([room_id, event_id])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO backward_extremities (room_id, event_id, depth) VALUES (?1, ?2, ?3)
         ON CONFLICT (room_id, event_id) DO UPDATE SET depth = max(depth, excluded.depth)",
    )?;
    for prev in missing_prev_events {
        insert.execute(params![room_id, prev, depth])?;
    }
    Ok(())
}

pub fn backward_extremities(
    conn: &Connection,
    room_id: &str,
) -> rusqlite::Result<Vec<BackwardExtremity>> {
    conn.prepare_cached(
        "SELECT event_id, depth FROM backward_extremities WHERE room_id = ?1
         ORDER BY depth DESC, event_id",
    )?
    .query_map([room_id], |row| {
        Ok(BackwardExtremity {
            event_id: row.get(0)?,
            depth: row.get(1)?,
        })
    })?
    .collect()
}

/// The next stream position of a backfilled event: below every other one.
pub fn next_backfill_position(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "UPDATE backfill_position SET position = position - 1 WHERE id = 1 RETURNING position",
    )?
    .query_row([], |row| row.get(0))
}

/// Reserves `n` stream positions for backfilled events, below every other one: the lowest of
/// them (the block is `lowest .. lowest + n`), so that a batch accepted oldest first can be
/// numbered in its own order.
pub fn reserve_backfill_positions(conn: &Connection, n: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "UPDATE backfill_position SET position = position - ?1 WHERE id = 1 RETURNING position",
    )?
    .query_row([n], |row| row.get(0))
}

// ---- current state ----

/// Replaces a room's current state; returns the keys whose event changed (or appeared or went).
pub fn replace_current_state(
    conn: &Connection,
    room_id: &str,
    state: &StateIds,
) -> rusqlite::Result<Vec<super::rooms::StateKey>> {
    let old = super::rooms::current_state(conn, room_id)?;
    let mut changed = Vec::new();
    let mut remove = conn.prepare_cached(
        "DELETE FROM current_state WHERE room_id = ?1 AND type = ?2 AND state_key = ?3",
    )?;
    for key in old.keys() {
        if !state.contains_key(key) {
            remove.execute([room_id, &key.0, &key.1])?;
            changed.push(key.clone());
        }
    }
    let mut upsert = conn.prepare_cached(
        "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id",
    )?;
    for (key, event_id) in state {
        if old.get(key) != Some(event_id) {
            upsert.execute([room_id, &key.0, &key.1, event_id])?;
            changed.push(key.clone());
        }
    }
    Ok(changed)
}

/// Sets some entries of a room's current state (an event extending it); returns their keys.
pub fn set_current_state_entries(
    conn: &Connection,
    room_id: &str,
    entries: &StateIds,
) -> rusqlite::Result<Vec<super::rooms::StateKey>> {
    let mut upsert = conn.prepare_cached(
        "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id",
    )?;
    for ((kind, state_key), event_id) in entries {
        upsert.execute([room_id, kind, state_key, event_id])?;
    }
    Ok(entries.keys().cloned().collect())
}

/// The servers of the users joined to a room (the part of the user ID after the first `:`).
pub fn joined_servers(conn: &Connection, room_id: &str) -> rusqlite::Result<BTreeSet<String>> {
    conn.prepare_cached(
        "SELECT DISTINCT substr(user_id, instr(user_id, ':') + 1) FROM memberships
         WHERE room_id = ?1 AND membership = 'join'",
    )?
    .query_map([room_id], |row| row.get(0))?
    .collect()
}

/// Records the state group holding the state before an event.
pub fn set_state_before(
    conn: &Connection,
    event_id: &str,
    state_group: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO event_state_before (event_id, state_group) VALUES (?1, ?2)
         ON CONFLICT (event_id) DO UPDATE SET state_group = excluded.state_group",
    )?
    .execute(params![event_id, state_group])?;
    Ok(())
}

pub fn state_before(conn: &Connection, event_id: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT state_group FROM event_state_before WHERE event_id = ?1")?
        .query_row([event_id], |row| row.get(0))
        .optional()
}

/// The room row of a room joined over federation; nothing if it exists.
pub fn insert_room_if_absent(
    conn: &Connection,
    room_id: &str,
    version: &str,
    creator: &str,
    ts: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (room_id) DO NOTHING",
        params![room_id, version, creator, ts],
    )?;
    Ok(())
}

/// The room version of the room of a held event (timeline or outside).
pub fn room_version_of_event(
    conn: &Connection,
    event_id: &str,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT r.room_version FROM rooms r
         WHERE r.room_id = coalesce(
             (SELECT room_id FROM events WHERE event_id = ?1),
             (SELECT room_id FROM pdus_outside_timeline WHERE event_id = ?1))",
    )?
    .query_row([event_id], |row| row.get(0))
    .optional()
}

/// The user who created a room (its `rooms` row).
pub fn room_creator(conn: &Connection, room_id: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT creator FROM rooms WHERE room_id = ?1")?
        .query_row([room_id], |row| row.get(0))
        .optional()
}

/// The senders of the timeline events that list `prev_event_id` among their `prev_events`.
pub fn senders_pointing_at(
    conn: &Connection,
    prev_event_id: &str,
) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT DISTINCT e.sender FROM event_edges g JOIN events e ON e.event_id = g.event_id
         WHERE g.prev_event_id = ?1",
    )?
    .query_map([prev_event_id], |row| row.get(0))?
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::rooms::{self, NewEventRow};

    fn event<'a>(id: &'a str, prevs: &'a [String]) -> NewEventRow<'a> {
        NewEventRow {
            event_id: id,
            room_id: "!r:x",
            event_type: "m.room.message",
            state_key: None,
            sender: "@a:x",
            origin_server_ts: 0,
            depth: 1,
            redacts: None,
            relates_to: None,
            prev_events: prevs,
            json: "{}",
        }
    }

    /// `$a` follows a `prev_event` not held, `$b` and `$c` follow it, and `$x` was stored
    /// without anything after it and is not among the newest (as a backfilled event can be).
    #[test]
    fn gaps_next_to_events() {
        let (_dir, path) = crate::storage::migrated_test_file();
        let conn = Connection::open(&path).unwrap();
        rooms::insert_room(&conn, "!r:x", "12", "@a:x", 0).unwrap();
        let group = rooms::new_state_group(&conn, "!r:x", None, &Default::default()).unwrap();
        let gap = ["$gap".to_owned()];
        rooms::insert_event(&conn, &event("$a", &gap), group).unwrap();
        update_backward_extremities(&conn, "!r:x", "$a", 1, &gap).unwrap();
        rooms::insert_event(&conn, &event("$b", &["$a".to_owned()]), group).unwrap();
        rooms::insert_event(&conn, &event("$c", &["$b".to_owned()]), group).unwrap();
        rooms::insert_event_row(&conn, &event("$x", &[]), group, -5).unwrap();

        let backward = |id| next_to_backward_gap(&conn, "!r:x", id).unwrap();
        let forward = |id| next_to_forward_gap(&conn, "!r:x", id).unwrap();
        assert!(backward("$a"));
        assert!(!backward("$b") && !backward("$c"));
        assert!(!forward("$a") && !forward("$b"), "followed by held events");
        assert!(!forward("$c"), "the newest event is not before a gap");
        assert!(forward("$x"));
    }
}
