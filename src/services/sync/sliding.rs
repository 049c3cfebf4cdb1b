//! Simplified sliding sync (MSC4186), the second renderer over `room.rs`.
//!
//! A request names its connection (`conn_id`) and the position (`pos`) it continues from; the
//! connection's snapshot at that position (`connections.rs`) says what each room was sent up to.
//! Each list sorts the user's rooms by `bump_stamp` (newest first), filters them, and the rooms
//! in its ranges, with those of `room_subscriptions`, are sent: in full the first time
//! (`initial`), later only what changed since (new timeline events, state changes among their
//! `required_state`, the state of keys that `required_state` newly asks for). A request without
//! news long-polls on the stream position like `/sync`.
//!
//! Extensions: `to_device` (its own `since`; a `since` acknowledges and deletes the messages
//! before it, as `/sync` does), `e2ee`, `account_data`, `receipts` and `typing`, for the rooms of
//! the lists and subscriptions unless they name their own.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use http::StatusCode;
use ruma::{
    JsOption, OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomId, UInt,
    api::{
        client::{
            filter::{FilterDefinition, RoomEventFilter},
            sync::sync_events::v5::{
                self as v5,
                request::{ExtensionRoomConfig, ListFilters},
                response::{Hero, Room},
            },
        },
        error::ErrorKind,
    },
    directory::RoomTypeFilter,
    events::{
        AnyStrippedStateEvent,
        room::member::MembershipState::{self, Ban, Invite, Join, Knock, Leave},
    },
    room::RoomType,
    serde::Raw,
};
use rusqlite::Connection;
use serde_json::{Value, json};

use super::{
    connections::{ConnectionKey, SentRoom, Snapshot},
    room::{
        MAX_TIMELINE_LIMIT, RoomContext, account_data_content, invited_by, remote_stripped_state,
        stripped_state, to_raw,
    },
};
use crate::{
    error::{Error, Result},
    services::{
        Services, e2ee,
        ignored::ignored_users,
        push,
        rooms::{relations, stored::Envelope},
    },
    storage::{
        account_data as data_store, remote_memberships as remote_store,
        rooms::{self as store, EventRow, StateIds},
        sliding_sync::{self as list_store, ListedRoom},
    },
};

/// Longest long-poll a client may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);
/// Most rooms one list range may span.
const MAX_RANGE: u64 = 1000;

/// A sliding sync request of one device.
pub struct SlidingRequest {
    pub user: OwnedUserId,
    pub device: String,
    pub body: v5::Request,
}

/// The MSC's answer to a `pos` this server does not know: the client starts over.
fn unknown_pos() -> Error {
    Error::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::UnknownPos,
        "Unknown or expired position: start the connection over",
    )
}

/// `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.
pub async fn sync(services: &Services, request: SlidingRequest) -> Result<v5::Response> {
    let key = ConnectionKey {
        user: request.user.to_string(),
        device: request.device.clone(),
        conn_id: request.body.conn_id.clone().unwrap_or_default(),
    };
    let previous = match &request.body.pos {
        None => {
            services.sliding_sync.reset(&key);
            Arc::new(Snapshot::default())
        }
        Some(pos) => services
            .sliding_sync
            .get(&key, pos)
            .ok_or_else(unknown_pos)?,
    };
    let extensions = sticky_extensions(&request.body.extensions, &previous.extensions);
    let to_device_since = match (
        &extensions.to_device.since,
        enabled(extensions.to_device.enabled),
    ) {
        (Some(since), true) => Some(
            since
                .parse::<i64>()
                .map_err(|_| Error::invalid_param("Invalid to_device since"))?,
        ),
        _ => None,
    };
    if let Some(since) = to_device_since {
        // Messages before the extension's `since` were received: delete them, as /sync does.
        e2ee::to_device::acknowledge(services, key.user.as_str(), &key.device, since).await?;
    }
    let request = Arc::new(request);
    let mut positions = services.rooms.subscribe();
    let timeout = request.body.timeout.unwrap_or(Duration::ZERO);
    let deadline = tokio::time::Instant::now() + timeout.min(MAX_TIMEOUT);
    let mut last_round = request.body.pos.is_none();
    loop {
        let upto = *positions.borrow_and_update();
        let built = build(
            services,
            &request,
            &previous,
            &extensions,
            to_device_since,
            upto,
        )
        .await?;
        if last_round || built.news || tokio::time::Instant::now() >= deadline {
            let (mut response, snapshot) = (built.response, built.snapshot);
            response.pos = services.sliding_sync.store(&key, snapshot);
            response.txn_id = request.body.txn_id.clone();
            return Ok(response);
        }
        match tokio::time::timeout_at(deadline, positions.changed()).await {
            Ok(Ok(())) => {}
            // Timed out (or the server is stopping): answer with what there is now.
            Ok(Err(_)) | Err(_) => last_round = true,
        }
    }
}

