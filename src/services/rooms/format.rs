//! Turning stored PDUs into the client-server event format: federation-only fields removed,
//! redactions applied, `unsigned` filled in for the reader.

use std::collections::BTreeMap;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, RoomVersionId, canonical_json::RedactedBecause,
};
use serde_json::{Map, Value, value::RawValue};

use super::stored::{self, MAX_EVENT_DEPTH, nesting_depth, value_depth};
use crate::{
    error::{Error, Result},
    services::json_depth,
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
///
/// `None` (logged with the event ID) when the stored event cannot be shown: JSON nested too deep
/// for clients to parse (or for serde_json to read at all), stored by an older version of this
/// server. Such an event is left out of the response rather than failing it. Once redacted, the
/// deep content is gone and the event is shown again; a too deep `unsigned` (a `prev_content`)
/// is left out and the event shown without it.
pub fn client_event(
    row: &EventRow,
    room_version: &RoomVersionId,
    redaction: Option<(&str, &str)>,
    transaction_id: Option<String>,
    with_room_id: bool,
) -> Result<Option<Value>> {
    let unrenderable = |why: &str| {
        if json_depth::first_time(&row.event_id) {
            tracing::warn!(event_id = %row.event_id, "stored event left out of responses: {why}");
        }
        Ok(None)
    };
    let mut event: Map<String, Value> = match redaction {
        Some((redaction_id, redaction)) => {
            let Some(mut object) = canonical_fields(&row.json) else {
                return unrenderable("not a JSON object");
            };
            let rules = room_version
                .rules()
                .ok_or_else(|| Error::internal("unknown room version"))?;
            let Some(mut because) = canonical_fields(redaction).and_then(|b| b.readable()) else {
                return unrenderable("its redaction is unreadable");
            };
            strip(&mut because);
            // Event IDs are not part of the PDU; clients need the redaction's.
            because.insert(
                "event_id".to_owned(),
                CanonicalJsonValue::String(redaction_id.to_owned()),
            );
            if ruma::canonical_json::redact_in_place(
                &mut object.fields,
                &rules.redaction,
                Some(RedactedBecause::from_json(because)),
            )
            .is_err()
            {
                return unrenderable("it has no type");
            }
            let Some(object) = object.readable() else {
                return unrenderable("nested too deep even once redacted");
            };
            let event = serde_json::to_value(object).map_err(Error::internal)?;
            if value_depth(&event) > MAX_EVENT_DEPTH {
                return unrenderable("nested too deep even once redacted");
            }
            match event {
                Value::Object(event) => event,
                _ => return unrenderable("not a JSON object"),
            }
        }
        None => match readable_fields(&row.json) {
            Ok(event) => event,
            Err(why) => return unrenderable(why),
        },
    };
    for field in FEDERATION_FIELDS {
        event.remove(*field);
    }
    event.insert("event_id".to_owned(), Value::String(row.event_id.clone()));
    // Since room version 11 `redacts` is in the content; like Synapse, keep the top-level copy
    // that clients written for older rooms read.
    if event.get("type").and_then(Value::as_str) == Some("m.room.redaction")
        && !event.contains_key("redacts")
        && let Some(redacts) = event.get("content").and_then(|c| c.get("redacts")).cloned()
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
    Ok(Some(Value::Object(event)))
}

/// [`client_event`] as JSON text, for responses that carry the event as it is (no filter or
/// bundling looks into it): the stored fields are copied as they are instead of parsed into values
/// and written out again, and only `unsigned` is parsed to add the reader's fields. Events that
/// need more (redacted ones, redactions, JSON too deep or with escaped field names) take
/// [`client_event`]'s way; either way the client gets the same event.
pub fn client_event_raw(
    row: &EventRow,
    room_version: &RoomVersionId,
    redaction: Option<(&str, &str)>,
    transaction_id: Option<String>,
    with_room_id: bool,
) -> Result<Option<Box<RawValue>>> {
    if redaction.is_none()
        && nesting_depth(&row.json) <= MAX_EVENT_DEPTH
        && let Ok(fields) = serde_json::from_str::<BTreeMap<&str, &RawValue>>(&row.json)
        && fields
            .get("type")
            .and_then(|t| serde_json::from_str::<&str>(t.get()).ok())
            .is_some_and(|t| t != "m.room.redaction")
    {
        return stored_event_raw(row, fields, transaction_id, with_room_id).map(Some);
    }
    client_event(row, room_version, redaction, transaction_id, with_room_id)?
        .map(|event| serde_json::value::to_raw_value(&event).map_err(Error::internal))
        .transpose()
}

/// A field of [`client_event_raw`]'s output: as stored, or made here.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Field<'a> {
    Stored(&'a RawValue),
    Made(Value),
}

/// The client view of a stored event that is neither redacted nor a redaction, from its
/// top-level fields: what [`client_event`] does to such an event, on the fields' text.
fn stored_event_raw<'a>(
    row: &'a EventRow,
    stored: BTreeMap<&'a str, &'a RawValue>,
    transaction_id: Option<String>,
    with_room_id: bool,
) -> Result<Box<RawValue>> {
    let mut event: BTreeMap<&str, Field<'_>> = stored
        .into_iter()
        .filter(|(key, _)| !FEDERATION_FIELDS.contains(key))
        .map(|(key, raw)| (key, Field::Stored(raw)))
        .collect();
    event.insert("event_id", Field::Made(Value::String(row.event_id.clone())));
    if with_room_id {
        event.insert("room_id", Field::Made(Value::String(row.room_id.clone())));
    } else {
        event.remove("room_id");
    }
    let ts = match event.get("origin_server_ts") {
        Some(Field::Stored(raw)) => serde_json::from_str::<Value>(raw.get())
            .ok()
            .and_then(|ts| ts.as_i64())
            .unwrap_or_default(),
        _ => 0,
    };
    let unsigned = match event.get("unsigned") {
        Some(Field::Stored(raw)) => serde_json::from_str::<Value>(raw.get()).ok(),
        _ => Some(Value::Object(Map::new())),
    };
    // An `unsigned` that is not an object stays as it is, as in `client_event`.
    if let Some(Value::Object(mut unsigned)) = unsigned {
        unsigned.insert("age".to_owned(), Value::from((now_ms() - ts).max(0)));
        if let Some(txn) = transaction_id {
            unsigned.insert("transaction_id".to_owned(), Value::String(txn));
        }
        event.insert("unsigned", Field::Made(Value::Object(unsigned)));
    }
    serde_json::value::to_raw_value(&event).map_err(Error::internal)
}

