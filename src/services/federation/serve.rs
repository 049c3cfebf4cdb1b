//! Room data for other servers: `/state`, `/state_ids`, `/event`, `/event_auth`, `/backfill`,
//! `/get_missing_events` and `/timestamp_to_event`.
//!
//! Who may read what, as Synapse decides it:
//! - a server the room's `m.room.server_acl` denies gets `403 M_FORBIDDEN` from every endpoint
//!   (ruma's `RoomServerAclEventContent::is_allowed`);
//! - a server with no joined user in the room gets `403 M_FORBIDDEN` unless the room is
//!   `world_readable` now;
//! - each event served from the timeline (`/event`, `/backfill`, `/get_missing_events`) is judged
//!   with the state after it (Synapse's `filter_events_for_server`): under `shared` and
//!   `world_readable` history any server sees it, under `invited` a server with an invited or
//!   joined user sees it, under `joined` one with a joined user; any other server gets it
//!   redacted. State and auth chains are served whole (they are what a server needs to check
//!   events at all).
//!
//! Events go out as the stored PDU: signed fields only, without the `unsigned` this server keeps
//! for its clients, redacted when a redaction applies to them.
//!
//! Each request opens a `RoomReader` (`404 M_NOT_FOUND` for an unknown room, then the checks
//! above). The walks over `prev_events` and `auth_events` are bounded and cycle-proof
//! ([`backfill_walk`], [`missing_events_walk`], `auth_chain`; room version 12's implicit create
//! event is counted in auth chains, as Synapse counts it). The SQL is in
//! `storage/federation_reads.rs`.

use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};

use ruma::{
    CanonicalJsonObject, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, RoomVersionId,
    ServerName, UInt,
    api::Direction,
    events::{
        TimelineEventType,
        room::{
            history_visibility::HistoryVisibility, member::MembershipState,
            server_acl::RoomServerAclEventContent,
        },
    },
    state_res::Event as _,
};
use rusqlite::Connection;
use serde_json::value::RawValue;

use crate::{
    error::{Error, Result},
    services::rooms::{pdu::Pdu, state_before_event, stored::Envelope},
    storage::{
        Database, federation_reads as reads, pdus,
        rooms::{self as store, EventRow, StateIds},
    },
};

/// Synapse serves at most 100 events per `/backfill`.
pub const MAX_BACKFILL: usize = 100;
/// Synapse serves at most 20 events per `/get_missing_events`.
pub const MAX_MISSING_EVENTS: usize = 20;

/// A room's state before an event, as PDUs.
pub struct StateAtEvent {
    pub pdus: Vec<Box<RawValue>>,
    pub auth_chain: Vec<Box<RawValue>>,
}

/// A room's state before an event, as event IDs.
pub struct StateIdsAtEvent {
    pub pdu_ids: Vec<OwnedEventId>,
    pub auth_chain_ids: Vec<OwnedEventId>,
}

/// The event of a room closest to a point in time.
pub struct EventAtTimestamp {
    pub event_id: OwnedEventId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
}

pub struct Serve {
    db: Database,
}

impl Serve {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Whether the room's current `m.room.server_acl` (if any) lets `server` take part: checked
    /// for inbound PDUs and joins as for these reads.
    /// The version of a room this server holds and whether its ACL allows `server`, in one
    /// read (`None`: the room is unknown here).
    pub async fn room_for(
        &self,
        room_id: &RoomId,
        server: &ServerName,
    ) -> Result<Option<(RoomVersionId, bool)>> {
        let (room, server) = (room_id.to_owned(), server.to_owned());
        self.db
            .read(move |c| {
                let Some(version) = store::room_version(c, room.as_str())? else {
                    return Ok(None);
                };
                let version = RoomVersionId::try_from(version.as_str()).map_err(Error::internal)?;
                Ok(Some((version, acl_allows(c, &room, &server)?)))
            })
            .await
    }

    pub async fn acl_allows(&self, room_id: &RoomId, server: &ServerName) -> Result<bool> {
        let (room, server) = (room_id.to_owned(), server.to_owned());
        self.db.read(move |c| acl_allows(c, &room, &server)).await
    }

