//! Events from other servers: outliers, accepting a PDU into a room (the spec's checks on
//! receipt, in order), backfill, and rooms joined on another server.
//!
//! Every method works in two steps: the slow reads (auth events, the states of all
//! `prev_events`, state resolution, auth chains) run on a reader outside the writer, then one
//! short write transaction stores the outcome. The write checks that the room's forward
//! extremities are still those the reads saw (a local event may have been appended meanwhile)
//! and starts again if not. The caller holds [`Rooms::lock_room`] across its fetches and these
//! calls, so two inbound transactions for one room never interleave. Nothing here touches the
//! network: events this server lacks are named in the error, the caller fetches them first.
//!
//! Where events live (`storage/pdus.rs`, migration `0009_federated_rooms.sql`): the timeline
//! (`events`) holds only accepted events. Outliers (auth chains, the state of a room joined
//! elsewhere), rejected events (kept so that they are never fetched again; `Pdu::rejected` for
//! state resolution, never an auth event) and soft-failed ones (not shown, not a `prev_event`) live
//! in `pdus_outside_timeline`; timeline reads never look there, only state reads by ID
//! (`storage::rooms::events_by_id`) see outliers and soft-failed events.
//!
//! [`Rooms::accept`] (`pdu`, [`Arrival`]) checks against the event's auth events (reject), against
//! the state before it (the state after its one parent, or ruma's state resolution over all parents
//! with auth chains from the stored `auth_events`, bounded, and version 12's conflicted subgraph:
//! reject), then against the current state (soft-fail, live events only). The current state follows
//! the forward extremities (`CurrentStateChange`); memberships follow it. `event_edges` (every
//! event's `prev_events`) tells a backfilled event (something points at it) from a new extremity;
//! `backward_extremities` are the parents not held, where `/messages` backfills from;
//! `event_state_before` keeps the state before events whose parents' state is not it.
//! [`Rooms::persist_joined_room`] stores a `send_join` answer: state and auth chain as outliers,
//! the join in the timeline. [`Rooms::accept_backfilled`] takes each event of a batch, oldest
//! first, at a stream position below zero reserved for the batch
//! ([`Rooms::reserve_backfill_positions`]).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex, Weak},
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, OwnedServerName,
    RoomId, RoomVersionId, UserId,
    events::{StateEventType, room::member::RoomMemberEventContent},
    room_version_rules::RoomVersionRules,
    state_res,
};
use rusqlite::Connection;
use serde_json::Value;

use super::{
    Appended, Rooms,
    pdu::{self, InvalidPdu, Pdu},
    power_levels,
    state::{self, EventCache, StateView},
};
use crate::{
    error::{Error, Result},
    storage::{
        pdus::{self, Held, NewOutsidePdu, OutsideStatus},
        rooms::{self as store, NewEventRow, StateIds},
    },
};

/// A PDU from another server, with the event ID and room ID its room version gives it. Made
/// only by [`IncomingPdu::new`], so that the ID is derived once (`federation::pdu` checks the
/// signatures and hashes of what it made before handing it here).
#[derive(Debug, Clone)]
pub struct IncomingPdu {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub object: CanonicalJsonObject,
}

impl IncomingPdu {
    /// Checks the room version's event format (ruma's `check_pdu_format`: sizes, at most 20
    /// `prev_events` and 10 `auth_events`, which bounds the work per event everywhere below),
    /// then derives the event ID ([`pdu::event_id`]) and the room ID (of a room version 12 create
    /// event: from its event ID).
    pub fn new(
        rules: &RoomVersionRules,
        object: CanonicalJsonObject,
    ) -> std::result::Result<Self, InvalidPdu> {
        state_res::check_pdu_format(&object, &rules.event_format).map_err(InvalidPdu::Invalid)?;
        let event_id = pdu::event_id(&object, rules)?;
        let room_id = match object.get("room_id") {
            Some(CanonicalJsonValue::String(room_id)) => OwnedRoomId::try_from(room_id.as_str())
                .map_err(|e| InvalidPdu::Invalid(format!("bad room_id: {e}")))?,
            None if rules.authorization.room_create_event_id_as_room_id
                && object.get("type")
                    == Some(&CanonicalJsonValue::String("m.room.create".into())) =>
            {
                ruma::RoomId::new_v2(&event_id.as_str()[1..])
                    .map_err(|e| InvalidPdu::Invalid(e.to_string()))?
            }
            _ => return Err(InvalidPdu::Invalid("no valid room_id".to_owned())),
        };
        Ok(Self {
            event_id,
            room_id,
            object,
        })
    }
}

/// How an event reached this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Pushed to us (a transaction, a join): new to clients.
    Live,
    /// Fetched into the past for `/messages`: older than anything a client has seen.
    Backfill,
    /// This server's own event that another server had to countersign first (an invite of
    /// its user, `federation/invites.rs`). Its `prev_events` were the forward extremities
    /// when it was built; local events may have been appended since, which `accept` handles
    /// as it does any remote event (state before from its parents, resolved with the other
    /// extremities), which `append` cannot: it only ever extends the current state. Unlike a
    /// live event it is refused outright (nothing stored) when the rules or the current state
    /// say no, and it is queued for the room's servers in its write transaction, as `append`
    /// queues every local event.
    Own,
}

impl Arrival {
    /// New to clients: stream positions above every shown one, extremities move.
    fn is_live(self) -> bool {
        matches!(self, Self::Live | Self::Own)
    }
}

/// What became of an incoming event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PduOutcome {
    /// In the room's timeline at this stream position (negative for backfill).
    Accepted { stream: i64 },
    /// Stored, passed against the state before it but not against the current state: not shown
    /// to clients, not a `prev_event`.
    SoftFailed,
    /// Failed the authorization rules: stored as rejected, never shown nor used for auth.
    Rejected(String),
    /// Stored already (accepted, soft-failed, rejected; an outlier for `store_outliers`).
    AlreadyKnown,
}

