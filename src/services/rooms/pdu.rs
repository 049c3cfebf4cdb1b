//! A persistent data unit: the signed, hashed event as servers exchange it. Parsed lazily from the
//! stored canonical JSON; implements ruma-state-res's `Event` so that ruma checks the
//! authorization rules and resolves state on exactly what is stored.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, OwnedUserId, RoomId, UserId,
    events::TimelineEventType,
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
    state_res,
};
use serde::Deserialize;
use serde_json::value::RawValue as RawJsonValue;

use super::limits::MAX_PDU_BYTES;
use crate::error::{Error, Result};

/// Why a PDU cannot be read as an event of its room version.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPdu {
    #[error("the event is larger than {MAX_PDU_BYTES} bytes")]
    TooLarge,
    #[error("invalid event: {0}")]
    Invalid(String),
}

impl From<InvalidPdu> for Error {
    fn from(e: InvalidPdu) -> Self {
        match e {
            InvalidPdu::TooLarge => {
                Error::too_large(format!("The event is larger than {MAX_PDU_BYTES} bytes"))
            }
            InvalidPdu::Invalid(reason) => Error::bad_json(format!("Invalid event: {reason}")),
        }
    }
}

/// One entry of `prev_events` or `auth_events`: an event ID, or before room version 3 the pair
/// `[event ID, {"sha256": reference hash}]` (ruma's `EventsReferenceFormatVersion::V1`).
#[derive(Deserialize)]
#[serde(untagged)]
enum EventReference<T> {
    Id(T),
    Pair((T, serde::de::IgnoredAny)),
}

/// The event IDs of `prev_events` or `auth_events`, in either room version's format. The hashes
/// of the old format are not checked (as Synapse): the events are fetched and checked by ID.
pub fn event_references<'de, D, T>(deserializer: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let references = Vec::<EventReference<T>>::deserialize(deserializer)?;
    Ok(references
        .into_iter()
        .map(|r| match r {
            EventReference::Id(id) | EventReference::Pair((id, _)) => id,
        })
        .collect())
}

/// The event IDs of a PDU's `prev_events` or `auth_events` (`field`), in either format; entries
/// that are not event IDs are skipped (the format check refused such events already).
pub fn referenced_ids(object: &CanonicalJsonObject, field: &str) -> Vec<OwnedEventId> {
    let Some(CanonicalJsonValue::Array(entries)) = object.get(field) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| match entry {
            CanonicalJsonValue::String(id) => Some(id),
            CanonicalJsonValue::Array(pair) => match pair.first() {
                Some(CanonicalJsonValue::String(id)) => Some(id),
                _ => None,
            },
            _ => None,
        })
        .filter_map(|id| OwnedEventId::try_from(id.as_str()).ok())
        .collect()
}

/// The ID of a PDU under its room version's rules, the one place it is derived (local events,
/// joins, every event from another server): since room version 3 `$` and the event's reference
/// hash (ruma's `reference_hash`, in the version's base64 alphabet); in versions 1 and 2 the
/// `event_id` field its server chose (`$random:server`, covered by its hashes and signatures).
pub fn event_id(
    object: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> std::result::Result<OwnedEventId, InvalidPdu> {
    match rules.event_id_format {
        EventIdFormatVersion::V1 => match object.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => {
                let id = OwnedEventId::try_from(id.as_str())
                    .map_err(|e| InvalidPdu::Invalid(format!("bad event_id: {e}")))?;
                // The old format names the server that made the event; a hash-like ID here
                // would collide with the IDs of later room versions.
                if id.server_name().is_none() {
                    return Err(InvalidPdu::Invalid("event_id names no server".to_owned()));
                }
                Ok(id)
            }
            _ => Err(InvalidPdu::Invalid("no event_id".to_owned())),
        },
        _ => {
            let hash = ruma::signatures::reference_hash(object, rules).map_err(|e| match e {
                ruma::signatures::JsonError::PduTooLarge => InvalidPdu::TooLarge,
                other => InvalidPdu::Invalid(format!("cannot hash: {other}")),
            })?;
            EventId::new_v2_or_v3(&hash).map_err(|e| InvalidPdu::Invalid(e.to_string()))
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    fields: PduFields,
    /// Failed the authorization rules on receipt (kept outside the timeline, see
    /// `storage::pdus`); state resolution never takes such an event as an auth event.
    rejected: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct PduFields {
    /// Absent only from the create event of room version 12 and later.
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawJsonValue>,
    state_key: Option<String>,
    #[serde(default, deserialize_with = "event_references")]
    prev_events: Vec<OwnedEventId>,
    #[serde(default, deserialize_with = "event_references")]
    auth_events: Vec<OwnedEventId>,
    /// Top-level before room version 11, in `content` since.
    redacts: Option<OwnedEventId>,
}

#[derive(Deserialize)]
struct RedactsInContent {
    redacts: Option<OwnedEventId>,
}

impl Pdu {
    pub fn from_json(event_id: OwnedEventId, json: &str) -> Result<Self> {
        let mut fields: PduFields = serde_json::from_str(json)
            .map_err(|e| Error::internal(format!("stored event {event_id} unreadable: {e}")))?;
        if fields.redacts.is_none() && fields.kind == TimelineEventType::RoomRedaction {
            fields.redacts = serde_json::from_str::<RedactsInContent>(fields.content.get())
                .ok()
                .and_then(|c| c.redacts);
        }
        Ok(Self {
            event_id,
            fields,
            rejected: false,
        })
    }

    /// The same event, marked rejected (or not).
    pub fn with_rejected(mut self, rejected: bool) -> Self {
        self.rejected = rejected;
        self
    }

    pub fn sender(&self) -> &UserId {
        &self.fields.sender
    }

    pub fn kind(&self) -> &TimelineEventType {
        &self.fields.kind
    }

    pub fn state_key(&self) -> Option<&str> {
        self.fields.state_key.as_deref()
    }

    pub fn prev_events(&self) -> &[OwnedEventId] {
        &self.fields.prev_events
    }

    pub fn auth_events(&self) -> &[OwnedEventId] {
        &self.fields.auth_events
    }

    pub fn content(&self) -> &RawJsonValue {
        &self.fields.content
    }

    pub fn redacts(&self) -> Option<&OwnedEventId> {
        self.fields.redacts.as_ref()
    }

    pub fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.fields.origin_server_ts
    }
}

impl state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.fields.room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.fields.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.fields.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.fields.kind
    }

    fn content(&self) -> &RawJsonValue {
        &self.fields.content
    }

    fn state_key(&self) -> Option<&str> {
        self.fields.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.fields.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.fields.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.fields.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        self.rejected
    }
}