fn enabled(flag: Option<bool>) -> bool {
    flag == Some(true)
}

/// The request's extensions, each one left out taking the connection's previous setting.
fn sticky_extensions(
    asked: &v5::request::Extensions,
    previous: &v5::request::Extensions,
) -> v5::request::Extensions {
    let mut merged = asked.clone();
    if asked.to_device.enabled.is_none() {
        merged.to_device.enabled = previous.to_device.enabled;
        merged.to_device.limit = merged.to_device.limit.or(previous.to_device.limit);
    }
    if asked.e2ee.is_empty() {
        merged.e2ee = previous.e2ee.clone();
    }
    if asked.account_data.is_empty() {
        merged.account_data = previous.account_data.clone();
    }
    if asked.receipts.is_empty() {
        merged.receipts = previous.receipts.clone();
    }
    if asked.typing.is_empty() {
        merged.typing = previous.typing.clone();
    }
    merged
}

/// How a room is to be sent: the widest timeline and union of `required_state` of the lists
/// and subscriptions that include it.
#[derive(Default, Clone)]
struct RoomConfig {
    timeline_limit: usize,
    required_state: Vec<(String, String)>,
}

impl RoomConfig {
    fn merge(&mut self, limit: UInt, required: &[(ruma::events::StateEventType, String)]) {
        let limit = (u64::from(limit) as usize).min(MAX_TIMELINE_LIMIT);
        self.timeline_limit = self.timeline_limit.max(limit);
        for (kind, key) in required {
            let entry = (kind.to_string(), key.clone());
            if !self.required_state.contains(&entry) {
                self.required_state.push(entry);
            }
        }
    }
}

/// One of the user's rooms as the lists see it.
struct Candidate {
    room_id: OwnedRoomId,
    listed: ListedRoom,
    /// The stripped state of an invite or knock through another server.
    remote_stripped: Option<Vec<Raw<AnyStrippedStateEvent>>>,
}

impl Candidate {
    /// The position lists sort by: the newest bumping event of a joined room or the user's
    /// join, whichever is newer (a room just joined comes to the top); the membership event of
    /// any other room.
    fn bump(&self) -> i64 {
        match self.listed.bump_stamp {
            Some(bump) if self.listed.membership == Join.as_str() => {
                bump.max(self.listed.membership_stream)
            }
            _ => self.listed.membership_stream,
        }
    }
}

/// The state events a room's computation has read already, by event ID.
struct ReadState<'a>(HashMap<&'a str, &'a EventRow>);

/// A room of the response, its timeline's events not yet bundled with their aggregations.
struct PendingRoom {
    room: Room,
    timeline: Vec<Value>,
}

struct Built {
    response: v5::Response,
    snapshot: Snapshot,
    /// Whether the response carries anything a long-poll should return for.
    news: bool,
}

async fn build(
    services: &Services,
    request: &Arc<SlidingRequest>,
    previous: &Arc<Snapshot>,
    extensions: &v5::request::Extensions,
    to_device_since: Option<i64>,
    upto: i64,
) -> Result<Built> {
    let typing_serial = services.typing.serial();
    // Typing is in memory: who types where, in every room whose typing changed since the
    // connection's position, read before the rest; the extension then keeps the joined rooms it
    // covers (the user's memberships need no read of their own for it).
    let typing: HashMap<OwnedRoomId, Vec<OwnedUserId>> = if enabled(extensions.typing.enabled) {
        let since = previous.typing;
        services
            .typing
            .rooms_changed_since(since)
            .into_iter()
            .filter(|(_, users)| since != 0 || !users.is_empty())
            .collect()
    } else {
        HashMap::new()
    };
    let (request, previous, extensions) = (request.clone(), previous.clone(), extensions.clone());
    let evaluated_actions = services.evaluated_actions.clone();
    let mut built = services
        .db
        .read(move |c| {
            let reader = Reader {
                conn: c,
                request: &request,
                previous: &previous,
                extensions: &extensions,
                upto,
                push_rules: push::load_for_counting(c, &request.user)?,
                evaluated_actions: &evaluated_actions,
                ignored: ignored_users(c, request.user.as_str())?,
            };
            reader.build(typing, to_device_since)
        })
        .await?;
    built.snapshot.typing = typing_serial;
    Ok(built)
}

