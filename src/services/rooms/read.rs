//! Reading rooms: state, single events, members, and paginated history, each filtered by the
//! spec's history-visibility rules for the reader.
//!
//! Reading state (`/state`, `/state/{type}/{key}`, `/members`): members, and anyone in a
//! world-readable room, read the current state; a former member (left, kicked, banned) the state at
//! their leave, never later; anyone else gets 403. `/members?at=` moves the point back
//! (`readable_state_ids`).

use std::{
    collections::{HashMap, HashSet},
    fmt,
    str::FromStr,
};

use ruma::{
    OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, UserId,
    events::room::member::MembershipState::{self, Ban, Invite, Join, Knock, Leave},
};
use rusqlite::Connection;
use serde_json::{Value, value::RawValue};

use super::{
    Rooms,
    format::{client_event, client_event_raw},
    stored::{self, Envelope},
};
use crate::{
    error::{Error, Result},
    storage::rooms::{self as store, EventRow, StateIds, TopoPosition},
};

/// A `/messages` token: a topological position (`t<depth>_<stream>`), or a sync token
/// (`s<stream>`) that clients may also pass. A topological token names the position of the last
/// event a page returned; as `from` and as `to` it is exclusive, so that pages chain without
/// overlap in either direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaginationToken {
    Topological(TopoPosition),
    Stream(i64),
}

impl fmt::Display for PaginationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Topological((topo, stream)) => write!(f, "t{topo}_{stream}"),
            Self::Stream(stream) => write!(f, "s{stream}"),
        }
    }
}

impl FromStr for PaginationToken {
    type Err = Error;

    fn from_str(token: &str) -> Result<Self> {
        let invalid = || Error::invalid_param(format!("Invalid pagination token `{token}`"));
        if let Some(rest) = token.strip_prefix('t') {
            let (topo, stream) = rest.split_once('_').ok_or_else(invalid)?;
            return Ok(Self::Topological((
                topo.parse().map_err(|_| invalid())?,
                stream.parse().map_err(|_| invalid())?,
            )));
        }
        // Sync tokens carry further parts after `_`; the first is the stream position.
        let stream = token
            .strip_prefix('s')
            .ok_or_else(invalid)?
            .split('_')
            .next()
            .ok_or_else(invalid)?;
        Ok(Self::Stream(stream.parse().map_err(|_| invalid())?))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Backward,
    Forward,
}

pub struct MessagesPage {
    pub chunk: Vec<Value>,
    pub start: String,
    pub end: Option<String>,
    /// Member events of the senders in `chunk` (for `lazy_load_members`).
    pub senders: Vec<String>,
}

/// Which events a reader may see: the spec's history-visibility algorithm with the state after
/// each event, cached per state group; and not the non-state events of users the reader
/// ignores (`services::ignored`).
pub struct Visibility<'a> {
    conn: &'a Connection,
    user: String,
    joined_now: bool,
    cache: HashMap<i64, bool>,
    ignored: HashSet<String>,
}

impl<'a> Visibility<'a> {
    pub fn new(conn: &'a Connection, room_id: &str, user: &UserId) -> Result<Self> {
        let joined_now = store::membership(conn, room_id, user.as_str())?
            .is_some_and(|m| m.membership == Join.as_str());
        Ok(Self {
            conn,
            user: user.to_string(),
            joined_now,
            cache: HashMap::new(),
            ignored: crate::services::ignored::ignored_users(conn, user.as_str())?,
        })
    }

    /// History visibility only: for acting on an event (a moderator redacting the message of
    /// someone they ignore), not for showing it.
    pub fn history_only(conn: &'a Connection, room_id: &str, user: &UserId) -> Result<Self> {
        let mut visibility = Self::new(conn, room_id, user)?;
        visibility.ignored.clear();
        Ok(visibility)
    }

    pub fn allows(&mut self, row: &EventRow) -> Result<bool> {
        if self.ignored.contains(&row.sender)
            && Envelope::parse(&row.json).is_some_and(|event| event.state_key.is_none())
        {
            return Ok(false);
        }
        if let Some(allowed) = self.own_membership_change(row)? {
            return Ok(allowed);
        }
        if let Some(&allowed) = self.cache.get(&row.state_group) {
            return Ok(allowed);
        }
        let visibility = self.visibility_at(row.state_group)?;
        // World-readable history, and shared history of a room the reader is in now, are
        // visible whatever the reader's membership was then: that is not read for them.
        let visible_whatever_membership =
            visibility == "world_readable" || (visibility == "shared" && self.joined_now);
        let allowed = visible_whatever_membership || {
            let membership =
                self.content_at(row.state_group, "m.room.member", &self.user, "membership")?;
            self.judge(&visibility, membership.map(MembershipState::from).as_ref())
        };
        self.cache.insert(row.state_group, allowed);
        Ok(allowed)
    }

