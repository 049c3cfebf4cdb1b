//! Backfill: history older than what this server holds, fetched from the room's other servers
//! when a backwards `/messages` page reaches the start of it (a backward extremity: a
//! `prev_event` not held, e.g. the events before a join through another server).
//!
//! One round: the servers most likely to have the history are asked in turn (the room creator's,
//! the senders' of the events pointing at the extremities, then the other joined servers; never
//! this one; at most [`MAX_SERVERS`], each within [`REQUEST_TIMEOUT`]) for
//! `GET /backfill/{roomId}?v=<extremities>&limit=<n>`. The answer's PDUs pass the checks of any
//! inbound PDU (`pdu::verify`: format, event ID, signatures, content hash), missing auth events
//! are fetched (`/event_auth`, as for transactions), and the events whose parents are not held
//! get the state before them from the same server (`/state_ids` and the events missing here).
//! Only then, with no request outstanding, the room's lock is taken and each event is accepted
//! oldest first as backfilled (`Rooms::accept_backfilled`): stream positions below every event
//! held, reserved for the batch and numbered oldest first (/sync never shows them as new), the
//! room's current state and forward extremities untouched, its state recorded for history
//! visibility. At most [`MAX_ROUNDS`] rounds and [`MESSAGES_DEADLINE`] per `/messages` call.
//!
//! A round that brings nothing older (an empty answer, nothing accepted, no server answering) is
//! remembered per room with the extremities it asked for: the next `/messages` does not ask
//! again for [`RETRY_NOTHING_OLDER`]. Once the create event is held there is no extremity left
//! and nothing is asked at all.
//!
//! The entry point is [`before_backwards_page`], called by the `/messages` handler before a
//! backwards page; whether the page reaches a backward extremity is `Rooms::backfill_targets`. One
//! round runs per room at a time: a concurrent `/messages` waits, then finds the events held.
//! History visibility is then judged, by client and server reads alike, with state events that may
//! still be outliers.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId, ServerName, UInt, UserId,
    api::{
        OutgoingRequest, error::Error as MatrixError,
        federation::backfill::get_backfill::v1 as get_backfill, path_builder::SinglePath,
    },
};
use serde_json::value::RawValue as RawJsonValue;

use super::{
    client::FederationAuth,
    inbound::{depth_of, fetch_auth_chain, fetch_events, ids_in, state_from_origin},
    pdu::{self, DroppedPdu},
};
use crate::{
    error::Result,
    services::{
        Services,
        rooms::{IncomingPdu, PaginationToken, PduOutcome, StateIds},
    },
};

/// Synapse serves at most 100 events per `/backfill`; never ask for more.
pub const MAX_PER_REQUEST: usize = 100;
/// Backfill requests per `/messages` call, each followed by the page check again.
pub const MAX_ROUNDS: usize = 3;
/// Servers asked per round before giving up.
pub const MAX_SERVERS: usize = 3;
/// One request to another server (Synapse's own client waits 60 s; a client waits on us).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// All the backfill one `/messages` call waits for; past it the page is what is held (events
/// accepted until then stay).
pub const MESSAGES_DEADLINE: Duration = Duration::from_secs(30);
/// How long extremities that brought nothing older are not asked for again.
pub const RETRY_NOTHING_OLDER: Duration = Duration::from_secs(600);
/// Events of one answer that get the state before them fetched (normally the oldest one or
/// two: a hostile answer of unrelated events does not make a request each).
const MAX_STATE_FETCHES: usize = 5;

/// Backfill's memory: per room, one backfill at a time and what brought nothing older.
#[derive(Default)]
pub struct Backfill {
    /// Extremities asked for without result, and when.
    nothing_older: Mutex<HashMap<OwnedRoomId, (BTreeSet<OwnedEventId>, Instant)>>,
    /// One round per room at a time: a concurrent `/messages` waits, then finds the events held.
    locks: Mutex<HashMap<OwnedRoomId, Weak<tokio::sync::Mutex<()>>>>,
}

impl Backfill {
    pub fn new() -> Self {
        Self::default()
    }