/// One room's lock: held by whoever handles inbound events of the room, across fetches and
/// writes.
pub struct RoomLock {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

/// The per-room locks; entries go once no one holds or waits on them.
#[derive(Default)]
pub struct RoomLocks {
    locks: Mutex<HashMap<OwnedRoomId, Weak<tokio::sync::Mutex<()>>>>,
}

impl RoomLocks {
    async fn lock(&self, room_id: &RoomId) -> RoomLock {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            match locks.get(room_id).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    locks.retain(|_, lock| lock.strong_count() > 0);
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(room_id.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        RoomLock {
            _guard: lock.lock_owned().await,
        }
    }
}

/// A verified remote event as the room layer keeps it (its JSON without `unsigned`, parsed
/// once), made as soon as it is verified: a join brings the whole state of the room, thousands
/// of events, and as canonical JSON objects they took several times the memory.
pub struct PreparedPdu(Parsed);

impl PreparedPdu {
    pub fn new(incoming: IncomingPdu) -> Result<Self> {
        Parsed::new(incoming).map(Self)
    }
}

/// An incoming event, parsed.
struct Parsed {
    pdu: Pdu,
    room_id: OwnedRoomId,
    json: String,
    kind: String,
    state_key: Option<String>,
    depth: i64,
    content: Value,
}

impl Parsed {
    fn new(incoming: IncomingPdu) -> Result<Self> {
        let mut object = incoming.object;
        // `unsigned` is not covered by signatures: what another server put there is not kept.
        object.remove("unsigned");
        let depth = match object.get("depth") {
            Some(CanonicalJsonValue::Integer(depth)) => i64::from(*depth).max(0),
            _ => return Err(Error::bad_json("Event has no valid depth")),
        };
        let json = serde_json::to_string(&object).map_err(Error::internal)?;
        let pdu = Pdu::from_json(incoming.event_id, &json)
            .map_err(|_| Error::bad_json("Event is not a valid PDU"))?;
        if let Some(room_id) = state_res::Event::room_id(&pdu)
            && *room_id != incoming.room_id
        {
            return Err(Error::bad_json("Event is for another room"));
        }
        let content: Value = serde_json::from_str(pdu.content().get()).map_err(Error::internal)?;
        Ok(Self {
            kind: pdu.kind().to_string(),
            state_key: pdu.state_key().map(str::to_owned),
            room_id: incoming.room_id,
            json,
            depth,
            content,
            pdu,
        })
    }

    fn id(&self) -> &str {
        self.pdu.event_id.as_str()
    }

    fn prev_events(&self) -> Vec<String> {
        self.pdu
            .prev_events()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    fn outside_row<'a>(
        &'a self,
        status: OutsideStatus,
        reason: Option<&'a str>,
        state_group: Option<i64>,
    ) -> NewOutsidePdu<'a> {
        NewOutsidePdu {
            event_id: self.id(),
            room_id: self.room_id.as_str(),
            status,
            reason,
            event_type: &self.kind,
            state_key: self.state_key.as_deref(),
            sender: self.pdu.sender().as_str(),
            depth: self.depth,
            state_group,
            json: &self.json,
        }
    }
}

fn rules_of(version: &RoomVersionId) -> Result<RoomVersionRules> {
    version
        .rules()
        .ok_or_else(|| Error::bad_json(format!("Unsupported room version {version}")))
}

/// The error for events the caller must fetch first.
fn missing(what: &str, ids: &[String]) -> Error {
    Error::not_found(format!("Missing {what}: {}", ids.join(", ")))
}

/// The checks against the event's own auth events (the spec's step 4): `Err` is a rejection.
fn check_against_auth_events(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    cache: &EventCache<'_>,
) -> Result<std::result::Result<(), String>> {
    let mut auth_state: HashMap<(StateEventType, String), Pdu> = HashMap::new();
    let mut absent = Vec::new();
    for id in pdu.auth_events() {
        match cache.get(id) {
            None => absent.push(id.to_string()),
            Some(auth) if state_res::Event::rejected(&auth) => {
                return Ok(Err(format!("auth event {id} was rejected")));
            }
            Some(auth) => {
                let Some(key) = auth.state_key() else {
                    return Ok(Err(format!("auth event {id} is not a state event")));
                };
                auth_state.insert((auth.kind().to_string().into(), key.to_owned()), auth);
            }
        }
    }
    // Since room version 12 the create event is not listed: the room ID names it.
    if rules.authorization.room_create_event_id_as_room_id
        && let Some(room_id) = state_res::Event::room_id(pdu)
    {
        let create_id = OwnedEventId::try_from(format!("${}", &room_id.as_str()[1..]))
            .map_err(|_| Error::bad_json("Invalid room ID"))?;
        match cache.get(&create_id) {
            None => absent.push(create_id.to_string()),
            Some(create) => {
                auth_state.insert((StateEventType::RoomCreate, String::new()), create);
            }
        }
    }
    if !absent.is_empty() {
        return Err(missing("auth events", &absent));
    }
    if let Err(reason) =
        state_res::check_state_independent_auth_rules(&rules.authorization, pdu, |id: &EventId| {
            cache.get_valid(id)
        })
    {
        return Ok(Err(reason));
    }
    Ok(state_res::check_state_dependent_auth_rules(
        &rules.authorization,
        pdu,
        |kind, key| auth_state.get(&(kind.clone(), key.to_owned())).cloned(),
    ))
}

/// The state-dependent rules against a room state, read key by key: `Err` when the state
/// cannot be read, `Ok(Err)` a refusal.
fn check_against_state(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    state: &StateView,
    cache: &EventCache<'_>,
) -> Result<std::result::Result<(), String>> {
    // ruma asks for entries through a callback that cannot fail: a read error is kept aside,
    // and wins over the answer (which saw a missing entry instead).
    let failed = std::cell::RefCell::new(None);
    let verdict =
        state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, |kind, key| {
            state
                .event(cache, &kind.to_string(), key)
                .unwrap_or_else(|e| {
                    failed.borrow_mut().get_or_insert(e);
                    None
                })
        });
    match failed.into_inner() {
        Some(e) => Err(e),
        None => Ok(verdict),
    }
}

