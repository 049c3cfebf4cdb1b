//! Turning stored PDUs into the client-server event format: federation-only fields removed,
//! redactions applied, `unsigned` filled in for the reader.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, RoomVersionId, canonical_json::RedactedBecause,
};
use serde_json::{Map, Value};

use crate::{
    error::{Error, Result},
    storage::{now_ms, rooms::EventRow},
};

/// Fields of a PDU that clients never see.
const FEDERATION_FIELDS: &[&str] = &[
    "auth_events",
    "prev_events",
    "depth",
    "hashes",
    "signatures",
    "origin",
    "prev_state",
    "membership",
];

/// The client view of a stored event. `redaction` is the redaction event's ID and JSON when the
/// event was redacted; `transaction_id` is set when the reader's device sent the event.
pub fn client_event(
    row: &EventRow,
    room_version: &RoomVersionId,
    redaction: Option<(&str, &str)>,
    transaction_id: Option<String>,
    with_room_id: bool,
) -> Result<Value> {
    let unreadable =
        |e: serde_json::Error| Error::internal(format!("stored event unreadable: {e}"));
    // Only a redaction needs ruma's canonical form; every other event is read straight into the
    // map that is sent.
    let mut event: Map<String, Value> = match redaction {
        Some((redaction_id, redaction)) => {
            let mut object: CanonicalJsonObject =
                serde_json::from_str(&row.json).map_err(unreadable)?;
            let rules = room_version
                .rules()
                .ok_or_else(|| Error::internal("unknown room version"))?;
            let mut because: CanonicalJsonObject =
                serde_json::from_str(redaction).map_err(Error::internal)?;
            strip(&mut because);
            // Event IDs are not part of the PDU; clients need the redaction's.
            because.insert(
                "event_id".to_owned(),
                CanonicalJsonValue::String(redaction_id.to_owned()),
            );
            ruma::canonical_json::redact_in_place(
                &mut object,
                &rules.redaction,
                Some(RedactedBecause::from_json(because)),
            )
            .map_err(Error::internal)?;
            serde_json::from_value(serde_json::to_value(object).map_err(Error::internal)?)
                .map_err(Error::internal)?
        }
        None => serde_json::from_str(&row.json).map_err(unreadable)?,
    };
    for field in FEDERATION_FIELDS {
        event.remove(*field);
    }
    event.insert("event_id".to_owned(), Value::String(row.event_id.clone()));
    // Since room version 11 `redacts` is in the content; like Synapse, keep the top-level copy
    // that clients written for older rooms read.
    if event.get("type").and_then(Value::as_str) == Some("m.room.redaction")
        && !event.contains_key("redacts")
        && let Some(redacts) = event["content"].get("redacts").cloned()
    {
        event.insert("redacts".to_owned(), redacts);
    }
    if with_room_id {
        event.insert("room_id".to_owned(), Value::String(row.room_id.clone()));
    } else {
        event.remove("room_id");
    }
    let ts = event
        .get("origin_server_ts")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    let unsigned = event
        .entry("unsigned")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(unsigned) = unsigned {
        unsigned.insert("age".to_owned(), Value::from((now_ms() - ts).max(0)));
        if let Some(txn) = transaction_id {
            unsigned.insert("transaction_id".to_owned(), Value::String(txn));
        }
    }
    Ok(Value::Object(event))
}

fn strip(object: &mut CanonicalJsonObject) {
    for field in FEDERATION_FIELDS {
        object.remove(*field);
    }
}

/// The stripped form of a state event shown to invitees and knockers.
pub fn stripped_state(json: &str) -> Option<Value> {
    let value: Value = serde_json::from_str(json).ok()?;
    Some(serde_json::json!({
        "type": value.get("type")?,
        "state_key": value.get("state_key")?,
        "sender": value.get("sender")?,
        "content": value.get("content")?,
    }))
}
