//! A PDU received from another server, before it touches the room layer: steps 1 to 3 of the
//! spec's checks on receipt (format, signatures, content hash), shared by every path a remote
//! event arrives by (`/send`, `send_join` answers and requests, backfill, fetched missing events).

use ruma::{
    CanonicalJsonObject, OwnedRoomId, RoomVersionId, room_version_rules::RoomVersionRules,
    signatures::Verified,
};
use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::value::RawValue as RawJsonValue;

use super::keys::ServerKeys;
use crate::services::{
    Services,
    rooms::{self, IncomingPdu, MAX_PDU_BYTES, pdu::InvalidPdu},
};

/// Why a PDU was dropped before reaching the room layer (answered per PDU in `/send`).
#[derive(Debug, thiserror::Error)]
pub enum DroppedPdu {
    #[error("the event is larger than {MAX_PDU_BYTES} bytes")]
    TooLarge,
    #[error("invalid event: {0}")]
    Invalid(String),
    #[error("the event is for room {found}, not {expected}")]
    WrongRoom {
        expected: OwnedRoomId,
        found: String,
    },
    #[error("bad signature: {0}")]
    Signature(String),
}

impl From<InvalidPdu> for DroppedPdu {
    fn from(e: InvalidPdu) -> Self {
        match e {
            InvalidPdu::TooLarge => DroppedPdu::TooLarge,
            InvalidPdu::Invalid(reason) => DroppedPdu::Invalid(reason),
        }
    }
}

/// The rules of a room version this server handles over federation
/// (`rooms::federation_rules`: not version 1), or why not.
pub fn rules(version: &RoomVersionId) -> Result<RoomVersionRules, DroppedPdu> {
    rooms::federation_rules(version)
        .ok_or_else(|| DroppedPdu::Invalid(format!("unsupported room version {version}")))
}

/// Step 1: a valid event for the room version (the spec's format and size limits), in room
/// `room_id`, with its event ID (`rooms::pdu::event_id`, derived here once for every path).
pub fn parse(
    raw: &RawJsonValue,
    room_id: &ruma::RoomId,
    rules: &RoomVersionRules,
) -> Result<IncomingPdu, DroppedPdu> {
    if raw.get().len() > MAX_PDU_BYTES {
        return Err(DroppedPdu::TooLarge);
    }
    let mut object: CanonicalJsonObject = serde_json::from_str(raw.get())
        .map_err(|e| DroppedPdu::Invalid(format!("not canonical JSON: {e}")))?;
    // Since v12 the create event has no `room_id` (the room ID is its hash); Synapse adds one
    // when it serves the event. It is not part of the event: dropped before anything is hashed.
    let is_create =
        object.get("type") == Some(&ruma::CanonicalJsonValue::String("m.room.create".into()));
    if is_create && rules.authorization.room_create_event_id_as_room_id {
        object.remove("room_id");
    }
    let incoming = IncomingPdu::new(rules, object)?;
    if incoming.room_id != room_id {
        return Err(DroppedPdu::WrongRoom {
            expected: room_id.to_owned(),
            found: incoming.room_id.to_string(),
        });
    }
    Ok(incoming)
}

/// Steps 2 and 3 for a parsed PDU: signatures verified (keys fetched as needed), and the event
/// redacted when its content hash does not match (the spec: redact, then go on). Redaction keeps
/// what the event ID is derived from, so the ID stays.
pub async fn check_signatures(
    services: &Services,
    incoming: IncomingPdu,
    rules: &RoomVersionRules,
) -> Result<IncomingPdu, DroppedPdu> {
    signatures_with(&services.server_keys, incoming, rules).await
}

async fn signatures_with(
    keys: &ServerKeys,
    mut incoming: IncomingPdu,
    rules: &RoomVersionRules,
) -> Result<IncomingPdu, DroppedPdu> {
    let verified = keys
        .verify_event(&incoming.object, rules)
        .await
        .map_err(|e| DroppedPdu::Signature(e.to_string()))?;
    if verified == Verified::Signatures {
        let event_id = &incoming.event_id;
        tracing::info!(%event_id, "content hash mismatch: the event is redacted");
        incoming.object = ruma::canonical_json::redact(incoming.object, &rules.redaction, None)
            .map_err(|e| DroppedPdu::Invalid(format!("cannot redact: {e}")))?;
    }
    Ok(incoming)
}

/// Steps 1 to 3 for one PDU ([`parse`], then [`check_signatures`]).
pub async fn verify(
    services: &Services,
    raw: &RawJsonValue,
    room_id: &ruma::RoomId,
    version: &RoomVersionId,
) -> Result<IncomingPdu, DroppedPdu> {
    verify_with(&services.server_keys, raw, room_id, version).await
}

async fn verify_with(
    keys: &ServerKeys,
    raw: &RawJsonValue,
    room_id: &ruma::RoomId,
    version: &RoomVersionId,
) -> Result<IncomingPdu, DroppedPdu> {
    let rules = rules(version)?;
    let incoming = parse(raw, room_id, &rules)?;
    signatures_with(keys, incoming, &rules).await
}

/// Steps 1 to 3 for the PDUs of one room that arrive together (a `send_join` answer, an auth
/// chain, a room's state, a backfill batch), answered in their order. Each is checked in a task
/// of its own, as many at once as there are cores: the work is canonical JSON, hashes and an
/// ed25519 verification per event, and joining a big room checks thousands of them, which one
/// core did in most of the join's time. Keys are fetched once per server (`ServerKeys`).
pub async fn verify_all(
    services: &Services,
    raws: impl IntoIterator<Item = Box<RawJsonValue>>,
    room_id: &ruma::RoomId,
    version: &RoomVersionId,
) -> Vec<Result<IncomingPdu, DroppedPdu>> {
    verify_all_then(services, raws, room_id, version, std::convert::identity).await
}

/// [`verify_all`], each verified event handed to `then` in its task: a caller that keeps many
/// events in another form (the room layer's [`rooms::PreparedPdu`]) never holds them all as
/// canonical JSON objects.
pub async fn verify_all_then<T: Send + 'static>(
    services: &Services,
    raws: impl IntoIterator<Item = Box<RawJsonValue>>,
    room_id: &ruma::RoomId,
    version: &RoomVersionId,
    then: fn(IncomingPdu) -> T,
) -> Vec<Result<T, DroppedPdu>> {
    let in_flight = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
    futures_util::stream::iter(raws)
        .map(|raw| {
            let keys = Arc::clone(&services.server_keys);
            let (room_id, version) = (room_id.to_owned(), version.clone());
            tokio::spawn(
                async move { verify_with(&keys, &raw, &room_id, &version).await.map(then) },
            )
        })
        .buffered(in_flight)
        .map(|task| task.unwrap_or_else(|e| Err(DroppedPdu::Invalid(format!("not checked: {e}")))))
        .collect()
        .await
}