/// What the reads decided for an event.
enum Decision {
    Known,
    Rejected {
        reason: String,
        /// The state before it, when it got that far.
        state_group: Option<i64>,
    },
    Store(Box<ToStore>),
}

struct ToStore {
    soft_failed: bool,
    was_outlier: bool,
    /// A group whose state is close to the state after the event (the first parent's).
    base_group: Option<i64>,
    /// The state group after the first parent when it is a timeline event: where readers look
    /// for the state before an event that has no `event_state_before` row.
    first_parent_group: Option<i64>,
    /// The state before the event: its parents' one group, or a state given or resolved.
    state_before: StateView,
    /// The event's own entry when it is a state event: the state after it is the state before
    /// it with this (at most one) key changed.
    own_entry: StateIds,
    /// The forward extremities the reads saw; the write starts again if they moved.
    extremities: BTreeSet<String>,
    current_state: CurrentStateChange,
    missing_prev_events: Vec<String>,
    /// Whether a redaction applies at once (the target is held and the sender may redact it).
    redacts: Option<String>,
}

/// The state group after a held event (`None`: rejected, or an outlier without one).
fn state_group_of(held: Option<&Held>) -> Option<i64> {
    match held? {
        Held::Timeline { state_group, .. } => Some(*state_group),
        Held::Outside { state_group, .. } => *state_group,
    }
}

/// How the room's current state changes when an event is accepted.
enum CurrentStateChange {
    /// Backfilled, soft-failed, or already pointed at by a held event: it stays as it is.
    Unchanged,
    /// The event's parents were exactly the room's forward extremities, so the current state was
    /// the state before it: only the event's own entry (none for a message) changes. This is
    /// the common case of a busy room, and it never reads or rewrites the whole state.
    Extend(StateIds),
    /// Other forward extremities remain: the state after the event resolved with theirs.
    Replace(StateIds),
}

/// The reads for accepting one event (the spec's checks on receipt, from the auth events on).
fn decide(
    conn: &Connection,
    version: &RoomVersionId,
    parsed: &Parsed,
    arrival: Arrival,
    given_state: Option<&StateIds>,
) -> Result<Decision> {
    let rules = rules_of(version)?;
    let was_outlier = match pdus::held(conn, parsed.id())? {
        Some(Held::Timeline { .. }) => return Ok(Decision::Known),
        Some(Held::Outside { status, .. }) if status != OutsideStatus::Outlier => {
            return Ok(Decision::Known);
        }
        Some(Held::Outside { .. }) => true,
        None => false,
    };
    let mut cache = EventCache::new(conn);
    cache.add(parsed.pdu.clone());
    if let Err(reason) = check_against_auth_events(&rules, &parsed.pdu, &cache)? {
        return Ok(Decision::Rejected {
            reason,
            state_group: None,
        });
    }

    // The state before the event, from all its prev_events.
    let prev_events = parsed.prev_events();
    let after_prevs = state::groups_after(conn, &prev_events)?;
    let missing_prev_events: Vec<String> = after_prevs
        .missing
        .iter()
        .filter(|id| {
            !matches!(
                pdus::held(conn, id),
                Ok(Some(Held::Outside {
                    status: OutsideStatus::Rejected,
                    ..
                }))
            )
        })
        .cloned()
        .collect();
    let base_group = after_prevs.groups.first().copied();
    let first_parent_group = match prev_events.first() {
        Some(first) => match pdus::held(conn, first)? {
            Some(Held::Timeline { state_group, .. }) => Some(state_group),
            _ => None,
        },
        None => None,
    };
    let state_before = match given_state {
        Some(state) => StateView::Ids(state.clone()),
        None => {
            if !missing_prev_events.is_empty() {
                return Err(missing("prev events", &missing_prev_events));
            }
            match after_prevs.groups.as_slice() {
                [] if !prev_events.is_empty() => {
                    return Ok(Decision::Rejected {
                        reason: "every prev event was rejected".into(),
                        state_group: None,
                    });
                }
                // One state after all the parents: it is the state before, read by key.
                [group] => StateView::Group(*group),
                groups => {
                    let states = groups
                        .iter()
                        .map(|group| store::state_at_group(conn, *group))
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    StateView::Ids(state::resolve(&cache, version, &states)?)
                }
            }
        }
    };
    if let Err(reason) = check_against_state(&rules, &parsed.pdu, &state_before, &cache)? {
        return Ok(Decision::Rejected {
            reason,
            state_group: state_before.group(),
        });
    }

    let room = parsed.room_id.as_str();
    let extremities: BTreeSet<String> = store::forward_extremities(conn, room)?
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    // The current state is the state before the event when its parents are exactly the forward
    // extremities, or when parents and extremities all hold one state group (messages of a busy
    // room, whose senders fork and merge the graph all the time). Then the check against the
    // current state would repeat the one just made (and reading it costs a whole room's state),
    // and the event changes the current state by its own entry at most; a state event beside
    // other extremities is the exception: its entry is resolved against theirs below.
    let is_live_on_parents = arrival.is_live() && given_state.is_none() && !extremities.is_empty();
    let parents_are_extremities =
        prev_events.iter().cloned().collect::<BTreeSet<_>>() == extremities;
    let one_group_everywhere = match after_prevs.groups.as_slice() {
        [group] => extremities
            .iter()
            .map(|id| pdus::held(conn, id))
            .collect::<rusqlite::Result<Vec<_>>>()?
            .iter()
            .all(|held| state_group_of(held.as_ref()) == Some(*group)),
        _ => false,
    };
    let current_is_state_before =
        is_live_on_parents && (parents_are_extremities || one_group_everywhere);
    let extends_current =
        current_is_state_before && (parents_are_extremities || parsed.state_key.is_none());
    let soft_failed = arrival.is_live()
        && !current_is_state_before
        && store::current_state_event(conn, room, "m.room.create", "")?.is_some()
        && check_against_state(
            &rules,
            &parsed.pdu,
            &StateView::Current(room.to_owned()),
            &cache,
        )?
        .is_err();

    let mut own_entry = StateIds::new();
    if let Some(key) = &parsed.state_key {
        own_entry.insert((parsed.kind.clone(), key.clone()), parsed.id().to_owned());
    }

    // A backfilled event is older than what the room shows: extremities and current state stay.
    let current_state = if soft_failed || arrival == Arrival::Backfill {
        CurrentStateChange::Unchanged
    } else if extends_current {
        CurrentStateChange::Extend(own_entry.clone())
    } else if pdus::has_timeline_child(conn, parsed.id())? {
        CurrentStateChange::Unchanged
    } else {
        let mut state_after = state_before.to_ids(conn)?;
        state_after.extend(own_entry.clone());
        let others: Vec<String> = extremities
            .iter()
            .filter(|id| !prev_events.contains(id))
            .cloned()
            .collect();
        if others.is_empty() {
            CurrentStateChange::Replace(state_after)
        } else {
            let mut states = vec![state_after];
            states.extend(state::states_after(conn, &others)?.states);
            CurrentStateChange::Replace(state::resolve(&cache, version, &states)?)
        }
    };

    let redacts = match parsed.pdu.redacts() {
        Some(target) if !soft_failed => redaction_applies(
            conn,
            &rules,
            room,
            &parsed.pdu,
            target,
            &state_before,
            &cache,
        )?
        .then(|| target.to_string()),
        _ => None,
    };
    Ok(Decision::Store(Box::new(ToStore {
        soft_failed,
        was_outlier,
        base_group,
        first_parent_group,
        state_before,
        own_entry,
        extremities,
        current_state,
        missing_prev_events,
        redacts,
    })))
}

