//! One room as a user sees it at a stream position: the timeline slice (with `limited` and
//! `prev_batch`), state (before the timeline for `/sync`, required state for sliding sync, lazy
//! members both ways), member counts and heroes, unread counts, receipts. `/sync` (`v3.rs`) and
//! sliding sync (`sliding.rs`) are two renderers over this computation.

use std::collections::HashSet;

use ruma::{
    OwnedUserId, RoomId, RoomVersionId, UInt, UserId,
    api::client::{
        filter::{FilterDefinition, RoomEventFilter},
        sync::sync_events::v3::Timeline,
    },
    events::room::member::MembershipState,
    serde::Raw,
};
use rusqlite::Connection;
use serde_json::{Value, json};

use super::super::{
    filter::{matches_every_event, room_event_matches},
    json_depth,
    rooms::{
        read::{Visibility, render, render_raw},
        stored::Envelope,
    },
    sent_members::DeviceMembers,
};
use crate::{
    error::{Error, Result},
    storage::{
        account_data as data_store,
        remote_memberships::RemoteMembership,
        rooms::{self as store, EventRow, StateIds, StateKey},
    },
};

/// Timeline events per room when the filter sets no limit.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// Most events one room's timeline scan looks at to fill a filtered timeline.
const MAX_TIMELINE_SCAN: usize = 5000;
/// Most timeline events one room's slice carries, whatever the client asks.
pub(super) const MAX_TIMELINE_LIMIT: usize = 1000;

/// A room's member counts and heroes (the members a client names an unnamed room after).
pub(super) struct Summary {
    pub(super) joined_count: UInt,
    pub(super) invited_count: UInt,
    pub(super) heroes: Vec<OwnedUserId>,
}

/// What one room computation needs: the reader, the room, the viewer and the position.
#[derive(Clone, Copy)]
pub(super) struct RoomContext<'a> {
    pub(super) conn: &'a Connection,
    pub(super) room_id: &'a RoomId,
    pub(super) user: &'a UserId,
    pub(super) device: &'a str,
    pub(super) filter: &'a FilterDefinition,
    pub(super) upto: i64,
    pub(super) push_rules: &'a super::super::push::UserRules,
    pub(super) evaluated_actions: &'a super::super::push::EvaluatedActions,
    /// With `include_redundant_members: false`: the member events this device was sent.
    pub(super) held_members: Option<&'a DeviceMembers<'a>>,
    /// The user's ignore list (`m.ignored_user_list`), read once per request: their receipts
    /// are not shown (the spec's "Ignoring Users").
    pub(super) ignored: &'a HashSet<String>,
}

