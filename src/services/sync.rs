//! `/sync`: what changed for a user since a token. Long-polls wait on the stream position (no
//! polling loop) and wake as soon as anything is written.
//!
//! A token is `s<stream>_<typing>`: a position in the one stream of persisted changes (events,
//! account data, receipts) and the typing serial. When a response could not carry every waiting
//! to-device message, a third part `_<to_device>` says up to where they were delivered.
//!
//! An empty response waits on a `tokio::sync::watch` of the stream position, written after every
//! commit, and is computed again once something was written. With `lazy_load_members` a room's
//! `state` carries only the member events of the timeline's senders (and the user's own), on a
//! later sync also those that did not change since the token (the client may never have been sent
//! them); with `include_redundant_members: false` (the default) those this device was already sent
//! stay out (`sent_members.rs`).

use std::{collections::HashSet, fmt, str::FromStr, time::Duration};

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UInt, UserId,
    api::client::{
        filter::{FilterDefinition, LazyLoadOptions, RoomEventFilter},
        sync::sync_events::v3::{
            self as sync_events, InviteState, InvitedRoom, JoinedRoom, KnockState, KnockedRoom,
            LeftRoom, State, StateEvents, Timeline,
        },
    },
    serde::Raw,
};
use rusqlite::Connection;
use serde_json::{Value, json};

use super::{
    Services,
    filter::room_event_matches,
    json_depth,
    rooms::{read::Visibility, read::render, stored::Envelope},
    sent_members::DeviceMembers,
};
use crate::{
    error::{Error, Result},
    storage::{
        account_data as data_store,
        remote_memberships::{self as remote_store, RemoteMembership},
        rooms::{self as store, EventRow, StateIds},
    },
};

/// Timeline events per room when the filter sets no limit.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// Most events one room's timeline scan looks at to fill a filtered timeline.
const MAX_TIMELINE_SCAN: usize = 5000;
/// Longest long-poll a client may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncToken {
    pub stream: i64,
    pub typing: u64,
    /// Where to-device delivery stopped, when before `stream`.
    pub to_device: Option<i64>,
}

impl SyncToken {
    /// The position up to which the device has received its to-device messages.
    pub fn to_device_position(self) -> i64 {
        self.to_device.unwrap_or(self.stream).min(self.stream)
    }
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}_{}", self.stream, self.typing)?;
        match self.to_device {
            Some(to_device) => write!(f, "_{to_device}"),
            None => Ok(()),
        }
    }
}

impl FromStr for SyncToken {
    type Err = Error;

    fn from_str(token: &str) -> Result<Self> {
        let invalid = || Error::invalid_param(format!("Invalid sync token `{token}`"));
        let rest = token.strip_prefix('s').ok_or_else(invalid)?;
        let mut parts = rest.splitn(3, '_');
        let stream = parts.next().unwrap_or_default();
        let typing = parts.next().unwrap_or("0");
        Ok(Self {
            stream: stream.parse().map_err(|_| invalid())?,
            typing: typing.parse().map_err(|_| invalid())?,
            to_device: parts
                .next()
                .map(|p| p.parse().map_err(|_| invalid()))
                .transpose()?,
        })
    }
}

pub struct SyncRequest {
    pub user: OwnedUserId,
    pub device: String,
    pub since: Option<SyncToken>,
    pub full_state: bool,
    pub timeout: Duration,
    pub filter: FilterDefinition,
}

pub async fn sync(services: &Services, request: SyncRequest) -> Result<sync_events::Response> {
    if let Some(since) = request.since {
        // A sync from a token acknowledges the to-device messages delivered up to it.
        super::e2ee::to_device::acknowledge(
            services,
            request.user.as_str(),
            &request.device,
            since.to_device_position(),
        )
        .await?;
    }
    let mut positions = services.rooms.subscribe();
    let deadline = tokio::time::Instant::now() + request.timeout.min(MAX_TIMEOUT);
    loop {
        let upto = SyncToken {
            stream: *positions.borrow_and_update(),
            typing: services.typing.serial(),
            to_device: None,
        };
        let response = build(services, &request, upto).await?;
        let waiting_allowed = request.since.is_some() && !request.full_state;
        if !waiting_allowed || has_news(&response) || tokio::time::Instant::now() >= deadline {
            return Ok(note_sent_members(services, &request, response));
        }
        if tokio::time::timeout_at(deadline, positions.changed())
            .await
            .is_err()
        {
            // Timed out: answer with what (nothing) there is, at the newest position.
            let upto = SyncToken {
                stream: *positions.borrow(),
                typing: services.typing.serial(),
                to_device: None,
            };
            let response = build(services, &request, upto).await?;
            return Ok(note_sent_members(services, &request, response));
        }
    }
}

