//! The deprecated endpoints the spec still defines, for older bots and tools: `GET /events`,
//! `GET /initialSync`, `GET /rooms/{roomId}/initialSync` and `GET /events/{eventId}`. They are
//! other shapes of what /sync, `/messages` and `/event` compute: built on `sync::sync` and the
//! room reads, never with a second copy of their logic.

use std::time::Duration;

use ruma::{
    OwnedRoomId, RoomId, UInt, UserId,
    api::{OutgoingResponseExt, client::filter::FilterDefinition},
    events::room::member::MembershipState,
};
use serde_json::{Value, json};

use super::{
    Services,
    rooms::Direction,
    sync::{self, SyncRequest, SyncToken},
};
use crate::error::{Error, Result};

/// Events of `GET /rooms/{roomId}/initialSync`'s `messages` (Synapse's default page).
const ROOM_MESSAGES: usize = 10;
/// Most messages per room `GET /initialSync` returns, whatever `limit` asks.
const MAX_INITIAL_SYNC_LIMIT: u64 = 100;

/// What `GET /rooms/{roomId}/initialSync` answers: the room as the user may see it.
pub struct RoomSnapshot {
    pub membership: Option<MembershipState>,
    /// The current state (or, for a former member, the state when they left).
    pub state: Vec<Value>,
    /// The latest events, oldest first, with `/messages` tokens around them.
    pub messages: Vec<Value>,
    /// A token for `/messages?dir=b` before `messages`, `None` at the room's beginning.
    pub start: Option<String>,
    pub end: String,
    pub public: bool,
}

/// `GET /rooms/{roomId}/initialSync`: refused (`403`) to who may not read the room.
pub async fn room_snapshot(
    services: &Services,
    user: &UserId,
    device: &str,
    room_id: &RoomId,
) -> Result<RoomSnapshot> {
    let state = services.rooms.readable_state(room_id, user, None).await?;
    let page = services
        .rooms
        .messages(
            room_id,
            user,
            Some(device.to_owned()),
            None,
            None,
            Direction::Backward,
            ROOM_MESSAGES,
            |_| true,
        )
        .await?;
    let mut messages = page.chunk;
    messages.reverse();
    Ok(RoomSnapshot {
        membership: services.rooms.membership(room_id, user).await?,
        state: with_room_id(state, room_id.as_str()),
        messages,
        start: page.end,
        end: page.start,
        public: services.directory.is_published(room_id).await?,
    })
}

/// `GET /initialSync`: every room of the user with its current state and latest `limit`
/// messages, rooms left too with `archived`, and the global account data and presence; the
/// `end` token starts `GET /events`. One full /sync underneath, reshaped.
pub async fn initial_sync(
    services: &Services,
    user: &UserId,
    device: &str,
    limit: Option<UInt>,
    archived: bool,
) -> Result<Value> {
    let mut filter = FilterDefinition::default();
    let limit = limit.map_or(10, u64::from).min(MAX_INITIAL_SYNC_LIMIT);
    filter.room.timeline.limit = Some(UInt::try_from(limit).map_err(Error::internal)?);
    filter.room.include_leave = archived;
    let body = sync_json(services, user, device, None, Duration::ZERO, filter).await?;
    let end = body["next_batch"].clone();
    let mut rooms = Vec::new();
    use MembershipState::{Invite, Join, Leave};
    for (kind, membership) in [("join", Join), ("invite", Invite), ("leave", Leave)] {
        let Some(section) = body["rooms"][kind].as_object() else {
            continue;
        };
        for (room, value) in section {
            let room_id = RoomId::parse(room).map_err(Error::internal)?;
            let mut entry = json!({"room_id": room, "membership": membership});
            if kind == "invite" {
                entry["invite_state"] = value["invite_state"].clone();
                entry["state"] = value["invite_state"]["events"].clone();
                rooms.push(entry);
                continue;
            }
            let state = match kind {
                // The current state, as in the room's own initialSync.
                "join" => services.rooms.readable_state(&room_id, user, None).await?,
                _ => events_of(&value["state"]),
            };
            entry["state"] = Value::Array(with_room_id(state, room));
            entry["messages"] = json!({
                "chunk": with_room_id(events_of(&value["timeline"]), room),
                "start": value["timeline"]["prev_batch"].as_str().unwrap_or(end_token(&end)),
                "end": end,
            });
            entry["account_data"] = Value::Array(events_of(&value["account_data"]));
            if kind == "leave" {
                // A ban is a way of leaving too.
                let membership = services.rooms.membership(&room_id, user).await?;
                entry["membership"] = json!(membership.unwrap_or(MembershipState::Leave));
            }
            let public = services.directory.is_published(&room_id).await?;
            entry["visibility"] = json!(if public { "public" } else { "private" });
            rooms.push(entry);
        }
    }
    Ok(json!({
        "end": end,
        "rooms": rooms,
        "presence": events_of(&body["presence"]),
        "account_data": events_of(&body["account_data"]),
    }))
}