/// Whether a redaction takes effect on a held event of the room: the same server sent both, or
/// the redaction's sender may redact others' events.
fn redaction_applies(
    conn: &Connection,
    rules: &RoomVersionRules,
    room: &str,
    redaction: &Pdu,
    target: &OwnedEventId,
    state: &StateView,
    cache: &EventCache<'_>,
) -> Result<bool> {
    let Some(row) = store::get_event(conn, target.as_str())? else {
        return Ok(false);
    };
    if row.room_id != room {
        return Ok(false);
    }
    let target_sender = UserId::parse(&row.sender).map_err(Error::internal)?;
    if target_sender.server_name() == redaction.sender().server_name() {
        return Ok(true);
    }
    let levels = power_levels::at_state(&rules.authorization, state, cache)?;
    Ok(levels.user_can_redact_event_of_other(redaction.sender()))
}

/// The write for one event; `None` when the room's forward extremities moved since the reads.
fn store_decision(
    tx: &Connection,
    our_server: &ruma::ServerName,
    parsed: &Parsed,
    arrival: Arrival,
    decision: &Decision,
    backfill_position: Option<i64>,
) -> Result<Option<PduOutcome>> {
    match pdus::held(tx, parsed.id())? {
        Some(Held::Timeline { .. }) => return Ok(Some(PduOutcome::AlreadyKnown)),
        Some(Held::Outside { status, .. }) if status != OutsideStatus::Outlier => {
            return Ok(Some(PduOutcome::AlreadyKnown));
        }
        _ => {}
    }
    let room = parsed.room_id.as_str();
    let to_store = match decision {
        Decision::Known => return Ok(Some(PduOutcome::AlreadyKnown)),
        // Our own event that the rules refuse is not kept: the client hears why.
        Decision::Rejected { reason, .. } if arrival == Arrival::Own => {
            return Ok(Some(PduOutcome::Rejected(reason.clone())));
        }
        Decision::Store(to_store) if arrival == Arrival::Own && to_store.soft_failed => {
            return Ok(Some(PduOutcome::SoftFailed));
        }
        Decision::Rejected {
            reason,
            state_group,
        } => {
            pdus::put_outside(
                tx,
                &parsed.outside_row(OutsideStatus::Rejected, Some(reason), *state_group),
            )?;
            return Ok(Some(PduOutcome::Rejected(reason.clone())));
        }
        Decision::Store(to_store) => to_store,
    };
    let extremities: BTreeSet<String> = store::forward_extremities(tx, room)?
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    if extremities != to_store.extremities {
        return Ok(None);
    }
    // The state before (a delta on the first parent's group), then the state after (a delta of
    // at most one key on it).
    let before_group = match &to_store.state_before {
        StateView::Group(group) => *group,
        other => state::group_for_state(tx, room, to_store.base_group, &other.to_ids(tx)?)?,
    };
    let state_group = if to_store.own_entry.is_empty() {
        before_group
    } else {
        store::new_state_group(tx, room, Some(before_group), &to_store.own_entry)?
    };
    // Readers take the state after the first parent as the state before an event unless a row
    // says otherwise (`storage::pdus::state_before`): the row is written only when it differs.
    if to_store.first_parent_group != Some(before_group) {
        pdus::set_state_before(tx, parsed.id(), before_group)?;
    }
    if to_store.soft_failed {
        pdus::put_outside(
            tx,
            &parsed.outside_row(OutsideStatus::SoftFailed, None, Some(state_group)),
        )?;
        return Ok(Some(PduOutcome::SoftFailed));
    }
    if to_store.was_outlier {
        pdus::remove_outside(tx, parsed.id())?;
    }
    let stream = match arrival {
        Arrival::Live | Arrival::Own => store::next_stream_position(tx)?,
        Arrival::Backfill => match backfill_position {
            Some(reserved) => reserved,
            None => pdus::next_backfill_position(tx)?,
        },
    };
    let prev_events = parsed.prev_events();
    let relation = super::append::relation_of(&parsed.content);
    store::insert_event_row(
        tx,
        &NewEventRow {
            event_id: parsed.id(),
            room_id: room,
            event_type: &parsed.kind,
            state_key: parsed.state_key.as_deref(),
            sender: parsed.pdu.sender().as_str(),
            origin_server_ts: parsed.pdu.origin_server_ts().get().into(),
            depth: parsed.depth,
            redacts: parsed.pdu.redacts().map(|r| r.as_str()),
            relates_to: relation
                .as_ref()
                .map(|(id, rel)| (id.as_str(), rel.as_str())),
            prev_events: &prev_events,
            json: &parsed.json,
        },
        state_group,
        stream,
    )?;
    if arrival.is_live() {
        pdus::advance_forward_extremities(tx, room, parsed.id(), &prev_events)?;
    }
    pdus::update_backward_extremities(
        tx,
        room,
        parsed.id(),
        parsed.depth,
        &to_store.missing_prev_events,
    )?;
    match &to_store.current_state {
        CurrentStateChange::Unchanged => {}
        CurrentStateChange::Extend(entry) => {
            let changed = pdus::set_current_state_entries(tx, room, entry)?;
            update_memberships(tx, room, entry, &changed, stream.max(0), parsed)?;
        }
        CurrentStateChange::Replace(current) => {
            let changed = pdus::replace_current_state(tx, room, current)?;
            update_memberships(tx, room, current, &changed, stream.max(0), parsed)?;
        }
    }
    if let Some(target) = &to_store.redacts {
        store::mark_redacted(tx, target, parsed.id())?;
    }
    if arrival == Arrival::Own {
        crate::services::federation::sender::enqueue_pdu(
            tx,
            our_server,
            &parsed.room_id,
            &parsed.pdu.event_id,
            stream,
            &[],
        )?;
    }
    Ok(Some(PduOutcome::Accepted { stream }))
}

