//! State across a room's DAG: state groups built from a base group, the state before an event
//! from all its `prev_events` (ruma-state-res's state resolution v2 when they differ), auth
//! chains and the conflicted state subgraph (room version 12) read from the stored
//! `auth_events`. Everything here only reads, except `group_for_state`; callers run it outside
//! the writer where they can.

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet, VecDeque},
};

use ruma::{
    EventId, OwnedEventId, RoomVersionId,
    events::StateEventType,
    state_res::{self, StateMap, utils::event_id_set::EventIdSet},
};
use rusqlite::Connection;

use super::pdu::Pdu;
use crate::{
    error::{Error, Result},
    storage::{
        pdus,
        rooms::{self as store, StateIds},
    },
};

/// The most events an auth chain walk reads before giving up: a room whose auth chains are
/// larger is refused rather than let one request read without bound.
pub const MAX_AUTH_CHAIN: usize = 200_000;

/// A state group holding exactly `state`: `base` itself when its state is `state`, a delta on
/// `base` when `state` only adds or replaces keys, otherwise a snapshot.
pub fn group_for_state(
    conn: &Connection,
    room_id: &str,
    base: Option<i64>,
    state: &StateIds,
) -> Result<i64> {
    if let Some(base) = base {
        let base_state = store::state_at_group(conn, base)?;
        if base_state.keys().all(|key| state.contains_key(key)) {
            let delta: StateIds = state
                .iter()
                .filter(|(key, id)| base_state.get(*key) != Some(*id))
                .map(|(key, id)| (key.clone(), id.clone()))
                .collect();
            if delta.is_empty() {
                return Ok(base);
            }
            return Ok(store::new_state_group(conn, room_id, Some(base), &delta)?);
        }
    }
    Ok(store::new_state_group(conn, room_id, None, state)?)
}

/// Reads stored events for the authorization rules and state resolution: timeline events,
/// outliers and soft-failed ones, and rejected ones marked so (`Pdu::rejected`). Cached, as
/// state resolution asks for the same events many times.
pub struct EventCache<'c> {
    conn: &'c Connection,
    cache: RefCell<HashMap<OwnedEventId, Option<Pdu>>>,
    /// Events not stored yet that the caller knows (the event being checked, a batch).
    extra: HashMap<OwnedEventId, Pdu>,
}

impl<'c> EventCache<'c> {
    pub fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            cache: RefCell::new(HashMap::new()),
            extra: HashMap::new(),
        }
    }

    pub fn add(&mut self, pdu: Pdu) {
        self.extra.insert(pdu.event_id.clone(), pdu);
    }

    /// Any held event, rejected ones included (marked).
    pub fn get(&self, id: &EventId) -> Option<Pdu> {
        if let Some(pdu) = self.extra.get(id) {
            return Some(pdu.clone());
        }
        if let Some(found) = self.cache.borrow().get(id) {
            return found.clone();
        }
        let found = match pdus::auth_pdu(self.conn, id.as_str()) {
            Ok(Some(found)) => match Pdu::from_json(id.to_owned(), &found.json) {
                Ok(pdu) => Some(pdu.with_rejected(found.rejected)),
                Err(e) => {
                    tracing::warn!(event_id = %id, "a held event is unreadable for auth: {e}");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(event_id = %id, "reading an event for auth: {e}");
                None
            }
        };
        self.cache.borrow_mut().insert(id.to_owned(), found.clone());
        found
    }

    /// A held event that may serve for auth: not rejected.
    pub fn get_valid(&self, id: &EventId) -> Option<Pdu> {
        self.get(id).filter(|pdu| !pdu.rejected_flag())
    }

    /// The `auth_events` of a held event.
    fn auth_events_of(&self, id: &EventId) -> Option<Vec<OwnedEventId>> {
        self.get(id).map(|pdu| pdu.auth_events().to_vec())
    }
}

impl Pdu {
    fn rejected_flag(&self) -> bool {
        state_res::Event::rejected(self)
    }
}

