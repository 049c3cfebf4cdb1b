//! Inbound transactions (`PUT /_matrix/federation/v1/send/{txnId}`): the PDUs and EDUs another
//! server pushes to us.
//!
//! Every PDU goes through the spec's checks on receipt
//! (<https://spec.matrix.org/latest/server-server-api/#checks-performed-on-receipt-of-a-pdu>), in
//! this order, each step in the function named after it:
//!
//! 0. **The origin may talk about the room**: we are in the room, and its `m.room.server_acl`
//!    allows the origin (`room_of_pdu`); otherwise the PDU is refused and nothing is fetched.
//! 1. **Is a valid event**, otherwise it is dropped: size limits and the room version's format,
//!    event ID from its reference hash, or before room version 3 its `event_id` field
//!    (`pdu::parse`, once).
//! 2. **Passes signature checks**, otherwise it is dropped (`pdu::check_signatures`, the signing
//!    servers' keys fetched as needed).
//! 3. **Passes hash checks**, otherwise it is redacted before being processed further
//!    (`pdu::check_signatures`).
//!    Before the authorization steps, what the event refers to must be held:
//!    missing **auth events** are fetched from the origin (`/event_auth`) and stored as outliers,
//!    each through steps 1-4 itself (`fetch_auth_chain`); missing **prev events** are fetched with
//!    `/get_missing_events` (a few rounds, at most `MAX_GAP_EVENTS`: `fetch_gap`) and each goes
//!    through this whole list, oldest first. An event whose parents are still unknown after that
//!    (a gap larger than that, an origin that answers less) takes the state before it from the
//!    origin's `/state_ids`, its events fetched and checked as outliers (`state_from_origin`),
//!    and its unknown parents become backward extremities (backfill's starting points).
//! 4. **Passes authorization rules based on the event's auth events**, otherwise it is rejected;
//! 5. **passes authorization rules based on the state before the event**, otherwise it is
//!    rejected;
//! 6. **passes authorization rules based on the current state of the room**, otherwise it is
//!    "soft failed": these three happen in the room layer (`Rooms::accept`), under the room's lock
//!    taken here, so that two transactions for one room never interleave; all network work
//!    happens before it, the write transaction never waits on another server.
//!
//! The transaction as a whole is idempotent per origin: a retried transaction ID gets the first
//! answer again without processing anything (`storage::federation_inbound`).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Duration,
};

use futures_util::StreamExt;

use ruma::{
    OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, ServerName, UInt,
    api::federation::{
        authorization::get_event_authorization,
        event::{get_event, get_missing_events, get_room_state, get_room_state_ids},
        transactions::{edu::Edu, send_transaction_message::v1 as send_transaction},
    },
    events::room::member::MembershipState,
    serde::Raw,
};
use serde_json::value::RawValue as RawJsonValue;

use super::pdu::{self, DroppedPdu};
use crate::{
    error::{Error, Result},
    services::{
        Services,
        presence::Joined,
        rooms::{Arrival, IncomingPdu, PduOutcome, StateIds},
    },
};

/// The spec's limits on one transaction.
pub const MAX_PDUS_PER_TRANSACTION: usize = 50;
pub const MAX_EDUS_PER_TRANSACTION: usize = 100;
/// Missing prev events asked for in one `/get_missing_events` (Synapse answers at most 20).
const MAX_MISSING_EVENTS: usize = 20;
/// At most this many `/get_missing_events` requests for one PDU...
const MAX_GAP_ROUNDS: usize = 5;
/// ... bringing at most this many events in all (each at most 64 KiB: bounded memory).
const MAX_GAP_EVENTS: usize = 50;
/// The events whose parents one request asks for.
const MAX_LATEST_EVENTS: usize = 10;
/// One `/get_missing_events` answer: 20 PDUs of at most 64 KiB, and room for their envelope.
const GAP_ANSWER_MAX_BYTES: usize = 2 * 1024 * 1024;
/// Events of one PDU's gap that may get their state from the origin (`/state_ids`): usually
/// one, the oldest fetched; a fork whose branches both start in the unknown takes two.
const MAX_STATE_FETCHES: usize = 2;
/// A `/state_ids` answer: at most this many IDs (state and auth chain) ...
const MAX_STATE_IDS: usize = 50_000;
/// ... in at most this many bytes (an event ID is about 50).
const STATE_IDS_MAX_BYTES: usize = 4 * 1024 * 1024;
/// State and auth events we lack fetched one by one with `/event`; more are fetched at once
/// with `/state` (its answer bounded by the client's default limit).
const MAX_EVENT_FETCHES: usize = 100;
/// `/event` requests in flight at once.
const EVENT_FETCH_CONCURRENCY: usize = 8;
/// One `/event` answer: a PDU of at most 64 KiB, and its envelope.
const EVENT_ANSWER_MAX_BYTES: usize = 96 * 1024;
/// The whole transaction, fetches included, must finish well within the origin's own timeout.
const TRANSACTION_DEADLINE: Duration = Duration::from_secs(50);