/// Memberships follow the member events that changed in the current state.
fn update_memberships(
    tx: &Connection,
    room: &str,
    current: &StateIds,
    changed: &[store::StateKey],
    stream: i64,
    parsed: &Parsed,
) -> Result<()> {
    let stream = if stream == 0 {
        store::current_stream_position(tx)?
    } else {
        stream
    };
    for (kind, user) in changed {
        if kind != "m.room.member" {
            continue;
        }
        let Some(event_id) = current.get(&(kind.clone(), user.clone())) else {
            continue;
        };
        let content = if event_id == parsed.id() {
            Some(parsed.pdu.content().get().to_owned())
        } else {
            pdus::auth_pdu(tx, event_id)?
                .and_then(|found| super::stored::content(&found.json).map(|c| c.to_string()))
        };
        let Some(membership) = content
            .and_then(|c| serde_json::from_str::<RoomMemberEventContent>(&c).ok())
            .map(|c| c.membership)
        else {
            continue;
        };
        store::set_membership(tx, room, user, membership.as_str(), event_id, stream)?;
    }
    Ok(())
}

impl Rooms {
    /// Takes the room's inbound lock; see the module documentation.
    pub async fn lock_room(&self, room_id: &RoomId) -> RoomLock {
        self.room_locks.lock(room_id).await
    }

    /// Which of these events this server does not hold (accepted, soft-failed, outliers and
    /// rejected ones count as held: a rejected event is never fetched again).
    pub async fn missing_events(&self, ids: &[OwnedEventId]) -> Result<Vec<OwnedEventId>> {
        let ids = ids.to_vec();
        self.db
            .read(move |c| {
                let mut missing = Vec::new();
                for id in ids {
                    if pdus::held(c, id.as_str())?.is_none() {
                        missing.push(id);
                    }
                }
                Ok(missing)
            })
            .await
    }

    /// The room state made of these held events (another server's `/state_ids` answer), keyed
    /// by their type and state key, for [`Rooms::accept_with_state`]. Events not held, rejected,
    /// of another room or without a state key are left out and returned apart; two events for
    /// one key are refused (a state has one event per key).
    pub async fn state_from_event_ids(
        &self,
        room_id: &RoomId,
        ids: Vec<OwnedEventId>,
    ) -> Result<(StateIds, Vec<OwnedEventId>)> {
        let room_id = room_id.to_owned();
        self.db
            .read(move |c| {
                let cache = EventCache::new(c);
                let mut state = StateIds::new();
                let mut left_out = Vec::new();
                for id in ids {
                    let key = cache.get_valid(&id).and_then(|pdu| {
                        let in_room = state_res::Event::room_id(&pdu).is_none_or(|r| *r == room_id);
                        let key = pdu.state_key()?.to_owned();
                        in_room.then(|| (pdu.kind().to_string(), key))
                    });
                    let Some(key) = key else {
                        left_out.push(id);
                        continue;
                    };
                    if state.insert(key, id.to_string()).is_some() {
                        return Err(Error::bad_json("Two state events for one key"));
                    }
                }
                Ok((state, left_out))
            })
            .await
    }

    /// Stores events outside the timeline (auth chains, state of a room joined elsewhere),
    /// each checked against its own auth events, in the order of their auth dependencies.
    /// Rejected ones are recorded as rejected. `Err` names auth events neither held nor in the
    /// batch: the caller fetches them first.
    pub async fn store_outliers(
        &self,
        version: &RoomVersionId,
        pdus: Vec<IncomingPdu>,
    ) -> Result<Vec<(OwnedEventId, PduOutcome)>> {
        let parsed = pdus
            .into_iter()
            .map(Parsed::new)
            .collect::<Result<Vec<_>>>()?;
        self.store_parsed_outliers(version, parsed).await
    }

