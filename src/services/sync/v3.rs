//! `/sync`: what changed for a user since a token, rendered from the per-room computation of
//! `room.rs` (which sliding sync shares). Long-polls wait on the stream position (no polling
//! loop) and wake as soon as anything is written.
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
//! stay out (`sent_members.rs`). A left room carries its state before its timeline: all of it
//! when the user was not joined at the token (joined and left within the batch), as Synapse.

use std::{collections::HashSet, fmt, str::FromStr, time::Duration};

use ruma::{
    OwnedRoomId, OwnedUserId, RoomVersionId, UserId,
    api::client::{
        filter::{FilterDefinition, LazyLoadOptions},
        sync::sync_events::v3::{
            self as sync_events, InviteState, InvitedRoom, JoinedRoom, KnockState, KnockedRoom,
            LeftRoom, State, StateEvents,
        },
    },
    events::room::member::MembershipState::{self, Ban, Invite, Join, Knock, Leave},
    serde::Raw,
};
use rusqlite::Connection;
use serde_json::{Value, json};

use super::room::{
    RoomContext, account_data_content, invited_by, remote_stripped_state, stripped_state, to_raw,
};
use crate::{
    error::{Error, Result},
    services::{Services, filter::type_allowed, ignored::ignored_users},
    storage::{
        account_data as data_store,
        remote_memberships::{self as remote_store, RemoteMembership},
        rooms::{self as store, EventRow},
    },
};

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
        crate::services::e2ee::to_device::acknowledge(
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
        || crate::services::e2ee::sync_fields::has_news(response)
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
    let input = BuildInput {
        user,
        device,
        since,
        upto: upto.stream,
        full_state,
        filter,
        typing,
        evaluated_actions,
        held_members: omit_held_members.then_some(sent_members),
    };
    let (rooms, global_data) = services
        .db
        .read(move |c| rooms_and_account_data(c, &input))
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
    let data_filter = &request.filter.account_data;
    if since.is_none()
        && type_allowed(
            data_filter.types.as_deref(),
            &data_filter.not_types,
            crate::services::push::EVENT_TYPE,
        )
        && !global_data
            .iter()
            .any(|d| d["type"] == crate::services::push::EVENT_TYPE)
    {
        global_data.push(crate::services::push::default_event(&request.user)?);
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
    let to_device_cut = crate::services::e2ee::sync_fields::fill(
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

/// The rooms of a response with what each contributes.
type RoomUpdates = Vec<(OwnedRoomId, RoomUpdate)>;

/// What [`rooms_and_account_data`] computes a response from, moved to the blocking thread.
struct BuildInput {
    user: OwnedUserId,
    device: String,
    since: Option<SyncToken>,
    upto: i64,
    full_state: bool,
    filter: FilterDefinition,
    typing: Vec<(OwnedRoomId, Vec<OwnedUserId>)>,
    evaluated_actions: std::sync::Arc<crate::services::push::EvaluatedActions>,
    /// With `include_redundant_members: false`: the memo of member events sent to devices.
    held_members: Option<std::sync::Arc<crate::services::sent_members::SentMembers>>,
}

/// The rooms' updates and the global account data of a response.
fn rooms_and_account_data(c: &Connection, input: &BuildInput) -> Result<(RoomUpdates, Vec<Value>)> {
    let BuildInput {
        user,
        device,
        since,
        upto,
        full_state,
        filter,
        typing,
        evaluated_actions,
        held_members,
    } = input;
    let (since, upto, full_state) = (*since, *upto, *full_state);
    let mut updates = Vec::new();
    let since_stream = since.map_or(0, |s| s.stream);
    let with_events: HashSet<String> = match since {
        Some(since) => store::rooms_with_events_after(c, user.as_str(), since.stream)?
            .into_iter()
            .collect(),
        None => HashSet::new(),
    };
    let changed_data = data_store::changed_since(c, user.as_str(), since_stream)?;
    let push_rules = crate::services::push::load_for_counting(c, user)?;
    let held_members = held_members
        .as_ref()
        .map(|sent| sent.of_device(user.as_str(), device));
    // Memberships in rooms this server does not hold (invites from other servers,
    // knocks through them, their ends): one of these newer than the room's own row wins.
    let ignored = ignored_users(c, user.as_str())?;
    let local_rows = store::memberships_of_user(c, user.as_str())?;
    let RemoteRooms {
        updates: remote_updates,
        superseded,
    } = remote_memberships(
        c,
        user,
        &local_rows,
        since,
        upto,
        full_state,
        filter,
        &ignored,
    )?;
    updates.extend(remote_updates);
    for store::UserMembership {
        room_id: room,
        membership,
        event_id,
        stream_ordering: membership_stream,
    } in local_rows
    {
        if superseded.contains(&room) {
            continue;
        }
        let membership = MembershipState::from(membership);
        if membership_stream > upto {
            continue; // changed after this sync's snapshot; the next sync reports it
        }
        let room_id = OwnedRoomId::try_from(room.as_str()).map_err(Error::internal)?;
        if filter.room.not_rooms.contains(&room_id)
            || filter
                .room
                .rooms
                .as_ref()
                .is_some_and(|r| !r.contains(&room_id))
        {
            continue;
        }
        let new_membership = since.is_none_or(|s| membership_stream > s.stream);
        // An ignored user's typing is not shown (the spec's "Ignoring Users").
        let room_typing = typing.iter().find(|(r, _)| *r == room_id).map(|(_, u)| {
            u.iter()
                .filter(|u| !ignored.contains(u.as_str()))
                .cloned()
                .collect::<Vec<_>>()
        });
        let data_filter = &filter.room.account_data;
        let data_wanted = !data_filter.not_rooms.contains(&room_id)
            && data_filter
                .rooms
                .as_ref()
                .is_none_or(|rooms| rooms.contains(&room_id));
        let room_data: Vec<&data_store::AccountDataRow> = changed_data
            .iter()
            .filter(|row| {
                row.room_id == room
                    && data_wanted
                    && type_allowed(
                        data_filter.types.as_deref(),
                        &data_filter.not_types,
                        &row.data_type,
                    )
            })
            .collect();
        let context = RoomContext {
            conn: c,
            room_id: &room_id,
            user,
            device,
            filter,
            upto,
            push_rules: &push_rules,
            evaluated_actions,
            held_members: held_members.as_ref(),
            ignored: &ignored,
        };
        if membership == Invite && !ignored.is_empty() {
            let invite = store::events_by_id(c, std::slice::from_ref(&event_id))?;
            if invite
                .first()
                .is_some_and(|i| ignored.contains(i.sender.as_str()))
            {
                continue;
            }
        }
        match membership {
            Join => {
                let has_activity = since.is_none()
                    || full_state
                    || new_membership
                    || with_events.contains(&room)
                    || room_typing.is_some()
                    || !room_data.is_empty()
                    || !data_store::receipts_since(c, &room, since_stream)?.is_empty();
                if has_activity {
                    let since_for_room = if full_state || new_membership {
                        None
                    } else {
                        since.map(|s| s.stream)
                    };
                    let joined = joined_room(
                        &context,
                        since_for_room,
                        since_stream,
                        room_typing,
                        &room_data,
                    )?;
                    updates.push((room_id, RoomUpdate::Join(Box::new(joined))));
                }
            }
            Invite if new_membership || full_state => {
                let stripped = stripped_state(c, &room, &event_id)?;
                let invite = InvitedRoom::from(InviteState::from(stripped));
                updates.push((room_id.clone(), RoomUpdate::Invite(invite)));
            }
            Knock if new_membership || full_state => {
                let mut knock_state = KnockState::new();
                knock_state.events = stripped_state(c, &room, &event_id)?;
                let knock = KnockedRoom::from(knock_state);
                updates.push((room_id.clone(), RoomUpdate::Knock(knock)));
            }
            Leave | Ban
                if (since.is_some() && new_membership)
                    || (filter.room.include_leave && since.is_none()) =>
            {
                let left = left_room(&context, since.map(|s| s.stream), membership_stream)?;
                updates.push((room_id, RoomUpdate::Leave(Box::new(left))));
            }
            _ => {}
        }
    }
    let global: Vec<Value> = changed_data
        .iter()
        .filter(|row| {
            row.room_id.is_empty()
                && type_allowed(
                    filter.account_data.types.as_deref(),
                    &filter.account_data.not_types,
                    &row.data_type,
                )
        })
        .filter_map(|row| {
            let content = account_data_content(user, &row.room_id, &row.data_type, &row.content)?;
            Some(json!({"type": row.data_type, "content": content}))
        })
        .collect();
    Ok((updates, global))
}

fn joined_room(
    context: &RoomContext<'_>,
    since: Option<i64>,
    since_stream: i64,
    typing: Option<Vec<OwnedUserId>>,
    room_data: &[&data_store::AccountDataRow],
) -> Result<JoinedRoom> {
    let room_filter = &context.filter.room;
    let (timeline, shown) =
        context.timeline(since.unwrap_or(0), context.upto, &room_filter.timeline)?;
    let state_ids = context.state_before_timeline(since, &timeline, &shown)?;
    let mut joined = JoinedRoom::new();
    let state = context.state_events(state_ids, &room_filter.state)?;
    fn is_member_event<T>(event: &Raw<T>) -> bool {
        matches!(event.get_field::<String>("type"), Ok(Some(t)) if t == "m.room.member")
    }
    // The counts change only with member events: in the timeline or in the gap before it.
    let members_changed =
        state.iter().any(is_member_event) || timeline.events.iter().any(is_member_event);
    joined.state = State::Before(StateEvents::from(state));
    joined.timeline = timeline;

    if since.is_none() || members_changed {
        let summary = context.summary()?;
        joined.summary.joined_member_count = Some(summary.joined_count);
        joined.summary.invited_member_count = Some(summary.invited_count);
        joined.summary.heroes = summary.heroes;
    }

    let mut ephemeral = Vec::new();
    if let Some(users) = typing {
        ephemeral.push(json!({"type": "m.typing", "content": {"user_ids": users}}));
    }
    ephemeral.extend(context.receipts(since_stream)?);
    joined.ephemeral.events = ephemeral.into_iter().map(to_raw).collect::<Result<_>>()?;
    joined.account_data.events = room_data
        .iter()
        .filter_map(|row| {
            let content =
                account_data_content(context.user, &row.room_id, &row.data_type, &row.content)?;
            Some(json!({"type": row.data_type, "content": content}))
        })
        .map(to_raw)
        .collect::<Result<_>>()?;

    // Push rules decide what counts; with per-thread counts, the room's own counts are the
    // main timeline's.
    let unread = context.unread()?;
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
    local_rows: &[store::UserMembership],
    since: Option<SyncToken>,
    upto: i64,
    full_state: bool,
    filter: &FilterDefinition,
    ignored: &HashSet<String>,
) -> Result<RemoteRooms> {
    let local_streams: std::collections::HashMap<&str, i64> = local_rows
        .iter()
        .map(|row| (row.room_id.as_str(), row.stream_ordering))
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
        if remote.membership == Invite.as_str()
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
    let stripped = || remote_stripped_state(row);
    Ok(match MembershipState::from(row.membership.as_str()) {
        Invite if new_membership || full_state => Some(RoomUpdate::Invite(InvitedRoom::from(
            InviteState::from(stripped()?),
        ))),
        Knock if new_membership || full_state => {
            let mut knock_state = KnockState::new();
            knock_state.events = stripped()?;
            Some(RoomUpdate::Knock(KnockedRoom::from(knock_state)))
        }
        Leave if (incremental && new_membership) || (include_leave && !incremental) => {
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
                crate::services::rooms::format::client_event(&event, &version, None, None, false)?
                    .map(to_raw)
                    .transpose()?
                    .into_iter()
                    .collect();
            Some(RoomUpdate::Leave(Box::new(left)))
        }
        _ => None,
    })
}

/// A room the user left (or was banned from): the timeline up to the leave and the state before
/// it. When the user was not joined at `since` (joined and left within this batch, or a first
/// sync with `include_leave`) the client knows nothing of the room: all of its state up to the
/// timeline goes in `state`, as Synapse does; otherwise what changed in a gap.
fn left_room(context: &RoomContext<'_>, since: Option<i64>, left_at: i64) -> Result<LeftRoom> {
    let context = RoomContext {
        upto: left_at,
        ..*context
    };
    let since = match since {
        Some(since) if context.joined_at(since)? => Some(since),
        _ => None,
    };
    let room_filter = &context.filter.room;
    let (timeline, shown) = context.timeline(since.unwrap_or(0), left_at, &room_filter.timeline)?;
    let state_ids = context.state_before_timeline(since, &timeline, &shown)?;
    let mut left = LeftRoom::new();
    left.state = State::Before(StateEvents::from(
        context.state_events(state_ids, &room_filter.state)?,
    ));
    left.timeline = timeline;
    Ok(left)
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
                .db
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