    fn room_lock(&self, room_id: &RoomId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = locks.get(room_id).and_then(Weak::upgrade) {
            return lock;
        }
        locks.retain(|_, lock| lock.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(room_id.to_owned(), Arc::downgrade(&lock));
        lock
    }

    /// Whether these extremities brought nothing older lately.
    fn recently_empty(&self, room_id: &RoomId, targets: &[OwnedEventId]) -> bool {
        let mut memory = self.nothing_older.lock().unwrap_or_else(|e| e.into_inner());
        memory.retain(|_, (_, when)| when.elapsed() < RETRY_NOTHING_OLDER);
        memory
            .get(room_id)
            .is_some_and(|(asked, _)| targets.iter().all(|t| asked.contains(t)))
    }

    fn remember_empty(&self, room_id: &RoomId, targets: &[OwnedEventId]) {
        let mut memory = self.nothing_older.lock().unwrap_or_else(|e| e.into_inner());
        memory.insert(
            room_id.to_owned(),
            (targets.iter().cloned().collect(), Instant::now()),
        );
    }
}

/// Before a backwards `/messages` page from `from`: when the page would reach the start of what
/// this server holds of the room, fetch older events from the room's other servers (see the
/// module documentation). Failures are logged, never the client's error: the page is then what
/// is held.
pub async fn before_backwards_page(
    services: &Services,
    room_id: &RoomId,
    user: &UserId,
    from: Option<PaginationToken>,
    limit: usize,
) {
    // Only for someone who may read the room: no one else makes this server ask others.
    if !matches!(services.rooms.membership(room_id, user).await, Ok(Some(_))) {
        return;
    }
    match tokio::time::timeout(
        MESSAGES_DEADLINE,
        backfill_for_page(services, room_id, from, limit),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::info!(%room_id, "backfill failed: {e}"),
        Err(_) => tracing::info!(%room_id, "backfill cut short: the page is what is held"),
    }
}

async fn backfill_for_page(
    services: &Services,
    room_id: &RoomId,
    from: Option<PaginationToken>,
    limit: usize,
) -> Result<()> {
    let backfill = &services.federation_backfill;
    let per_request = (limit * 2).clamp(10, MAX_PER_REQUEST);
    for _ in 0..MAX_ROUNDS {
        let targets = services
            .rooms
            .backfill_targets(room_id, from, limit)
            .await?;
        if targets.is_empty() || backfill.recently_empty(room_id, &targets) {
            return Ok(());
        }
        let lock = backfill.room_lock(room_id);
        let _one_at_a_time = lock.lock().await;
        // Another request may have filled it meanwhile.
        let targets = services
            .rooms
            .backfill_targets(room_id, from, limit)
            .await?;
        if targets.is_empty() || backfill.recently_empty(room_id, &targets) {
            return Ok(());
        }
        let accepted = round(services, room_id, &targets, per_request).await?;
        if accepted == 0 {
            backfill.remember_empty(room_id, &targets);
            return Ok(());
        }
    }
    Ok(())
}

/// One event of the room that `server` named (a `/timestamp_to_event` answer), fetched from it
/// with `/event/{eventId}` unless held, and placed in the timeline as a backfilled event (the
/// checks and the state before it as for a `/backfill` answer), as Synapse's
/// `backfill_event_id` does, so that `/context` and `/messages` can start from it. Whether the
/// event is now in the room's timeline.
pub async fn backfill_event(
    services: &Services,
    server: &ServerName,
    room_id: &RoomId,
    event_id: &OwnedEventId,
) -> Result<bool> {
    if matches!(
        services.rooms.pdu_outcome(event_id).await?,
        Some(PduOutcome::Accepted { .. })
    ) {
        return Ok(true);
    }
    let version = services.rooms.room_version(room_id).await?;
    let pdus = fetch_events(services, server, std::slice::from_ref(event_id)).await;
    if pdus.is_empty() {
        return Ok(false);
    }
    let lock = services.federation_backfill.room_lock(room_id);
    let _one_at_a_time = lock.lock().await;
    store_answer(services, server, room_id, &version, pdus).await?;
    Ok(matches!(
        services.rooms.pdu_outcome(event_id).await?,
        Some(PduOutcome::Accepted { .. })
    ))
}

/// `request` sent to `server` within [`REQUEST_TIMEOUT`]; a failure or a time-out is logged
/// (`what` names the request) and is `None`, for the caller to ask the next server.
pub(super) async fn ask_server<R>(
    services: &Services,
    server: &ServerName,
    room_id: &RoomId,
    what: &str,
    request: R,
) -> Option<R::IncomingResponse>
where
    R: OutgoingRequest<PathBuilder = SinglePath, EndpointError = MatrixError>,
    R::Authentication: FederationAuth,
{
    match tokio::time::timeout(REQUEST_TIMEOUT, services.federation.send(server, request)).await {
        Ok(Ok(response)) => Some(response),
        Ok(Err(e)) => {
            tracing::info!(%room_id, %server, "{what} request failed: {e}");
            None
        }
        Err(_) => {
            tracing::info!(%room_id, %server, "{what} request timed out");
            None
        }
    }
}

/// Asks one server after another for the events before `targets`; the number accepted.
async fn round(
    services: &Services,
    room_id: &RoomId,
    targets: &[OwnedEventId],
    per_request: usize,
) -> Result<usize> {
    let version = services.rooms.room_version(room_id).await?;
    let servers = servers_to_ask(services, room_id, targets).await?;
    for server in servers.into_iter().take(MAX_SERVERS) {
        let request = get_backfill::Request::new(
            room_id.to_owned(),
            targets.to_vec(),
            UInt::try_from(per_request).unwrap_or(UInt::MIN),
        );
        let Some(response) = ask_server(services, &server, room_id, "backfill", request).await
        else {
            continue;
        };
        if response.pdus.is_empty() {
            // The spec's answer for "nothing older": another server will say the same.
            return Ok(0);
        }
        let accepted = store_answer(
            services,
            &server,
            room_id,
            &version,
            response.pdus.into_iter().take(per_request),
        )
        .await;
        match accepted {
            Ok(0) => {}
            Ok(accepted) => return Ok(accepted),
            Err(e) => tracing::info!(%room_id, %server, "backfill answer not used: {e}"),
        }
    }
    Ok(0)
}

/// The room's other servers, most likely holders of the history first.
async fn servers_to_ask(
    services: &Services,
    room_id: &RoomId,
    targets: &[OwnedEventId],
) -> Result<Vec<OwnedServerName>> {
    let mut servers = services
        .rooms
        .backfill_server_hints(room_id, targets)
        .await?;
    for server in services.rooms.joined_servers(room_id).await? {
        if !servers.contains(&server) {
            servers.push(server);
        }
    }
    servers.retain(|s| *s != services.server_name);
    Ok(servers)
}

/// Checks and accepts one `/backfill` answer from `server`; the number of events accepted.
async fn store_answer(
    services: &Services,
    server: &ServerName,
    room_id: &RoomId,
    version: &RoomVersionId,
    pdus: impl IntoIterator<Item = Box<RawJsonValue>>,
) -> Result<usize> {
    let rooms = &services.rooms;
    let mut events = Vec::new();
    for checked in pdu::verify_all(services, pdus, room_id, version).await {
        match checked {
            Ok(event) => events.push(event),
            Err(DroppedPdu::WrongRoom { .. }) => {}
            Err(dropped) => {
                tracing::info!(%server, %room_id, "backfilled event dropped: {dropped}")
            }
        }
    }
    // New to the timeline: unknown, or an outlier (the state a join brought) that joins it now.
    let mut seen = HashSet::new();
    let mut new = Vec::with_capacity(events.len());
    for event in events {
        if seen.insert(event.event_id.clone())
            && rooms.pdu_outcome(&event.event_id).await?.is_none()
        {
            new.push(event);
        }
    }
    let events = new;
    let events = oldest_first(events);
    let in_batch: HashSet<OwnedEventId> = events.iter().map(|e| e.event_id.clone()).collect();
    let outside_batch = |ids: Vec<OwnedEventId>| -> Vec<OwnedEventId> {
        ids.into_iter()
            .filter(|id| !in_batch.contains(id))
            .collect()
    };

    // What the events refer to, fetched before the room's lock: auth events, and the state
    // before the events whose parents are neither held nor in the answer.
    let mut states: HashMap<OwnedEventId, StateIds> = HashMap::new();
    let mut state_fetches = 0;
    for event in &events {
        let missing_auth = rooms
            .missing_events(&outside_batch(ids_in(event, "auth_events")))
            .await?;
        if !missing_auth.is_empty()
            && let Err(reason) =
                fetch_auth_chain(services, server, room_id, &event.event_id, version).await
        {
            tracing::info!(%server, event_id = %event.event_id, reason, "no auth chain");
            continue;
        }
        let mut parents_without_state = false;
        for prev in outside_batch(ids_in(event, "prev_events")) {
            // Unknown or an outlier: no state after it is known here. (A rejected parent is
            // left out of the state before, as the room layer does.)
            parents_without_state |= rooms.pdu_outcome(&prev).await?.is_none();
        }
        if parents_without_state && state_fetches < MAX_STATE_FETCHES {
            state_fetches += 1;
            match state_from_origin(services, server, room_id, &event.event_id, version).await {
                Ok(state) => {
                    states.insert(event.event_id.clone(), state);
                }
                Err(e) => {
                    tracing::info!(%server, event_id = %event.event_id, "no state before: {e}")
                }
            }
        }
    }

    let _lock = rooms.lock_room(room_id).await;
    // Positions below everything held, numbered oldest first like the events: stream-ordered
    // reads (search by recency) see the batch in its order.
    let lowest = rooms.reserve_backfill_positions(events.len()).await?;
    let mut accepted = 0;
    for (position, event) in (lowest..).zip(events) {
        let id = event.event_id.clone();
        let outcome = rooms
            .accept_backfilled(event, states.remove(&id), position)
            .await;
        match outcome {
            Ok(PduOutcome::Accepted { .. }) => accepted += 1,
            Ok(PduOutcome::AlreadyKnown) => {}
            Ok(outcome) => tracing::info!(%server, event_id = %id, ?outcome, "backfilled event"),
            Err(e) => tracing::info!(%server, event_id = %id, "backfilled event not placed: {e}"),
        }
    }
    Ok(accepted)
}

/// The events in an order where every event comes after those of the batch among its
/// `prev_events` (the oldest parents first), shallower first among the ready ones; events in a
/// cycle (impossible with hashed IDs, possible in a hostile answer) come last.
fn oldest_first(events: Vec<IncomingPdu>) -> Vec<IncomingPdu> {
    let ids: HashSet<OwnedEventId> = events.iter().map(|e| e.event_id.clone()).collect();
    let mut pending: Vec<(Vec<OwnedEventId>, IncomingPdu)> = events
        .into_iter()
        .map(|e| {
            let prevs = ids_in(&e, "prev_events")
                .into_iter()
                .filter(|p| ids.contains(p) && *p != e.event_id)
                .collect();
            (prevs, e)
        })
        .collect();
    let mut placed: HashSet<OwnedEventId> = HashSet::new();
    let mut ordered = Vec::with_capacity(pending.len());
    loop {
        let (mut ready, rest): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(prevs, _)| prevs.iter().all(|p| placed.contains(p)));
        pending = rest;
        if ready.is_empty() {
            break;
        }
        ready.sort_by(|(_, a), (_, b)| (depth_of(a), &a.event_id).cmp(&(depth_of(b), &b.event_id)));
        for (_, event) in ready {
            placed.insert(event.event_id.clone());
            ordered.push(event);
        }
    }
    pending.sort_by_key(|(_, e)| depth_of(e));
    ordered.extend(pending.into_iter().map(|(_, e)| e));
    ordered
}

