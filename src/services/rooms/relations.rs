//! Event relations: `/relations` pages, the thread list of `/threads`, and the bundled
//! aggregations (`unsigned.m.relations`) added to events served to clients.
//!
//! Bundling costs one indexed query per page of events ([`bundle_aggregations`], or per
//! response for the pages of several rooms: [`bundle_aggregations_of_rooms`]): every unredacted
//! `m.replace`, `m.thread` and `m.reference` relation to any event of the page. Only the latest
//! edit and the latest thread reply are then read and rendered.
//!
//! Relations come from the indexed `relates_to`/`rel_type` columns of `events`, filled from
//! `content.m.relates_to` when an event is stored. `/relations` pages them in topological order
//! with the `t<depth>_<stream>` tokens of `/messages` (so `from`/`to` accept `/messages` and
//! `/sync` tokens too); `recurse=true` follows relations of relations to [`MAX_RECURSION_DEPTH`]
//! (3, a recursive CTE). Bundled aggregations (the latest `m.replace` by the original sender,
//! `m.thread` with `latest_event`/`count`/`current_user_participated`, `m.reference`) go on every
//! page of `/messages`, `/event`, `/context`, `/relations`, `/threads`, `/search` and the /sync
//! timeline; the latest edit and thread reply are those the reader may see (history visibility, per
//! room), while `count` counts every reply; edits, annotations and redacted events get none.
//! `/threads` lists thread roots by the position of their newest reply (partial index
//! `events_thread_replies`), `include=participated` keeping those the reader started or replied to.

use std::collections::HashMap;

use ruma::{EventId, RoomId, RoomVersionId, UserId};
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::{
    Rooms,
    read::{Direction, PaginationToken, Visibility, render, resolve},
};
use crate::{
    error::{Error, Result},
    storage::{
        relations::{self as rel_store, RelatedEvent, RelationQuery},
        rooms::{self as store, EventRow, TopoPosition},
    },
};

/// How deep `recurse=true` follows relations of relations (as Synapse does).
pub const MAX_RECURSION_DEPTH: u32 = 3;

/// Who reads the events: their user ID and, when known, device (for `transaction_id`).
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    pub user: &'a str,
    pub device: Option<&'a str>,
}

/// Adds `unsigned.m.relations` to client events: the latest edit (`m.replace`, the whole edit
/// event), the thread summary (`m.thread`: `latest_event`, `count`,
/// `current_user_participated`) and references (`m.reference`). Events of other rooms than
/// `room_id` (or their own `room_id` field) never count. Redacted events, edits and annotations
/// get no aggregations.
pub fn bundle_aggregations(
    conn: &Connection,
    events: &mut [Value],
    room_id: &str,
    reader: Reader<'_>,
) -> Result<()> {
    bundle_aggregations_of_rooms(conn, &mut [(room_id, events)], reader)
}

/// [`bundle_aggregations`] for the pages of several rooms (each page's events of its room
/// unless they carry their own `room_id`) with one query for all of them: a sliding sync
/// response bundles the timelines of all its rooms at once instead of one query per room.
pub fn bundle_aggregations_of_rooms(
    conn: &Connection,
    pages: &mut [(&str, &mut [Value])],
    reader: Reader<'_>,
) -> Result<()> {
    // (page, event) of every event that may have aggregations.
    let eligible: Vec<(usize, usize)> = pages
        .iter()
        .enumerate()
        .flat_map(|(p, (_, events))| {
            events
                .iter()
                .enumerate()
                .filter(|(_, e)| may_have_aggregations(e))
                .map(move |(i, _)| (p, i))
        })
        .collect();
    if eligible.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = eligible
        .iter()
        .filter_map(|&(p, i)| pages[p].1[i]["event_id"].as_str())
        .collect();
    let related = rel_store::aggregated_relations(conn, &ids)?;
    if related.is_empty() {
        return Ok(());
    }
    let mut by_parent: HashMap<&str, Vec<&RelatedEvent>> = HashMap::new();
    for relation in &related {
        by_parent
            .entry(relation.parent.as_str())
            .or_default()
            .push(relation);
    }
    let mut related_events = RelatedRenderer {
        conn,
        reader,
        versions: HashMap::new(),
        visibility: HashMap::new(),
    };
    for (page, index) in eligible {
        let (room_id, events) = &mut pages[page];
        let Some(bundle) = bundle_of(&events[index], room_id, &by_parent, &mut related_events)?
        else {
            continue;
        };
        let event = &mut events[index];
        if !event["unsigned"].is_object() {
            event["unsigned"] = json!({});
        }
        event["unsigned"]["m.relations"] = Value::Object(bundle);
    }
    Ok(())
}