/// The event IDs of the auth chain of `events` (not including them), bounded by
/// [`MAX_AUTH_CHAIN`]; events not held end the walk there.
pub fn auth_chain(
    cache: &EventCache<'_>,
    events: &[OwnedEventId],
) -> Result<HashSet<OwnedEventId>> {
    let mut chain = HashSet::new();
    let mut queue: VecDeque<OwnedEventId> = VecDeque::new();
    for id in events {
        queue.extend(cache.auth_events_of(id).unwrap_or_default());
    }
    while let Some(id) = queue.pop_front() {
        if chain.contains(&id) {
            continue;
        }
        if chain.len() >= MAX_AUTH_CHAIN {
            return Err(Error::forbidden(format!(
                "Auth chain larger than {MAX_AUTH_CHAIN} events"
            )));
        }
        if let Some(next) = cache.auth_events_of(&id) {
            queue.extend(next.into_iter().filter(|next| !chain.contains(next)));
        }
        chain.insert(id);
    }
    Ok(chain)
}

/// Room version 12's conflicted state subgraph: the events on an `auth_events` path from one
/// conflicted state event to another.
fn conflicted_state_subgraph(
    cache: &EventCache<'_>,
    conflicted: &StateMap<Vec<OwnedEventId>>,
) -> Option<EventIdSet<OwnedEventId>> {
    let starts: HashSet<OwnedEventId> = conflicted.values().flatten().cloned().collect();
    // Every event reachable from a conflicted one, with its auth events.
    let mut edges: HashMap<OwnedEventId, Vec<OwnedEventId>> = HashMap::new();
    let mut queue: VecDeque<OwnedEventId> = starts.iter().cloned().collect();
    while let Some(id) = queue.pop_front() {
        if edges.contains_key(&id) {
            continue;
        }
        if edges.len() >= MAX_AUTH_CHAIN {
            return None;
        }
        let next = cache.auth_events_of(&id).unwrap_or_default();
        queue.extend(next.iter().filter(|n| !edges.contains_key(*n)).cloned());
        edges.insert(id, next);
    }
    // Those from which a conflicted event is reachable: walk the edges backwards from them.
    let mut children: HashMap<&OwnedEventId, Vec<&OwnedEventId>> = HashMap::new();
    for (id, auth) in &edges {
        for parent in auth {
            children.entry(parent).or_default().push(id);
        }
    }
    let mut subgraph: HashSet<&OwnedEventId> = HashSet::new();
    let mut queue: VecDeque<&OwnedEventId> = starts.iter().collect();
    while let Some(id) = queue.pop_front() {
        if !subgraph.insert(id) {
            continue;
        }
        if let Some(up) = children.get(id) {
            queue.extend(up.iter().copied());
        }
    }
    Some(subgraph.into_iter().cloned().collect())
}

pub fn to_state_map(state: &StateIds) -> Result<StateMap<OwnedEventId>> {
    state
        .iter()
        .map(|((kind, key), id)| {
            let id = OwnedEventId::try_from(id.as_str()).map_err(Error::internal)?;
            Ok(((StateEventType::from(kind.as_str()), key.clone()), id))
        })
        .collect()
}

pub fn from_state_map(state: StateMap<OwnedEventId>) -> StateIds {
    state
        .into_iter()
        .map(|((kind, key), id)| ((kind.to_string(), key), id.to_string()))
        .collect()
}

/// Resolves several states of a room into one (state resolution v2 of the room version).
pub fn resolve(
    cache: &EventCache<'_>,
    version: &RoomVersionId,
    states: &[StateIds],
) -> Result<StateIds> {
    match states {
        [] => return Ok(StateIds::new()),
        [one] => return Ok(one.clone()),
        _ if states.iter().all(|s| *s == states[0]) => return Ok(states[0].clone()),
        _ => {}
    }
    let rules = version
        .rules()
        .ok_or_else(|| Error::internal(format!("no rules for room version {version}")))?;
    let state_res_rules = rules.state_res.v2_rules().ok_or_else(|| {
        Error::internal(format!("room version {version} has no state resolution v2"))
    })?;
    let maps = states
        .iter()
        .map(to_state_map)
        .collect::<Result<Vec<_>>>()?;
    let mut auth_chains = Vec::with_capacity(maps.len());
    for map in &maps {
        let ids: Vec<OwnedEventId> = map.values().cloned().collect();
        let chain = auth_chain(cache, &ids)?;
        auth_chains.push(chain.into_iter().collect::<EventIdSet<OwnedEventId>>());
    }
    let resolved = state_res::resolve(
        &rules.authorization,
        state_res_rules,
        &maps,
        auth_chains,
        |id| cache.get(id),
        |conflicted| conflicted_state_subgraph(cache, conflicted),
    )
    // Only what other servers sent can make it fail: a refusal, not a server error.
    .map_err(|e| Error::forbidden(format!("State resolution failed: {e}")))?;
    Ok(from_state_map(resolved))
}