/// The fields of a stored event that may be shown, or why it cannot be. Nearly every event takes
/// the first branch (one parse); the others are read field by field.
fn readable_fields(json: &str) -> std::result::Result<Map<String, Value>, &'static str> {
    if nesting_depth(json) <= MAX_EVENT_DEPTH
        && let Ok(event) = serde_json::from_str(json)
    {
        return Ok(event);
    }
    let fields = stored::top_level(json).map_err(|_| "not a JSON object")?;
    let mut event = Map::new();
    for (key, raw) in fields {
        match stored::parse_within(raw, MAX_EVENT_DEPTH - 1) {
            Some(value) => {
                event.insert(key, value);
            }
            // What an event replaced is not part of it: show the event without it.
            None if key == "unsigned" => {}
            None => return Err("nested too deep"),
        }
    }
    Ok(event)
}

/// A stored event as ruma's canonical JSON, for redaction: values (top-level or in `content`)
/// too deep to show are placeholders, remembered so that they may be redacted away first.
struct CanonicalFields {
    fields: CanonicalJsonObject,
    unreadable: Vec<(String, Option<String>)>,
}

fn canonical_fields(json: &str) -> Option<CanonicalFields> {
    let parse = |raw: &RawValue, max_depth: usize| {
        stored::parse_within(raw, max_depth).and_then(|v| CanonicalJsonValue::try_from(v).ok())
    };
    let mut fields = CanonicalJsonObject::new();
    let mut unreadable = Vec::new();
    for (key, raw) in stored::top_level(json).ok()? {
        if let Some(value) = parse(raw, MAX_EVENT_DEPTH - 1) {
            fields.insert(key, value);
            continue;
        }
        let content_fields = match key.as_str() {
            "content" => stored::top_level(raw.get()).ok(),
            _ => None,
        };
        let Some(content_fields) = content_fields else {
            if key == "unsigned" {
                continue; // not part of the event; redaction replaces it anyway
            }
            unreadable.push((key.clone(), None));
            fields.insert(key, CanonicalJsonValue::Null);
            continue;
        };
        let mut content = CanonicalJsonObject::new();
        for (content_key, raw) in content_fields {
            let value = parse(raw, MAX_EVENT_DEPTH - 2).unwrap_or_else(|| {
                unreadable.push((key.clone(), Some(content_key.clone())));
                CanonicalJsonValue::Null
            });
            content.insert(content_key, value);
        }
        fields.insert(key, CanonicalJsonValue::Object(content));
    }
    Some(CanonicalFields { fields, unreadable })
}

impl CanonicalFields {
    /// The object, unless a placeholder is still in it.
    fn readable(self) -> Option<CanonicalJsonObject> {
        let still_there = self.unreadable.iter().any(|(key, content_key)| {
            match (self.fields.get(key), content_key) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(CanonicalJsonValue::Object(content)), Some(content_key)) => {
                    content.contains_key(content_key)
                }
                (Some(_), Some(_)) => true,
            }
        });
        (!still_there).then_some(self.fields)
    }
}