/// Whether the filter lazy-loads members and leaves out those the client already holds.
fn omits_redundant_members(filter: &FilterDefinition) -> bool {
    matches!(
        filter.room.state.lazy_load_options,
        LazyLoadOptions::Enabled {
            include_redundant_members: false
        }
    )
}

/// Remembers the member events of a response's joined rooms (state and timeline), which later
/// syncs of the same device leave out.
fn note_sent_members(
    services: &Services,
    request: &SyncRequest,
    response: sync_events::Response,
) -> sync_events::Response {
    if !omits_redundant_members(&request.filter) {
        return response;
    }
    let mut sent: Vec<(&str, String, String)> = Vec::new();
    for (room_id, room) in &response.rooms.join {
        let State::Before(state) = &room.state else {
            continue;
        };
        let state_members = state.events.iter().map(|e| e.cast_ref::<Value>());
        let timeline_members = room.timeline.events.iter().map(|e| e.cast_ref::<Value>());
        for event in state_members.chain(timeline_members) {
            let Ok(Some(kind)) = event.get_field::<String>("type") else {
                continue;
            };
            if kind != "m.room.member" {
                continue;
            }
            if let (Ok(Some(member)), Ok(Some(id))) = (
                event.get_field::<String>("state_key"),
                event.get_field::<String>("event_id"),
            ) {
                sent.push((room_id.as_str(), member, id));
            }
        }
    }
    services.sent_members.record(
        request.user.as_str(),
        &request.device,
        sent.iter()
            .map(|(room, member, id)| (*room, member.as_str(), id.as_str())),
    );
    response
}

fn has_news(response: &sync_events::Response) -> bool {
    let rooms = &response.rooms;
    !rooms.join.is_empty()
        || !rooms.invite.is_empty()
        || !rooms.leave.is_empty()
        || !rooms.knock.is_empty()
        || !response.account_data.events.is_empty()
        || !response.presence.events.is_empty()
        || super::e2ee::sync_fields::has_news(response)
}

/// What one room contributes, computed on a blocking thread.
enum RoomUpdate {
    Join(Box<JoinedRoom>),
    Invite(InvitedRoom),
    Knock(KnockedRoom),
    Leave(Box<LeftRoom>),
}

