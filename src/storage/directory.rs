//! The reads and writes behind the directories: table `room_aliases` (beside
//! `rooms::insert_alias`/`rooms::alias_room`), the `published` flag of `rooms`, the application
//! services' lists (`appservice_room_list`, migration 0020), the current state
//! a public room listing shows, and the accounts the user directory may find.

use rusqlite::{Connection, OptionalExtension, params};

// ---- aliases ----

/// Returns `false` when the alias did not exist.
pub fn delete_alias(conn: &Connection, alias: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM room_aliases WHERE alias = ?1", [alias])? == 1)
}

/// Every alias of this server that points to the room, sorted.
pub fn aliases_of_room(conn: &Connection, room_id: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached("SELECT alias FROM room_aliases WHERE room_id = ?1 ORDER BY alias")?
        .query_map([room_id], |row| row.get(0))?
        .collect()
}

// ---- the room directory ----

/// Whether the room is published; `None` for a room this server does not know.
pub fn published(conn: &Connection, room_id: &str) -> rusqlite::Result<Option<bool>> {
    conn.prepare_cached("SELECT published FROM rooms WHERE room_id = ?1")?
        .query_row([room_id], |row| row.get(0))
        .optional()
}

/// A room of a room directory list, with its number of joined members.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub struct ListedRoom {
    pub room_id: String,
    pub joined_members: i64,
}

/// A `ListedRoom` from the columns room ID, joined member count.
fn listed_room(row: &rusqlite::Row<'_>) -> rusqlite::Result<ListedRoom> {
    Ok(ListedRoom {
        room_id: row.get(0)?,
        joined_members: row.get(1)?,
    })
}

/// Published rooms with their number of joined members.
pub fn published_rooms(conn: &Connection) -> rusqlite::Result<Vec<ListedRoom>> {
    conn.prepare_cached(
        "SELECT r.room_id,
                (SELECT count(*) FROM memberships m WHERE m.room_id = r.room_id AND m.membership = 'join')
         FROM rooms r WHERE r.published = 1",
    )?
    .query_map([], listed_room)?
    .collect()
}

/// The rooms of application services' lists with their number of joined members: those of
/// one list (`(appservice ID, network ID)`), or of every list.
pub fn appservice_listed_rooms(
    conn: &Connection,
    list: Option<(&str, &str)>,
) -> rusqlite::Result<Vec<ListedRoom>> {
    let (appservice, network) = list.unzip();
    conn.prepare_cached(
        "SELECT DISTINCT l.room_id,
                (SELECT count(*) FROM memberships m
                 WHERE m.room_id = l.room_id AND m.membership = 'join')
         FROM appservice_room_list l
         WHERE ?1 IS NULL OR (l.appservice_id = ?1 AND l.network_id = ?2)",
    )?
    .query_map(params![appservice, network], listed_room)?
    .collect()
}

/// Adds a room to an application service's list of a network, or (`listed` false) takes it off.
pub fn set_appservice_listed(
    conn: &Connection,
    appservice: &str,
    network: &str,
    room_id: &str,
    listed: bool,
) -> rusqlite::Result<()> {
    if listed {
        conn.execute(
            "INSERT OR IGNORE INTO appservice_room_list (appservice_id, network_id, room_id)
             VALUES (?1, ?2, ?3)",
            params![appservice, network, room_id],
        )?;
    } else {
        conn.execute(
            "DELETE FROM appservice_room_list
             WHERE appservice_id = ?1 AND network_id = ?2 AND room_id = ?3",
            params![appservice, network, room_id],
        )?;
    }
    Ok(())
}

/// One current state event (state key `""`) as the directories need it.
#[derive(Debug, Clone)]
pub struct StateContent {
    pub event_type: String,
    /// The event's `content`, as JSON text.
    pub content: String,
    /// A redaction applies to the event.
    pub redacted: bool,
}