    async fn store_parsed_outliers(
        &self,
        version: &RoomVersionId,
        parsed: Vec<Parsed>,
    ) -> Result<Vec<(OwnedEventId, PduOutcome)>> {
        let version = version.clone();
        let ordered = order_by_auth(parsed);
        let (ordered, outcomes) = self
            .db
            .read(move |c| {
                let outcomes = check_outliers(c, &version, &ordered)?;
                Ok::<_, Error>((ordered, outcomes))
            })
            .await?;
        let stored = self
            .db
            .write(move |tx| {
                let mut results = Vec::with_capacity(ordered.len());
                for (parsed, outcome) in ordered.iter().zip(outcomes) {
                    let outcome = if pdus::held(tx, parsed.id())?.is_some() {
                        PduOutcome::AlreadyKnown
                    } else {
                        match &outcome {
                            PduOutcome::Rejected(reason) => pdus::put_outside(
                                tx,
                                &parsed.outside_row(OutsideStatus::Rejected, Some(reason), None),
                            )?,
                            PduOutcome::Accepted { .. } => pdus::put_outside(
                                tx,
                                &parsed.outside_row(OutsideStatus::Outlier, None, None),
                            )?,
                            _ => {}
                        }
                        outcome
                    };
                    results.push((parsed.pdu.event_id.clone(), outcome));
                }
                Ok::<_, Error>(results)
            })
            .await?;
        Ok(stored)
    }

    /// Accepts a remote event into its room's timeline, after the spec's checks: against its
    /// auth events (else rejected), against the state before it, resolved from all its
    /// `prev_events` (else rejected), against the current state (else soft-failed, for live
    /// events). Its `prev_events` and auth events must be held (`Err` names the missing ones).
    pub async fn accept(&self, pdu: IncomingPdu, arrival: Arrival) -> Result<PduOutcome> {
        self.accept_inner(pdu, arrival, None, None, None).await
    }

    /// `accept` for an event whose `prev_events` are not all held, with the state before it
    /// obtained otherwise (`/state_ids` of the origin, its events stored as outliers first);
    /// the missing `prev_events` become backward extremities.
    pub async fn accept_with_state(
        &self,
        pdu: IncomingPdu,
        arrival: Arrival,
        state_before: StateIds,
    ) -> Result<PduOutcome> {
        self.accept_inner(pdu, arrival, Some(state_before), None, None)
            .await
    }

    /// Reserves `n` stream positions for a batch of backfilled events (see
    /// [`Self::accept_backfilled`]); the lowest of them.
    pub async fn reserve_backfill_positions(&self, n: usize) -> Result<i64> {
        let n = i64::try_from(n).map_err(Error::internal)?;
        self.db
            .write(move |tx| pdus::reserve_backfill_positions(tx, n).map_err(Error::from))
            .await
    }

    /// `accept` (with the state before it when given: `accept_with_state`) of a backfilled
    /// event at a stream position reserved with [`Self::reserve_backfill_positions`]: a batch
    /// accepted oldest first keeps its order in the stream too.
    pub async fn accept_backfilled(
        &self,
        pdu: IncomingPdu,
        state_before: Option<StateIds>,
        stream: i64,
    ) -> Result<PduOutcome> {
        self.accept_inner(pdu, Arrival::Backfill, state_before, None, Some(stream))
            .await
    }

    async fn accept_inner(
        &self,
        pdu: IncomingPdu,
        arrival: Arrival,
        given_state: Option<StateIds>,
        version: Option<RoomVersionId>,
        backfill_position: Option<i64>,
    ) -> Result<PduOutcome> {
        let version = match version {
            Some(version) => version,
            None => self.room_version(&pdu.room_id).await?,
        };
        let parsed = Arc::new(Parsed::new(pdu)?);
        let given_state = given_state.map(Arc::new);
        for _ in 0..8 {
            let decision = {
                let (parsed, version, given_state) =
                    (parsed.clone(), version.clone(), given_state.clone());
                self.db
                    .read(move |c| decide(c, &version, &parsed, arrival, given_state.as_deref()))
                    .await?
            };
            let decision = Arc::new(decision);
            let outcome = {
                let (parsed, decision) = (parsed.clone(), decision.clone());
                let ours = self.server_name.clone();
                self.db
                    .write(move |tx| {
                        store_decision(tx, &ours, &parsed, arrival, &decision, backfill_position)
                    })
                    .await?
            };
            if let Some(outcome) = outcome {
                if let PduOutcome::Accepted { stream } = outcome
                    && arrival.is_live()
                {
                    self.notify(stream);
                }
                return Ok(outcome);
            }
        }
        Err(Error::internal(format!(
            "room {} kept changing while accepting {}",
            parsed.room_id,
            parsed.id()
        )))
    }