/// The bundled aggregations of one event (of `room_id` unless it names its own room), from the
/// relations to the page's events; `None` when it has none.
fn bundle_of(
    event: &Value,
    room_id: &str,
    by_parent: &HashMap<&str, Vec<&RelatedEvent>>,
    related_events: &mut RelatedRenderer<'_>,
) -> Result<Option<Map<String, Value>>> {
    let reader = related_events.reader;
    let Some(relations) = event["event_id"].as_str().and_then(|id| by_parent.get(id)) else {
        return Ok(None);
    };
    let event_room = event["room_id"].as_str().unwrap_or(room_id).to_owned();
    let with_room_id = event.get("room_id").is_some();
    let sender = event["sender"].as_str().unwrap_or_default();
    let event_type = event["type"].as_str().unwrap_or_default();
    let is_state = event.get("state_key").is_some();
    let relations: Vec<&RelatedEvent> = relations
        .iter()
        .copied()
        .filter(|r| r.room_id == event_room)
        .collect();
    let mut bundle = Map::new();

    // The latest edit by the original sender, of the same type, by (origin_server_ts, ID),
    // among those the reader may see.
    let mut edits: Vec<&&RelatedEvent> = relations
        .iter()
        .filter(|r| {
            r.rel_type == "m.replace"
                && !is_state
                && r.sender == sender
                && r.event_type == event_type
        })
        .collect();
    edits.sort_by(|a, b| (b.origin_server_ts, &b.event_id).cmp(&(a.origin_server_ts, &a.event_id)));
    if let Some(rendered) = related_events.newest_visible(
        &event_room,
        edits.iter().map(|r| r.event_id.as_str()),
        with_room_id,
    )? {
        bundle.insert("m.replace".to_owned(), rendered);
    }

    // The thread summary: its latest reply the reader may see (a reply after they left a
    // room with restricted history stays hidden, as it does in /messages), and the count of
    // all replies.
    let mut replies: Vec<&&RelatedEvent> = relations
        .iter()
        .filter(|r| r.rel_type == "m.thread")
        .collect();
    replies.sort_by_key(|r| std::cmp::Reverse(r.position));
    if let Some(latest_event) = related_events.newest_visible(
        &event_room,
        replies.iter().map(|r| r.event_id.as_str()),
        with_room_id,
    )? {
        let participated = sender == reader.user || replies.iter().any(|r| r.sender == reader.user);
        bundle.insert(
            "m.thread".to_owned(),
            json!({
                "latest_event": latest_event,
                "count": replies.len(),
                "current_user_participated": participated,
            }),
        );
    }

    let mut references: Vec<&&RelatedEvent> = relations
        .iter()
        .filter(|r| r.rel_type == "m.reference")
        .collect();
    if !references.is_empty() {
        references.sort_by_key(|r| r.position);
        let chunk: Vec<Value> = references
            .iter()
            .map(|r| json!({"event_id": r.event_id}))
            .collect();
        bundle.insert("m.reference".to_owned(), json!({ "chunk": chunk }));
    }
    Ok((!bundle.is_empty()).then_some(bundle))
}

/// [`bundle_aggregations`] for a single event.
pub fn bundle_one(
    conn: &Connection,
    event: Value,
    room_id: &str,
    reader: Reader<'_>,
) -> Result<Value> {
    let mut events = [event];
    bundle_aggregations(conn, &mut events, room_id, reader)?;
    let [event] = events;
    Ok(event)
}

/// Redacted events, edits and annotations carry no aggregations.
fn may_have_aggregations(event: &Value) -> bool {
    if event["unsigned"].get("redacted_because").is_some() || event["event_id"].as_str().is_none() {
        return false;
    }
    !matches!(
        event["content"]["m.relates_to"]["rel_type"].as_str(),
        Some("m.replace" | "m.annotation")
    )
}