/// `GET /events`: the timeline events (with their `room_id`) and presence after `from` (a /sync
/// or `/initialSync` token; now when absent), waiting up to `timeout` for some; only `room_id`'s
/// when given, which the user must be in (peeking into rooms one is not in is not offered).
/// Like a /sync from `from`, it acknowledges the device's to-device messages up to there.
pub async fn events(
    services: &Services,
    user: &UserId,
    device: &str,
    from: Option<&str>,
    timeout: Duration,
    room_id: Option<OwnedRoomId>,
) -> Result<Value> {
    if let Some(room_id) = &room_id
        && services.rooms.membership(room_id, user).await? != Some(MembershipState::Join)
    {
        return Err(Error::forbidden("You are not in this room"));
    }
    let from = match from {
        Some(token) => token.to_owned(),
        None => {
            let now = FilterDefinition::ignore_all();
            let body = sync_json(services, user, device, None, Duration::ZERO, now).await?;
            end_token(&body["next_batch"]).to_owned()
        }
    };
    let mut filter = FilterDefinition::default();
    if let Some(room_id) = room_id {
        filter.room.rooms = Some(vec![room_id]);
    }
    // A /sync wakes for more than /events shows (receipts, typing, unread counts, key changes):
    // keep waiting from its position until a timeline event or presence comes, or time is up.
    let deadline = tokio::time::Instant::now() + timeout;
    let mut since = from.clone();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let parsed = since.parse::<SyncToken>()?;
        let body = sync_json(services, user, device, Some(parsed), left, filter.clone()).await?;
        let mut chunk = Vec::new();
        for kind in ["join", "leave"] {
            if let Some(section) = body["rooms"][kind].as_object() {
                for (room, value) in section {
                    chunk.extend(with_room_id(events_of(&value["timeline"]), room));
                }
            }
        }
        chunk.extend(events_of(&body["presence"]));
        let end = end_token(&body["next_batch"]).to_owned();
        if !chunk.is_empty() || left.is_zero() {
            return Ok(json!({"chunk": chunk, "start": from, "end": end}));
        }
        if end == since {
            // Woken at the same position: wait for the stream to move rather than ask again.
            let mut positions = services.rooms.subscribe();
            let moved = *positions.borrow_and_update() > parsed.stream
                || tokio::time::timeout_at(deadline, positions.changed())
                    .await
                    .is_ok();
            if !moved {
                return Ok(json!({"chunk": chunk, "start": from, "end": end}));
            }
        }
        since = end;
    }
}

/// `GET /events/{eventId}`: an event of any room, if the user may see it (`404` otherwise).
pub async fn event(
    services: &Services,
    user: &UserId,
    device: &str,
    event_id: &str,
) -> Result<Value> {
    let room_id = services
        .rooms
        .event_room(event_id)
        .await?
        .ok_or_else(|| Error::not_found("Event not found"))?;
    services
        .rooms
        .event(&room_id, user, Some(device.to_owned()), event_id)
        .await
}

/// One /sync, as JSON to reshape.
async fn sync_json(
    services: &Services,
    user: &UserId,
    device: &str,
    since: Option<SyncToken>,
    timeout: Duration,
    filter: FilterDefinition,
) -> Result<Value> {
    let request = SyncRequest {
        user: user.to_owned(),
        device: device.to_owned(),
        since,
        full_state: false,
        timeout,
        filter,
    };
    let response = sync::sync(services, request).await?;
    let body = response
        .try_into_http_response::<Vec<u8>>()
        .map_err(Error::internal)?
        .into_body();
    serde_json::from_slice(&body).map_err(Error::internal)
}

/// The `events` array of a /sync section (`timeline`, `state`, `presence`, …), empty if absent.
fn events_of(section: &Value) -> Vec<Value> {
    section["events"].as_array().cloned().unwrap_or_default()
}

fn end_token(token: &Value) -> &str {
    token.as_str().unwrap_or_default()
}

/// Events as the legacy endpoints show them: with `room_id`, which /sync leaves out.
fn with_room_id(mut events: Vec<Value>, room_id: &str) -> Vec<Value> {
    for event in &mut events {
        if let Some(object) = event.as_object_mut() {
            object.insert("room_id".into(), json!(room_id));
        }
    }
    events
}