async fn build(
    services: &Services,
    request: &SyncRequest,
    upto: SyncToken,
) -> Result<sync_events::Response> {
    let since = request.since;
    let user = request.user.clone();
    let device = request.device.clone();
    let full_state = request.full_state;
    let filter = request.filter.clone();
    let typing_since = since.map_or(0, |s| s.typing);
    let typing: Vec<(OwnedRoomId, Vec<OwnedUserId>)> = {
        let joined = services.rooms.joined_rooms(&user).await?;
        joined
            .into_iter()
            .filter_map(|room| {
                let users = services
                    .typing
                    .changed_since(&room, if since.is_some() { typing_since } else { 0 })?;
                (since.is_some() || !users.is_empty()).then_some((room, users))
            })
            .collect()
    };
    let evaluated_actions = services.evaluated_actions.clone();
    if since.is_none() || full_state {
        services.sent_members.forget_device(user.as_str(), &device);
    }
    let sent_members = services.sent_members.clone();
    let omit_held_members = omits_redundant_members(&filter);
    let (rooms, global_data) = services
        .rooms
        .db()
        .read(move |c| {
            let mut updates = Vec::new();
            let since_stream = since.map_or(0, |s| s.stream);
            let with_events: HashSet<String> = match since {
                Some(since) => store::rooms_with_events_after(c, user.as_str(), since.stream)?.into_iter().collect(),
                None => HashSet::new(),
            };
            let changed_data = data_store::changed_since(c, user.as_str(), since_stream)?;
            let push_rules = super::push::load_for_counting(c, &user)?;
            let evaluated_actions: &super::push::EvaluatedActions = &evaluated_actions;
            let held_members = omit_held_members.then(|| sent_members.of_device(user.as_str(), &device));
            // Memberships in rooms this server does not hold (invites from other servers,
            // knocks through them, their ends): one of these newer than the room's own row wins.
            let ignored = ignored_users(c, &user)?;
            let local_rows = store::memberships_of_user(c, user.as_str())?;
            let RemoteRooms { updates: remote_updates, superseded } = remote_memberships(
                c, &user, &local_rows, since, upto.stream, full_state, &filter, &ignored,
            )?;
            updates.extend(remote_updates);
            for (room, membership, event_id, membership_stream) in local_rows {
                if superseded.contains(&room) {
                    continue;
                }
                if membership_stream > upto.stream {
                    continue; // changed after this sync's snapshot; the next sync reports it
                }
                let room_id = OwnedRoomId::try_from(room.as_str()).map_err(Error::internal)?;
                if filter.room.not_rooms.contains(&room_id) || filter.room.rooms.as_ref().is_some_and(|r| !r.contains(&room_id)) {
                    continue;
                }
                let new_membership = since.is_none_or(|s| membership_stream > s.stream);
                let room_typing = typing.iter().find(|(r, _)| *r == room_id).map(|(_, u)| u.clone());
                let room_data: Vec<&(String, String, String)> = changed_data.iter().filter(|(r, ..)| *r == room).collect();
                let context = RoomContext { conn: c, room_id: &room_id, user: &user, device: &device, filter: &filter, upto: upto.stream, push_rules: &push_rules, evaluated_actions, held_members: held_members.as_ref() };
                if membership == "invite" && !ignored.is_empty() {
                    let invite = store::events_by_id(c, std::slice::from_ref(&event_id))?;
                    if invite.first().is_some_and(|i| ignored.contains(i.sender.as_str())) {
                        continue;
                    }
                }
                match membership.as_str() {
                    "join" => {
                        let has_activity = since.is_none() || full_state || new_membership || with_events.contains(&room)
                            || room_typing.is_some() || !room_data.is_empty()
                            || !data_store::receipts_since(c, &room, since_stream)?.is_empty();
                        if has_activity {
                            let since_for_room = if full_state || new_membership { None } else { since.map(|s| s.stream) };
                            let joined = joined_room(&context, since_for_room, since_stream, room_typing, &room_data)?;
                            updates.push((room_id, RoomUpdate::Join(Box::new(joined))));
                        }
                    }
                    "invite" if new_membership || full_state => {
                        updates.push((room_id.clone(), RoomUpdate::Invite(InvitedRoom::from(InviteState::from(stripped_state(c, &room, &event_id)?)))));
                    }
                    "knock" if new_membership || full_state => {
                        let mut knock_state = KnockState::new();
                        knock_state.events = stripped_state(c, &room, &event_id)?;
                        updates.push((room_id.clone(), RoomUpdate::Knock(KnockedRoom::from(knock_state))));
                    }
                    "leave" | "ban" if (since.is_some() && new_membership) || (filter.room.include_leave && since.is_none()) => {
                        let left = left_room(&context, since.map(|s| s.stream), membership_stream)?;
                        updates.push((room_id, RoomUpdate::Leave(Box::new(left))));
                    }
                    _ => {}
                }
            }
            let global: Vec<Value> = changed_data
                .iter()
                .filter(|(room, ..)| room.is_empty())
                .filter_map(|(room, data_type, content)| Some(json!({"type": data_type, "content": account_data_content(&user, room, data_type, content)?})))
                .collect();
            Ok::<_, Error>((updates, global))
        })
        .await?;

    let mut response = sync_events::Response::new(upto.to_string());
    for (room_id, update) in rooms {
        match update {
            RoomUpdate::Join(joined) => {
                response.rooms.join.insert(room_id, *joined);
            }
            RoomUpdate::Invite(invited) => {
                response.rooms.invite.insert(room_id, invited);
            }
            RoomUpdate::Knock(knocked) => {
                response.rooms.knock.insert(room_id, knocked);
            }
            RoomUpdate::Leave(left) => {
                response.rooms.leave.insert(room_id, *left);
            }
        }
    }
    let mut global_data = global_data;
    if since.is_none()
        && !global_data
            .iter()
            .any(|d| d["type"] == super::push::EVENT_TYPE)
    {
        global_data.push(super::push::default_event(&request.user)?);
    }
    response.account_data.events = global_data.into_iter().map(to_raw).collect::<Result<_>>()?;
    response.presence.events = services
        .presence
        .sync_events(
            &request.user,
            since.map(|s| s.stream),
            upto.stream,
            &request.filter.presence,
        )
        .await?;
    let to_device_cut = super::e2ee::sync_fields::fill(
        services,
        request.user.as_str(),
        &request.device,
        since.map(|s| (s.stream, s.to_device_position())),
        upto.stream,
        &mut response,
    )
    .await?;
    if to_device_cut.is_some() {
        response.next_batch = SyncToken {
            to_device: to_device_cut,
            ..upto
        }
        .to_string();
    }
    Ok(response)
}

