//! `/context`: the events around one event, with tokens for `/messages` on both sides and the
//! room state at the end of what is returned. Search results reuse the same window.
//!
//! `limit` is split around the event (half before), the filter and history visibility apply, and
//! the state returned is that after the last event returned (only the senders' members with
//! `lazy_load_members`). An invisible or unknown event is 404.

use std::collections::HashSet;

use ruma::{EventId, RoomId, RoomVersionId, UserId, api::client::filter::RoomEventFilter};
use rusqlite::Connection;
use serde_json::Value;

use super::{
    Rooms,
    read::{PaginationToken, Visibility, render, unreadable_event},
    relations::{Reader, bundle_aggregations},
};
use crate::{
    error::{Error, Result},
    services::filter::room_event_matches,
    storage::rooms::{self as store, EventRow, TopoPosition},
};

pub struct EventContext {
    pub event: Value,
    /// Newest first.
    pub before: Vec<Value>,
    /// Oldest first.
    pub after: Vec<Value>,
    /// `/messages` token for paginating backwards from the oldest event looked at.
    pub start: String,
    /// `/messages` token for paginating forwards from the newest event looked at.
    pub end: String,
    pub state: Vec<Value>,
}

/// Events of a window on one side of an event.
pub(super) struct Side {
    pub events: Vec<Value>,
    pub rows: Vec<EventRow>,
    /// The last position looked at (the token to continue from).
    pub position: TopoPosition,
}

/// Up to `limit` visible events from `from` (exclusive) in one direction that pass `keep`.
#[allow(clippy::too_many_arguments)]
pub(super) fn scan(
    conn: &Connection,
    room_id: &str,
    from: TopoPosition,
    backwards: bool,
    limit: usize,
    visibility: &mut Visibility<'_>,
    version: &RoomVersionId,
    reader: Reader<'_>,
    keep: &dyn Fn(&Value) -> bool,
) -> Result<Side> {
    let mut side = Side {
        events: Vec::new(),
        rows: Vec::new(),
        position: from,
    };
    if limit == 0 {
        return Ok(side);
    }
    let batch = (limit * 2).max(10);
    loop {
        let rows = store::room_events_paginate(conn, room_id, side.position, backwards, batch)?;
        let exhausted = rows.len() < batch;
        for row in rows {
            side.position = (row.topological_ordering, row.stream_ordering);
            if !visibility.allows(&row)? {
                continue;
            }
            let Some(event) = render(
                conn,
                &row,
                version,
                Some((reader.user, reader.device)),
                true,
            )?
            else {
                continue;
            };
            if !keep(&event) {
                continue;
            }
            side.events.push(event);
            side.rows.push(row);
            if side.events.len() >= limit {
                return Ok(side);
            }
        }
        if exhausted {
            return Ok(side);
        }
    }
}

/// The row of an event of the room if the reader may see it; 404 otherwise.
pub(super) fn visible_row(
    conn: &Connection,
    room_id: &str,
    event_id: &str,
    visibility: &mut Visibility<'_>,
) -> Result<EventRow> {
    let row = store::get_event(conn, event_id)?
        .filter(|row| row.room_id == room_id)
        .ok_or_else(|| Error::not_found("Event not found"))?;
    if !visibility.allows(&row)? {
        return Err(Error::not_found("Event not found"));
    }
    Ok(row)
}

impl Rooms {
    /// `/context`: `limit` events split around the event (half before, the rest after), filtered
    /// by `filter`; the state is the state after the last event returned, only the members of
    /// the senders shown when the filter lazy-loads members.
    pub async fn context(
        &self,
        room_id: &RoomId,
        user: &UserId,
        device: Option<String>,
        event_id: &EventId,
        limit: usize,
        filter: RoomEventFilter,
    ) -> Result<EventContext> {
        let version = self
            .room_version(room_id)
            .await
            .map_err(|_| Error::not_found("Event not found"))?;
        let (room, user, event_id) = (room_id.to_string(), user.to_owned(), event_id.to_string());
        self.db
            .read(move |c| {
                let reader = Reader {
                    user: user.as_str(),
                    device: device.as_deref(),
                };
                let mut visibility = Visibility::new(c, &room, &user)?;
                let row = visible_row(c, &room, &event_id, &mut visibility)?;
                let position = (row.topological_ordering, row.stream_ordering);
                let before_limit = limit / 2;
                let after_limit = limit - before_limit;
                let keep = |e: &Value| room_event_matches(&filter, e);
                let before = scan(
                    c,
                    &room,
                    position,
                    true,
                    before_limit,
                    &mut visibility,
                    &version,
                    reader,
                    &keep,
                )?;
                let after = scan(
                    c,
                    &room,
                    position,
                    false,
                    after_limit,
                    &mut visibility,
                    &version,
                    reader,
                    &keep,
                )?;
                let mut event = vec![
                    render(c, &row, &version, Some((reader.user, reader.device)), true)?
                        .ok_or_else(unreadable_event)?,
                ];
                let mut before_events = before.events;
                let mut after_events = after.events;
                bundle_aggregations(c, &mut event, &room, reader)?;
                bundle_aggregations(c, &mut before_events, &room, reader)?;
                bundle_aggregations(c, &mut after_events, &room, reader)?;

                let last_group = after.rows.last().unwrap_or(&row).state_group;
                let senders: HashSet<&str> = before_events
                    .iter()
                    .chain(&event)
                    .chain(&after_events)
                    .filter_map(|e| e["sender"].as_str())
                    .collect();
                let lazy = !filter.lazy_load_options.is_disabled();
                let ids: Vec<String> = store::state_at_group(c, last_group)?
                    .into_iter()
                    .filter(|((kind, key), _)| {
                        !lazy || kind != "m.room.member" || senders.contains(key.as_str())
                    })
                    .map(|(_, id)| id)
                    .collect();
                let mut state = Vec::new();
                for state_row in store::events_by_id(c, &ids)? {
                    let Some(rendered) = render(c, &state_row, &version, None, true)? else {
                        continue;
                    };
                    if room_event_matches(&filter, &rendered) {
                        state.push(rendered);
                    }
                }
                Ok(EventContext {
                    event: event.pop().unwrap_or_default(),
                    before: before_events,
                    after: after_events,
                    start: PaginationToken::Topological(before.position).to_string(),
                    end: PaginationToken::Topological(after.position).to_string(),
                    state,
                })
            })
            .await
    }
}