    /// A room joined through another server (its `send_join` answer): the state and auth chain
    /// are stored as outliers, the room is created here, and the join event enters the timeline
    /// with `state` as the state before it.
    pub async fn persist_joined_room(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        state: Vec<PreparedPdu>,
        auth_chain: Vec<PreparedPdu>,
        join: IncomingPdu,
    ) -> Result<Appended> {
        let mut state_ids = StateIds::new();
        let mut creator = None;
        for PreparedPdu(pdu) in &state {
            if pdu.room_id != room_id {
                return Err(Error::bad_json("State event for another room"));
            }
            let Some(key) = &pdu.state_key else {
                return Err(Error::bad_json("Room state holds a non-state event"));
            };
            if pdu.kind == "m.room.create" {
                creator = Some(pdu.pdu.sender().to_string());
            }
            state_ids.insert((pdu.kind.clone(), key.clone()), pdu.id().to_owned());
        }
        let creator = creator.ok_or_else(|| Error::bad_json("Room state has no create event"))?;
        let all: Vec<Parsed> = auth_chain
            .into_iter()
            .chain(state)
            .map(|PreparedPdu(parsed)| parsed)
            .collect();
        let outcomes = self.store_parsed_outliers(version, all).await?;
        for (id, outcome) in &outcomes {
            if !matches!(outcome, PduOutcome::Accepted { .. }) {
                tracing::info!(
                    event_id = %id,
                    ?outcome,
                    "room state from the join: not stored as an outlier"
                );
            }
        }
        let rejected: HashSet<String> = outcomes
            .into_iter()
            .filter(|(_, outcome)| matches!(outcome, PduOutcome::Rejected(_)))
            .map(|(id, _)| id.to_string())
            .collect();
        state_ids.retain(|_, id| !rejected.contains(id));
        let (room, version_str) = (room_id.to_string(), version.to_string());
        self.db
            .write(move |tx| {
                pdus::insert_room_if_absent(
                    tx,
                    &room,
                    &version_str,
                    &creator,
                    crate::storage::now_ms(),
                )
                .map_err(Error::from)
            })
            .await?;
        let event_id = join.event_id.clone();
        match self
            .accept_inner(
                join,
                Arrival::Live,
                Some(state_ids),
                Some(version.clone()),
                None,
            )
            .await?
        {
            PduOutcome::Accepted { stream } => Ok(Appended {
                event_id,
                room_id: room_id.to_owned(),
                stream,
            }),
            PduOutcome::AlreadyKnown => Err(Error::forbidden("The join event is known already")),
            PduOutcome::SoftFailed => Err(Error::forbidden("The join event was soft-failed")),
            PduOutcome::Rejected(reason) => Err(Error::forbidden(format!(
                "The join event was rejected: {reason}"
            ))),
        }
    }

    /// The state before an event (timeline or soft-failed).
    pub async fn state_ids_before(&self, event_id: &EventId) -> Result<StateIds> {
        let version = self.version_of_event(event_id).await?;
        let event_id = event_id.to_string();
        self.db
            .read(move |c| state_before_event(c, &version, &event_id))
            .await
    }

    /// The state after an event (timeline or soft-failed).
    pub async fn state_ids_after(&self, event_id: &EventId) -> Result<StateIds> {
        let event_id = event_id.to_string();
        self.db
            .read(move |c| match pdus::held(c, &event_id)? {
                Some(Held::Timeline { state_group, .. })
                | Some(Held::Outside {
                    status: OutsideStatus::SoftFailed,
                    state_group: Some(state_group),
                    ..
                }) => Ok(store::state_at_group(c, state_group)?),
                _ => Err(Error::not_found("No state known at this event")),
            })
            .await
    }

    /// The auth chain of these events (not including them), from their stored auth events.
    pub async fn auth_chain(&self, event_ids: &[OwnedEventId]) -> Result<Vec<OwnedEventId>> {
        let ids = event_ids.to_vec();
        self.db
            .read(move |c| {
                let chain = state::auth_chain(&EventCache::new(c), &ids)?;
                let mut chain: Vec<_> = chain.into_iter().collect();
                chain.sort();
                Ok(chain)
            })
            .await
    }

    /// The `prev_events` this server does not hold, with the depth of the events pointing at
    /// them: where `/messages` backfills from.
    pub async fn backward_extremities(&self, room_id: &RoomId) -> Result<Vec<(OwnedEventId, i64)>> {
        let room = room_id.to_string();
        self.db
            .read(move |c| {
                pdus::backward_extremities(c, &room)?
                    .into_iter()
                    .map(|b| {
                        Ok((
                            OwnedEventId::try_from(b.event_id).map_err(Error::internal)?,
                            b.depth,
                        ))
                    })
                    .collect()
            })
            .await
    }

    /// The servers most likely to hold the history before these backward extremities, best
    /// first: the room creator's, then those of the senders of the events pointing at them.
    pub async fn backfill_server_hints(
        &self,
        room_id: &RoomId,
        extremities: &[OwnedEventId],
    ) -> Result<Vec<OwnedServerName>> {
        let (room, extremities) = (room_id.to_string(), extremities.to_vec());
        self.db
            .read(move |c| {
                let mut users: Vec<String> = pdus::room_creator(c, &room)?.into_iter().collect();
                for id in &extremities {
                    users.extend(pdus::senders_pointing_at(c, id.as_str())?);
                }
                let mut servers: Vec<OwnedServerName> = Vec::new();
                for user in users {
                    if let Ok(user) = UserId::parse(&user)
                        && !servers.iter().any(|s| s == user.server_name())
                    {
                        servers.push(user.server_name().to_owned());
                    }
                }
                Ok(servers)
            })
            .await
    }

    /// The servers of the users joined to a room: where its events go.
    pub async fn joined_servers(&self, room_id: &RoomId) -> Result<BTreeSet<OwnedServerName>> {
        let room = room_id.to_string();
        self.db.read(move |c| joined_servers_in(c, &room)).await
    }

    /// How an event is held: `Some(outcome)` for a soft-failed or rejected event (with the
    /// reason), `Some(Accepted)` for a timeline event, `None` for an outlier or unknown one.
    pub async fn pdu_outcome(&self, event_id: &EventId) -> Result<Option<PduOutcome>> {
        let event_id = event_id.to_string();
        self.db
            .read(move |c| {
                if let Some(row) = store::get_event(c, &event_id)? {
                    return Ok(Some(PduOutcome::Accepted {
                        stream: row.stream_ordering,
                    }));
                }
                Ok(match pdus::outside_info(c, &event_id)? {
                    Some(info) => match info.status {
                        OutsideStatus::Outlier => None,
                        OutsideStatus::SoftFailed => Some(PduOutcome::SoftFailed),
                        OutsideStatus::Rejected => {
                            Some(PduOutcome::Rejected(info.reason.unwrap_or_default()))
                        }
                    },
                    None => None,
                })
            })
            .await
    }