struct RoomContext<'a> {
    conn: &'a Connection,
    room_id: &'a RoomId,
    user: &'a UserId,
    device: &'a str,
    filter: &'a FilterDefinition,
    upto: i64,
    push_rules: &'a super::push::UserRules,
    evaluated_actions: &'a super::push::EvaluatedActions,
    /// With `include_redundant_members: false`: the member events this device was sent.
    held_members: Option<&'a DeviceMembers<'a>>,
}

impl RoomContext<'_> {
    fn version(&self) -> Result<RoomVersionId> {
        let version = store::room_version(self.conn, self.room_id.as_str())?
            .ok_or_else(|| Error::internal("room without version"))?;
        RoomVersionId::try_from(version.as_str()).map_err(Error::internal)
    }

    /// `None` for an event that cannot be shown (logged): the response goes without it.
    fn render(&self, row: &EventRow, version: &RoomVersionId) -> Result<Option<Value>> {
        render(
            self.conn,
            row,
            version,
            Some((self.user.as_str(), Some(self.device))),
            false,
        )
    }

    /// The timeline between `after` and `until` (stream positions), newest `limit` events.
    fn timeline(
        &self,
        after: i64,
        until: i64,
        filter: &RoomEventFilter,
    ) -> Result<(Timeline, Vec<EventRow>)> {
        let limit = filter
            .limit
            .map_or(DEFAULT_TIMELINE_LIMIT, |l| u64::from(l) as usize)
            .clamp(1, 1000);
        let version = self.version()?;
        // Newest first, in batches, until `limit` events pass visibility and the filter: the
        // limit counts what the client gets, not what was scanned.
        let mut visibility = Visibility::new(self.conn, self.room_id.as_str(), self.user)?;
        let mut picked: Vec<(EventRow, Value)> = Vec::new();
        let mut limited = false;
        let mut upper = until;
        let mut scanned = 0;
        let batch = (limit + 1).max(20);
        'scan: loop {
            let rows =
                store::room_events_between(self.conn, self.room_id.as_str(), after, upper, batch)?;
            let exhausted = rows.len() < batch;
            for row in rows.into_iter().rev() {
                upper = row.stream_ordering - 1;
                scanned += 1;
                if !visibility.allows(&row)? {
                    continue;
                }
                let Some(event) = self.render(&row, &version)? else {
                    continue;
                };
                if !room_event_matches(filter, &event) {
                    continue;
                }
                if picked.len() == limit {
                    limited = true;
                    break 'scan;
                }
                picked.push((row, event));
            }
            if exhausted {
                break;
            }
            if scanned >= MAX_TIMELINE_SCAN {
                // Older matches may exist: the client can page back from prev_batch.
                limited = true;
                break;
            }
        }
        picked.reverse();
        let (shown, mut events): (Vec<EventRow>, Vec<Value>) = picked.into_iter().unzip();
        let reader = super::rooms::relations::Reader {
            user: self.user.as_str(),
            device: Some(self.device),
        };
        super::rooms::relations::bundle_aggregations(
            self.conn,
            &mut events,
            self.room_id.as_str(),
            reader,
        )?;
        let events = events.into_iter().map(to_raw).collect::<Result<_>>()?;
        let mut timeline = Timeline::new();
        timeline.limited = limited;
        timeline.prev_batch = shown
            .first()
            .map(|row| format!("t{}_{}", row.topological_ordering, row.stream_ordering))
            .or_else(|| Some(format!("s{until}")));
        timeline.events = events;
        Ok((timeline, shown))
    }

    /// The state group before an event (the group after its first parent, or the one recorded
    /// for an event whose parents' state is not its own: a fork, a room joined elsewhere).
    fn group_before(&self, row: &EventRow) -> Result<Option<i64>> {
        if let Some(group) = crate::storage::pdus::state_before(self.conn, &row.event_id)? {
            return Ok(Some(group));
        }
        let Some(parent) =
            Envelope::parse(&row.json).and_then(|e| e.prev_events.into_iter().next())
        else {
            return Ok(None);
        };
        Ok(store::get_event(self.conn, &parent)?.map(|parent| parent.state_group))
    }

    /// The full state before an event.
    fn state_before(&self, row: &EventRow) -> Result<StateIds> {
        match self.group_before(row)? {
            Some(group) => Ok(store::state_at_group(self.conn, group)?),
            None => Ok(StateIds::new()),
        }
    }

    /// The full state at a stream position (after the newest room event at or before it).
    fn state_at_stream(&self, stream: i64) -> Result<StateIds> {
        let Some((_, event_stream)) =
            store::topo_position_at_stream(self.conn, self.room_id.as_str(), stream)?
        else {
            return Ok(StateIds::new());
        };
        let rows = store::room_events_between(
            self.conn,
            self.room_id.as_str(),
            event_stream - 1,
            event_stream,
            1,
        )?;
        match rows.first() {
            Some(row) => Ok(store::state_at_group(self.conn, row.state_group)?),
            None => Ok(StateIds::new()),
        }
    }

    fn state_events(
        &self,
        ids: Vec<String>,
        filter: &RoomEventFilter,
    ) -> Result<Vec<Raw<ruma::events::AnySyncStateEvent>>> {
        let version = self.version()?;
        let rows = store::events_by_id(self.conn, &ids)?;
        let mut events = Vec::new();
        for row in &rows {
            if let Some(event) = self.render(row, &version)?
                && room_event_matches(filter, &event)
            {
                events.push(to_raw(event)?);
            }
        }
        Ok(events)
    }
}