/// Handles one inbound transaction and answers per PDU.
pub async fn handle_transaction(
    services: &Services,
    origin: &ServerName,
    request: send_transaction::Request,
) -> Result<send_transaction::Response> {
    if request.pdus.len() > MAX_PDUS_PER_TRANSACTION
        || request.edus.len() > MAX_EDUS_PER_TRANSACTION
    {
        return Err(Error::bad_json(format!(
            "A transaction holds at most {MAX_PDUS_PER_TRANSACTION} PDUs and \
             {MAX_EDUS_PER_TRANSACTION} EDUs"
        )));
    }
    if request.origin != origin {
        return Err(Error::forbidden(
            "The transaction's origin is not the signing server",
        ));
    }
    let txn_id = request.transaction_id.to_string();
    if let Some(answer) = services.federation_inbound.answer(origin, &txn_id).await? {
        return Ok(answer);
    }
    let mut results = BTreeMap::new();
    // One deadline for the whole transaction, not one per PDU: a PDU's gap can take many
    // requests, and the origin must get its answer before its own timeout (Synapse's: 60 s), or it
    // sends the same transaction again while this one still runs. What is left at the deadline
    // is answered "timed out"; later events name it as a parent and fetch it then.
    let deadline = tokio::time::Instant::now() + TRANSACTION_DEADLINE;
    for raw in &request.pdus {
        let (event_id, outcome) =
            match tokio::time::timeout_at(deadline, handle_pdu(services, origin, raw)).await {
                Ok(answer) => answer,
                Err(_) => (None, Err("timed out".to_owned())),
            };
        if let Err(reason) = &outcome {
            tracing::info!(%origin, event_id = ?event_id, reason, "PDU not accepted");
        }
        if let Some(event_id) = event_id {
            results.insert(event_id, outcome);
        }
    }
    for edu in &request.edus {
        handle_edu(services, origin, edu).await;
    }
    let response = send_transaction::Response::new(results);
    services
        .federation_inbound
        .remember(origin, &txn_id, &response)
        .await?;
    Ok(response)
}

/// One PDU of a transaction, through the list of the module's doc comment.
async fn handle_pdu(
    services: &Services,
    origin: &ServerName,
    raw: &RawJsonValue,
) -> (Option<OwnedEventId>, Result<(), String>) {
    // 0. Which room, and may the origin talk about it?
    let (room_id, version) = match room_of_pdu(services, origin, raw).await {
        Ok(room) => room,
        Err(reason) => return (None, Err(reason)),
    };
    // 1: an event without a valid ID has no entry in the answer.
    let parsed =
        pdu::rules(&version).and_then(|rules| Ok((pdu::parse(raw, &room_id, &rules)?, rules)));
    let (incoming, rules) = match parsed {
        Ok(parsed) => parsed,
        Err(dropped) => return (None, Err(dropped.to_string())),
    };
    let event_id = incoming.event_id.clone();
    // 2-3.
    let incoming = match pdu::check_signatures(services, incoming, &rules).await {
        Ok(incoming) => incoming,
        Err(dropped) => return (Some(event_id), Err(dropped.to_string())),
    };
    let outcome = accept_live(services, origin, incoming, &version).await;
    (Some(event_id), outcome)
}