    async fn version_of_event(&self, event_id: &EventId) -> Result<RoomVersionId> {
        let event_id = event_id.to_string();
        let version = self
            .db
            .read(move |c| pdus::room_version_of_event(c, &event_id).map_err(Error::from))
            .await?
            .ok_or_else(|| Error::not_found("Event not found"))?;
        RoomVersionId::try_from(version.as_str()).map_err(Error::internal)
    }
}

/// The state before an event (timeline or soft-failed) inside a read: the state recorded when
/// it was accepted (`event_state_before`), else (a local event) the state after its parents,
/// resolved when there are several.
pub fn state_before_event(
    conn: &Connection,
    version: &RoomVersionId,
    event_id: &str,
) -> Result<StateIds> {
    if let Some(group) = pdus::state_before(conn, event_id)? {
        return Ok(store::state_at_group(conn, group)?);
    }
    let Some(found) = pdus::auth_pdu(conn, event_id)? else {
        return Err(Error::not_found("Event not found"));
    };
    let pdu = Pdu::from_json(
        OwnedEventId::try_from(event_id).map_err(Error::internal)?,
        &found.json,
    )?;
    let prevs: Vec<String> = pdu.prev_events().iter().map(|e| e.to_string()).collect();
    let after = state::states_after(conn, &prevs)?;
    if !after.missing.is_empty() && after.states.is_empty() && !prevs.is_empty() {
        return Err(Error::not_found("State before the event is unknown"));
    }
    match after.states.as_slice() {
        [] => Ok(StateIds::new()),
        [single] => Ok(single.clone()),
        several => state::resolve(&EventCache::new(conn), version, several),
    }
}

/// [`Rooms::joined_servers`] inside a transaction.
pub fn joined_servers_in(conn: &Connection, room_id: &str) -> Result<BTreeSet<OwnedServerName>> {
    Ok(pdus::joined_servers(conn, room_id)?
        .into_iter()
        .filter_map(|name| OwnedServerName::try_from(name).ok())
        .collect())
}

fn as_str(value: &CanonicalJsonValue) -> Option<&str> {
    match value {
        CanonicalJsonValue::String(s) => Some(s),
        _ => None,
    }
}

/// Orders a batch so that every event comes after the events of the batch among its auth
/// events, and after the room's create event (since v12 no event lists it: the room ID names
/// it); events in an auth cycle come last (and fail their checks).
fn order_by_auth(batch: Vec<Parsed>) -> Vec<Parsed> {
    let ids: HashSet<OwnedEventId> = batch.iter().map(|p| p.pdu.event_id.clone()).collect();
    let is_create = |p: &Parsed| {
        *state_res::Event::event_type(&p.pdu) == ruma::events::TimelineEventType::RoomCreate
    };
    let creates: HashSet<OwnedEventId> = batch
        .iter()
        .filter(|p| is_create(p))
        .map(|p| p.pdu.event_id.clone())
        .collect();
    let mut pending: Vec<Parsed> = batch;
    let mut placed: HashSet<OwnedEventId> = HashSet::new();
    let mut ordered = Vec::with_capacity(pending.len());
    loop {
        let before = pending.len();
        let (ready, rest): (Vec<Parsed>, Vec<Parsed>) = pending.into_iter().partition(|p| {
            let after_create = is_create(p) || creates.iter().all(|c| placed.contains(c));
            after_create
                && p.pdu
                    .auth_events()
                    .iter()
                    .all(|a| !ids.contains(a) || placed.contains(a))
        });
        for p in &ready {
            placed.insert(p.pdu.event_id.clone());
        }
        ordered.extend(ready);
        pending = rest;
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
    ordered.extend(pending);
    ordered
}

/// The checks of a batch of outliers, in order; each sees the ones before it. `Accepted` here
/// means "store as an outlier".
fn check_outliers(
    conn: &Connection,
    version: &RoomVersionId,
    ordered: &[Parsed],
) -> Result<Vec<PduOutcome>> {
    let rules = rules_of(version)?;
    let in_batch: HashSet<&EventId> = ordered.iter().map(|p| &*p.pdu.event_id).collect();
    // Auth events neither held nor in the batch: the caller must fetch them.
    let mut absent = Vec::new();
    for parsed in ordered {
        for id in parsed.pdu.auth_events() {
            if !in_batch.contains(&**id)
                && pdus::held(conn, id.as_str())?.is_none()
                && !absent.contains(&id.to_string())
            {
                absent.push(id.to_string());
            }
        }
    }
    if !absent.is_empty() {
        return Err(missing("auth events", &absent));
    }
    let mut cache = EventCache::new(conn);
    let mut outcomes = Vec::with_capacity(ordered.len());
    let mut seen: HashSet<OwnedEventId> = HashSet::new();
    for parsed in ordered {
        if pdus::held(conn, parsed.id())?.is_some() || !seen.insert(parsed.pdu.event_id.clone()) {
            outcomes.push(PduOutcome::AlreadyKnown);
            continue;
        }
        let not_yet: Vec<String> = parsed
            .pdu
            .auth_events()
            .iter()
            .filter(|a| cache.get(a).is_none())
            .map(|a| a.to_string())
            .collect();
        let outcome = if !not_yet.is_empty() {
            PduOutcome::Rejected(format!("auth events in a cycle: {}", not_yet.join(", ")))
        } else {
            match check_against_auth_events(&rules, &parsed.pdu, &cache)? {
                Ok(()) => PduOutcome::Accepted { stream: 0 },
                Err(reason) => PduOutcome::Rejected(reason),
            }
        };
        let rejected = matches!(outcome, PduOutcome::Rejected(_));
        cache.add(parsed.pdu.clone().with_rejected(rejected));
        outcomes.push(outcome);
    }
    Ok(outcomes)
}