fn joined_room(
    context: &RoomContext<'_>,
    since: Option<i64>,
    since_stream: i64,
    typing: Option<Vec<OwnedUserId>>,
    room_data: &[&(String, String, String)],
) -> Result<JoinedRoom> {
    let room_filter = &context.filter.room;
    let (timeline, shown) =
        context.timeline(since.unwrap_or(0), context.upto, &room_filter.timeline)?;
    let timeline_ids: HashSet<&str> = shown.iter().map(|r| r.event_id.as_str()).collect();
    // State: everything up to the timeline's start on a first sync; on later syncs, what
    // changed between `since` and the timeline's start when the client does not get every event
    // in between (beyond the limit, or hidden by the filter or history visibility).
    let conn = context.conn;
    let room = context.room_id.as_str();
    let gap = match since {
        None => true,
        Some(since) => {
            let before_timeline = shown
                .first()
                .map_or(context.upto, |first| first.stream_ordering - 1);
            timeline.limited
                || !store::room_events_between(conn, room, since, before_timeline, 1)?.is_empty()
        }
    };
    let mut state: Vec<((String, String), String)> = if gap {
        let start_state = match shown.first() {
            Some(first) => context.state_before(first)?,
            None => context.state_at_stream(context.upto)?,
        };
        let before = match since {
            Some(since) => context.state_at_stream(since)?,
            None => StateIds::new(),
        };
        start_state
            .into_iter()
            .filter(|(key, id)| before.get(key) != Some(id))
            .collect()
    } else {
        Vec::new()
    };
    if !room_filter.state.lazy_load_options.is_disabled() {
        // Lazy loading: of the members, only the timeline's senders (and the user), and on a
        // later sync also the senders whose member event did not change since `since`: the
        // client may never have been sent it, unless the device's memo says it was.
        let senders: HashSet<String> = shown.iter().map(|r| r.sender.clone()).collect();
        state.retain(|((kind, key), _)| {
            kind != "m.room.member" || senders.contains(key) || key == context.user.as_str()
        });
        if let (Some(_), Some(first)) = (since, shown.first())
            && let Some(group) = context.group_before(first)?
        {
            for sender in &senders {
                let key = ("m.room.member".to_owned(), sender.clone());
                if state.iter().any(|(k, _)| *k == key) {
                    continue;
                }
                if let Some(id) = store::state_event_at_group(conn, group, &key.0, &key.1)? {
                    state.push((key, id));
                }
            }
        }
        // Without redundant members, those this device was already sent stay out.
        if let (Some(_), Some(held)) = (since, context.held_members) {
            state.retain(|((kind, key), id)| kind != "m.room.member" || !held.holds(room, key, id));
        }
    }
    state.retain(|(_, id)| !timeline_ids.contains(id.as_str()));
    let state_ids: Vec<String> = state.into_iter().map(|(_, id)| id).collect();
    let mut joined = JoinedRoom::new();
    joined.state = State::Before(StateEvents::from(
        context.state_events(state_ids, &room_filter.state)?,
    ));
    joined.timeline = timeline;

    if since.is_none() || shown.iter().any(|r| r.json.contains("\"m.room.member\"")) {
        let joined_members = store::members_with(context.conn, context.room_id.as_str(), "join")?;
        let invited = store::members_with(context.conn, context.room_id.as_str(), "invite")?;
        joined.summary.joined_member_count =
            Some(UInt::try_from(joined_members.len() as u64).unwrap_or_default());
        joined.summary.invited_member_count =
            Some(UInt::try_from(invited.len() as u64).unwrap_or_default());
        joined.summary.heroes = joined_members
            .iter()
            .chain(invited.iter())
            .filter(|u| *u != context.user.as_str())
            .take(5)
            .filter_map(|u| OwnedUserId::try_from(u.as_str()).ok())
            .collect();
    }

    let mut ephemeral = Vec::new();
    if let Some(users) = typing {
        ephemeral.push(json!({"type": "m.typing", "content": {"user_ids": users}}));
    }
    let receipts =
        data_store::receipts_since(context.conn, context.room_id.as_str(), since_stream)?;
    if !receipts.is_empty() {
        let mut content = serde_json::Map::new();
        for receipt in receipts {
            if receipt.receipt_type == "m.read.private" && receipt.user_id != context.user.as_str()
            {
                continue;
            }
            let mut entry = json!({"ts": receipt.ts});
            if !receipt.thread_id.is_empty() {
                entry["thread_id"] = json!(receipt.thread_id);
            }
            let by_event = content.entry(receipt.event_id).or_insert_with(|| json!({}));
            by_event[receipt.receipt_type.as_str()][receipt.user_id.as_str()] = entry;
        }
        if !content.is_empty() {
            ephemeral.push(json!({"type": "m.receipt", "content": content}));
        }
    }
    joined.ephemeral.events = ephemeral.into_iter().map(to_raw).collect::<Result<_>>()?;
    joined.account_data.events = room_data
        .iter()
        .filter_map(|(room, data_type, content)| Some(json!({"type": data_type, "content": account_data_content(context.user, room, data_type, content)?})))
        .map(to_raw)
        .collect::<Result<_>>()?;

    // Push rules decide what counts; with per-thread counts, the room's own counts are the
    // main timeline's.
    let unread = super::push::unread_counts(
        context.conn,
        context.room_id,
        context.user,
        context.upto,
        context.push_rules,
        context.evaluated_actions,
    )?;
    if room_filter.timeline.unread_thread_notifications {
        joined.unread_notifications = unread.main.to_sync();
        joined.unread_thread_notifications = unread
            .threads
            .into_iter()
            .map(|(root, counts)| (root, counts.to_sync()))
            .collect();
    } else {
        joined.unread_notifications = unread.all.to_sync();
    }
    Ok(joined)
}