fn strip(object: &mut CanonicalJsonObject) {
    for field in FEDERATION_FIELDS {
        object.remove(*field);
    }
}

/// The stripped form of a state event shown to invitees and knockers; `None` if it cannot be
/// shown (see [`client_event`]).
pub fn stripped_state(json: &str) -> Option<Value> {
    let event = stored::Envelope::parse(json)?;
    Some(serde_json::json!({
        "type": event.kind.as_ref()?,
        "state_key": event.state_key.as_ref()?,
        "sender": event.sender.as_ref()?,
        "content": event.content()?,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(json: Value, redacted_by: Option<&str>) -> EventRow {
        EventRow {
            stream_ordering: 1,
            event_id: "$e".to_owned(),
            room_id: "!r:x".to_owned(),
            sender: "@a:x".to_owned(),
            topological_ordering: 1,
            state_group: 1,
            redacted_by: redacted_by.map(str::to_owned),
            json: json.to_string(),
        }
    }

    /// The two renderings, `age` taken out (it is counted at each call).
    fn both(row: &EventRow, redaction: Option<(&str, &str)>, txn: bool, room: bool) -> [Value; 2] {
        let version = RoomVersionId::V11;
        let txn = || txn.then(|| "t1".to_owned());
        let value = client_event(row, &version, redaction, txn(), room).unwrap();
        let raw = client_event_raw(row, &version, redaction, txn(), room).unwrap();
        let raw: Option<Value> = raw.map(|raw| serde_json::from_str(raw.get()).unwrap());
        [value, raw].map(|event| {
            let mut event = event.expect("renderable");
            if let Some(unsigned) = event["unsigned"].as_object_mut() {
                assert!(
                    unsigned.remove("age").is_some_and(|age| age.is_i64()),
                    "{event}"
                );
            }
            event
        })
    }

    /// The JSON text rendering gives the event `client_event` gives: federation fields out,
    /// the event ID and (when asked) the room ID in, `unsigned` kept with the reader's fields
    /// added (or left alone when it is not an object); redactions and redacted events, and
    /// escaped field names, go through `client_event` itself.
    #[test]
    fn raw_rendering_matches_client_event() {
        let pdu = json!({
            "type": "m.room.name", "state_key": "", "sender": "@a:x", "room_id": "!r:x",
            "origin_server_ts": 1_000, "content": {"name": "caf\u{e9} \"x\"", "n": [1, 2.5]},
            "auth_events": ["$a"], "prev_events": ["$p"], "depth": 3, "hashes": {"sha256": "h"},
            "signatures": {"x": {"ed25519:a": "s"}}, "unsigned": {"prev_content": {"name": "o"}},
        });
        for (txn, room) in [(false, false), (true, false), (false, true), (true, true)] {
            let [value, raw] = both(&row(pdu.clone(), None), None, txn, room);
            assert_eq!(value, raw);
            assert_eq!(raw["event_id"], "$e");
            assert_eq!(raw.get("room_id").is_some(), room);
            assert!(raw.get("signatures").is_none() && raw.get("depth").is_none());
            assert_eq!(raw["unsigned"]["prev_content"]["name"], "o");
            assert_eq!(raw["unsigned"].get("transaction_id").is_some(), txn);
        }
        let mut odd = pdu.clone();
        odd["unsigned"] = json!("not an object");
        odd.as_object_mut().unwrap().remove("origin_server_ts");
        let [value, raw] = both(&row(odd, None), None, true, false);
        assert_eq!(value, raw);
        assert_eq!(raw["unsigned"], "not an object");
        let mut bare = pdu.clone();
        bare.as_object_mut().unwrap().remove("unsigned");
        let [value, raw] = both(&row(bare, None), None, false, false);
        assert_eq!(value, raw);

        let redaction = json!({
            "type": "m.room.redaction", "sender": "@a:x", "room_id": "!r:x",
            "origin_server_ts": 2_000, "content": {"redacts": "$e"}, "redacts": "$e",
        });
        let [value, raw] = both(&row(redaction.clone(), None), None, false, false);
        assert_eq!(value, raw);
        let redaction_json = redaction.to_string();
        let redacted = row(pdu.clone(), Some("$red"));
        let [value, raw] = both(&redacted, Some(("$red", &redaction_json)), false, false);
        assert_eq!(value, raw);
        assert!(raw["content"].get("n").is_none(), "{raw}");

        let escaped = pdu.to_string().replacen("\"depth\"", "\"dep\\u0074h\"", 1);
        let mut escaped_row = row(pdu, None);
        escaped_row.json = escaped;
        let [value, raw] = both(&escaped_row, None, false, false);
        assert_eq!(value, raw);
        assert!(raw.get("depth").is_none());
    }
}
