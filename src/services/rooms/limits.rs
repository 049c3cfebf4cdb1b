//! What an event may be, checked before it is built and again on the signed PDU: the spec's size
//! limits ("Size limits" of the room events section) and a nesting limit for content.
//!
//! Errors: every size limit answers `413 M_TOO_LARGE`, as Synapse's `EventSizeError` does for
//! the whole PDU and for each of `type`, `state_key`, `sender`, `room_id` and `event_id`
//! (`M_TOO_LARGE`: "the request or entity was too large"). Content nested too deeply answers
//! `400 M_BAD_JSON`: it is not large, it is JSON this server cannot keep.
//!
//! The limits: [`MAX_PDU_BYTES`] (65,536-byte PDU), [`MAX_FIELD_BYTES`] (255 bytes) and
//! [`MAX_CONTENT_DEPTH`] (100 levels: serde_json reads 127, and responses wrap content up to 13
//! levels deeper). What an older version stored beyond them is read field by field (`stored.rs`)
//! and, when it cannot be shown, left out of every response with one warning naming it
//! (`format::client_event`); `/event` of it is 404, and redacting it shows it again.

use ruma::CanonicalJsonObject;
use serde_json::Value;

use crate::{
    error::{Error, Result},
    services::json_depth,
};

/// The largest PDU, as canonical JSON with its signatures.
pub const MAX_PDU_BYTES: usize = 65_536;
/// The longest `type`, `state_key`, `sender`, `room_id` and `event_id`, in bytes.
pub const MAX_FIELD_BYTES: usize = 255;

/// How deeply event content may nest objects and arrays (the content object itself is level 1):
/// the limit of every stored client value ([`json_depth::MAX_DEPTH`]). An event stored with
/// content 127 levels deep could never be read back, and content 126 deep broke the next state
/// event, whose `unsigned.prev_content` holds it one level further down. Clients see content
/// even deeper in responses: a `/search` result's context event's thread summary's latest
/// event's `prev_content` is 13 levels down.
pub const MAX_CONTENT_DEPTH: usize = json_depth::MAX_DEPTH;

/// The limits a client's path values must meet, cheap to check before anything else.
pub fn check_type_and_state_key(event_type: &str, state_key: Option<&str>) -> Result<()> {
    check_field("type", event_type)?;
    if let Some(state_key) = state_key {
        check_field("state_key", state_key)?;
    }
    Ok(())
}

/// Content this server can store, sign and hand back out.
pub fn check_content(content: &Value) -> Result<()> {
    if !content.is_object() {
        return Err(Error::bad_json("Event content must be a JSON object"));
    }
    json_depth::check("Event content", content)
}

/// The spec's limits on the signed PDU: its canonical JSON (`json`) and its identifiers.
pub fn check_pdu(object: &CanonicalJsonObject, json: &str, event_id: &str) -> Result<()> {
    if json.len() > MAX_PDU_BYTES {
        return Err(Error::too_large(format!(
            "The event is larger than {MAX_PDU_BYTES} bytes"
        )));
    }
    for field in ["type", "state_key", "sender", "room_id"] {
        if let Some(ruma::CanonicalJsonValue::String(value)) = object.get(field) {
            check_field(field, value)?;
        }
    }
    check_field("event_id", event_id)
}

fn check_field(field: &str, value: &str) -> Result<()> {
    if value.len() > MAX_FIELD_BYTES {
        return Err(Error::too_large(format!(
            "The event's {field} is {} bytes long; at most {MAX_FIELD_BYTES} are allowed",
            value.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_count_bytes_and_levels() {
        assert!(check_type_and_state_key(&"t".repeat(255), Some(&"k".repeat(255))).is_ok());
        assert!(check_type_and_state_key(&"t".repeat(256), None).is_err());
        // 128 two-byte characters: 256 bytes.
        assert!(check_type_and_state_key("m.x", Some(&"é".repeat(128))).is_err());
        let mut content = json!({"body": "x"});
        for _ in 1..MAX_CONTENT_DEPTH {
            content = json!({ "n": content });
        }
        assert!(check_content(&content).is_ok());
        assert!(check_content(&json!({ "n": content })).is_err());
        assert!(check_content(&json!([])).is_err());
    }

    /// The margin [`MAX_CONTENT_DEPTH`] leaves: the deepest place this server's responses put
    /// content still parses with serde_json, as Rust clients parse them, with 14 levels to spare.
    #[test]
    fn the_deepest_response_with_the_deepest_content_still_parses() {
        let response_with = |depth: usize| {
            let mut content = json!({"body": "x"});
            for _ in 1..depth {
                content = json!({ "n": content });
            }
            let latest = json!({"type": "m.room.topic", "unsigned": {"prev_content": content}});
            let context_event = json!({"unsigned": {"m.relations": {"m.thread": {
                "latest_event": latest,
            }}}});
            let response = json!({"search_categories": {"room_events": {"results": [{
                "context": {"events_before": [context_event]},
            }]}}});
            serde_json::to_string(&response).unwrap()
        };
        assert!(serde_json::from_str::<Value>(&response_with(MAX_CONTENT_DEPTH)).is_ok());
        assert!(serde_json::from_str::<Value>(&response_with(MAX_CONTENT_DEPTH + 14)).is_ok());
        assert!(serde_json::from_str::<Value>(&response_with(MAX_CONTENT_DEPTH + 15)).is_err());
    }
}