/// The users of the user's `m.ignored_user_list`: their invites are not shown, as Synapse.
fn ignored_users(conn: &Connection, user: &UserId) -> Result<HashSet<String>> {
    let content = data_store::get(conn, user.as_str(), "", "m.ignored_user_list")?;
    Ok(content
        .and_then(|c| serde_json::from_str::<Value>(&c).ok())
        .and_then(|c| c["ignored_users"].as_object().cloned())
        .map(|users| users.keys().cloned().collect())
        .unwrap_or_default())
}

/// The sender of a stored member event.
fn invited_by(json: &str) -> Option<String> {
    super::rooms::stored::Envelope::parse(json)?.sender
}

/// What the user's memberships in rooms this server does not hold contribute to a /sync.
struct RemoteRooms {
    updates: Vec<(OwnedRoomId, RoomUpdate)>,
    /// Rooms whose own membership row (`memberships`) such a membership supersedes (is newer).
    superseded: HashSet<String>,
}

/// The rooms of the user's memberships in rooms this server does not hold (invites from other
/// servers, knocks through them, their ends). `local_rows` are the user's rows of `memberships`.
#[allow(clippy::too_many_arguments)]
fn remote_memberships(
    conn: &Connection,
    user: &UserId,
    local_rows: &[(String, String, String, i64)],
    since: Option<SyncToken>,
    upto: i64,
    full_state: bool,
    filter: &FilterDefinition,
    ignored: &HashSet<String>,
) -> Result<RemoteRooms> {
    let local_streams: std::collections::HashMap<&str, i64> = local_rows
        .iter()
        .map(|(room, _, _, stream)| (room.as_str(), *stream))
        .collect();
    let mut updates = Vec::new();
    let mut superseded = HashSet::new();
    for remote in remote_store::of_user(conn, user.as_str())? {
        match local_streams.get(remote.room_id.as_str()) {
            Some(local) if *local >= remote.stream_ordering => continue,
            Some(_) => {
                superseded.insert(remote.room_id.clone());
            }
            None => {}
        }
        if remote.stream_ordering > upto {
            continue;
        }
        let room_id = OwnedRoomId::try_from(remote.room_id.as_str()).map_err(Error::internal)?;
        if filter.room.not_rooms.contains(&room_id)
            || filter
                .room
                .rooms
                .as_ref()
                .is_some_and(|r| !r.contains(&room_id))
        {
            continue;
        }
        if remote.membership == "invite"
            && invited_by(&remote.event_json).is_some_and(|s| ignored.contains(&s))
        {
            continue;
        }
        let new_membership = since.is_none_or(|s| remote.stream_ordering > s.stream);
        let update = remote_room_update(
            &remote,
            since.is_some(),
            new_membership,
            full_state,
            filter.room.include_leave,
        )?;
        updates.extend(update.map(|update| (room_id, update)));
    }
    Ok(RemoteRooms {
        updates,
        superseded,
    })
}