    /// `GET /state/{roomId}?event_id=`: the state before the event and its auth chain.
    pub async fn state(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<StateAtEvent> {
        let (origin, room, event_id) = (origin.to_owned(), room_id.to_owned(), event_id.to_owned());
        self.db
            .read(move |c| {
                let room = RoomReader::open(c, &origin, &room)?;
                let state = room.state_before(&event_id)?;
                let state_ids: Vec<String> = state.into_values().collect();
                let auth_chain = auth_chain(c, room.room_id, &room.version, &state_ids)?;
                Ok(StateAtEvent {
                    pdus: room.pdus(&store::events_by_id(c, &state_ids)?)?,
                    auth_chain: room.pdus(&auth_chain)?,
                })
            })
            .await
    }

    /// `GET /state_ids/{roomId}?event_id=`: as [`Self::state`], event IDs only.
    pub async fn state_ids(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<StateIdsAtEvent> {
        let (origin, room, event_id) = (origin.to_owned(), room_id.to_owned(), event_id.to_owned());
        self.db
            .read(move |c| {
                let room = RoomReader::open(c, &origin, &room)?;
                let state = room.state_before(&event_id)?;
                let mut state_ids: Vec<String> = state.into_values().collect();
                let auth_chain = auth_chain(c, room.room_id, &room.version, &state_ids)?;
                state_ids.sort();
                Ok(StateIdsAtEvent {
                    pdu_ids: event_ids(state_ids),
                    auth_chain_ids: event_ids(auth_chain.into_iter().map(|row| row.event_id)),
                })
            })
            .await
    }

    /// `GET /event/{eventId}`: one event, redacted if the origin may not see it.
    pub async fn event(&self, origin: &ServerName, event_id: &EventId) -> Result<Box<RawValue>> {
        let (origin, event_id) = (origin.to_owned(), event_id.to_owned());
        self.db
            .read(move |c| {
                let row = store::get_event(c, event_id.as_str())?.ok_or_else(unknown_event)?;
                let room_id = RoomId::parse(&row.room_id).map_err(Error::internal)?;
                let room = RoomReader::open(c, &origin, &room_id)?;
                room.visible_pdus(&[row])?
                    .pop()
                    .ok_or_else(|| Error::not_found("Event cannot be served"))
            })
            .await
    }

    /// `GET /event_auth/{roomId}/{eventId}`: the auth chain of an event (its auth events and
    /// theirs, not the event itself).
    pub async fn event_auth(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Vec<Box<RawValue>>> {
        let (origin, room, event_id) = (origin.to_owned(), room_id.to_owned(), event_id.to_owned());
        self.db
            .read(move |c| {
                let room = RoomReader::open(c, &origin, &room)?;
                let row = room.event(&event_id)?;
                let chain = auth_chain(c, room.room_id, &room.version, &[row.event_id])?;
                room.pdus(&chain)
            })
            .await
    }

    /// `GET /backfill/{roomId}?v=&limit=`: the given events and those before them, breadth-first
    /// from the deepest, at most `limit` (capped at [`MAX_BACKFILL`]), deepest first.
    pub async fn backfill(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        from: Vec<OwnedEventId>,
        limit: UInt,
    ) -> Result<Vec<Box<RawValue>>> {
        let limit = usize::try_from(u64::from(limit))
            .unwrap_or(MAX_BACKFILL)
            .min(MAX_BACKFILL);
        let (origin, room) = (origin.to_owned(), room_id.to_owned());
        self.db
            .read(move |c| {
                let room = RoomReader::open(c, &origin, &room)?;
                let seeds: Vec<String> = from.iter().map(ToString::to_string).collect();
                let ids = backfill_walk(&seeds, limit, |id| room.node(id))?;
                room.visible_pdus(&store::events_by_id(c, &ids)?)
            })
            .await
    }

    /// `POST /get_missing_events/{roomId}`: events before `latest` and after `earliest`,
    /// breadth-first from `latest` (which are not included), none shallower than `min_depth`, at
    /// most `limit` (capped at [`MAX_MISSING_EVENTS`]), oldest first.
    pub async fn missing_events(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        earliest: Vec<OwnedEventId>,
        latest: Vec<OwnedEventId>,
        limit: UInt,
        min_depth: UInt,
    ) -> Result<Vec<Box<RawValue>>> {
        let limit = usize::try_from(u64::from(limit))
            .unwrap_or(MAX_MISSING_EVENTS)
            .min(MAX_MISSING_EVENTS);
        let min_depth = i64::try_from(u64::from(min_depth)).unwrap_or(i64::MAX);
        let (origin, room) = (origin.to_owned(), room_id.to_owned());
        self.db
            .read(move |c| {
                let room = RoomReader::open(c, &origin, &room)?;
                let earliest: Vec<String> = earliest.iter().map(ToString::to_string).collect();
                let latest: Vec<String> = latest.iter().map(ToString::to_string).collect();
                let ids =
                    missing_events_walk(&earliest, &latest, limit, min_depth, |id| room.node(id))?;
                room.visible_pdus(&store::events_by_id(c, &ids)?)
            })
            .await
    }

    /// `GET /timestamp_to_event/{roomId}?ts=&dir=`: the room's event closest to `ts` in `dir`.
    pub async fn timestamp_to_event(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        ts: MilliSecondsSinceUnixEpoch,
        dir: Direction,
    ) -> Result<EventAtTimestamp> {
        let (origin, room) = (origin.to_owned(), room_id.to_owned());
        let forward = dir == Direction::Forward;
        self.db
            .read(move |c| {
                let room = RoomReader::open(c, &origin, &room)?;
                let found =
                    reads::event_closest_to_ts(c, room.room_id.as_str(), ts.get().into(), forward)?
                        .ok_or_else(|| {
                            Error::not_found(format!(
                                "No event found from {} in direction {}",
                                ts.get(),
                                if forward { "f" } else { "b" }
                            ))
                        })?;
                Ok(EventAtTimestamp {
                    event_id: OwnedEventId::try_from(found.event_id).map_err(Error::internal)?,
                    origin_server_ts: MilliSecondsSinceUnixEpoch(
                        UInt::try_from(found.origin_server_ts).unwrap_or_default(),
                    ),
                })
            })
            .await
    }
}

fn unknown_event() -> Error {
    Error::not_found("Unknown event")
}

fn event_ids(ids: impl IntoIterator<Item = String>) -> Vec<OwnedEventId> {
    ids.into_iter()
        .filter_map(|id| OwnedEventId::try_from(id).ok())
        .collect()
}

/// A room that a server was allowed to read: the ACL and the membership checks passed.
struct RoomReader<'a> {
    conn: &'a Connection,
    origin: &'a ServerName,
    room_id: &'a RoomId,
    version: RoomVersionId,
}

impl<'a> RoomReader<'a> {
    /// `404 M_NOT_FOUND` for an unknown room; `403 M_FORBIDDEN` for an origin the room's ACL
    /// denies, or one with no joined user in a room that is not world-readable.
    fn open(conn: &'a Connection, origin: &'a ServerName, room_id: &'a RoomId) -> Result<Self> {
        let version = store::room_version(conn, room_id.as_str())?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let version = RoomVersionId::try_from(version).map_err(Error::internal)?;
        if !acl_allows(conn, room_id, origin)? {
            return Err(Error::forbidden(format!(
                "Server {origin} is denied by the room's server ACL"
            )));
        }
        if !reads::server_has_joined_member(conn, room_id.as_str(), origin.as_str())?
            && current_visibility(conn, room_id)? != HistoryVisibility::WorldReadable
        {
            return Err(Error::forbidden(format!(
                "Server {origin} has no user in the room"
            )));
        }
        Ok(Self {
            conn,
            origin,
            room_id,
            version,
        })
    }

    /// An event of this room (`404 M_NOT_FOUND` for an unknown one or one of another room).
    fn event(&self, event_id: &EventId) -> Result<EventRow> {
        store::get_event(self.conn, event_id.as_str())?
            .filter(|row| row.room_id == self.room_id.as_str())
            .ok_or_else(unknown_event)
    }

    /// The state before a timeline event of this room (Synapse's `get_state_ids_for_pdu`), as
    /// recorded when it was stored (`event_state_before`), else the state after its parents:
    /// never recomputed from the event's own `unsigned`, which a remote event does not keep.
    fn state_before(&self, event_id: &EventId) -> Result<StateIds> {
        let row = self.event(event_id)?;
        state_before_event(self.conn, &self.version, &row.event_id)
    }

    /// The graph node of an event of this room (`None`: unknown here or of another room).
    fn node(&self, event_id: &str) -> Result<Option<Node>> {
        let Some(row) = store::get_event(self.conn, event_id)? else {
            return Ok(None);
        };
        if row.room_id != self.room_id.as_str() {
            return Ok(None);
        }
        let prev_events = Envelope::parse(&row.json)
            .map(|e| e.prev_events)
            .unwrap_or_default();
        Ok(Some(Node {
            depth: row.topological_ordering,
            stream: row.stream_ordering,
            prev_events,
        }))
    }

    /// The rows as PDUs, in order; ones that cannot be read are left out (logged).
    fn pdus(&self, rows: &[EventRow]) -> Result<Vec<Box<RawValue>>> {
        let mut pdus = Vec::with_capacity(rows.len());
        for row in rows {
            pdus.extend(federation_pdu(row, &self.version, false)?);
        }
        Ok(pdus)
    }

    /// As [`Self::pdus`], each redacted if the origin may not see it.
    fn visible_pdus(&self, rows: &[EventRow]) -> Result<Vec<Box<RawValue>>> {
        let mut visibility = HashMap::new();
        let mut pdus = Vec::with_capacity(rows.len());
        for row in rows {
            let visible = match visibility.get(&row.state_group) {
                Some(&visible) => visible,
                None => {
                    let visible = self.visible_at(row.state_group)?;
                    visibility.insert(row.state_group, visible);
                    visible
                }
            };
            pdus.extend(federation_pdu(row, &self.version, !visible)?);
        }
        Ok(pdus)
    }

    /// May the origin see events whose state after them is `group`?
    fn visible_at(&self, group: i64) -> Result<bool> {
        let visibility = visibility_at_group(self.conn, group)?;
        if matches!(
            visibility,
            HistoryVisibility::Shared | HistoryVisibility::WorldReadable
        ) {
            return Ok(true);
        }
        let suffix = format!(":{}", self.origin);
        let state = store::state_at_group(self.conn, group)?;
        let mut memberships = Vec::new();
        for ((kind, state_key), event_id) in &state {
            if kind != "m.room.member" || !state_key.ends_with(&suffix) {
                continue;
            }
            if let Some(json) = state_json(self.conn, event_id)? {
                let membership = Envelope::parse(&json)
                    .and_then(|e| e.content_str("membership"))
                    .map_or(MembershipState::Leave, MembershipState::from);
                memberships.push(membership);
            }
        }
        Ok(visible_to_server(&visibility, &memberships))
    }
}

/// Synapse's `event_visible_to_server` for one history visibility and the memberships of the
/// server's users in the state after the event.
pub fn visible_to_server(visibility: &HistoryVisibility, memberships: &[MembershipState]) -> bool {
    match visibility {
        HistoryVisibility::Invited => memberships
            .iter()
            .any(|m| matches!(m, MembershipState::Join | MembershipState::Invite)),
        HistoryVisibility::Joined => memberships.contains(&MembershipState::Join),
        // `shared`, `world_readable`, and any value this server does not know (as Synapse).
        _ => true,
    }
}

/// Does the room's current `m.room.server_acl` (if any) allow `server`?
fn acl_allows(conn: &Connection, room_id: &RoomId, server: &ServerName) -> Result<bool> {
    let Some(id) = store::current_state_event(conn, room_id.as_str(), "m.room.server_acl", "")?
    else {
        return Ok(true);
    };
    let Some(content) =
        state_json(conn, &id)?.and_then(|json| crate::services::rooms::stored::content(&json))
    else {
        return Ok(true);
    };
    match serde_json::from_value::<RoomServerAclEventContent>(content) {
        Ok(acl) => Ok(acl.is_allowed(server)),
        Err(e) => {
            // Synapse too ignores an ACL it cannot read.
            tracing::warn!(room = %room_id, event_id = id, "unreadable server ACL ignored: {e}");
            Ok(true)
        }
    }
}

fn parse_visibility(json: &str) -> HistoryVisibility {
    Envelope::parse(json)
        .and_then(|e| e.content_str("history_visibility"))
        .map_or(HistoryVisibility::Shared, HistoryVisibility::from)
}

fn current_visibility(conn: &Connection, room_id: &RoomId) -> Result<HistoryVisibility> {
    let id = store::current_state_event(conn, room_id.as_str(), "m.room.history_visibility", "")?;
    let json = id.map(|id| state_json(conn, &id)).transpose()?.flatten();
    Ok(json.map_or(HistoryVisibility::Shared, |json| parse_visibility(&json)))
}

fn visibility_at_group(conn: &Connection, group: i64) -> Result<HistoryVisibility> {
    let id = store::state_event_at_group(conn, group, "m.room.history_visibility", "")?;
    let json = id.map(|id| state_json(conn, &id)).transpose()?.flatten();
    Ok(json.map_or(HistoryVisibility::Shared, |json| parse_visibility(&json)))
}

/// The JSON of an event of a room state: a timeline event or an outlier (a room joined on
/// another server holds its state so until backfill reaches it); never a rejected one.
fn state_json(conn: &Connection, event_id: &str) -> Result<Option<String>> {
    Ok(pdus::auth_pdu(conn, event_id)?
        .filter(|found| !found.rejected)
        .map(|found| found.json))
}

/// The events of `room_id` among `ids` (unknown ones and those of other rooms left out).
fn room_rows(conn: &Connection, room_id: &RoomId, ids: &[String]) -> Result<Vec<EventRow>> {
    let mut rows = store::events_by_id(conn, ids)?;
    rows.retain(|row| row.room_id == room_id.as_str());
    Ok(rows)
}

/// The auth chain of `ids`: their auth events, and theirs, down to the create event, without
/// `ids` themselves unless one is an auth event of another; oldest first. Since room version 12
/// the create event is an auth event of every other event without being listed (its ID is the
/// room ID's), as Synapse counts it.
fn auth_chain(
    conn: &Connection,
    room_id: &RoomId,
    version: &RoomVersionId,
    ids: &[String],
) -> Result<Vec<EventRow>> {
    let implicit_create = version
        .rules()
        .is_some_and(|rules| rules.authorization.room_create_event_id_as_room_id)
        .then(|| format!("${}", &room_id.as_str()[1..]));
    let auth_events_of = |row: &EventRow| -> Result<Vec<String>> {
        let event_id = OwnedEventId::try_from(row.event_id.clone()).map_err(Error::internal)?;
        let pdu = Pdu::from_json(event_id, &row.json)?;
        let mut auth_events: Vec<String> =
            pdu.auth_events().iter().map(ToString::to_string).collect();
        if let Some(create) = &implicit_create
            && *pdu.event_type() != TimelineEventType::RoomCreate
        {
            auth_events.push(create.clone());
        }
        Ok(auth_events)
    };
    let mut seen: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    for row in room_rows(conn, room_id, ids)? {
        queue.extend(auth_events_of(&row)?);
    }
    let mut chain = Vec::new();
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id.clone()) {
            continue;
        }
        // Auth events may be outliers (the auth chain a join brought).
        let Some(row) = store::events_by_id(conn, std::slice::from_ref(&id))?
            .pop()
            .filter(|r| r.room_id == room_id.as_str())
        else {
            continue;
        };
        queue.extend(
            auth_events_of(&row)?
                .into_iter()
                .filter(|id| !seen.contains(id)),
        );
        chain.push(row);
    }
    chain.sort_by_key(|row| (row.topological_ordering, row.stream_ordering));
    Ok(chain)
}