    /// Whether an event is visible by the history visibility and the reader's membership at it.
    fn judge(&self, visibility: &str, membership: Option<&MembershipState>) -> bool {
        visibility == "world_readable"
            || membership == Some(&Join)
            || (visibility == "shared" && self.joined_now)
            || (visibility == "invited" && membership == Some(&Invite))
    }

    /// The reader's own membership events are judged by the more joined of their membership
    /// before and after the event (as Synapse does), so that users see their own leave, kick
    /// or ban, and the leave that ends an invite.
    fn own_membership_change(&self, row: &EventRow) -> Result<Option<bool>> {
        let state_key = format!("\"state_key\":{}", Value::from(self.user.as_str()));
        if !row.json.contains("\"m.room.member\"") || !row.json.contains(&state_key) {
            return Ok(None);
        }
        let Some(event) = Envelope::parse(&row.json) else {
            return Ok(None);
        };
        if event.kind.as_deref() != Some("m.room.member")
            || event.state_key.as_deref() != Some(self.user.as_str())
        {
            return Ok(None);
        }
        let after = event.content_str("membership");
        let after = after.map_or(Leave, MembershipState::from);
        let group_before = match crate::storage::pdus::state_before(self.conn, &row.event_id)? {
            Some(group) => Some(group),
            None => match event.prev_events.first() {
                Some(parent) => store::get_event(self.conn, parent)?.map(|p| p.state_group),
                None => None,
            },
        };
        let before = match group_before {
            Some(group) => self.content_at(group, "m.room.member", &self.user, "membership")?,
            None => None,
        };
        let before = before.map_or(Leave, MembershipState::from);
        if after == Leave && matches!(before, Join | Invite) {
            return Ok(Some(true));
        }
        const PRIORITY: [MembershipState; 5] = [Join, Invite, Knock, Leave, Ban];
        let rank = |m: &MembershipState| PRIORITY.iter().position(|p| p == m).unwrap_or(3);
        let membership = if rank(&before) < rank(&after) {
            before
        } else {
            after
        };
        let visibility = self.visibility_at(row.state_group)?;
        Ok(Some(self.judge(&visibility, Some(&membership))))
    }

    fn visibility_at(&self, group: i64) -> Result<String> {
        Ok(self
            .content_at(group, "m.room.history_visibility", "", "history_visibility")?
            .unwrap_or_else(|| "shared".to_owned()))
    }

    /// A string field of the content of a state event in a state group.
    fn content_at(
        &self,
        group: i64,
        event_type: &str,
        state_key: &str,
        field: &str,
    ) -> Result<Option<String>> {
        let Some(event_id) = store::state_event_at_group(self.conn, group, event_type, state_key)?
        else {
            return Ok(None);
        };
        // State events may be outliers (a room joined on another server holds its state so
        // until backfill reaches them).
        let Some(event) = crate::storage::pdus::auth_pdu(self.conn, &event_id)? else {
            return Ok(None);
        };
        Ok(Envelope::parse(&event.json).and_then(|event| event.content_str(field)))
    }
}