/// Step 0: the room a PDU is for, which we must be in, and whose ACL must allow the origin.
async fn room_of_pdu(
    services: &Services,
    origin: &ServerName,
    raw: &RawJsonValue,
) -> Result<(OwnedRoomId, RoomVersionId), String> {
    #[derive(serde::Deserialize)]
    struct RoomOnly {
        room_id: OwnedRoomId,
    }
    let room_id = serde_json::from_str::<RoomOnly>(raw.get())
        .map_err(|e| format!("no room ID: {e}"))?
        .room_id;
    match services.federation_serve.room_for(&room_id, origin).await {
        Ok(Some((version, true))) => Ok((room_id, version)),
        Ok(Some((_, false))) => Err(format!("{origin} is denied by the room's server ACL")),
        Ok(None) => Err(format!("this server is not in room {room_id}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Fetches what a verified PDU refers to, then steps 4-6 under the room's lock. When some of its
/// `prev_events` are missing, the gap is fetched first (`fetch_gap`) and its events are accepted
/// oldest first; an event whose parents are still unknown after that gets the state before it
/// from the origin (`state_from_origin`) instead.
async fn accept_live(
    services: &Services,
    origin: &ServerName,
    incoming: IncomingPdu,
    version: &RoomVersionId,
) -> Result<(), String> {
    let lacking = Lacking::of(services, &incoming).await?;
    // An event held already (sent again, or placed with the state from its origin, its parents
    // still unknown) fetches nothing: `accept_known` answers it at once.
    if lacking.prev.is_empty() || !lacking.event {
        return accept_known(services, origin, incoming, version, &mut 0, lacking).await;
    }
    let gap = fetch_gap(services, origin, &incoming, version).await;
    let mut state_fetches = MAX_STATE_FETCHES;
    for event in gap {
        // Each missing event is a PDU of its own; one that cannot be placed is logged, the
        // events after it may still be placed (with the state from the origin).
        let id = event.event_id.clone();
        if let Err(reason) = accept_one(services, origin, event, version, &mut state_fetches).await
        {
            tracing::info!(%origin, event_id = %id, reason, "missing event not accepted");
        }
    }
    accept_one(services, origin, incoming, version, &mut state_fetches).await
}

/// What this server lacks of an event and of the events it refers to, in one read (the common
/// case, a new event whose references are all held, costs no more).
struct Lacking {
    /// The event itself is not held (accepted, outlier or rejected).
    event: bool,
    auth: Vec<OwnedEventId>,
    prev: Vec<OwnedEventId>,
}

impl Lacking {
    async fn of(services: &Services, incoming: &IncomingPdu) -> Result<Self, String> {
        let auth = ids_in(incoming, "auth_events");
        let prev = ids_in(incoming, "prev_events");
        let mut ids = Vec::with_capacity(1 + auth.len() + prev.len());
        ids.push(incoming.event_id.clone());
        ids.extend(auth.iter().cloned());
        ids.extend(prev.iter().cloned());
        let missing: HashSet<OwnedEventId> = services
            .rooms
            .missing_events(&ids)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect();
        Ok(Self {
            event: missing.contains(&incoming.event_id),
            auth: auth.into_iter().filter(|id| missing.contains(id)).collect(),
            prev: prev.into_iter().filter(|id| missing.contains(id)).collect(),
        })
    }
}

/// One event: its missing auth events fetched, then accepted under the room's lock; when its
/// `prev_events` are not all held, with the state before it from the origin, at most
/// `state_fetches` times (counted down).
async fn accept_one(
    services: &Services,
    origin: &ServerName,
    incoming: IncomingPdu,
    version: &RoomVersionId,
    state_fetches: &mut usize,
) -> Result<(), String> {
    let lacking = Lacking::of(services, &incoming).await?;
    accept_known(services, origin, incoming, version, state_fetches, lacking).await
}

/// [`accept_one`] once what the event lacks is known.
async fn accept_known(
    services: &Services,
    origin: &ServerName,
    incoming: IncomingPdu,
    version: &RoomVersionId,
    state_fetches: &mut usize,
    lacking: Lacking,
) -> Result<(), String> {
    let rooms = &services.rooms;
    let event_id = incoming.event_id.clone();
    let room_id = incoming.room_id.clone();
    if !lacking.event {
        return Ok(()); // already held (accepted, outlier or rejected): nothing to do again
    }
    let mut missing_prev = lacking.prev;
    if !lacking.auth.is_empty() {
        fetch_auth_chain(services, origin, &room_id, &event_id, version).await?;
        // An auth event can be a parent too: it is held now (as an outlier).
        missing_prev = rooms
            .missing_events(&missing_prev)
            .await
            .map_err(|e| e.to_string())?;
    }
    let state = if missing_prev.is_empty() {
        None
    } else if *state_fetches > 0 {
        *state_fetches -= 1;
        let state = state_from_origin(services, origin, &room_id, &event_id, version).await?;
        tracing::info!(
            %origin, %event_id, unknown_parents = ?missing_prev,
            "state before the event taken from its origin"
        );
        Some(state)
    } else {
        return Err(format!("missing prev events {missing_prev:?}"));
    };
    // A join of another server's user: that server learns our users' presence once accepted.
    let joined_server = joining_server(&incoming);
    let member = member_of(&incoming);
    let lock = rooms.lock_room(&room_id).await;
    let outcome = match state {
        None => rooms.accept(incoming, Arrival::Live).await,
        // The missing parents become backward extremities (the room layer records them).
        Some(state) => {
            rooms
                .accept_with_state(incoming, Arrival::Live, state)
                .await
        }
    };
    drop(lock);
    match outcome {
        Ok(PduOutcome::Accepted { .. }) => {
            // A profile change travels as a member event: the cached profile is stale.
            if let Some(user) = member.filter(|user| user.server_name() != services.server_name) {
                services.users.forget_remote_profile(&user);
            }
            if let Some(server) = joined_server {
                super::joins::share_presence(services, &room_id, Joined::Server(&server)).await;
            }
            Ok(())
        }
        Ok(PduOutcome::AlreadyKnown) => Ok(()),
        // A soft-failed event is accepted as far as the sender is concerned (the spec: it is not
        // an error), but no client sees it.
        Ok(PduOutcome::SoftFailed) => Ok(()),
        Ok(PduOutcome::Rejected(reason)) => Err(format!("rejected: {reason}")),
        Err(e) => Err(e.to_string()),
    }
}

/// The server of the user a member event joins (`membership: join`), if it is one.
fn joining_server(incoming: &IncomingPdu) -> Option<ruma::OwnedServerName> {
    use ruma::CanonicalJsonValue::{Object, String};
    let field = |name: &str| match incoming.object.get(name) {
        Some(String(value)) => Some(value.as_str()),
        _ => None,
    };
    let membership = match incoming.object.get("content") {
        Some(Object(content)) => content.get("membership"),
        _ => None,
    };
    if field("type") != Some("m.room.member")
        || membership != Some(&String(MembershipState::Join.as_str().into()))
    {
        return None;
    }
    let user = ruma::UserId::parse(field("state_key")?).ok()?;
    Some(user.server_name().to_owned())
}

/// The user a member event is about (its `state_key`), if it is one.
pub(super) fn member_of(incoming: &IncomingPdu) -> Option<ruma::OwnedUserId> {
    use ruma::CanonicalJsonValue::String;
    if incoming.object.get("type") != Some(&String("m.room.member".into())) {
        return None;
    }
    match incoming.object.get("state_key") {
        Some(String(key)) => ruma::UserId::parse(key.as_str()).ok(),
        _ => None,
    }
}

/// The event IDs of `auth_events` or `prev_events` of a verified PDU.
pub(super) fn ids_in(incoming: &IncomingPdu, field: &str) -> Vec<OwnedEventId> {
    crate::services::rooms::pdu::referenced_ids(&incoming.object, field)
}

/// Fetches the auth chain of `event_id` from `origin` and stores the events we lack as outliers
/// (each checked against its own auth events: step 4 for outliers).
pub(super) async fn fetch_auth_chain(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    version: &RoomVersionId,
) -> Result<(), String> {
    let response = services
        .federation
        .send(
            origin,
            get_event_authorization::v1::Request::new(room_id.to_owned(), event_id.clone()),
        )
        .await
        .map_err(|e| format!("cannot fetch the auth chain from {origin}: {e}"))?;
    let mut outliers = Vec::new();
    for checked in pdu::verify_all(services, response.auth_chain, room_id, version).await {
        match checked {
            Ok(incoming) => outliers.push(incoming),
            Err(dropped) => {
                tracing::info!(%origin, %room_id, "auth chain event dropped: {dropped}")
            }
        }
    }
    services
        .rooms
        .store_outliers(version, outliers)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The events between what we hold and a PDU, oldest first, from `/get_missing_events`: one
/// request, then more from the oldest events found whose parents are still unknown, until the
/// gap is closed or a bound is hit (`MAX_GAP_ROUNDS` requests, `MAX_GAP_EVENTS` events, answers
/// of at most `GAP_ANSWER_MAX_BYTES`). A round that brings nothing new ends it, so a server
/// answering the same events again and again cannot keep us busy. Errors end it too: what was
/// found is still placed, the rest goes through the state path.
async fn fetch_gap(
    services: &Services,
    origin: &ServerName,
    incoming: &IncomingPdu,
    version: &RoomVersionId,
) -> Vec<IncomingPdu> {
    let room_id = &incoming.room_id;
    let Ok((earliest, min_depth)) = services
        .rooms
        .forward_extremities_with_min_depth(room_id)
        .await
    else {
        return Vec::new();
    };
    let mut found: HashMap<OwnedEventId, IncomingPdu> = HashMap::new();
    let mut latest = vec![incoming.event_id.clone()];
    for _ in 0..MAX_GAP_ROUNDS {
        let limit = MAX_MISSING_EVENTS.min(MAX_GAP_EVENTS - found.len());
        if limit == 0 || latest.is_empty() {
            break;
        }
        let mut request =
            get_missing_events::v1::Request::new(room_id.clone(), earliest.clone(), latest);
        request.limit = UInt::try_from(limit).unwrap_or_default();
        request.min_depth = UInt::try_from(min_depth).unwrap_or_default();
        let response = match services
            .federation
            .send_with_limit(origin, request, GAP_ANSWER_MAX_BYTES)
            .await
        {
            Ok(response) => response,
            Err(e) => {
                tracing::info!(%origin, %room_id, "cannot fetch missing events: {e}");
                break;
            }
        };
        let mut new = 0;
        for raw in response.events.iter().take(limit) {
            match pdu::verify(services, raw, room_id, version).await {
                Ok(event) if event.event_id != incoming.event_id => {
                    if found.insert(event.event_id.clone(), event).is_none() {
                        new += 1;
                    }
                }
                Ok(_) | Err(DroppedPdu::WrongRoom { .. }) => {}
                Err(dropped) => {
                    tracing::info!(%origin, %room_id, "missing event dropped: {dropped}")
                }
            }
        }
        if new == 0 {
            break;
        }
        // The next round asks for the parents of the oldest events whose parents are unknown.
        let mut open = Vec::new();
        for event in found.values() {
            let unknown: Vec<OwnedEventId> = ids_in(event, "prev_events")
                .into_iter()
                .filter(|id| !found.contains_key(id))
                .collect();
            if !unknown.is_empty()
                && !services
                    .rooms
                    .missing_events(&unknown)
                    .await
                    .unwrap_or_default()
                    .is_empty()
            {
                open.push(event);
            }
        }
        open.sort_by_key(|event| depth_of(event));
        latest = open
            .into_iter()
            .take(MAX_LATEST_EVENTS)
            .map(|event| event.event_id.clone())
            .collect();
    }
    tracing::info!(%origin, %room_id, event_id = %incoming.event_id, fetched = found.len(),
        "missing events fetched");
    let mut events: Vec<IncomingPdu> = found.into_values().collect();
    events.sort_by_key(depth_of);
    events
}

/// The state before `event` as its origin sees it, for an event whose parents cannot be
/// fetched: the IDs from `/state_ids` (at most `MAX_STATE_IDS`), the state and auth events we
/// lack fetched (`/event`, `EVENT_FETCH_CONCURRENCY` at once; `/state` when more than
/// `MAX_EVENT_FETCHES` are missing), each through steps 1-3 and stored as an outlier after the
/// checks against its own auth events. What fails those checks is left out of the state.
pub(super) async fn state_from_origin(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    version: &RoomVersionId,
) -> Result<StateIds, String> {
    let answer = services
        .federation
        .send_with_limit(
            origin,
            get_room_state_ids::v1::Request::new(event_id.clone(), room_id.to_owned()),
            STATE_IDS_MAX_BYTES,
        )
        .await
        .map_err(|e| format!("cannot fetch the state from {origin}: {e}"))?;
    if answer.pdu_ids.len() + answer.auth_chain_ids.len() > MAX_STATE_IDS {
        return Err(format!(
            "{origin}'s state holds more than {MAX_STATE_IDS} events"
        ));
    }
    let mut wanted: Vec<OwnedEventId> = answer.pdu_ids.clone();
    wanted.extend(answer.auth_chain_ids);
    wanted.sort();
    wanted.dedup();
    let missing = services
        .rooms
        .missing_events(&wanted)
        .await
        .map_err(|e| e.to_string())?;
    if !missing.is_empty() {
        let raws = if missing.len() > MAX_EVENT_FETCHES {
            let answer = services
                .federation
                .send(
                    origin,
                    get_room_state::v1::Request::new(event_id.clone(), room_id.to_owned()),
                )
                .await
                .map_err(|e| format!("cannot fetch the state from {origin}: {e}"))?;
            answer.pdus.into_iter().chain(answer.auth_chain).collect()
        } else {
            fetch_events(services, origin, &missing).await
        };
        let missing: HashSet<&OwnedEventId> = missing.iter().collect();
        let mut outliers = Vec::new();
        for checked in pdu::verify_all(services, raws, room_id, version).await {
            match checked {
                // Only what was asked for: `/state` holds more, a server may answer another.
                Ok(pdu) if missing.contains(&pdu.event_id) => outliers.push(pdu),
                Ok(_) => {}
                Err(dropped) => {
                    tracing::info!(%origin, %room_id, "state event dropped: {dropped}")
                }
            }
        }
        services
            .rooms
            .store_outliers(version, outliers)
            .await
            .map_err(|e| format!("the state from {origin} is incomplete: {e}"))?;
    }
    let (state, left_out) = services
        .rooms
        .state_from_event_ids(room_id, answer.pdu_ids)
        .await
        .map_err(|e| e.to_string())?;
    if !left_out.is_empty() {
        tracing::info!(%origin, %room_id, ?left_out, "state events left out of the state");
    }
    Ok(state)
}

/// `/event/{eventId}` for each of `ids`, `EVENT_FETCH_CONCURRENCY` at once; the answers that
/// came (each at most `EVENT_ANSWER_MAX_BYTES`).
pub(super) async fn fetch_events(
    services: &Services,
    origin: &ServerName,
    ids: &[OwnedEventId],
) -> Vec<Box<RawJsonValue>> {
    futures_util::stream::iter(ids.iter().cloned())
        .map(|id| async move {
            services
                .federation
                .send_with_limit(
                    origin,
                    get_event::v1::Request::new(id.clone()),
                    EVENT_ANSWER_MAX_BYTES,
                )
                .await
                .map_err(|e| tracing::info!(%origin, event_id = %id, "cannot fetch event: {e}"))
                .ok()
                .map(|answer| answer.pdu)
        })
        .buffer_unordered(EVENT_FETCH_CONCURRENCY)
        .filter_map(std::future::ready)
        .collect()
        .await
}

pub(super) fn depth_of(event: &IncomingPdu) -> i64 {
    match event.object.get("depth") {
        Some(ruma::CanonicalJsonValue::Integer(depth)) => (*depth).into(),
        _ => 0,
    }
}

/// EDUs: typing, read receipts, presence, to-device messages, device lists and cross-signing
/// keys of the origin's own users, in rooms the origin shares with us; anything else (or about
/// other servers' users) is ignored, as the spec allows.
async fn handle_edu(services: &Services, origin: &ServerName, edu: &Raw<Edu>) {
    let Ok(edu) = edu.deserialize() else {
        return; // unknown or malformed EDUs are ignored
    };
    match edu {
        Edu::Typing(typing) => {
            if typing.user_id.server_name() != origin {
                return;
            }
            if !matches!(
                services
                    .rooms
                    .membership(&typing.room_id, &typing.user_id)
                    .await,
                Ok(Some(MembershipState::Join))
            ) {
                return;
            }
            // Synapse's timeout for a remote user's typing: it ends unless renewed.
            let timeout = typing.typing.then_some(Duration::from_secs(30));
            services
                .typing
                .set(&typing.room_id, &typing.user_id, timeout);
            services.rooms.wake();
        }
        Edu::Receipt(receipts) => {
            for (room_id, map) in receipts.receipts {
                for (user_id, data) in map.read {
                    if user_id.server_name() != origin {
                        continue;
                    }
                    let Some(event_id) = data.event_ids.last() else {
                        continue;
                    };
                    if !matches!(
                        services.rooms.membership(&room_id, &user_id).await,
                        Ok(Some(MembershipState::Join))
                    ) {
                        continue;
                    }
                    let thread = match &data.data.thread {
                        ruma::events::receipt::ReceiptThread::Main => "main".to_owned(),
                        ruma::events::receipt::ReceiptThread::Thread(id) => id.to_string(),
                        _ => String::new(),
                    };
                    if let Err(e) = services
                        .account_data
                        .put_receipt(
                            &services.rooms,
                            &room_id,
                            &user_id,
                            "m.read",
                            &thread,
                            event_id.as_str(),
                        )
                        .await
                    {
                        tracing::info!(%origin, %room_id, "receipt not stored: {e}");
                    }
                }
            }
        }
        // Bounded and checked (the origin's own users, sharing a room with ours) by the
        // presence service, which ignores it all when presence is disabled.
        Edu::Presence(presence) => {
            services
                .presence
                .receive(&services.rooms, origin, presence.push)
                .await;
        }
        // End-to-end encryption (`services/e2ee/`): each checks the origin's own users.
        Edu::DirectToDevice(content) => {
            crate::services::e2ee::to_device::receive(services, origin, content).await;
        }
        Edu::DeviceListUpdate(update) => {
            crate::services::e2ee::remote_lists::receive_device_list_update(
                services, origin, update,
            )
            .await;
        }
        Edu::SigningKeyUpdate(update) => {
            crate::services::e2ee::remote_lists::receive_signing_key_update(
                services, origin, update,
            )
            .await;
        }
        _ => {}
    }
}

/// Inbound transactions already answered, per origin (`federation_inbound_transactions`).
pub struct InboundTransactions {
    db: crate::storage::Database,
}

/// How long an answered transaction is remembered: far longer than any server retries one.
const REMEMBER_ANSWERS_MS: i64 = 24 * 3600 * 1000;

impl InboundTransactions {
    pub fn new(db: crate::storage::Database) -> Self {
        Self { db }
    }

    /// The answer given before to `origin`'s transaction `txn_id`.
    pub async fn answer(
        &self,
        origin: &ServerName,
        txn_id: &str,
    ) -> Result<Option<send_transaction::Response>> {
        let (origin, txn_id) = (origin.to_string(), txn_id.to_owned());
        let stored = self
            .db
            .read(move |c| {
                crate::storage::federation_inbound::answer(c, &origin, &txn_id).map_err(Error::from)
            })
            .await?;
        let Some(stored) = stored.and_then(|json| {
            serde_json::from_str::<BTreeMap<OwnedEventId, Option<String>>>(&json).ok()
        }) else {
            return Ok(None);
        };
        let pdus = stored
            .into_iter()
            .map(|(id, error)| (id, error.map_or(Ok(()), Err)))
            .collect();
        Ok(Some(send_transaction::Response::new(pdus)))
    }

    pub async fn remember(
        &self,
        origin: &ServerName,
        txn_id: &str,
        response: &send_transaction::Response,
    ) -> Result<()> {
        // `{event ID: error or null}`: the per-PDU results as they were answered.
        let results: BTreeMap<&OwnedEventId, Option<&String>> = response
            .pdus
            .iter()
            .map(|(id, result)| (id, result.as_ref().err()))
            .collect();
        let json = serde_json::to_string(&results).map_err(Error::internal)?;
        let (origin, txn_id) = (origin.to_string(), txn_id.to_owned());
        let now = crate::storage::now_ms();
        self.db
            .write(move |tx| {
                crate::storage::federation_inbound::remember(
                    tx,
                    &origin,
                    &txn_id,
                    &json,
                    now,
                    now - REMEMBER_ANSWERS_MS,
                )
                .map_err(Error::from)
            })
            .await
    }
}