/// A stored event as another server gets it: the PDU without `unsigned`, redacted (by the
/// room version's rules) when a redaction applies to it or `redact` asks. `None` (logged) for an
/// event that cannot be read back.
fn federation_pdu(
    row: &EventRow,
    version: &RoomVersionId,
    redact: bool,
) -> Result<Option<Box<RawValue>>> {
    let mut object: CanonicalJsonObject = match serde_json::from_str(&row.json) {
        Ok(object) => object,
        Err(e) => {
            tracing::warn!(
                event_id = %row.event_id,
                "stored event not served over federation: {e}"
            );
            return Ok(None);
        }
    };
    object.remove("unsigned");
    if redact || row.redacted_by.is_some() {
        let rules = version
            .rules()
            .ok_or_else(|| Error::internal("unknown room version"))?;
        object = match ruma::canonical_json::redact(object, &rules.redaction, None) {
            Ok(object) => object,
            Err(e) => {
                tracing::warn!(event_id = %row.event_id, "stored event cannot be redacted: {e}");
                return Ok(None);
            }
        };
    }
    serde_json::value::to_raw_value(&object)
        .map(Some)
        .map_err(Error::internal)
}

/// An event in the walks over `prev_events`.
#[derive(Debug, Clone)]
pub struct Node {
    pub depth: i64,
    pub stream: i64,
    pub prev_events: Vec<String>,
}