#[cfg(test)]
mod tests {
    use ruma::{RoomVersionId, room_version_rules::RoomVersionRules};
    use serde_json::json;

    use super::*;

    fn object(value: serde_json::Value) -> CanonicalJsonObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_event_id_is_the_reference_hash_since_v3_and_the_field_before() {
        let event = object(json!({
            "type": "m.room.message", "sender": "@a:x", "room_id": "!r:x",
            "content": {"body": "hi"}, "origin_server_ts": 1, "depth": 2,
            "prev_events": [], "auth_events": [], "event_id": "$abc:x",
        }));
        let rules = RoomVersionRules::V11;
        let hash = ruma::signatures::reference_hash(&event, &rules).unwrap();
        assert_eq!(
            event_id(&event, &rules).unwrap().as_str(),
            format!("${hash}")
        );
        // v2: the ID its server chose, never the hash; without one the event is invalid.
        assert_eq!(event_id(&event, &RoomVersionRules::V2).unwrap(), "$abc:x");
        let mut nameless = event.clone();
        nameless.remove("event_id");
        assert!(event_id(&nameless, &RoomVersionRules::V2).is_err());
        nameless.insert(
            "event_id".into(),
            CanonicalJsonValue::String("$hash".into()),
        );
        assert!(
            event_id(&nameless, &RoomVersionRules::V1).is_err(),
            "no server"
        );
    }

    #[test]
    fn references_of_both_formats_read_as_ids() {
        let old = json!({
            "type": "m.room.message", "sender": "@a:x", "room_id": "!r:x", "content": {},
            "origin_server_ts": 1, "event_id": "$e:x",
            "prev_events": [["$p:x", {"sha256": "aGFzaA"}]],
            "auth_events": [["$c:x", {"sha256": "aGFzaA"}], ["$m:x", {"sha256": "aGFzaA"}]],
        });
        let pdu = Pdu::from_json("$e:x".try_into().unwrap(), &old.to_string()).unwrap();
        assert_eq!(pdu.prev_events(), ["$p:x"]);
        assert_eq!(pdu.auth_events(), ["$c:x", "$m:x"]);
        assert_eq!(
            referenced_ids(&object(old.clone()), "auth_events"),
            ["$c:x", "$m:x"]
        );
        let text = old.to_string();
        let envelope = super::super::stored::Envelope::parse(&text).unwrap();
        assert_eq!(envelope.prev_events, ["$p:x"]);

        let new = json!({
            "type": "m.room.message", "sender": "@a:x", "room_id": "!r:x", "content": {},
            "origin_server_ts": 1, "prev_events": ["$p"], "auth_events": ["$c"],
        });
        let pdu = Pdu::from_json("$e".try_into().unwrap(), &new.to_string()).unwrap();
        assert_eq!(pdu.prev_events(), ["$p"]);
        assert_eq!(referenced_ids(&object(new), "prev_events"), ["$p"]);
    }

    #[test]
    fn federation_takes_versions_2_and_later() {
        assert!(crate::services::rooms::federation_rules(&RoomVersionId::V1).is_none());
        let versions = crate::services::rooms::federation_versions();
        assert_eq!(versions.first(), Some(&RoomVersionId::V2));
        assert_eq!(versions.last(), Some(&RoomVersionId::V12));
    }
}
