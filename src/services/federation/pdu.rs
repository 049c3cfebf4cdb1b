//! A PDU received from another server, before it touches the room layer: steps 1 to 3 of the
//! spec's checks on receipt (format, signatures, content hash), shared by every path a remote
//! event arrives by (`/send`, `send_join` answers and requests, backfill, fetched missing events).

use ruma::{
    CanonicalJsonObject, OwnedEventId, OwnedRoomId, RoomVersionId,
    room_version_rules::RoomVersionRules, signatures::Verified, state_res,
};
use serde_json::value::RawValue as RawJsonValue;

use crate::services::{
    Services,
    rooms::{IncomingPdu, MAX_PDU_BYTES},
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

/// The rules of a room version this server handles, or why not.
pub fn rules(version: &RoomVersionId) -> Result<RoomVersionRules, DroppedPdu> {
    version
        .rules()
        .ok_or_else(|| DroppedPdu::Invalid(format!("unsupported room version {version}")))
}

/// Step 1: a valid event for the room version (the spec's format and size limits), in room
/// `room_id`; its event ID derived from its reference hash.
pub fn parse(
    raw: &RawJsonValue,
    room_id: &ruma::RoomId,
    rules: &RoomVersionRules,
) -> Result<(OwnedEventId, CanonicalJsonObject), DroppedPdu> {
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
    state_res::check_pdu_format(&object, &rules.event_format).map_err(DroppedPdu::Invalid)?;
    let event_id = event_id(&object, rules)?;
    let found = match object.get("room_id") {
        Some(ruma::CanonicalJsonValue::String(id)) => id.clone(),
        // Since v12 the create event has no room ID: it is derived from the event's ID.
        _ => format!("!{}", &event_id.as_str()[1..]),
    };
    if found != room_id.as_str() {
        return Err(DroppedPdu::WrongRoom {
            expected: room_id.to_owned(),
            found,
        });
    }
    Ok((event_id, object))
}

/// The event ID of a PDU of room version 3 or later: `$` + its reference hash.
pub fn event_id(
    object: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<OwnedEventId, DroppedPdu> {
    let hash = ruma::signatures::reference_hash(object, rules)
        .map_err(|e| DroppedPdu::Invalid(format!("cannot hash: {e}")))?;
    OwnedEventId::try_from(format!("${hash}")).map_err(|e| DroppedPdu::Invalid(e.to_string()))
}

/// Steps 1 to 3 for one PDU: parsed, signatures verified (keys fetched as needed), and redacted
/// when its content hash does not match (the spec: redact, then go on).
pub async fn verify(
    services: &Services,
    raw: &RawJsonValue,
    room_id: &ruma::RoomId,
    version: &RoomVersionId,
) -> Result<IncomingPdu, DroppedPdu> {
    let rules = rules(version)?;
    let (event_id, mut object) = parse(raw, room_id, &rules)?;
    let verified = services
        .server_keys
        .verify_event(&object, &rules)
        .await
        .map_err(|e| DroppedPdu::Signature(e.to_string()))?;
    if verified == Verified::Signatures {
        tracing::info!(%event_id, "content hash mismatch: the event is redacted");
        object = ruma::canonical_json::redact(object, &rules.redaction, None)
            .map_err(|e| DroppedPdu::Invalid(format!("cannot redact: {e}")))?;
    }
    Ok(IncomingPdu {
        event_id,
        room_id: room_id.to_owned(),
        object,
    })
}