/// Synapse's backfill order: from `seeds`, the deepest event not yet taken, then its
/// `prev_events`; at most `limit` events (unknown ones skipped), deepest first. Each event is
/// looked up at most once, so a cycle ends and the work is bounded by `limit` times the
/// `prev_events` of each.
pub fn backfill_walk(
    seeds: &[String],
    limit: usize,
    mut node: impl FnMut(&str) -> Result<Option<Node>>,
) -> Result<Vec<String>> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut queue = BinaryHeap::new();
    let mut taken = Vec::new();
    for seed in seeds.iter().take(MAX_BACKFILL) {
        if seen.insert(seed.clone())
            && let Some(found) = node(seed)?
        {
            queue.push((found.depth, found.stream, seed.clone(), found.prev_events));
        }
    }
    while taken.len() < limit
        && let Some((_, _, id, prev_events)) = queue.pop()
    {
        taken.push(id);
        for prev in prev_events {
            if seen.insert(prev.clone())
                && let Some(found) = node(&prev)?
            {
                queue.push((found.depth, found.stream, prev, found.prev_events));
            }
        }
    }
    Ok(taken)
}

/// Synapse's `get_missing_events`: breadth-first over `prev_events` from `latest`, never past
/// `earliest` nor below `min_depth`, at most `limit` events, oldest first. Each event is looked
/// up at most once.
pub fn missing_events_walk(
    earliest: &[String],
    latest: &[String],
    limit: usize,
    min_depth: i64,
    mut node: impl FnMut(&str) -> Result<Option<Node>>,
) -> Result<Vec<String>> {
    let mut seen: HashSet<String> = earliest.iter().cloned().collect();
    let mut front = Vec::new();
    for id in latest {
        if seen.insert(id.clone())
            && let Some(found) = node(id)?
        {
            front.push(found);
        }
    }
    let mut found = Vec::new();
    while !front.is_empty() && found.len() < limit {
        let mut next = Vec::new();
        for event in front {
            for prev in event.prev_events {
                if found.len() >= limit {
                    break;
                }
                if !seen.insert(prev.clone()) {
                    continue;
                }
                let Some(prev_node) = node(&prev)? else {
                    continue;
                };
                if prev_node.depth < min_depth {
                    continue;
                }
                found.push((prev_node.depth, prev_node.stream, prev));
                next.push(prev_node);
            }
        }
        front = next;
    }
    found.sort();
    Ok(found.into_iter().map(|(_, _, id)| id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A graph of events `$<n>` at depth `depth`, with the given parents.
    fn graph(edges: &[(&str, i64, &[&str])]) -> HashMap<String, Node> {
        edges
            .iter()
            .enumerate()
            .map(|(i, (id, depth, prevs))| {
                (
                    id.to_string(),
                    Node {
                        depth: *depth,
                        stream: i as i64,
                        prev_events: prevs.iter().map(ToString::to_string).collect(),
                    },
                )
            })
            .collect()
    }

    fn lookup<'a>(
        graph: &'a HashMap<String, Node>,
        lookups: &'a mut Vec<String>,
    ) -> impl FnMut(&str) -> Result<Option<Node>> + 'a {
        move |id| {
            lookups.push(id.to_owned());
            Ok(graph.get(id).cloned())
        }
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    /// A line `$1 <- $2 <- … <- $n`, each at depth n.
    fn line(n: usize) -> HashMap<String, Node> {
        (1..=n)
            .map(|i| {
                (
                    format!("${i}"),
                    Node {
                        depth: i as i64,
                        stream: i as i64,
                        prev_events: if i > 1 {
                            vec![format!("${}", i - 1)]
                        } else {
                            vec![]
                        },
                    },
                )
            })
            .collect()
    }

    #[test]
    fn backfill_takes_the_deepest_first_from_the_given_events() {
        // A fork: $2a and $2b both after $1, joined by $3.
        let g = graph(&[
            ("$1", 1, &[]),
            ("$2a", 2, &["$1"]),
            ("$2b", 2, &["$1"]),
            ("$3", 3, &["$2a", "$2b"]),
            ("$4", 4, &["$3"]),
        ]);
        let mut lookups = Vec::new();
        let taken = backfill_walk(&ids(&["$4"]), 10, lookup(&g, &mut lookups)).unwrap();
        assert_eq!(taken, ["$4", "$3", "$2b", "$2a", "$1"]);
        assert_eq!(lookups.len(), 5, "each event looked up once: {lookups:?}");

        let mut lookups = Vec::new();
        let taken = backfill_walk(&ids(&["$4"]), 2, lookup(&g, &mut lookups)).unwrap();
        assert_eq!(taken, ["$4", "$3"]);
        // Unknown seeds are skipped; duplicates taken once.
        let mut lookups = Vec::new();
        let taken =
            backfill_walk(&ids(&["$nope", "$2a", "$2a"]), 10, lookup(&g, &mut lookups)).unwrap();
        assert_eq!(taken, ["$2a", "$1"]);
    }

    #[test]
    fn graph_walks_end_on_cycles() {
        // Hash-named events cannot form a cycle, but a database can hold anything.
        let g = graph(&[("$a", 3, &["$b"]), ("$b", 2, &["$c"]), ("$c", 1, &["$a"])]);
        let mut lookups = Vec::new();
        let taken = backfill_walk(&ids(&["$a"]), 100, lookup(&g, &mut lookups)).unwrap();
        assert_eq!(taken, ["$a", "$b", "$c"]);
        assert_eq!(lookups.len(), 3);
        let mut lookups = Vec::new();
        let found =
            missing_events_walk(&[], &ids(&["$a"]), 20, 0, lookup(&g, &mut lookups)).unwrap();
        assert_eq!(found, ["$c", "$b"], "`latest` itself is not returned");
        assert!(lookups.len() <= 5, "{lookups:?}");
    }

    #[test]
    fn backfill_work_is_bounded_by_the_limit() {
        let g = line(10_000);
        let mut lookups = Vec::new();
        let taken = backfill_walk(&ids(&["$10000"]), 100, lookup(&g, &mut lookups)).unwrap();
        assert_eq!(taken.len(), 100);
        assert_eq!(taken[0], "$10000");
        assert_eq!(taken[99], "$9901");
        assert!(lookups.len() <= 101, "{}", lookups.len());
    }

    #[test]
    fn missing_events_stop_at_earliest_limit_and_min_depth() {
        let g = line(100);
        let mut lookups = Vec::new();
        let found = missing_events_walk(
            &ids(&["$90"]),
            &ids(&["$95"]),
            20,
            0,
            lookup(&g, &mut lookups),
        )
        .unwrap();
        assert_eq!(found, ["$91", "$92", "$93", "$94"], "oldest first");

        let mut lookups = Vec::new();
        let found =
            missing_events_walk(&[], &ids(&["$100"]), 10, 0, lookup(&g, &mut lookups)).unwrap();
        assert_eq!(
            found,
            ids(&[
                "$90", "$91", "$92", "$93", "$94", "$95", "$96", "$97", "$98", "$99"
            ])
        );
        assert!(lookups.len() <= 21, "bounded work: {}", lookups.len());

        let mut lookups = Vec::new();
        let found =
            missing_events_walk(&[], &ids(&["$100"]), 20, 97, lookup(&g, &mut lookups)).unwrap();
        assert_eq!(found, ["$97", "$98", "$99"], "nothing below min_depth");

        // Unknown latest events: nothing.
        let mut lookups = Vec::new();
        let found =
            missing_events_walk(&[], &ids(&["$nope"]), 20, 0, lookup(&g, &mut lookups)).unwrap();
        assert!(found.is_empty());
    }

    #[test]
    fn servers_see_events_as_synapse_decides() {
        use HistoryVisibility as V;
        use MembershipState as M;
        for visibility in [V::Shared, V::WorldReadable] {
            assert!(visible_to_server(&visibility, &[]));
        }
        assert!(!visible_to_server(&V::Joined, &[]));
        assert!(!visible_to_server(&V::Joined, &[M::Invite, M::Leave]));
        assert!(visible_to_server(&V::Joined, &[M::Leave, M::Join]));
        assert!(!visible_to_server(&V::Invited, &[M::Leave, M::Ban]));
        assert!(visible_to_server(&V::Invited, &[M::Invite]));
        assert!(visible_to_server(&V::Invited, &[M::Join]));
    }
}

/// The endpoints' rules on a room built in process, with members of another server (which the
/// HTTP tests cannot have until other servers' keys can be fetched).
#[cfg(test)]
mod room_tests {
    use std::sync::Arc;

    use ruma::{OwnedRoomId, ServerName, room_id, server_name, user_id};
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        config::Config,
        services::{
            Services,
            rooms::{CreateRoom, EventDraft, Preset},
        },
    };

    struct Room {
        services: Arc<Services>,
        room_id: OwnedRoomId,
        _dir: tempfile::TempDir,
    }

    impl Room {
        async fn send(&self, sender: &str, body: &str) -> OwnedEventId {
            let content = json!({"msgtype": "m.text", "body": body});
            self.append(sender, EventDraft::message("m.room.message", content))
                .await
        }

        async fn state(&self, sender: &str, kind: &str, key: &str, content: Value) -> OwnedEventId {
            self.append(sender, EventDraft::state(kind, key, content))
                .await
        }

        async fn append(&self, sender: &str, draft: EventDraft) -> OwnedEventId {
            let sender = ruma::UserId::parse(sender).unwrap();
            self.services
                .rooms
                .append(&self.room_id, &sender, draft)
                .await
                .unwrap()
                .event_id
        }

        fn serve(&self) -> &Serve {
            &self.services.federation_serve
        }

        async fn event(&self, origin: &ServerName, id: &EventId) -> Result<Value> {
            let pdu = self.serve().event(origin, id).await?;
            Ok(serde_json::from_str(pdu.get()).unwrap())
        }
    }

    /// A public room of `@alice:test.local` with `history_visibility: joined`.
    async fn room() -> Room {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            server_name: "test.local".to_owned(),
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        let services = Services::open(config).unwrap();
        let alice = user_id!("@alice:test.local");
        services
            .users
            .create(alice, None, false, |_| Ok(()))
            .await
            .unwrap();
        let room_id = services
            .rooms
            .create_room(
                alice,
                CreateRoom {
                    preset: Some(Preset::Public),
                    ..CreateRoom::default()
                },
            )
            .await
            .unwrap();
        Room {
            services,
            room_id,
            _dir: dir,
        }
    }

    /// The HTTP status of an error.
    fn status<T>(result: Result<T>) -> http::StatusCode {
        match result {
            Err(Error::Matrix { status, .. }) => status,
            Err(e) => panic!("not a Matrix error: {e:?}"),
            Ok(_) => panic!("not an error"),
        }
    }

    fn body(pdu: &Value) -> &Value {
        &pdu["content"]["body"]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn servers_see_what_their_users_could_see() {
        let room = room().await;
        let alice = "@alice:test.local";
        let other = server_name!("other.example");
        let stranger = server_name!("stranger.example");
        let shared = room.send(alice, "shared").await;
        room.state(
            alice,
            "m.room.history_visibility",
            "",
            json!({"history_visibility": "joined"}),
        )
        .await;
        let hidden = room.send(alice, "before bob").await;
        let join = room
            .state(
                "@bob:other.example",
                "m.room.member",
                "@bob:other.example",
                json!({"membership": "join"}),
            )
            .await;
        let seen = room.send(alice, "with bob").await;

        // Events are judged by the state after them.
        let pdu = room.event(other, &shared).await.unwrap();
        assert_eq!(body(&pdu), "shared");
        assert!(pdu.get("unsigned").is_none(), "{pdu}");
        assert!(pdu["signatures"]["test.local"].is_object(), "{pdu}");
        let pdu = room.event(other, &hidden).await.unwrap();
        assert_eq!(pdu["content"], json!({}), "redacted: {pdu}");
        assert_eq!(pdu["type"], "m.room.message");
        assert!(
            pdu["hashes"]["sha256"].is_string(),
            "redaction keeps hashes"
        );
        assert_eq!(body(&room.event(other, &seen).await.unwrap()), "with bob");
        // This server's own users saw everything.
        let ours = server_name!("test.local");
        assert_eq!(
            body(&room.event(ours, &hidden).await.unwrap()),
            "before bob"
        );

        // Backfill: the given event first, deepest first, invisible ones redacted.
        let pdus = room
            .serve()
            .backfill(other, &room.room_id, vec![seen.clone()], UInt::from(4u32))
            .await
            .unwrap();
        let pdus: Vec<Value> = pdus
            .iter()
            .map(|p| serde_json::from_str(p.get()).unwrap())
            .collect();
        assert_eq!(pdus.len(), 4);
        assert_eq!(body(&pdus[0]), "with bob");
        assert_eq!(pdus[1]["state_key"], "@bob:other.example");
        assert_eq!(pdus[2]["content"], json!({}), "{}", pdus[2]);
        assert_eq!(pdus[3]["type"], "m.room.history_visibility");
        let depths: Vec<i64> = pdus.iter().map(|p| p["depth"].as_i64().unwrap()).collect();
        assert!(depths.windows(2).all(|w| w[0] > w[1]), "{depths:?}");

        // Missing events between the shared message and the last: oldest first, bounded.
        let events = room
            .serve()
            .missing_events(
                other,
                &room.room_id,
                vec![shared.clone()],
                vec![seen.clone()],
                UInt::from(10u32),
                UInt::from(0u32),
            )
            .await
            .unwrap();
        let events: Vec<Value> = events
            .iter()
            .map(|p| serde_json::from_str(p.get()).unwrap())
            .collect();
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0]["type"], "m.room.history_visibility");
        assert_eq!(events[1]["content"], json!({}), "redacted");
        assert_eq!(events[2]["state_key"], "@bob:other.example");

        // A server with nobody in the room reads nothing; an unknown room is 404.
        for result in [
            room.event(stranger, &shared).await.map(|_| ()),
            room.serve()
                .state_ids(stranger, &room.room_id, &seen)
                .await
                .map(|_| ()),
            room.serve()
                .event_auth(stranger, &room.room_id, &seen)
                .await
                .map(|_| ()),
        ] {
            assert_eq!(status(result), http::StatusCode::FORBIDDEN);
        }
        let unknown = room
            .serve()
            .state_ids(other, room_id!("!nope:test.local"), &seen)
            .await;
        assert_eq!(status(unknown), http::StatusCode::NOT_FOUND);
        // Events of the room only.
        let chain = room
            .serve()
            .event_auth(other, &room.room_id, &join)
            .await
            .unwrap();
        let types: Vec<Value> = chain
            .iter()
            .map(|p| serde_json::from_str::<Value>(p.get()).unwrap()["type"].clone())
            .collect();
        assert!(types.contains(&json!("m.room.create")), "{types:?}");
        assert!(types.contains(&json!("m.room.join_rules")), "{types:?}");
        assert!(!types.contains(&json!("m.room.message")), "{types:?}");

        // Once the room is world-readable, anyone may read it.
        room.state(
            alice,
            "m.room.history_visibility",
            "",
            json!({"history_visibility": "world_readable"}),
        )
        .await;
        assert!(room.event(stranger, &shared).await.is_ok());
        assert_eq!(
            room.event(stranger, &hidden).await.unwrap()["content"],
            json!({}),
            "still judged by the state after the event"
        );

        // The server ACL shuts out a denied server from every endpoint.
        room.state(
            alice,
            "m.room.server_acl",
            "",
            json!({"allow": ["*"], "deny": ["other.example"], "allow_ip_literals": false}),
        )
        .await;
        assert_eq!(
            status(room.event(other, &seen).await),
            http::StatusCode::FORBIDDEN
        );
        let backfill = room
            .serve()
            .backfill(other, &room.room_id, vec![seen], UInt::from(4u32))
            .await;
        assert_eq!(status(backfill), http::StatusCode::FORBIDDEN);
        assert!(room.event(stranger, &shared).await.is_ok());
    }
}