/// The current state events of the given types with an empty state key.
pub fn current_state_contents(
    conn: &Connection,
    room_id: &str,
    types: &[&str],
) -> rusqlite::Result<Vec<StateContent>> {
    if types.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = (0..types.len())
        .map(|i| format!("?{}", i + 2))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        // The state of a room joined over federation may be outliers (`storage::pdus`).
        "SELECT cs.type, json_extract(coalesce(e.json, o.json), '$.content'),
                e.redacted_by IS NOT NULL
         FROM current_state cs
         LEFT JOIN events e ON e.event_id = cs.event_id
         LEFT JOIN pdus_outside_timeline o ON o.event_id = cs.event_id AND o.status != 'rejected'
         WHERE cs.room_id = ?1 AND cs.state_key = '' AND cs.type IN ({placeholders})
           AND coalesce(e.json, o.json) IS NOT NULL"
    );
    let mut values: Vec<&str> = Vec::with_capacity(types.len() + 1);
    values.push(room_id);
    values.extend_from_slice(types);
    conn.prepare_cached(&sql)?
        .query_map(rusqlite::params_from_iter(values), |row| {
            Ok(StateContent {
                event_type: row.get(0)?,
                content: row.get::<_, Option<String>>(1)?.unwrap_or_default(),
                redacted: row.get(2)?,
            })
        })?
        .collect()
}

/// A room's current `m.space.child` state event (a space's link to a child room).
#[derive(Debug, Clone)]
pub struct SpaceChild {
    /// The child's room ID.
    pub state_key: String,
    pub sender: String,
    pub origin_server_ts: i64,
    /// The event's `content`, as JSON text.
    pub content: String,
    /// A redaction applies to the event.
    pub redacted: bool,
}

/// The current `m.space.child` events of a room, ordered by child room ID (stable answers).
pub fn space_children(conn: &Connection, room_id: &str) -> rusqlite::Result<Vec<SpaceChild>> {
    conn.prepare_cached(
        // The state of a room joined over federation may be outliers (`storage::pdus`).
        "SELECT cs.state_key, coalesce(e.sender, o.sender),
                coalesce(json_extract(coalesce(e.json, o.json), '$.origin_server_ts'), 0),
                json_extract(coalesce(e.json, o.json), '$.content'), e.redacted_by IS NOT NULL
         FROM current_state cs
         LEFT JOIN events e ON e.event_id = cs.event_id
         LEFT JOIN pdus_outside_timeline o ON o.event_id = cs.event_id AND o.status != 'rejected'
         WHERE cs.room_id = ?1 AND cs.type = 'm.space.child'
           AND coalesce(e.json, o.json) IS NOT NULL
         ORDER BY cs.state_key",
    )?
    .query_map([room_id], |row| {
        Ok(SpaceChild {
            state_key: row.get(0)?,
            sender: row.get(1)?,
            origin_server_ts: row.get(2)?,
            content: row.get::<_, Option<String>>(3)?.unwrap_or_default(),
            redacted: row.get(4)?,
        })
    })?
    .collect()
}

/// Whether a user of `server` is joined to the room (or, with `or_invited`, invited to it).
pub fn server_has_member(
    conn: &Connection,
    room_id: &str,
    server: &str,
    or_invited: bool,
) -> rusqlite::Result<bool> {
    // The server is the part of the user ID after the first `:` (as in `pdus::joined_servers`).
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM memberships WHERE room_id = ?1
             AND substr(user_id, instr(user_id, ':') + 1) = ?2
             AND (membership = 'join' OR (?3 AND membership = 'invite')))",
    )?
    .query_row(params![room_id, server, or_invited], |row| row.get(0))
}

pub fn is_admin(conn: &Connection, user_id: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("SELECT is_admin FROM users WHERE user_id = ?1 AND deactivated = 0")?
        .query_row([user_id], |row| row.get(0))
        .optional()?
        .unwrap_or(false))
}

// ---- the user directory ----

/// An account as the user directory shows it.
#[derive(Debug, Clone)]
pub struct DirectoryUser {
    pub user_id: String,
    pub localpart: String,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

fn directory_user(row: &rusqlite::Row<'_>) -> rusqlite::Result<DirectoryUser> {
    Ok(DirectoryUser {
        user_id: row.get(0)?,
        localpart: row.get(1)?,
        displayname: row.get(2)?,
        avatar_url: row.get(3)?,
    })
}

/// Every local account that is not deactivated.
pub fn active_users(conn: &Connection) -> rusqlite::Result<Vec<DirectoryUser>> {
    conn.prepare_cached(
        "SELECT user_id, localpart, displayname, avatar_url FROM users WHERE deactivated = 0",
    )?
    .query_map([], directory_user)?
    .collect()
}

/// The rooms whose members anyone may find: join rule `public` or `world_readable` history.
const PUBLIC_ROOMS: &str = "public_rooms AS (
    SELECT cs.room_id FROM current_state cs
    LEFT JOIN events e ON e.event_id = cs.event_id
    LEFT JOIN pdus_outside_timeline o
        ON o.event_id = cs.event_id AND o.status != 'rejected'
    WHERE cs.state_key = '' AND (
        (cs.type = 'm.room.join_rules'
            AND json_extract(coalesce(e.json, o.json), '$.content.join_rule') = 'public')
        OR (cs.type = 'm.room.history_visibility'
            AND json_extract(coalesce(e.json, o.json), '$.content.history_visibility')
                = 'world_readable'))
)";