/// One request's computation on a reader connection.
struct Reader<'a> {
    conn: &'a Connection,
    request: &'a SlidingRequest,
    previous: &'a Snapshot,
    extensions: &'a v5::request::Extensions,
    upto: i64,
    push_rules: push::UserRules,
    evaluated_actions: &'a push::EvaluatedActions,
    /// The user's ignore list, read once per request: invites, receipts and typing of ignored
    /// users stay out.
    ignored: HashSet<String>,
}

impl Reader<'_> {
    /// The room computation of `room_id` for this request's user and device at its position
    /// (sliding sync keeps no per-device member memo: `$LAZY` members are in the snapshot).
    fn context<'c>(&'c self, room_id: &'c RoomId, filter: &'c FilterDefinition) -> RoomContext<'c> {
        RoomContext {
            conn: self.conn,
            room_id,
            user: &self.request.user,
            device: &self.request.device,
            filter,
            upto: self.upto,
            push_rules: &self.push_rules,
            evaluated_actions: self.evaluated_actions,
            held_members: None,
            ignored: &self.ignored,
        }
    }

    fn build(
        &self,
        typing: HashMap<OwnedRoomId, Vec<OwnedUserId>>,
        to_device_since: Option<i64>,
    ) -> Result<Built> {
        let body = &self.request.body;
        let user = self.request.user.as_str();
        let candidates = self.candidates()?;
        let dm_rooms = if body
            .lists
            .values()
            .any(|l| filters_use_dm(l.filters.as_ref()))
        {
            self.dm_rooms()?
        } else {
            HashSet::new()
        };

        let mut response = v5::Response::new(String::new());
        let mut snapshot = Snapshot {
            stream: self.upto,
            typing: 0,
            rooms: self.previous.rooms.clone(),
            list_counts: BTreeMap::new(),
            extensions: self.extensions.clone(),
        };
        let mut news = false;

        // Lists: the rooms in their ranges, and each list's count.
        let mut configs: BTreeMap<OwnedRoomId, RoomConfig> = BTreeMap::new();
        let mut in_lists: BTreeMap<&str, Vec<OwnedRoomId>> = BTreeMap::new();
        for (name, list) in &body.lists {
            let matching: Vec<&Candidate> = candidates
                .iter()
                .filter(|c| {
                    !matches!(
                        MembershipState::from(c.listed.membership.as_str()),
                        Leave | Ban
                    ) || c.listed.membership_stream > self.previous.stream
                        && self.previous.stream > 0
                })
                .filter(|c| matches_filters(c, list.filters.as_ref(), &dm_rooms))
                .collect();
            let count = matching.len() as u64;
            if self.previous.list_counts.get(name) != Some(&count) {
                news = true;
            }
            snapshot.list_counts.insert(name.clone(), count);
            let mut list_response = v5::response::List::default();
            list_response.count = UInt::try_from(count).unwrap_or_default();
            response.lists.insert(name.clone(), list_response);
            let rooms = in_lists.entry(name.as_str()).or_default();
            for (start, end) in &list.ranges {
                let start = u64::from(*start);
                let end = u64::from(*end).min(start.saturating_add(MAX_RANGE));
                if end < start {
                    continue; // an empty range
                }
                for candidate in matching
                    .iter()
                    .skip(start as usize)
                    .take((end.saturating_sub(start) + 1) as usize)
                {
                    configs.entry(candidate.room_id.clone()).or_default().merge(
                        list.room_details.timeline_limit,
                        &list.room_details.required_state,
                    );
                    rooms.push(candidate.room_id.clone());
                }
            }
        }
        // Room subscriptions: any room the user is or was in (others are not theirs to see).
        let mut subscribed = Vec::new();
        for (room_id, subscription) in &body.room_subscriptions {
            if candidates.iter().any(|c| &c.room_id == room_id) {
                configs
                    .entry(room_id.clone())
                    .or_default()
                    .merge(subscription.timeline_limit, &subscription.required_state);
                subscribed.push(room_id.clone());
            }
        }

        // The rooms themselves.
        let by_id: HashMap<&RoomId, &Candidate> =
            candidates.iter().map(|c| (&*c.room_id, c)).collect();
        let filter = FilterDefinition::default();
        let mut initial_rooms = HashSet::new();
        // One copy of each distinct `required_state` for all the rooms and positions of the
        // connection, not one per room and position (a fifth of a waiting connection's memory).
        let mut shared: Vec<Arc<Vec<(String, String)>>> = Vec::new();
        for sent in self.previous.rooms.values() {
            if !shared.iter().any(|s| *s == sent.required_state) {
                shared.push(sent.required_state.clone());
            }
        }
        // The rooms to send, their timelines still to be bundled: one query for the relations
        // of all of them, after the loop.
        let mut pending: Vec<(OwnedRoomId, PendingRoom)> = Vec::new();
        for (room_id, config) in &configs {
            let Some(candidate) = by_id.get(&**room_id) else {
                continue;
            };
            let context = self.context(room_id, &filter);
            let sent = self.previous.rooms.get(room_id).map(|s| s.as_ref());
            let patterns = match shared.iter().find(|s| ***s == config.required_state) {
                Some(found) => found.clone(),
                None => {
                    let new = Arc::new(config.required_state.clone());
                    shared.push(new.clone());
                    new
                }
            };
            let (room, sent) = self.room(&context, candidate, config, patterns, sent)?;
            snapshot.rooms.insert(room_id.clone(), Arc::new(sent));
            if let Some(room) = room {
                if room.room.initial == Some(true) {
                    initial_rooms.insert(room_id.clone());
                }
                pending.push((room_id.clone(), room));
            }
        }
        let mut pages: Vec<(&str, &mut [Value])> = pending
            .iter_mut()
            .map(|(room_id, room)| (room_id.as_str(), room.timeline.as_mut_slice()))
            .collect();
        let reader = relations::Reader {
            user,
            device: Some(&self.request.device),
        };
        relations::bundle_aggregations_of_rooms(self.conn, &mut pages, reader)?;
        for (room_id, PendingRoom { mut room, timeline }) in pending {
            room.timeline = timeline.into_iter().map(to_raw).collect::<Result<_>>()?;
            response.rooms.insert(room_id, room);
        }
        news |= !response.rooms.is_empty();

        // Extensions.
        let ext = &self.extensions;
        let since = (self.previous.stream > 0).then_some(self.previous.stream);
        let all_rooms: Vec<OwnedRoomId> = configs.keys().cloned().collect();
        let joined = |room: &OwnedRoomId| {
            by_id
                .get(&**room)
                .is_some_and(|c| c.listed.membership == Join.as_str())
        };
        if enabled(ext.to_device.enabled) || enabled(ext.e2ee.enabled) {
            let fields = e2ee::sync_fields::read(
                self.conn,
                user,
                &self.request.device,
                since,
                to_device_since.unwrap_or(0),
                ext.to_device
                    .limit
                    .map_or(e2ee::to_device::MAX_PER_SYNC, |l| u64::from(l) as usize),
                self.upto,
            )?;
            if enabled(ext.to_device.enabled) {
                news |= !fields.to_device.is_empty();
                let mut to_device = v5::response::ToDevice::default();
                to_device.next_batch = fields.to_device_cut.unwrap_or(self.upto).to_string();
                to_device.events = fields.to_device;
                response.extensions.to_device = Some(to_device);
            }
            if enabled(ext.e2ee.enabled) {
                news |= !fields.device_lists.is_empty();
                let e2ee = &mut response.extensions.e2ee;
                e2ee.device_lists = fields.device_lists;
                e2ee.device_one_time_keys_count = fields.one_time_keys_count;
                e2ee.device_unused_fallback_key_types = Some(fields.unused_fallback_key_types);
            }
        }
        if enabled(ext.account_data.enabled) {
            let rooms = extension_rooms(
                &ext.account_data.lists,
                &ext.account_data.rooms,
                &in_lists,
                &subscribed,
                &all_rooms,
            );
            self.account_data(&mut response, since, &rooms, &initial_rooms)?;
            news |= !response.extensions.account_data.is_empty();
        }
        if enabled(ext.receipts.enabled) {
            let rooms = extension_rooms(
                &ext.receipts.lists,
                &ext.receipts.rooms,
                &in_lists,
                &subscribed,
                &all_rooms,
            );
            for room_id in rooms.iter().filter(|r| joined(r)) {
                let context = self.context(room_id, &filter);
                let from = if initial_rooms.contains(room_id) {
                    0
                } else {
                    since.unwrap_or(0)
                };
                if let Some(event) = context.receipts(from)? {
                    response
                        .extensions
                        .receipts
                        .rooms
                        .insert(room_id.clone(), to_raw(event)?);
                }
            }
            news |= !response.extensions.receipts.is_empty();
        }
        if enabled(ext.typing.enabled) {
            let rooms = extension_rooms(
                &ext.typing.lists,
                &ext.typing.rooms,
                &in_lists,
                &subscribed,
                &all_rooms,
            );
            // An ignored user's typing is not shown (the spec's "Ignoring Users").
            let ignored = &self.ignored;
            for room_id in rooms.iter().filter(|r| joined(r)) {
                if let Some(users) = typing.get(room_id) {
                    let users: Vec<&OwnedUserId> = users
                        .iter()
                        .filter(|u| !ignored.contains(u.as_str()))
                        .collect();
                    let event = json!({"type": "m.typing", "content": {"user_ids": users}});
                    response
                        .extensions
                        .typing
                        .rooms
                        .insert(room_id.clone(), to_raw(event)?);
                }
            }
            news |= !response.extensions.typing.is_empty();
        }
        Ok(Built {
            response,
            snapshot,
            news,
        })
    }

    /// The user's rooms, newest `bump_stamp` first: local memberships, and invites and knocks
    /// through other servers (unless a newer local membership supersedes them). Invites from
    /// ignored users stay out, as in `/sync`.
    fn candidates(&self) -> Result<Vec<Candidate>> {
        let user = self.request.user.as_str();
        let ignored = &self.ignored;
        let mut candidates = Vec::new();
        let listed = list_store::listed_rooms(self.conn, user, self.upto)?;
        let local: HashMap<String, i64> = listed
            .iter()
            .map(|l| (l.room_id.clone(), l.membership_stream))
            .collect();
        for remote in remote_store::of_user(self.conn, user)? {
            let newer_than_local = local
                .get(&remote.room_id)
                .is_none_or(|local| *local < remote.stream_ordering);
            if !newer_than_local
                || remote.stream_ordering > self.upto
                || !matches!(
                    MembershipState::from(remote.membership.as_str()),
                    Invite | Knock
                )
                || invited_by(&remote.event_json).is_some_and(|s| ignored.contains(&s))
            {
                continue;
            }
            let Ok(room_id) = OwnedRoomId::try_from(remote.room_id.as_str()) else {
                continue;
            };
            let stripped = remote_stripped_state(&remote)?;
            let encrypted = stripped.iter().any(|e| {
                e.get_field::<String>("type").ok().flatten().as_deref() == Some("m.room.encryption")
            });
            candidates.push(Candidate {
                room_id,
                listed: ListedRoom {
                    room_id: remote.room_id.clone(),
                    membership: remote.membership.clone(),
                    event_id: remote.event_id.clone(),
                    membership_stream: remote.stream_ordering,
                    bump_stamp: Some(remote.stream_ordering),
                    encrypted,
                    room_type: None,
                },
                remote_stripped: Some(stripped),
            });
        }
        let remote_rooms: HashSet<String> = candidates
            .iter()
            .map(|c| c.listed.room_id.clone())
            .collect();
        for listed in listed {
            if remote_rooms.contains(&listed.room_id) || listed.membership_stream > self.upto {
                continue;
            }
            if listed.membership == Invite.as_str() && !ignored.is_empty() {
                let invite =
                    store::events_by_id(self.conn, std::slice::from_ref(&listed.event_id))?;
                if invite
                    .first()
                    .is_some_and(|i| ignored.contains(i.sender.as_str()))
                {
                    continue;
                }
            }
            let Ok(room_id) = OwnedRoomId::try_from(listed.room_id.as_str()) else {
                continue;
            };
            candidates.push(Candidate {
                room_id,
                listed,
                remote_stripped: None,
            });
        }
        candidates.sort_by(|a, b| b.bump().cmp(&a.bump()).then(a.room_id.cmp(&b.room_id)));
        Ok(candidates)
    }

    /// The rooms of the user's `m.direct`.
    fn dm_rooms(&self) -> Result<HashSet<OwnedRoomId>> {
        let content = data_store::get(self.conn, self.request.user.as_str(), "", "m.direct")?;
        let content: Value = content
            .and_then(|c| serde_json::from_str(&c).ok())
            .unwrap_or_default();
        Ok(content
            .as_object()
            .into_iter()
            .flat_map(|users| users.values())
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(|room| room.as_str())
            .filter_map(|room| OwnedRoomId::try_from(room).ok())
            .collect())
    }

    /// One room of the response (its timeline not yet bundled), or `None` when nothing changed
    /// since it was sent; and what it has been sent up to from now on (`patterns`: the shared
    /// copy of the config's `required_state` that it keeps).
    fn room(
        &self,
        context: &RoomContext<'_>,
        candidate: &Candidate,
        config: &RoomConfig,
        patterns: Arc<Vec<(String, String)>>,
        sent: Option<&SentRoom>,
    ) -> Result<(Option<PendingRoom>, SentRoom)> {
        let listed = &candidate.listed;
        // A new membership (joined after the invite, left, …) is sent afresh.
        let sent = sent.filter(|s| s.membership_event == listed.event_id);
        let initial = sent.is_none();
        let mut room = Room::new();
        room.bump_stamp = Some(UInt::try_from(candidate.bump().max(0)).unwrap_or_default());
        if initial {
            room.initial = Some(true);
        }
        let lazy = config
            .required_state
            .iter()
            .any(|(kind, key)| kind == "m.room.member" && key == "$LAZY");
        if matches!(
            MembershipState::from(listed.membership.as_str()),
            Invite | Knock
        ) {
            let next = SentRoom {
                upto: listed.membership_stream,
                membership_event: listed.event_id.clone(),
                required_state: patterns,
                timeline_limit: config.timeline_limit,
                lazy_members: HashSet::new(),
            };
            if !initial {
                return Ok((None, next));
            }
            // Invites and knocks show the stripped state (with the user's own member event,
            // which tells the client which of the two it is).
            room.invite_state = Some(match &candidate.remote_stripped {
                Some(stripped) => stripped.clone(),
                None => stripped_state(self.conn, &listed.room_id, &listed.event_id)?,
            });
            let room = PendingRoom {
                room,
                timeline: Vec::new(),
            };
            return Ok((Some(room), next));
        }

        // Joined, or left or banned (seen up to the membership's end).
        let end = if listed.membership == Join.as_str() {
            self.upto
        } else {
            listed.membership_stream.min(self.upto)
        };
        let from = sent.map_or(0, |s| s.upto);
        let no_patterns = Vec::new();
        let sent_patterns = sent.map_or(&no_patterns, |s| s.required_state.as_ref());
        // A larger timeline limit than the room was sent with expands its timeline (Synapse's
        // "expanded timeline"): the newest events up to the new limit, as on a first send.
        let expanded = sent.is_some_and(|s| config.timeline_limit > s.timeline_limit);
        let unchanged_config = sent_patterns == &config.required_state && !expanded;
        // Nothing to send unless there are new events, a new configuration, or a read receipt
        // of the user's own (read elsewhere: the room's unread counts changed).
        if !initial
            && unchanged_config
            && store::room_events_between(self.conn, &listed.room_id, from, end, 1)?.is_empty()
            && !data_store::receipts_since(self.conn, &listed.room_id, from)?
                .iter()
                .any(|r| r.user_id == self.request.user.as_str())
        {
            let mut next = sent.cloned().unwrap_or_default();
            next.upto = end;
            next.timeline_limit = config.timeline_limit;
            return Ok((None, next));
        }

        let timeline_from = if expanded { 0 } else { from };
        let (timeline, events, shown) = context.unbundled_timeline(
            timeline_from,
            end,
            &RoomEventFilter::default(),
            config.timeline_limit,
        )?;
        let now = context.state_at_stream(end)?;
        let before = match sent {
            Some(sent) => context.state_at_stream(sent.upto)?,
            None => StateIds::new(),
        };
        let me = self.request.user.as_str();
        let senders: HashSet<&str> = shown.iter().map(|r| r.sender.as_str()).collect();
        let empty = HashSet::new();
        let sent_lazy = sent.map_or(&empty, |s| &s.lazy_members);
        let mut state_ids = Vec::new();
        let mut lazy_members = if lazy {
            sent_lazy.clone()
        } else {
            HashSet::new()
        };
        for (key, id) in &now {
            let lazy_ok = |user: &str| senders.contains(user) || sent_lazy.contains(user);
            if !wants(&config.required_state, key, me, lazy_ok) {
                continue;
            }
            let changed = before.get(key) != Some(id);
            let was_wanted = wants(sent_patterns, key, me, |u| sent_lazy.contains(u));
            if changed || !was_wanted {
                state_ids.push(id.clone());
            }
            if lazy && key.0 == "m.room.member" {
                lazy_members.insert(key.1.clone());
            }
        }
        let changed = |kind: &str| {
            now.iter()
                .filter(|((k, _), _)| k == kind)
                .any(|(key, id)| before.get(key) != Some(id))
                || before
                    .keys()
                    .any(|(k, key)| k == kind && !now.contains_key(&(k.clone(), key.clone())))
        };

        let state_rows = store::events_by_id(self.conn, &state_ids)?;
        room.required_state = context.render_state(&state_rows, &RoomEventFilter::default())?;
        // The name, avatar and heroes' member events are mostly among those just read.
        let read = ReadState(
            state_rows
                .iter()
                .map(|row| (row.event_id.as_str(), row))
                .collect(),
        );
        room.num_live = (self.previous.stream > 0).then(|| {
            let live = shown
                .iter()
                .filter(|r| r.stream_ordering > self.previous.stream)
                .count();
            UInt::try_from(live as u64).unwrap_or_default()
        });
        room.limited = timeline.limited;
        room.prev_batch = timeline.prev_batch;
        if initial || changed("m.room.name") {
            room.name = self
                .state_field(&read, &now, "m.room.name", "name")?
                .filter(|n| !n.is_empty());
        }
        if initial || changed("m.room.avatar") {
            let url = self
                .state_field(&read, &now, "m.room.avatar", "url")?
                .map(OwnedMxcUri::from)
                .filter(|url| !url.as_str().is_empty());
            room.avatar = match (url, initial) {
                (Some(url), _) => JsOption::Some(url),
                (None, true) => JsOption::Undefined,
                (None, false) => JsOption::Null,
            };
        }
        if initial || changed("m.room.member") {
            let summary = context.summary()?;
            room.joined_count = Some(summary.joined_count);
            room.invited_count = Some(summary.invited_count);
            room.heroes = Some(self.heroes(&read, &now, summary.heroes)?);
        }
        if listed.membership == Join.as_str() {
            room.unread_notifications = context.unread()?.all.to_sync();
        }
        let next = SentRoom {
            upto: end,
            membership_event: listed.event_id.clone(),
            required_state: patterns,
            timeline_limit: config.timeline_limit,
            lazy_members,
        };
        let room = PendingRoom {
            room,
            timeline: events,
        };
        Ok((Some(room), next))
    }

    /// A string field of the content of a state event (`state_key` "") in `state`.
    fn state_field(
        &self,
        read: &ReadState<'_>,
        state: &StateIds,
        kind: &str,
        field: &str,
    ) -> Result<Option<String>> {
        let Some(id) = state.get(&(kind.to_owned(), String::new())) else {
            return Ok(None);
        };
        let json = self.event_json(read, id)?;
        Ok(json
            .as_deref()
            .and_then(Envelope::parse)
            .and_then(|event| event.content_str(field)))
    }

    /// An event's stored JSON, as `read` has it or else read from the store (only the string
    /// fields the caller needs are then parsed, through [`Envelope`]).
    fn event_json<'r>(&self, read: &'r ReadState<'_>, id: &str) -> Result<Option<Cow<'r, str>>> {
        if let Some(row) = read.0.get(id) {
            return Ok(Some(Cow::Borrowed(row.json.as_str())));
        }
        let rows = store::events_by_id(self.conn, &[id.to_owned()])?;
        Ok(rows.into_iter().next().map(|row| Cow::Owned(row.json)))
    }

    /// Heroes with the display name and avatar of their member events.
    fn heroes(
        &self,
        read: &ReadState<'_>,
        state: &StateIds,
        users: Vec<OwnedUserId>,
    ) -> Result<Vec<Hero>> {
        let mut heroes = Vec::new();
        for user in users {
            let key = ("m.room.member".to_owned(), user.to_string());
            let mut hero = Hero::new(user);
            let json = match state.get(&key) {
                Some(id) => self.event_json(read, id)?,
                None => None,
            };
            if let Some(member) = json.as_deref().and_then(Envelope::parse) {
                hero.name = member.content_str("displayname");
                hero.avatar = member.content_str("avatar_url").map(OwnedMxcUri::from);
            }
            heroes.push(hero);
        }
        Ok(heroes)
    }

    /// Global account data changed since the connection's position (all of it at first, with
    /// the default push rules), and that of the extension's rooms (all of it for rooms sent
    /// afresh in this response).
    fn account_data(
        &self,
        response: &mut v5::Response,
        since: Option<i64>,
        rooms: &HashSet<OwnedRoomId>,
        initial_rooms: &HashSet<OwnedRoomId>,
    ) -> Result<()> {
        let user = &self.request.user;
        let changed = data_store::changed_since(self.conn, user.as_str(), since.unwrap_or(0))?;
        let mut global = Vec::new();
        let mut by_room: BTreeMap<OwnedRoomId, Vec<Value>> = BTreeMap::new();
        let mut add = |room: &str, data_type: &str, content: &str| {
            let Some(content) = account_data_content(user, room, data_type, content) else {
                return;
            };
            let event = json!({"type": data_type, "content": content});
            if room.is_empty() {
                global.push(event);
            } else if let Ok(room_id) = OwnedRoomId::try_from(room)
                && rooms.contains(&room_id)
            {
                by_room.entry(room_id).or_default().push(event);
            }
        };
        for row in &changed {
            add(&row.room_id, &row.data_type, &row.content);
        }
        if since.is_some() && !initial_rooms.is_empty() {
            for data_store::AccountDataRow {
                room_id: room,
                data_type,
                content,
            } in data_store::changed_since(self.conn, user.as_str(), 0)?
            {
                let fresh =
                    OwnedRoomId::try_from(room.as_str()).is_ok_and(|r| initial_rooms.contains(&r));
                let already = changed
                    .iter()
                    .any(|row| row.room_id == room && row.data_type == data_type);
                if fresh && !already {
                    add(&room, &data_type, &content);
                }
            }
        }
        if since.is_none() && !global.iter().any(|d| d["type"] == push::EVENT_TYPE) {
            global.push(push::default_event(user)?);
        }
        let data = &mut response.extensions.account_data;
        data.global = global.into_iter().map(to_raw).collect::<Result<_>>()?;
        for (room, events) in by_room {
            let events = events.into_iter().map(to_raw).collect::<Result<_>>()?;
            data.rooms.insert(room, events);
        }
        Ok(())
    }
}