impl Rooms {
    /// Can the user read the room's current state? Joined members can; others only of
    /// world-readable rooms.
    pub(super) async fn check_can_read_current(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<()> {
        if self.membership(room_id, user).await? == Some(Join) {
            return Ok(());
        }
        let room = room_id.to_string();
        if self.db.read(move |c| world_readable(c, &room)).await? {
            Ok(())
        } else {
            Err(Error::forbidden("You are not in this room"))
        }
    }

    /// The room state the user may read, as client events (`/state`, `/members`): see
    /// `readable_state_ids`. `at` is a `/messages` or `/sync` token (`/members?at=`).
    pub async fn readable_state(
        &self,
        room_id: &RoomId,
        user: &UserId,
        at: Option<PaginationToken>,
    ) -> Result<Vec<Value>> {
        let version = self.room_version(room_id).await?;
        let (room, user) = (room_id.to_string(), user.to_owned());
        self.db
            .read(move |c| {
                let ids: Vec<String> = readable_state_ids(c, &room, &user, at)?
                    .into_values()
                    .collect();
                let rows = store::events_by_id(c, &ids)?;
                let mut events = Vec::new();
                for row in &rows {
                    events.extend(render(c, row, &version, None, false)?);
                }
                Ok(events)
            })
            .await
    }

    /// The content of one state event of the state the user may read.
    pub async fn state_content(
        &self,
        room_id: &RoomId,
        user: &UserId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Value> {
        let (room, user) = (room_id.to_string(), user.to_owned());
        let key = (event_type.to_owned(), state_key.to_owned());
        self.db
            .read(move |c| {
                let id = readable_state_ids(c, &room, &user, None)?
                    .remove(&key)
                    .ok_or_else(|| Error::not_found("Event not found"))?;
                let row =
                    store::get_event(c, &id)?.ok_or_else(|| Error::not_found("Event not found"))?;
                let version = store::room_version(c, &room)?
                    .and_then(|v| RoomVersionId::try_from(v).ok())
                    .ok_or_else(|| Error::internal("room without version"))?;
                // Rendered as for `/event`: a redacted event's content is what redaction keeps.
                let event = render(c, &row, &version, None, false)?.ok_or_else(unreadable_event)?;
                Ok(event["content"].clone())
            })
            .await
    }

    /// One event, if the user may see it.
    pub async fn event(
        &self,
        room_id: &RoomId,
        user: &UserId,
        device: Option<String>,
        event_id: &str,
    ) -> Result<Value> {
        let version = self.room_version(room_id).await?;
        let (room, user, event_id) = (room_id.to_string(), user.to_owned(), event_id.to_owned());
        self.db
            .read(move |c| {
                let row = visible_row(c, &room, &user, &event_id)?;
                let reader = Some((user.as_str(), device.as_deref()));
                let event =
                    render(c, &row, &version, reader, true)?.ok_or_else(unreadable_event)?;
                let reader = super::relations::Reader {
                    user: user.as_str(),
                    device: device.as_deref(),
                };
                super::relations::bundle_one(c, event, &room, reader)
            })
            .await
    }

    /// The room of an event stored here, for `GET /events/{eventId}`, which names none.
    pub async fn event_room(&self, event_id: &str) -> Result<Option<OwnedRoomId>> {
        let event_id = event_id.to_owned();
        let room = self
            .db
            .read(move |c| store::get_event(c, &event_id).map(|row| row.map(|row| row.room_id)))
            .await
            .map_err(Error::from)?;
        room.map(|r| OwnedRoomId::try_from(r).map_err(Error::internal))
            .transpose()
    }

    /// The sender of an event the user may see (404 otherwise), whether or not it can be shown:
    /// redacting an event that cannot be shown is how it is shown again.
    pub async fn visible_event_sender(
        &self,
        room_id: &RoomId,
        user: &UserId,
        event_id: &str,
    ) -> Result<String> {
        let (room, user, event_id) = (room_id.to_string(), user.to_owned(), event_id.to_owned());
        self.db
            .read(move |c| {
                let mut visibility = Visibility::history_only(c, &room, &user)?;
                let row = visible_row_to(c, &room, &event_id, &mut visibility)?;
                Ok(row.sender)
            })
            .await
    }

    /// `/messages`: up to `limit` visible events from `from` in `dir`, stopping at `to`.
    #[allow(clippy::too_many_arguments)]
    pub async fn messages(
        &self,
        room_id: &RoomId,
        user: &UserId,
        device: Option<String>,
        from: Option<PaginationToken>,
        to: Option<PaginationToken>,
        dir: Direction,
        limit: usize,
        keep: impl Fn(&Value) -> bool + Send + 'static,
    ) -> Result<MessagesPage> {
        let membership = self.membership(room_id, user).await?;
        if membership.is_none() {
            self.check_can_read_current(room_id, user).await?;
        }
        let version = self.room_version(room_id).await?;
        let (room, user) = (room_id.to_string(), user.to_owned());
        self.db
            .read(move |c| {
                let backwards = dir == Direction::Backward;
                let start_position = match from {
                    Some(token) => resolve(c, &room, token, backwards)?,
                    None if backwards => (i64::MAX, i64::MAX),
                    None => (i64::MIN, i64::MIN),
                };
                let stop = to.map(|t| resolve(c, &room, t, !backwards)).transpose()?;
                let mut visibility = Visibility::new(c, &room, &user)?;
                let mut chunk = Vec::new();
                let mut senders = Vec::new();
                let mut position = start_position;
                let mut end = None;
                'pages: loop {
                    let rows = store::room_events_paginate(
                        c,
                        &room,
                        position,
                        backwards,
                        limit.max(1) * 2,
                    )?;
                    let exhausted = rows.len() < limit.max(1) * 2;
                    for row in rows {
                        let here = (row.topological_ordering, row.stream_ordering);
                        // `to` is exclusive like `from`: the event a token names was
                        // returned by the page that handed out the token.
                        if let Some(stop) = stop
                            && ((backwards && here <= stop) || (!backwards && here >= stop))
                        {
                            end = None;
                            break 'pages;
                        }
                        position = here;
                        end = Some(PaginationToken::Topological(here).to_string());
                        if !visibility.allows(&row)? {
                            continue;
                        }
                        let Some(event) = render(
                            c,
                            &row,
                            &version,
                            Some((user.as_str(), device.as_deref())),
                            true,
                        )?
                        else {
                            continue;
                        };
                        if !keep(&event) {
                            continue;
                        }
                        if let Some(sender) = event["sender"].as_str()
                            && !senders.iter().any(|s| s == sender)
                        {
                            senders.push(sender.to_owned());
                        }
                        chunk.push(event);
                        if chunk.len() >= limit {
                            break 'pages;
                        }
                    }
                    if exhausted {
                        // Nothing further: no `end`, so clients stop paginating.
                        if chunk.len() < limit {
                            end = None;
                        }
                        break;
                    }
                }
                let reader = super::relations::Reader {
                    user: user.as_str(),
                    device: device.as_deref(),
                };
                super::relations::bundle_aggregations(c, &mut chunk, &room, reader)?;
                let start = match from {
                    Some(token) => token.to_string(),
                    None => PaginationToken::Topological(start_position).to_string(),
                };
                Ok(MessagesPage {
                    chunk,
                    start,
                    end,
                    senders,
                })
            })
            .await
    }
}

impl Rooms {
    /// The backward extremities a backwards `/messages` page from `from` would reach: all of
    /// them when fewer than `limit` events are held below `from`, else those pointed at by
    /// events at or above the deepest event of the page. Where backfill asks other servers.
    pub async fn backfill_targets(
        &self,
        room_id: &RoomId,
        from: Option<PaginationToken>,
        limit: usize,
    ) -> Result<Vec<OwnedEventId>> {
        let room = room_id.to_string();
        self.db
            .read(move |c| {
                let extremities = crate::storage::pdus::backward_extremities(c, &room)?;
                if extremities.is_empty() {
                    return Ok(Vec::new());
                }
                let start = match from {
                    Some(token) => resolve(c, &room, token, true)?,
                    None => (i64::MAX, i64::MAX),
                };
                let rows = store::room_events_paginate(c, &room, start, true, limit.max(1))?;
                let reach = match rows.last() {
                    Some(last) if rows.len() >= limit.max(1) => last.topological_ordering,
                    _ => i64::MIN,
                };
                Ok(extremities
                    .into_iter()
                    .filter(|b| b.depth >= reach)
                    .filter_map(|b| OwnedEventId::try_from(b.event_id).ok())
                    .collect())
            })
            .await
    }
}

/// An event of `room` that `user` may see; `404` for one that is unknown, elsewhere or hidden
/// (the spec does not tell them apart).
fn visible_row(conn: &Connection, room: &str, user: &UserId, event_id: &str) -> Result<EventRow> {
    visible_row_to(
        conn,
        room,
        event_id,
        &mut Visibility::new(conn, room, user)?,
    )
}

fn visible_row_to(
    conn: &Connection,
    room: &str,
    event_id: &str,
    visibility: &mut Visibility<'_>,
) -> Result<EventRow> {
    let row = store::get_event(conn, event_id)?
        .filter(|r| r.room_id == room)
        .ok_or_else(|| Error::not_found("Event not found"))?;
    if !visibility.allows(&row)? {
        return Err(Error::not_found("Event not found"));
    }
    Ok(row)
}

/// A single event that exists but cannot be shown (see [`client_event`]): the request for it
/// fails, never a response that merely includes it.
pub(super) fn unreadable_event() -> Error {
    Error::not_found(
        "The event cannot be shown: it is stored nested too deeply for clients to read \
         (redacting it makes it readable again)",
    )
}

/// The position a token stands for. A stream token is turned into the position of the newest
/// room event at or before it; for backwards pagination that event itself is included.
pub(super) fn resolve(
    conn: &Connection,
    room_id: &str,
    token: PaginationToken,
    backwards: bool,
) -> Result<TopoPosition> {
    match token {
        PaginationToken::Topological(position) => Ok(position),
        PaginationToken::Stream(stream) => Ok(
            match store::topo_position_at_stream(conn, room_id, stream)? {
                Some((topo, stream)) if backwards => (topo, stream + 1),
                Some(position) => position,
                None if backwards => (i64::MIN, i64::MIN),
                None => (i64::MIN, i64::MIN),
            },
        ),
    }
}

/// A stored event as the reader sees it (redaction applied, their transaction ID attached);
/// `None` (logged) when it cannot be shown: see [`client_event`]. Responses leave it out.
pub fn render(
    conn: &Connection,
    row: &EventRow,
    version: &RoomVersionId,
    reader: Option<(&str, Option<&str>)>,
    with_room_id: bool,
) -> Result<Option<Value>> {
    let (redaction, txn) = render_inputs(conn, row, reader)?;
    let redaction = redaction
        .as_ref()
        .map(|(id, json)| (id.as_str(), json.as_str()));
    client_event(row, version, redaction, txn, with_room_id)
}

/// [`render`] as JSON text ([`client_event_raw`]), for events that go into a response as they
/// are.
pub fn render_raw(
    conn: &Connection,
    row: &EventRow,
    version: &RoomVersionId,
    reader: Option<(&str, Option<&str>)>,
    with_room_id: bool,
) -> Result<Option<Box<RawValue>>> {
    let (redaction, txn) = render_inputs(conn, row, reader)?;
    let redaction = redaction
        .as_ref()
        .map(|(id, json)| (id.as_str(), json.as_str()));
    client_event_raw(row, version, redaction, txn, with_room_id)
}

/// A redaction's event ID and JSON.
type Redaction = (String, String);

/// What rendering an event reads besides it: its redaction, and its transaction ID when the
/// reader's device sent it.
fn render_inputs(
    conn: &Connection,
    row: &EventRow,
    reader: Option<(&str, Option<&str>)>,
) -> Result<(Option<Redaction>, Option<String>)> {
    let redaction = match &row.redacted_by {
        Some(id) => store::get_event(conn, id)?.map(|r| (r.event_id, r.json)),
        None => None,
    };
    let txn = match reader {
        Some((user, Some(device))) if row.sender == user => {
            store::txn_of_event(conn, &row.event_id, user, device)?
        }
        _ => None,
    };
    Ok((redaction, txn))
}

impl Rooms {
    /// The content of a current state event, if set.
    async fn current_content(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Value>> {
        let (room, event_type, state_key) = (
            room_id.to_string(),
            event_type.to_owned(),
            state_key.to_owned(),
        );
        self.db
            .read(move |c| {
                let Some(id) = store::current_state_event(c, &room, &event_type, &state_key)?
                else {
                    return Ok(None);
                };
                let Some(row) = store::get_event(c, &id)? else {
                    return Ok(None);
                };
                Ok(stored::content(&row.json))
            })
            .await
    }

    /// Whether guests may join the room: its `m.room.guest_access` is `can_join` (the spec's
    /// rule; no event means `forbidden`).
    pub async fn guests_can_join(&self, room_id: &RoomId) -> Result<bool> {
        use ruma::events::room::guest_access::{GuestAccess, RoomGuestAccessEventContent};
        let content = self
            .current_content(room_id, "m.room.guest_access", "")
            .await?;
        Ok(content
            .and_then(|c| serde_json::from_value::<RoomGuestAccessEventContent>(c).ok())
            .is_some_and(|c| c.guest_access == GuestAccess::CanJoin))
    }

    /// May the user redact other people's events (ruma's `user_can_redact_event_of_other`: the
    /// power level `redact` and the one to send `m.room.redaction`; creators since v12)?
    pub async fn can_redact_others(&self, room_id: &RoomId, user: &UserId) -> Result<bool> {
        let room = room_id.to_owned();
        let levels = self
            .db
            .read(move |c| super::power_levels::current(c, &room))
            .await?
            .ok_or_else(|| Error::internal("unknown room version"))?;
        Ok(levels.user_can_redact_event_of_other(user))
    }

    /// `m.room.canonical_alias` may only add aliases that point to the room (`400 M_BAD_ALIAS`)
    /// and are aliases at all (`400 M_INVALID_PARAM`), as the spec asks and Synapse checks;
    /// aliases already in the current event are not checked again (one deleted since must not
    /// block every later change).
    pub async fn check_canonical_alias(&self, room_id: &RoomId, content: &Value) -> Result<()> {
        let invalid = |message: String| {
            Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::InvalidParam,
                message,
            )
        };
        let alt_aliases = match content.get("alt_aliases") {
            None => Vec::new(),
            Some(Value::Array(aliases)) => aliases.clone(),
            Some(_) => return Err(invalid("alt_aliases must be a list".to_owned())),
        };
        let current = self
            .current_state_event_id(room_id, "m.room.canonical_alias", "")
            .await?;
        let room = room_id.to_string();
        let current = match current {
            Some(id) => self
                .db
                .read(move |c| Ok::<_, Error>(store::get_event(c, id.as_str())?))
                .await?
                .and_then(|row| serde_json::from_str::<Value>(&row.json).ok())
                .map(|event| event["content"].clone())
                .unwrap_or(Value::Null),
            None => Value::Null,
        };
        let mut added = Vec::new();
        if let Some(alias) = content.get("alias").filter(|a| !a.is_null())
            && current.get("alias") != Some(alias)
        {
            added.push(alias.clone());
        }
        let known = current["alt_aliases"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        added.extend(alt_aliases.into_iter().filter(|a| !known.contains(a)));
        let mut aliases = Vec::new();
        for alias in added {
            let parsed = alias
                .as_str()
                .and_then(|a| ruma::RoomAliasId::parse(a).ok())
                .ok_or_else(|| invalid(format!("{alias} is not a room alias")))?;
            aliases.push(parsed.to_string());
        }
        let all_point_here = self
            .db
            .read(move |c| {
                for alias in &aliases {
                    if store::alias_room(c, alias)?.is_none_or(|target| target.room_id != room) {
                        return Ok::<_, Error>(false);
                    }
                }
                Ok(true)
            })
            .await?;
        if all_point_here {
            Ok(())
        } else {
            Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::BadAlias,
                "An alias does not exist or does not point to this room",
            ))
        }
    }
}