/// The local accounts (not deactivated) that are joined to a room `searcher` is joined to (the
/// searcher excepted), or to a public room: one whose join rule is `public` or whose history is
/// `world_readable`.
pub fn users_visible_to(conn: &Connection, searcher: &str) -> rusqlite::Result<Vec<DirectoryUser>> {
    conn.prepare_cached(&format!(
        "WITH {PUBLIC_ROOMS},
         visible AS (
             SELECT m.user_id FROM memberships m
             WHERE m.membership = 'join' AND m.room_id IN (SELECT room_id FROM public_rooms)
             UNION
             SELECT other.user_id FROM memberships mine
             JOIN memberships other ON other.room_id = mine.room_id
             WHERE mine.user_id = ?1 AND mine.membership = 'join'
                 AND other.membership = 'join' AND other.user_id != ?1
         )
         SELECT u.user_id, u.localpart, u.displayname, u.avatar_url
         FROM users u JOIN visible v ON v.user_id = u.user_id
         WHERE u.deactivated = 0"
    ))?
    .query_map(params![searcher], directory_user)?
    .collect()
}

/// Other servers' users joined to a room `searcher` is joined to or to a public room, or with
/// `all` to any room this server is in; each with the displayname and avatar of their newest
/// join event among those rooms (with `all`, among the others only when in none of those), so a
/// name given in a room the searcher cannot see is not shown to them. Non-string values are
/// left out.
pub fn remote_users_visible_to(
    conn: &Connection,
    searcher: &str,
    all: bool,
) -> rusqlite::Result<Vec<DirectoryUser>> {
    conn.prepare_cached(&format!(
        "WITH {PUBLIC_ROOMS},
         searchers_rooms AS (
             SELECT room_id FROM memberships WHERE user_id = ?1 AND membership = 'join'
         ),
         candidates AS (
             SELECT m.user_id, m.event_id, m.stream_ordering,
                 (m.room_id IN (SELECT room_id FROM public_rooms)
                     OR m.room_id IN (SELECT room_id FROM searchers_rooms)) AS visible
             FROM memberships m LEFT JOIN users u ON u.user_id = m.user_id
             WHERE m.membership = 'join' AND u.user_id IS NULL
         ),
         newest AS (
             SELECT user_id, event_id, row_number() OVER (
                 PARTITION BY user_id ORDER BY visible DESC, stream_ordering DESC
             ) AS n
             FROM candidates WHERE visible OR ?2
         ),
         member AS (
             SELECT n.user_id, coalesce(e.json, o.json) AS json FROM newest n
             LEFT JOIN events e ON e.event_id = n.event_id
             LEFT JOIN pdus_outside_timeline o
                 ON o.event_id = n.event_id AND o.status != 'rejected'
             WHERE n.n = 1
         )
         SELECT user_id,
             CASE WHEN json_type(json, '$.content.displayname') = 'text'
                 THEN json_extract(json, '$.content.displayname') END,
             CASE WHEN json_type(json, '$.content.avatar_url') = 'text'
                 THEN json_extract(json, '$.content.avatar_url') END
         FROM member"
    ))?
    .query_map(params![searcher, all], |row| {
        let user_id: String = row.get(0)?;
        Ok(DirectoryUser {
            // `@localpart:server`: a localpart has no colon.
            localpart: user_id
                .strip_prefix('@')
                .and_then(|rest| rest.split_once(':'))
                .map_or_else(String::new, |(localpart, _)| localpart.to_owned()),
            user_id,
            displayname: row.get(1)?,
            avatar_url: row.get(2)?,
        })
    })?
    .collect()
}
