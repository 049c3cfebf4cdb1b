//! A client's event as `PUT /rooms/{roomId}/send/…` and `PUT /rooms/{roomId}/state/…` send it:
//! the checks and steps of those endpoints, shared by their handlers and by delayed events
//! (MSC4140, `services/delayed_events.rs`) when their time comes, so a delayed event is sent
//! exactly as the user would have sent it (`rc_message`, authorization, push, federation).

use ruma::{OwnedEventId, RoomId, UserId, events::TimelineEventType};
use serde_json::Value;

use crate::{
    error::{Error, Result},
    services::{Services, federation::member_state, rooms::EventDraft, sessions::Identity},
};

/// What `PUT /send/{eventType}` refuses whatever the room: redactions have their endpoint.
pub fn check_message_type(kind: &TimelineEventType) -> Result<()> {
    if *kind == TimelineEventType::RoomRedaction {
        return Err(Error::invalid_param(
            "Use the /redact endpoint to redact events",
        ));
    }
    Ok(())
}

/// What `PUT /state/{eventType}/…` refuses whatever the room: the create event.
pub fn check_state_type(kind: &TimelineEventType) -> Result<()> {
    if *kind == TimelineEventType::RoomCreate {
        return Err(Error::forbidden("m.room.create is sent by createRoom"));
    }
    Ok(())
}

/// Sends a message event once per (device, `txn_id`) as `sender`, who must be joined.
pub async fn message(
    services: &Services,
    room_id: &RoomId,
    sender: &Identity,
    txn_id: &str,
    kind: TimelineEventType,
    content: Value,
) -> Result<OwnedEventId> {
    check_message_type(&kind)?;
    services
        .rooms
        .require_joined(room_id, &sender.user_id)
        .await?;
    let draft = EventDraft::message(kind, content);
    services
        .rooms
        .send_with_txn(room_id, sender, txn_id, draft)
        .await
}

/// Sends a state event as `sender`: a member event through the membership paths, a canonical
/// alias checked first, guests removed after `m.room.guest_access` stops allowing them.
pub async fn state(
    services: &Services,
    room_id: &RoomId,
    sender: &UserId,
    kind: TimelineEventType,
    state_key: String,
    content: Value,
) -> Result<OwnedEventId> {
    check_state_type(&kind)?;
    if kind == TimelineEventType::RoomMember {
        return member_state::set_member_state(services, room_id, sender, &state_key, content)
            .await;
    }
    if kind == TimelineEventType::RoomCanonicalAlias {
        services
            .rooms
            .check_canonical_alias(room_id, &content)
            .await?;
    }
    let appended = services
        .rooms
        .send_state(
            room_id,
            sender,
            EventDraft::state(kind.clone(), state_key, content),
        )
        .await?;
    if kind == TimelineEventType::RoomGuestAccess {
        crate::services::guests::after_guest_access_change(services, room_id).await;
    }
    Ok(appended.event_id)
}
