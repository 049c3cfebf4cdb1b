//! A PDU received from another server, before it touches the room layer: steps 1 to 3 of the
//! spec's checks on receipt (format, signatures, content hash), shared by every path a remote
//! event arrives by (`/send`, `send_join` answers and requests, backfill, fetched missing events).

use ruma::{
    CanonicalJsonObject, OwnedRoomId, RoomVersionId, room_version_rules::RoomVersionRules,
    signatures::Verified,
};
use serde_json::value::RawValue as RawJsonValue;

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
    mut incoming: IncomingPdu,
    rules: &RoomVersionRules,
) -> Result<IncomingPdu, DroppedPdu> {
    let verified = services
        .server_keys
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
    let rules = rules(version)?;
    let incoming = parse(raw, room_id, &rules)?;
    check_signatures(services, incoming, &rules).await
}