impl RoomContext<'_> {
    pub(super) fn version(&self) -> Result<RoomVersionId> {
        let version = store::room_version(self.conn, self.room_id.as_str())?
            .ok_or_else(|| Error::internal("room without version"))?;
        RoomVersionId::try_from(version.as_str()).map_err(Error::internal)
    }

    /// `None` for an event that cannot be shown (logged): the response goes without it.
    pub(super) fn render(&self, row: &EventRow, version: &RoomVersionId) -> Result<Option<Value>> {
        render(
            self.conn,
            row,
            version,
            Some((self.user.as_str(), Some(self.device))),
            false,
        )
    }

    /// The timeline between `after` and `until` (stream positions), newest `limit` events.
    pub(super) fn timeline(
        &self,
        after: i64,
        until: i64,
        filter: &RoomEventFilter,
    ) -> Result<(Timeline, Vec<EventRow>)> {
        // `limit: 0` (the spec asks for more, Synapse accepts it): no events, `limited` when
        // there were some, and the state they would have changed in `state`.
        let limit = filter
            .limit
            .map_or(DEFAULT_TIMELINE_LIMIT, |l| u64::from(l) as usize)
            .min(MAX_TIMELINE_LIMIT);
        self.timeline_of(after, until, filter, limit)
    }

    /// [`Self::timeline`] with an explicit `limit`, which may be 0 (sliding sync's
    /// `timeline_limit: 0`: no events, `limited` when there were some).
    pub(super) fn timeline_of(
        &self,
        after: i64,
        until: i64,
        filter: &RoomEventFilter,
        limit: usize,
    ) -> Result<(Timeline, Vec<EventRow>)> {
        let (mut timeline, mut events, shown) =
            self.unbundled_timeline(after, until, filter, limit)?;
        super::super::rooms::relations::bundle_aggregations(
            self.conn,
            &mut events,
            self.room_id.as_str(),
            super::super::rooms::relations::Reader {
                user: self.user.as_str(),
                device: Some(self.device),
            },
        )?;
        timeline.events = events.into_iter().map(to_raw).collect::<Result<_>>()?;
        Ok((timeline, shown))
    }

    /// [`Self::timeline_of`] without the bundled aggregations: the timeline (its `events` left
    /// empty), the rendered events still to be bundled (sliding sync bundles the timelines of
    /// all the rooms of a response at once), and the rows shown.
    pub(super) fn unbundled_timeline(
        &self,
        after: i64,
        until: i64,
        filter: &RoomEventFilter,
        limit: usize,
    ) -> Result<(Timeline, Vec<Value>, Vec<EventRow>)> {
        let version = self.version()?;
        // Newest first, in batches, until `limit` events pass visibility and the filter: the
        // limit counts what the client gets, not what was scanned.
        let mut visibility = Visibility::new(self.conn, self.room_id.as_str(), self.user)?;
        let mut picked: Vec<(EventRow, Value)> = Vec::new();
        let mut limited = false;
        let mut upper = until;
        let mut scanned = 0;
        // The first batch is what a timeline of visible events needs (one more tells whether
        // it is `limited`: a sliding sync room list asks for one event per room, and every row
        // read carries its JSON); later batches, when events were hidden, are larger.
        let mut batch = limit + 1;
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
            batch = (limit + 1).max(20).min(MAX_TIMELINE_SCAN - scanned);
        }
        picked.reverse();
        let (shown, events): (Vec<EventRow>, Vec<Value>) = picked.into_iter().unzip();
        let mut timeline = Timeline::new();
        timeline.limited = limited;
        timeline.prev_batch = shown
            .first()
            .map(|row| format!("t{}_{}", row.topological_ordering, row.stream_ordering))
            .or_else(|| Some(format!("s{until}")));
        Ok((timeline, events, shown))
    }

    /// The state group before an event (the group after its first parent, or the one recorded
    /// for an event whose parents' state is not its own: a fork, a room joined elsewhere).
    pub(super) fn group_before(&self, row: &EventRow) -> Result<Option<i64>> {
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
    pub(super) fn state_before(&self, row: &EventRow) -> Result<StateIds> {
        match self.group_before(row)? {
            Some(group) => Ok(store::state_at_group(self.conn, group)?),
            None => Ok(StateIds::new()),
        }
    }

    /// The full state at a stream position (after the newest room event at or before it).
    pub(super) fn state_at_stream(&self, stream: i64) -> Result<StateIds> {
        match store::state_group_at_stream(self.conn, self.room_id.as_str(), stream)? {
            Some(group) => Ok(store::state_at_group(self.conn, group)?),
            None => Ok(StateIds::new()),
        }
    }

    pub(super) fn state_events(
        &self,
        ids: Vec<String>,
        filter: &RoomEventFilter,
    ) -> Result<Vec<Raw<ruma::events::AnySyncStateEvent>>> {
        let rows = store::events_by_id(self.conn, &ids)?;
        self.render_state(&rows, filter)
    }

    /// [`Self::state_events`] of events already read.
    pub(super) fn render_state(
        &self,
        rows: &[EventRow],
        filter: &RoomEventFilter,
    ) -> Result<Vec<Raw<ruma::events::AnySyncStateEvent>>> {
        let version = self.version()?;
        // Without the device: it is asked for a transaction ID, which state events never have
        // (only message events and redactions are sent with one: `Rooms::send_with_txn`).
        let reader = Some((self.user.as_str(), None));
        let mut events = Vec::new();
        if matches_every_event(filter) {
            // Nothing looks into the events: they are rendered straight to JSON text.
            for row in rows {
                if let Some(event) = render_raw(self.conn, row, &version, reader, false)? {
                    events.push(Raw::from_json(event));
                }
            }
            return Ok(events);
        }
        for row in rows {
            if let Some(event) = render(self.conn, row, &version, reader, false)?
                && room_event_matches(filter, &event)
            {
                events.push(to_raw(event)?);
            }
        }
        Ok(events)
    }

    /// `/sync`'s `state` of a joined room: everything up to the timeline's start on a first
    /// sync; on later syncs, what changed between `since` and the timeline's start when the
    /// client does not get every event in between (beyond the limit, or hidden by the filter or
    /// history visibility). With lazy loading, of the members only the timeline's senders (and
    /// the user). Returns event IDs.
    pub(super) fn state_before_timeline(
        &self,
        since: Option<i64>,
        timeline: &Timeline,
        shown: &[EventRow],
    ) -> Result<Vec<String>> {
        let timeline_ids: HashSet<&str> = shown.iter().map(|r| r.event_id.as_str()).collect();
        // State: everything up to the timeline's start on a first sync; on later syncs, what
        // changed between `since` and the timeline's start when the client does not get every event
        // in between (beyond the limit, or hidden by the filter or history visibility).
        let conn = self.conn;
        let room = self.room_id.as_str();
        let gap = match since {
            None => true,
            Some(since) => {
                let before_timeline = shown
                    .first()
                    .map_or(self.upto, |first| first.stream_ordering - 1);
                timeline.limited
                    || !store::room_events_between(conn, room, since, before_timeline, 1)?
                        .is_empty()
            }
        };
        let mut state: Vec<((String, String), String)> = if gap {
            let start_state = match shown.first() {
                Some(first) => self.state_before(first)?,
                None => self.state_at_stream(self.upto)?,
            };
            let before = match since {
                Some(since) => self.state_at_stream(since)?,
                None => StateIds::new(),
            };
            start_state
                .into_iter()
                .filter(|(key, id)| before.get(key) != Some(id))
                .collect()
        } else {
            Vec::new()
        };
        let lazy = !self.filter.room.state.lazy_load_options.is_disabled();
        self.add_hidden_changes(since, shown, lazy, &mut state)?;
        if lazy {
            // Lazy loading: of the members, only the timeline's senders (and the user), and on a
            // later sync also the senders whose member event did not change since `since`: the
            // client may never have been sent it, unless the device's memo says it was.
            let senders: HashSet<String> = shown.iter().map(|r| r.sender.clone()).collect();
            state.retain(|((kind, key), _)| {
                kind != "m.room.member" || senders.contains(key) || key == self.user.as_str()
            });
            if let (Some(_), Some(first)) = (since, shown.first())
                && let Some(group) = self.group_before(first)?
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
            if let (Some(_), Some(held)) = (since, self.held_members) {
                state.retain(|((kind, key), id)| {
                    kind != "m.room.member" || !held.holds(room, key, id)
                });
            }
        }
        state.retain(|(_, id)| !timeline_ids.contains(id.as_str()));
        Ok(state.into_iter().map(|(_, id)| id).collect())
    }

    /// State that changed within the timeline's span through events the client is not shown
    /// (hidden by history visibility, as after leaving and rejoining, or by the filter): the
    /// state at the timeline's end for those keys, as Synapse does, so that the client does not
    /// keep stale state, unless a shown event sets the key (it comes later for the client).
    /// With lazy-loaded members, members stay as the timeline's senders make them.
    fn add_hidden_changes(
        &self,
        since: Option<i64>,
        shown: &[EventRow],
        lazy: bool,
        state: &mut Vec<(StateKey, String)>,
    ) -> Result<()> {
        let Some(first) = shown.first() else {
            return Ok(()); // no timeline: `state` already reaches the end
        };
        let span = store::room_events_between(
            self.conn,
            self.room_id.as_str(),
            first.stream_ordering - 1,
            self.upto,
            shown.len() + 1,
        )?;
        if span.len() <= shown.len() {
            return Ok(()); // every event of the span is shown
        }
        let start = self.state_before(first)?;
        let at_since = match since {
            Some(since) => self.state_at_stream(since)?,
            None => StateIds::new(),
        };
        let shown_ids: HashSet<&str> = shown.iter().map(|r| r.event_id.as_str()).collect();
        let shown_keys: HashSet<StateKey> = shown
            .iter()
            .filter_map(|row| {
                let event: Value = serde_json::from_str(&row.json).ok()?;
                let key = event["state_key"].as_str()?.to_owned();
                Some((event["type"].as_str()?.to_owned(), key))
            })
            .collect();
        for (key, id) in self.state_at_stream(self.upto)? {
            if start.get(&key) == Some(&id)
                || at_since.get(&key) == Some(&id)
                || shown_ids.contains(id.as_str())
                || shown_keys.contains(&key)
                || (lazy && key.0 == "m.room.member")
            {
                continue;
            }
            state.retain(|(k, _)| *k != key);
            state.push((key, id));
        }
        Ok(())
    }

    /// Was the user joined to the room at stream position `stream`?
    pub(super) fn joined_at(&self, stream: i64) -> Result<bool> {
        let state = self.state_at_stream(stream)?;
        let key = ("m.room.member".to_owned(), self.user.to_string());
        let Some(id) = state.get(&key) else {
            return Ok(false);
        };
        let rows = store::events_by_id(self.conn, std::slice::from_ref(id))?;
        Ok(rows.first().is_some_and(|row| {
            serde_json::from_str::<Value>(&row.json)
                .is_ok_and(|event| event["content"]["membership"] == MembershipState::Join.as_str())
        }))
    }

    /// Joined and invited member counts, and up to five heroes (members other than the user).
    pub(super) fn summary(&self) -> Result<Summary> {
        let room = self.room_id.as_str();
        let joined = store::members_with(self.conn, room, MembershipState::Join.as_str())?;
        let invited = store::members_with(self.conn, room, MembershipState::Invite.as_str())?;
        let count = |n: usize| UInt::try_from(n as u64).unwrap_or_default();
        Ok(Summary {
            joined_count: count(joined.len()),
            invited_count: count(invited.len()),
            heroes: joined
                .iter()
                .chain(invited.iter())
                .filter(|u| *u != self.user.as_str())
                .take(5)
                .filter_map(|u| OwnedUserId::try_from(u.as_str()).ok())
                .collect(),
        })
    }

    /// The room's receipts stored after `since` as one `m.receipt` event (others' private
    /// receipts left out), or `None` when there are none.
    pub(super) fn receipts(&self, since: i64) -> Result<Option<Value>> {
        let receipts = data_store::receipts_since(self.conn, self.room_id.as_str(), since)?;
        if receipts.is_empty() {
            return Ok(None);
        }
        let mut content = serde_json::Map::new();
        for receipt in receipts {
            if receipt.receipt_type == "m.read.private" && receipt.user_id != self.user.as_str() {
                continue;
            }
            if self.ignored.contains(&receipt.user_id) {
                continue;
            }
            let mut entry = json!({"ts": receipt.ts});
            if !receipt.thread_id.is_empty() {
                entry["thread_id"] = json!(receipt.thread_id);
            }
            let by_event = content.entry(receipt.event_id).or_insert_with(|| json!({}));
            by_event[receipt.receipt_type.as_str()][receipt.user_id.as_str()] = entry;
        }
        Ok((!content.is_empty()).then(|| json!({"type": "m.receipt", "content": content})))
    }

    /// The user's unread notification counts, as the push rules decide.
    pub(super) fn unread(&self) -> Result<super::super::push::UnreadCounts> {
        super::super::push::unread_counts(
            self.conn,
            self.room_id,
            self.user,
            self.upto,
            self.push_rules,
            self.evaluated_actions,
        )
    }
}

