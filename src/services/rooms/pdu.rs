//! A persistent data unit: the signed, hashed event as servers exchange it. Parsed lazily from the
//! stored canonical JSON; implements ruma-state-res's `Event` so that ruma checks the
//! authorization rules and resolves state on exactly what is stored.

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
    events::TimelineEventType, state_res,
};
use serde::Deserialize;
use serde_json::value::RawValue as RawJsonValue;

use crate::error::{Error, Result};

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
    #[serde(default)]
    prev_events: Vec<OwnedEventId>,
    #[serde(default)]
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