/// The state after each of these events (timeline, soft-failed, or rejected with the state
/// before it), or the events that have none.
pub fn states_after(conn: &Connection, events: &[String]) -> Result<StatesAfter> {
    let groups = groups_after(conn, events)?;
    let states = groups
        .groups
        .iter()
        .map(|group| store::state_at_group(conn, *group))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(StatesAfter {
        states,
        missing: groups.missing,
    })
}

/// The state groups after each of these events, without reading any state: the caller reads
/// whole states only where it must (several groups to resolve).
pub fn groups_after(conn: &Connection, events: &[String]) -> Result<GroupsAfter> {
    let mut groups = Vec::new();
    let mut missing = Vec::new();
    for id in events {
        match pdus::held(conn, id)? {
            Some(pdus::Held::Timeline { state_group, .. })
            | Some(pdus::Held::Outside {
                state_group: Some(state_group),
                ..
            }) => {
                if !groups.contains(&state_group) {
                    groups.push(state_group);
                }
            }
            _ => missing.push(id.clone()),
        }
    }
    Ok(GroupsAfter { groups, missing })
}

/// What [`groups_after`] found.
pub struct GroupsAfter {
    /// The distinct state groups, in the order of the events.
    pub groups: Vec<i64>,
    /// Events with no known state after them (not held, outliers, rejected early).
    pub missing: Vec<String>,
}

/// What [`states_after`] found.
pub struct StatesAfter {
    /// The states after the events' distinct state groups, in the order of the events.
    pub states: Vec<StateIds>,
    /// Events with no known state after them (not held, outliers, rejected early).
    pub missing: Vec<String>,
}

/// A room state as the authorization rules read it: by key. The rules of one event need three
/// to five entries, so a state held as a group, or the room's current state, is read key by key
/// (a few index lookups) rather than whole (a row per member of a big room).
pub enum StateView {
    /// The state at a stored state group.
    Group(i64),
    /// The room's current state (`current_state`).
    Current(String),
    /// A state at hand, such as one just resolved.
    Ids(StateIds),
}

impl StateView {
    /// The event ID at `(event_type, state_key)`.
    pub fn get(
        &self,
        conn: &Connection,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<String>> {
        Ok(match self {
            Self::Group(group) => store::state_event_at_group(conn, *group, event_type, state_key)?,
            Self::Current(room) => store::current_state_event(conn, room, event_type, state_key)?,
            Self::Ids(state) => state
                .get(&(event_type.to_owned(), state_key.to_owned()))
                .cloned(),
        })
    }

    /// The stored group holding this state, when it is one.
    pub fn group(&self) -> Option<i64> {
        match self {
            Self::Group(group) => Some(*group),
            _ => None,
        }
    }

    /// The whole state, for the rare paths that need it (resolution with other extremities).
    pub fn to_ids(&self, conn: &Connection) -> Result<StateIds> {
        Ok(match self {
            Self::Group(group) => store::state_at_group(conn, *group)?,
            Self::Current(room) => store::current_state(conn, room)?,
            Self::Ids(state) => state.clone(),
        })
    }

    /// The held event at a key that may serve for auth (see [`EventCache::get_valid`]).
    pub fn event(
        &self,
        cache: &EventCache<'_>,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Pdu>> {
        let Some(id) = self.get(cache.conn, event_type, state_key)? else {
            return Ok(None);
        };
        Ok(OwnedEventId::try_from(id.as_str())
            .ok()
            .and_then(|id| cache.get_valid(&id)))
    }
}