/// The sender of a stored member event.
pub(super) fn invited_by(json: &str) -> Option<String> {
    super::super::rooms::stored::Envelope::parse(json)?.sender
}

/// The stripped state an invitee or knocker sees (`rooms::remote::prejoin_state_ids`: the
/// inviter's member event among it), with their own membership event.
pub(super) fn stripped_state(
    conn: &Connection,
    room_id: &str,
    member_event_id: &str,
) -> Result<Vec<Raw<ruma::events::AnyStrippedStateEvent>>> {
    let member = store::events_by_id(conn, &[member_event_id.to_owned()])?;
    let sender = member.first().map(|row| row.sender.as_str());
    let mut ids = super::super::rooms::remote::prejoin_state_ids(conn, room_id, sender)?;
    ids.retain(|id| id != member_event_id);
    let mut rows = store::events_by_id(conn, &ids)?;
    rows.extend(member);
    rows.iter()
        .filter_map(|row| super::super::rooms::format::stripped_state(&row.json))
        .map(to_raw)
        .collect()
}

/// The stripped state of an invite or knock through another server: what that server gave,
/// with the member event itself.
pub(super) fn remote_stripped_state(
    row: &RemoteMembership,
) -> Result<Vec<Raw<ruma::events::AnyStrippedStateEvent>>> {
    let mut events: Vec<Value> = serde_json::from_str(&row.stripped_state).unwrap_or_default();
    events.retain(|e| !(e["type"] == "m.room.member" && e["state_key"] == row.user_id.as_str()));
    events.extend(super::super::rooms::format::stripped_state(&row.event_json));
    events.into_iter().map(to_raw).collect()
}

/// Stored account data content, unless it cannot be handed out (see [`json_depth::readable`]):
/// then the event is left out and the rest of the response goes on.
pub(super) fn account_data_content(
    user: &UserId,
    room: &str,
    data_type: &str,
    content: &str,
) -> Option<Value> {
    let what = || super::super::account_data::stored_name(user.as_str(), room, data_type);
    json_depth::readable(what, content)
}

pub(super) fn to_raw<T>(value: Value) -> Result<Raw<T>> {
    Ok(Raw::from_json(
        serde_json::value::to_raw_value(&value).map_err(Error::internal)?,
    ))
}