/// What a membership in a room this server does not hold shows: an invite or knock with the
/// stripped state the other server gave (and the member event itself), or the leave that ended
/// it, alone in its timeline.
fn remote_room_update(
    row: &RemoteMembership,
    incremental: bool,
    new_membership: bool,
    full_state: bool,
    include_leave: bool,
) -> Result<Option<RoomUpdate>> {
    let stripped = || -> Result<Vec<Raw<ruma::events::AnyStrippedStateEvent>>> {
        let mut events: Vec<Value> = serde_json::from_str(&row.stripped_state).unwrap_or_default();
        events
            .retain(|e| !(e["type"] == "m.room.member" && e["state_key"] == row.user_id.as_str()));
        events.extend(super::rooms::format::stripped_state(&row.event_json));
        events.into_iter().map(to_raw).collect()
    };
    Ok(match row.membership.as_str() {
        "invite" if new_membership || full_state => Some(RoomUpdate::Invite(InvitedRoom::from(
            InviteState::from(stripped()?),
        ))),
        "knock" if new_membership || full_state => {
            let mut knock_state = KnockState::new();
            knock_state.events = stripped()?;
            Some(RoomUpdate::Knock(KnockedRoom::from(knock_state)))
        }
        "leave" if (incremental && new_membership) || (include_leave && !incremental) => {
            let version =
                RoomVersionId::try_from(row.room_version.as_str()).map_err(Error::internal)?;
            let event = EventRow {
                stream_ordering: row.stream_ordering,
                event_id: row.event_id.clone(),
                room_id: row.room_id.clone(),
                sender: row.user_id.clone(),
                topological_ordering: 0,
                state_group: 0,
                redacted_by: None,
                json: row.event_json.clone(),
            };
            let mut left = LeftRoom::new();
            left.timeline.events =
                super::rooms::format::client_event(&event, &version, None, None, false)?
                    .map(to_raw)
                    .transpose()?
                    .into_iter()
                    .collect();
            Some(RoomUpdate::Leave(Box::new(left)))
        }
        _ => None,
    })
}