/// Renders the related events of a page for its reader, each judged by the history visibility
/// of its own room (state and room versions cached per room).
struct RelatedRenderer<'c> {
    conn: &'c Connection,
    reader: Reader<'c>,
    versions: HashMap<String, RoomVersionId>,
    visibility: HashMap<String, Visibility<'c>>,
}

impl RelatedRenderer<'_> {
    /// The first of `event_ids` (newest first) the reader may see, rendered.
    fn newest_visible<'e>(
        &mut self,
        room_id: &str,
        event_ids: impl Iterator<Item = &'e str>,
        with_room_id: bool,
    ) -> Result<Option<Value>> {
        for event_id in event_ids {
            let Some(row) = store::get_event(self.conn, event_id)? else {
                continue;
            };
            if !self.visible(room_id, &row)? {
                continue;
            }
            let version = self.version(room_id)?;
            if let Some(event) = render(
                self.conn,
                &row,
                &version,
                Some((self.reader.user, self.reader.device)),
                with_room_id,
            )? {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }

    fn visible(&mut self, room_id: &str, row: &EventRow) -> Result<bool> {
        if !self.visibility.contains_key(room_id) {
            let user = <&UserId>::try_from(self.reader.user).map_err(Error::internal)?;
            let visibility = Visibility::new(self.conn, room_id, user)?;
            self.visibility.insert(room_id.to_owned(), visibility);
        }
        match self.visibility.get_mut(room_id) {
            Some(visibility) => visibility.allows(row),
            None => Ok(false),
        }
    }

    fn version(&mut self, room_id: &str) -> Result<RoomVersionId> {
        if let Some(version) = self.versions.get(room_id) {
            return Ok(version.clone());
        }
        let version = store::room_version(self.conn, room_id)?
            .ok_or_else(|| Error::internal("room without version"))?;
        let version = RoomVersionId::try_from(version.as_str()).map_err(Error::internal)?;
        self.versions.insert(room_id.to_owned(), version.clone());
        Ok(version)
    }
}

/// What `/relations` asks for.
#[derive(Debug, Clone)]
pub struct RelationsRequest {
    pub rel_type: Option<String>,
    pub event_type: Option<String>,
    pub from: Option<PaginationToken>,
    pub to: Option<PaginationToken>,
    pub dir: Direction,
    pub limit: usize,
    pub recurse: bool,
}

pub struct RelationsPage {
    pub chunk: Vec<Value>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    /// Set when the client asked to recurse: how deep the server followed relations.
    pub recursion_depth: Option<u32>,
}

pub struct ThreadsPage {
    pub chunk: Vec<Value>,
    pub next_batch: Option<String>,
}

/// Fetches `limit` visible items from a source of `(event ID, position)` pages, stopping at
/// `stop`; returns the rendered events and the position to continue from, if there is more.
struct Pager<'c, 'v> {
    conn: &'c Connection,
    visibility: Visibility<'v>,
    version: RoomVersionId,
}

impl Pager<'_, '_> {
    fn collect(
        &mut self,
        mut fetch: impl FnMut(TopoPosition, usize) -> Result<Vec<rel_store::PagedEvent>>,
        start: TopoPosition,
        stop: Option<&dyn Fn(TopoPosition) -> bool>,
        limit: usize,
        reader: Reader<'_>,
    ) -> Result<(Vec<Value>, Option<TopoPosition>)> {
        let batch = (limit * 2).max(10);
        let mut position = start;
        let mut chunk = Vec::new();
        loop {
            let ids = fetch(position, batch)?;
            let exhausted = ids.len() < batch;
            let count = ids.len();
            for (
                index,
                rel_store::PagedEvent {
                    event_id,
                    position: here,
                },
            ) in ids.into_iter().enumerate()
            {
                if stop.is_some_and(|stop| stop(here)) {
                    return Ok((chunk, None));
                }
                position = here;
                let Some(row) = store::get_event(self.conn, &event_id)? else {
                    continue;
                };
                if !self.visibility.allows(&row)? {
                    continue;
                }
                let Some(event) = render(
                    self.conn,
                    &row,
                    &self.version,
                    Some((reader.user, reader.device)),
                    true,
                )?
                else {
                    continue;
                };
                chunk.push(event);
                if chunk.len() >= limit {
                    let more = index + 1 < count || !exhausted;
                    return Ok((chunk, more.then_some(position)));
                }
            }
            if exhausted {
                return Ok((chunk, None));
            }
        }
    }
}

impl Rooms {
    /// `/relations`: events relating to `parent` (404 unless the reader may see it).
    pub async fn relations(
        &self,
        room_id: &RoomId,
        user: &UserId,
        device: Option<String>,
        parent: &EventId,
        request: RelationsRequest,
    ) -> Result<RelationsPage> {
        let version = self.room_version(room_id).await?;
        let (room, user, parent) = (room_id.to_string(), user.to_owned(), parent.to_string());
        self.db
            .read(move |c| {
                let reader = Reader {
                    user: user.as_str(),
                    device: device.as_deref(),
                };
                let mut visibility = Visibility::new(c, &room, &user)?;
                let parent_row = store::get_event(c, &parent)?
                    .filter(|row| row.room_id == room)
                    .ok_or_else(|| Error::not_found("Event not found"))?;
                if !visibility.allows(&parent_row)? {
                    return Err(Error::not_found("Event not found"));
                }
                let backwards = request.dir == Direction::Backward;
                let start = match request.from {
                    Some(token) => resolve(c, &room, token, backwards)?,
                    None if backwards => (i64::MAX, i64::MAX),
                    None => (i64::MIN, i64::MIN),
                };
                let stop = request
                    .to
                    .map(|t| resolve(c, &room, t, !backwards))
                    .transpose()?;
                // `to` is exclusive, as for `/messages`.
                let stop_fn = move |here: TopoPosition| match stop {
                    Some(stop) if backwards => here <= stop,
                    Some(stop) => here >= stop,
                    None => false,
                };
                let depth = if request.recurse {
                    MAX_RECURSION_DEPTH
                } else {
                    1
                };
                let query = RelationQuery {
                    room_id: &room,
                    parent: &parent,
                    rel_type: request.rel_type.as_deref(),
                    event_type: request.event_type.as_deref(),
                    depth,
                };
                let mut pager = Pager {
                    conn: c,
                    visibility,
                    version,
                };
                let (mut chunk, next) = pager.collect(
                    |from, limit| {
                        Ok(rel_store::relations_page(
                            c, &query, from, backwards, limit,
                        )?)
                    },
                    start,
                    Some(&stop_fn),
                    request.limit,
                    reader,
                )?;
                bundle_aggregations(c, &mut chunk, &room, reader)?;
                Ok(RelationsPage {
                    chunk,
                    next_batch: next.map(|p| PaginationToken::Topological(p).to_string()),
                    prev_batch: request.from.map(|t| t.to_string()),
                    recursion_depth: request.recurse.then_some(depth),
                })
            })
            .await
    }

    /// `/threads`: thread roots by latest activity, newest first, with their bundled summary.
    pub async fn threads(
        &self,
        room_id: &RoomId,
        user: &UserId,
        device: Option<String>,
        participated_only: bool,
        from: Option<PaginationToken>,
        limit: usize,
    ) -> Result<ThreadsPage> {
        self.check_can_read_current(room_id, user).await?;
        let version = self.room_version(room_id).await?;
        let (room, user) = (room_id.to_string(), user.to_owned());
        self.db
            .read(move |c| {
                let reader = Reader {
                    user: user.as_str(),
                    device: device.as_deref(),
                };
                let start = match from {
                    Some(token) => resolve(c, &room, token, true)?,
                    None => (i64::MAX, i64::MAX),
                };
                let participant = participated_only.then_some(user.as_str());
                let mut pager = Pager {
                    conn: c,
                    visibility: Visibility::new(c, &room, &user)?,
                    version,
                };
                let (mut chunk, next) = pager.collect(
                    |before, limit| {
                        Ok(rel_store::thread_roots(
                            c,
                            &room,
                            before,
                            participant,
                            limit,
                        )?)
                    },
                    start,
                    None,
                    limit,
                    reader,
                )?;
                bundle_aggregations(c, &mut chunk, &room, reader)?;
                Ok(ThreadsPage {
                    chunk,
                    next_batch: next.map(|p| PaginationToken::Topological(p).to_string()),
                })
            })
            .await
    }
}