/// Is the room's current history visibility `world_readable`?
fn world_readable(conn: &Connection, room_id: &str) -> Result<bool> {
    let Some(id) = store::current_state_event(conn, room_id, "m.room.history_visibility", "")?
    else {
        return Ok(false);
    };
    let Some(row) = store::get_event(conn, &id)? else {
        return Ok(false);
    };
    let visibility = Envelope::parse(&row.json).and_then(|e| e.content_str("history_visibility"));
    Ok(visibility.as_deref() == Some("world_readable"))
}

/// The state a user may read: members, and anyone in a world-readable room, read the current
/// state; a former member (left, kicked or banned) the state as it was when they left, never
/// anything later (the spec's rule for `/state` and `/members`); anyone else is refused. `at`
/// moves the point back in time: a `/messages` token names the state before the event it points
/// at (a `prev_batch`), a sync token the state after everything up to its position.
fn readable_state_ids(
    conn: &Connection,
    room_id: &str,
    user: &UserId,
    at: Option<PaginationToken>,
) -> Result<StateIds> {
    let membership = store::membership(conn, room_id, user.as_str())?;
    let left_at = match membership.map(|m| (MembershipState::from(m.membership), m.stream_ordering))
    {
        Some((Join, _)) => None,
        _ if world_readable(conn, room_id)? => None,
        Some((Leave | Ban, stream)) => Some(stream),
        _ => {
            return Err(Error::forbidden(
                "You are not a member of this room and were never one",
            ));
        }
    };
    let at = at.map(|token| match token {
        PaginationToken::Topological((_, stream)) => stream - 1,
        PaginationToken::Stream(stream) => stream,
    });
    let until = match (left_at, at) {
        (Some(left), Some(at)) => Some(left.min(at)),
        (left, at) => left.or(at),
    };
    match until {
        None => Ok(store::current_state(conn, room_id)?),
        Some(stream) => match store::state_group_at_stream(conn, room_id, stream)? {
            Some(group) => Ok(store::state_at_group(conn, group)?),
            None => Ok(StateIds::new()),
        },
    }
}