/// Whether a list's filters need the user's `m.direct`.
fn filters_use_dm(filters: Option<&ListFilters>) -> bool {
    filters.is_some_and(|f| f.is_dm.is_some())
}

/// Whether a room passes a list's filters.
fn matches_filters(
    candidate: &Candidate,
    filters: Option<&ListFilters>,
    dm_rooms: &HashSet<OwnedRoomId>,
) -> bool {
    let Some(filters) = filters else {
        return true;
    };
    let listed = &candidate.listed;
    if filters
        .is_dm
        .is_some_and(|dm| dm != dm_rooms.contains(&candidate.room_id))
    {
        return false;
    }
    if filters.is_encrypted.is_some_and(|e| e != listed.encrypted) {
        return false;
    }
    if filters
        .is_invite
        .is_some_and(|i| i != (listed.membership == Invite.as_str()))
    {
        return false;
    }
    let room_type = RoomTypeFilter::from(listed.room_type.as_deref().map(RoomType::from));
    if !filters.room_types.is_empty() && !filters.room_types.contains(&room_type) {
        return false;
    }
    !filters.not_room_types.contains(&room_type)
}

/// Whether a `required_state` asks for a state key: `*` matches any type or key, `$ME` the
/// user, and `$LAZY` (members only) those `lazy` accepts.
fn wants(
    patterns: &[(String, String)],
    (kind, key): &(String, String),
    me: &str,
    lazy: impl Fn(&str) -> bool,
) -> bool {
    patterns.iter().any(|(p_kind, p_key)| {
        (p_kind == "*" || p_kind == kind)
            && match p_key.as_str() {
                "*" => true,
                "$ME" => key == me,
                "$LAZY" => kind == "m.room.member" && (key == me || lazy(key)),
                other => other == key,
            }
    })
}

