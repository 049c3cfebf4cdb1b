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
//!    `/get_missing_events` (at most `MAX_MISSING_EVENTS`, oldest first, each through this whole
//!    list: `fill_gap`); when the gap is larger, the PDU is refused for now (the origin
//!    retries, and backfill fills older history).
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

use std::{collections::BTreeMap, time::Duration};

use ruma::{
    OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, ServerName, UInt,
    api::federation::{
        authorization::get_event_authorization,
        event::get_missing_events,
        transactions::{edu::Edu, send_transaction_message::v1 as send_transaction},
    },
    serde::Raw,
};
use serde_json::value::RawValue as RawJsonValue;

use super::pdu::{self, DroppedPdu};
use crate::{
    error::{Error, Result},
    services::{
        Services,
        presence::Joined,
        rooms::{Arrival, IncomingPdu, PduOutcome},
    },
};

/// The spec's limits on one transaction.
pub const MAX_PDUS_PER_TRANSACTION: usize = 50;
pub const MAX_EDUS_PER_TRANSACTION: usize = 100;
/// At most this many missing prev events are fetched for one PDU (Synapse asks for 10).
const MAX_MISSING_EVENTS: u32 = 10;
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
    for raw in &request.pdus {
        let (event_id, outcome) =
            match tokio::time::timeout(TRANSACTION_DEADLINE, handle_pdu(services, origin, raw))
                .await
            {
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
    let outcome = accept_live(services, origin, incoming, &version, 0).await;
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
    let version = services
        .rooms
        .room_version(&room_id)
        .await
        .map_err(|_| format!("this server is not in room {room_id}"))?;
    if !services
        .federation_serve
        .acl_allows(&room_id, origin)
        .await
        .map_err(|e| e.to_string())?
    {
        return Err(format!("{origin} is denied by the room's server ACL"));
    }
    Ok((room_id, version))
}

/// Fetches what a verified PDU refers to, then steps 4-6 under the room's lock. `depth` counts
/// nested gap fills, so that a chain of missing events cannot recurse without end.
async fn accept_live(
    services: &Services,
    origin: &ServerName,
    incoming: IncomingPdu,
    version: &RoomVersionId,
    depth: u8,
) -> Result<(), String> {
    let rooms = &services.rooms;
    let event_id = incoming.event_id.clone();
    let room_id = incoming.room_id.clone();
    if rooms
        .missing_events(std::slice::from_ref(&event_id))
        .await
        .map_err(|e| e.to_string())?
        .is_empty()
    {
        return Ok(()); // already held (accepted, outlier or rejected): nothing to do again
    }
    let auth_events = ids_in(&incoming, "auth_events");
    let missing_auth = rooms
        .missing_events(&auth_events)
        .await
        .map_err(|e| e.to_string())?;
    if !missing_auth.is_empty() {
        fetch_auth_chain(services, origin, &room_id, &event_id, version).await?;
    }
    let prev_events = ids_in(&incoming, "prev_events");
    let missing_prev = rooms
        .missing_events(&prev_events)
        .await
        .map_err(|e| e.to_string())?;
    if !missing_prev.is_empty() {
        if depth > 0 {
            return Err(format!("missing prev events {missing_prev:?}"));
        }
        fill_gap(services, origin, &incoming, version).await?;
        let still = rooms
            .missing_events(&prev_events)
            .await
            .map_err(|e| e.to_string())?;
        if !still.is_empty() {
            return Err(format!("could not fetch prev events {still:?}"));
        }
    }
    // A join of another server's user: that server learns our users' presence once accepted.
    let joined_server = joining_server(&incoming);
    let _lock = rooms.lock_room(&room_id).await;
    match rooms.accept(incoming, Arrival::Live).await {
        Ok(PduOutcome::Accepted { .. }) => {
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
    if field("type") != Some("m.room.member") || membership != Some(&String("join".into())) {
        return None;
    }
    let user = ruma::UserId::parse(field("state_key")?).ok()?;
    Some(user.server_name().to_owned())
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
    for raw in &response.auth_chain {
        match pdu::verify(services, raw, room_id, version).await {
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

/// Fetches the events between what we hold and a PDU with `/get_missing_events` and accepts
/// them oldest first, so that the PDU's prev events are held.
async fn fill_gap(
    services: &Services,
    origin: &ServerName,
    incoming: &IncomingPdu,
    version: &RoomVersionId,
) -> Result<(), String> {
    let room_id = &incoming.room_id;
    let (earliest, min_depth) = services
        .rooms
        .forward_extremities_with_min_depth(room_id)
        .await
        .map_err(|e| e.to_string())?;
    let mut request = get_missing_events::v1::Request::new(
        room_id.clone(),
        earliest,
        vec![incoming.event_id.clone()],
    );
    request.limit = UInt::from(MAX_MISSING_EVENTS);
    request.min_depth = UInt::try_from(min_depth).unwrap_or_default();
    let response = services
        .federation
        .send(origin, request)
        .await
        .map_err(|e| format!("cannot fetch missing events from {origin}: {e}"))?;
    let mut events = Vec::new();
    for raw in response.events.iter().take(MAX_MISSING_EVENTS as usize) {
        match pdu::verify(services, raw, room_id, version).await {
            Ok(event) => events.push(event),
            Err(DroppedPdu::WrongRoom { .. }) => {}
            Err(dropped) => tracing::info!(%origin, %room_id, "missing event dropped: {dropped}"),
        }
    }
    events.sort_by_key(depth_of);
    for event in events {
        // Each missing event is a PDU of its own; one that cannot be placed leaves the gap open.
        let id = event.event_id.clone();
        if let Err(reason) = Box::pin(accept_live(services, origin, event, version, 1)).await {
            tracing::info!(%origin, event_id = %id, reason, "missing event not accepted");
        }
    }
    Ok(())
}

pub(super) fn depth_of(event: &IncomingPdu) -> i64 {
    match event.object.get("depth") {
        Some(ruma::CanonicalJsonValue::Integer(depth)) => (*depth).into(),
        _ => 0,
    }
}

/// EDUs: typing, read receipts and presence of the origin's own users, in rooms the origin
/// shares with us; anything else (or about other servers' users) is ignored, as the spec allows.
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
                services.rooms.membership(&typing.room_id, &typing.user_id).await,
                Ok(Some(ref m)) if m == "join"
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
                        Ok(Some(ref m)) if m == "join"
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