fn left_room(context: &RoomContext<'_>, since: Option<i64>, left_at: i64) -> Result<LeftRoom> {
    let (timeline, _) =
        context.timeline(since.unwrap_or(0), left_at, &context.filter.room.timeline)?;
    let mut left = LeftRoom::new();
    left.timeline = timeline;
    Ok(left)
}

/// The stripped state an invitee or knocker sees (`rooms::remote::prejoin_state_ids`: the
/// inviter's member event among it), with their own membership event.
fn stripped_state(
    conn: &Connection,
    room_id: &str,
    member_event_id: &str,
) -> Result<Vec<Raw<ruma::events::AnyStrippedStateEvent>>> {
    let member = store::events_by_id(conn, &[member_event_id.to_owned()])?;
    let sender = member.first().map(|row| row.sender.as_str());
    let mut ids = super::rooms::remote::prejoin_state_ids(conn, room_id, sender)?;
    ids.retain(|id| id != member_event_id);
    let mut rows = store::events_by_id(conn, &ids)?;
    rows.extend(member);
    rows.iter()
        .filter_map(|row| super::rooms::format::stripped_state(&row.json))
        .map(to_raw)
        .collect()
}

/// Stored account data content, unless it cannot be handed out (see [`json_depth::readable`]):
/// then the event is left out and the rest of the response goes on.
fn account_data_content(
    user: &UserId,
    room: &str,
    data_type: &str,
    content: &str,
) -> Option<Value> {
    let what = || super::account_data::stored_name(user.as_str(), room, data_type);
    json_depth::readable(what, content)
}

fn to_raw<T>(value: Value) -> Result<Raw<T>> {
    Ok(Raw::from_json(
        serde_json::value::to_raw_value(&value).map_err(Error::internal)?,
    ))
}

/// Resolves the `filter` parameter: inline JSON or the ID of an uploaded filter.
pub async fn resolve_filter(
    services: &Services,
    user: &UserId,
    filter: Option<sync_events::Filter>,
) -> Result<FilterDefinition> {
    match filter {
        None => Ok(FilterDefinition::default()),
        Some(sync_events::Filter::FilterDefinition(definition)) => Ok(definition),
        Some(sync_events::Filter::FilterId(id)) => {
            let id: i64 = id
                .parse()
                .map_err(|_| Error::invalid_param("Invalid filter ID"))?;
            let user = user.to_string();
            let json = services
                .rooms
                .db()
                .read(move |c| data_store::get_filter(c, &user, id).map_err(Error::from))
                .await?
                .ok_or_else(|| Error::not_found("No such filter"))?;
            serde_json::from_str(&json).map_err(Error::internal)
        }
        Some(_) => Err(Error::invalid_param("Unsupported filter")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_the_to_device_position_only_when_delivery_was_cut() {
        let plain: SyncToken = "s42_3".parse().unwrap();
        assert_eq!(plain.to_device, None);
        assert_eq!(plain.to_device_position(), 42);
        assert_eq!(plain.to_string(), "s42_3");
        let cut: SyncToken = "s42_3_17".parse().unwrap();
        assert_eq!(cut.to_device_position(), 17);
        assert_eq!(cut.to_string(), "s42_3_17");
        // A to-device position past the stream position is never trusted beyond it.
        assert_eq!(
            "s5_0_99".parse::<SyncToken>().unwrap().to_device_position(),
            5
        );
        assert!("s5_0_x".parse::<SyncToken>().is_err());
        assert!("s5_0_1_2".parse::<SyncToken>().is_err());
    }
}