/// The rooms an extension covers: those of the lists and subscriptions it names; `lists` or
/// `rooms` left out mean all of them (`*`), as in Synapse.
fn extension_rooms(
    lists: &Option<Vec<String>>,
    rooms: &Option<Vec<ExtensionRoomConfig>>,
    in_lists: &BTreeMap<&str, Vec<OwnedRoomId>>,
    subscribed: &[OwnedRoomId],
    all: &[OwnedRoomId],
) -> HashSet<OwnedRoomId> {
    let mut covered = HashSet::new();
    match lists {
        None => covered.extend(in_lists.values().flatten().cloned()),
        Some(lists) => {
            for list in lists {
                if list == "*" {
                    covered.extend(in_lists.values().flatten().cloned());
                } else if let Some(rooms) = in_lists.get(list.as_str()) {
                    covered.extend(rooms.iter().cloned());
                }
            }
        }
    }
    match rooms {
        None => covered.extend(subscribed.iter().cloned()),
        Some(rooms) => {
            for room in rooms {
                match room {
                    ExtensionRoomConfig::AllSubscribed => {
                        covered.extend(subscribed.iter().cloned())
                    }
                    ExtensionRoomConfig::Room(room) if all.contains(room) => {
                        covered.insert(room.clone());
                    }
                    _ => {}
                }
            }
        }
    }
    covered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_state_patterns() {
        let patterns: Vec<(String, String)> = [
            ("m.room.name", ""),
            ("m.room.member", "$LAZY"),
            ("m.room.member", "$ME"),
            ("m.space.child", "*"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let key = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        let none = |_: &str| false;
        assert!(wants(&patterns, &key("m.room.name", ""), "@me:x", none));
        assert!(!wants(&patterns, &key("m.room.topic", ""), "@me:x", none));
        assert!(wants(
            &patterns,
            &key("m.room.member", "@me:x"),
            "@me:x",
            none
        ));
        assert!(!wants(
            &patterns,
            &key("m.room.member", "@b:x"),
            "@me:x",
            none
        ));
        assert!(wants(
            &patterns,
            &key("m.room.member", "@b:x"),
            "@me:x",
            |u| u == "@b:x"
        ));
        assert!(wants(
            &patterns,
            &key("m.space.child", "!r:x"),
            "@me:x",
            none
        ));
        let everything = vec![("*".to_owned(), "*".to_owned())];
        assert!(wants(&everything, &key("m.room.topic", ""), "@me:x", none));
    }
}