#[cfg(test)]
mod tests {
    use ruma::{CanonicalJsonObject, room_id};
    use serde_json::json;

    use super::*;

    fn event(id: &str, depth: i64, prevs: &[&str]) -> IncomingPdu {
        let object: CanonicalJsonObject =
            serde_json::from_value(json!({"depth": depth, "prev_events": prevs})).unwrap();
        IncomingPdu {
            event_id: OwnedEventId::try_from(id).unwrap(),
            room_id: room_id!("!r:x").to_owned(),
            object,
        }
    }

    fn ids(events: &[IncomingPdu]) -> Vec<&str> {
        events.iter().map(|e| e.event_id.as_str()).collect()
    }

    #[test]
    fn extremities_with_nothing_older_are_not_asked_again() {
        let backfill = Backfill::new();
        let room = room_id!("!r:x");
        let (a, b) = (
            OwnedEventId::try_from("$a").unwrap(),
            OwnedEventId::try_from("$b").unwrap(),
        );
        assert!(!backfill.recently_empty(room, std::slice::from_ref(&a)));
        backfill.remember_empty(room, &[a.clone(), b.clone()]);
        assert!(backfill.recently_empty(room, std::slice::from_ref(&a)));
        assert!(backfill.recently_empty(room, &[a.clone(), b.clone()]));
        // A new extremity (backfill elsewhere moved on) is asked for.
        let c = OwnedEventId::try_from("$c").unwrap();
        assert!(!backfill.recently_empty(room, &[a, c]));
        assert!(!backfill.recently_empty(room_id!("!other:x"), &[b]));
    }

    #[test]
    fn parents_come_before_children() {
        // As `/backfill` answers: deepest first, a fork ($2a, $2b), a parent not in the batch.
        let batch = vec![
            event("$4", 4, &["$3"]),
            event("$3", 3, &["$2a", "$2b"]),
            event("$2b", 2, &["$1"]),
            event("$2a", 2, &["$1"]),
            event("$1", 1, &["$0"]),
        ];
        assert_eq!(ids(&oldest_first(batch)), ["$1", "$2a", "$2b", "$3", "$4"]);
        // A lying depth does not put a child before its parent.
        let batch = vec![event("$b", 1, &["$a"]), event("$a", 9, &[])];
        assert_eq!(ids(&oldest_first(batch)), ["$a", "$b"]);
        // A cycle ends the sort; its events come last.
        let batch = vec![
            event("$x", 2, &["$y"]),
            event("$y", 1, &["$x"]),
            event("$z", 5, &[]),
        ];
        assert_eq!(ids(&oldest_first(batch)), ["$z", "$y", "$x"]);
    }
}
