//! Sending and reading events: messages, state, redactions, history, members.

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::{
    OwnedUserId,
    api::{
        Direction as ApiDirection,
        client::{
            membership::{
                get_member_events::v3 as get_member_events, joined_members::v3 as joined_members,
            },
            message::{
                get_message_events::v3 as get_message_events,
                send_message_event::v3 as send_message_event,
            },
            redact::redact_event::v3 as redact_event,
            room::get_room_event::v3 as get_room_event,
            state::{
                get_state_event_for_key::v3::{self as get_state_event_for_key, StateEventFormat},
                get_state_events::v3 as get_state_events,
                send_state_event::v3 as send_state_event,
            },
        },
    },
    events::TimelineEventType,
    events::room::member::MembershipState,
    serde::Raw,
};
use serde_json::{Value, json};

use crate::{
    error::{Error, Result},
    services::{
        federation::backfill,
        filter::room_event_matches,
        rooms::{Direction, EventDraft, MAX_PDU_BYTES, PaginationToken, check_type_and_state_key},
        send,
    },
    web::{
        AppState,
        ruma::{ApiResult, Ruma},
    },
};

/// Most events one `/messages` page returns.
const MAX_PAGE: usize = 1000;

/// An event's content as a client sent it: a JSON object within the PDU size limit.
pub(super) fn content_of<T>(raw: &Raw<T>) -> Result<Value> {
    let json = raw.json().get();
    if json.len() > MAX_PDU_BYTES {
        return Err(Error::too_large(format!(
            "The event is larger than {MAX_PDU_BYTES} bytes"
        )));
    }
    let content: Value =
        serde_json::from_str(json).map_err(|e| Error::bad_json(format!("Invalid content: {e}")))?;
    if !content.is_object() {
        return Err(Error::bad_json("Event content must be a JSON object"));
    }
    Ok(content)
}

fn to_raw<T>(value: Value) -> Result<Raw<T>> {
    Ok(Raw::from_json(
        serde_json::value::to_raw_value(&value).map_err(Error::internal)?,
    ))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`
pub async fn send_message_event(
    State(services): State<AppState>,
    request: Ruma<send_message_event::Request>,
) -> ApiResult<send_message_event::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    check_type_and_state_key(&body.event_type.to_string(), None)?;
    let content = content_of(&body.body)?;
    let kind = TimelineEventType::from(body.event_type.to_string());
    let event_id = send::message(
        &services,
        &body.room_id,
        sender,
        body.txn_id.as_str(),
        kind,
        content,
    )
    .await?;
    Ok(send_message_event::Response::new(event_id).into())
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub async fn send_state_event(
    State(services): State<AppState>,
    request: Ruma<send_state_event::Request>,
) -> ApiResult<send_state_event::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    check_type_and_state_key(&body.event_type.to_string(), Some(&body.state_key))?;
    let content = content_of(&body.body)?;
    let kind = TimelineEventType::from(body.event_type.to_string());
    let event_id = send::state(
        &services,
        &body.room_id,
        &sender.user_id,
        kind,
        body.state_key.clone(),
        content,
    )
    .await?;
    Ok(send_state_event::Response::new(event_id).into())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub async fn get_state_event_for_key(
    State(services): State<AppState>,
    request: Ruma<get_state_event_for_key::Request>,
) -> ApiResult<get_state_event_for_key::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let value = if body.format == StateEventFormat::Event {
        let state = services
            .rooms
            .readable_state(&body.room_id, &sender.user_id, None)
            .await?;
        state
            .into_iter()
            .find(|e| {
                e["type"] == body.event_type.to_string()
                    && e["state_key"] == body.state_key.as_str()
            })
            .map(|mut e| {
                e["room_id"] = json!(body.room_id);
                e
            })
            .ok_or_else(|| Error::not_found("Event not found"))?
    } else {
        services
            .rooms
            .state_content(
                &body.room_id,
                &sender.user_id,
                &body.event_type.to_string(),
                &body.state_key,
            )
            .await?
    };
    let raw = serde_json::value::to_raw_value(&value).map_err(Error::internal)?;
    Ok(get_state_event_for_key::Response::new(raw).into())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state`
pub async fn get_state_events(
    State(services): State<AppState>,
    request: Ruma<get_state_events::Request>,
) -> ApiResult<get_state_events::Response> {
    let room_id = &request.body.room_id;
    let state = services
        .rooms
        .readable_state(room_id, &request.sender()?.user_id, None)
        .await?;
    let events = state
        .into_iter()
        .map(|mut e| {
            e["room_id"] = json!(room_id);
            to_raw(e)
        })
        .collect::<Result<_>>()?;
    Ok(get_state_events::Response::new(events).into())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
pub async fn get_room_event(
    State(services): State<AppState>,
    request: Ruma<get_room_event::Request>,
) -> ApiResult<get_room_event::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let event = services
        .rooms
        .event(
            &body.room_id,
            &sender.user_id,
            Some(sender.device_id.to_string()),
            body.event_id.as_str(),
        )
        .await?;
    Ok(get_room_event::Response::new(to_raw(event)?).into())
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
pub async fn redact_event(
    State(services): State<AppState>,
    request: Ruma<redact_event::Request>,
) -> ApiResult<redact_event::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let version = services.rooms.room_version(&body.room_id).await?;
    let target_sender = services
        .rooms
        .visible_event_sender(&body.room_id, &sender.user_id, body.event_id.as_str())
        .await?;
    if target_sender != sender.user_id.as_str()
        && !services
            .rooms
            .can_redact_others(&body.room_id, &sender.user_id)
            .await?
    {
        return Err(Error::forbidden("You may only redact your own events"));
    }
    let mut content = json!({});
    if let Some(reason) = &body.reason {
        content["reason"] = json!(reason);
    }
    let rules = version
        .rules()
        .ok_or_else(|| Error::internal("unknown room version"))?;
    if rules.redaction.content_field_redacts {
        content["redacts"] = json!(body.event_id);
    }
    let draft = EventDraft {
        kind: TimelineEventType::RoomRedaction,
        state_key: None,
        content,
        redacts: Some(body.event_id.clone()),
    };
    let event_id = services
        .rooms
        .send_with_txn(&body.room_id, sender, body.txn_id.as_str(), draft)
        .await?;
    Ok(redact_event::Response::new(event_id).into())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/messages`
pub async fn get_message_events(
    State(services): State<AppState>,
    request: Ruma<get_message_events::Request>,
) -> ApiResult<get_message_events::Response> {
    let sender = request.sender()?.clone();
    let body = request.body;
    let from = body
        .from
        .as_deref()
        .map(str::parse::<PaginationToken>)
        .transpose()?;
    let to = body
        .to
        .as_deref()
        .map(str::parse::<PaginationToken>)
        .transpose()?;
    let dir = match body.dir {
        ApiDirection::Backward => Direction::Backward,
        ApiDirection::Forward => Direction::Forward,
    };
    let limit = u64::from(body.limit).clamp(1, MAX_PAGE as u64) as usize;
    let filter = body.filter.clone();
    if dir == Direction::Backward {
        backfill::before_backwards_page(&services, &body.room_id, &sender.user_id, from, limit)
            .await;
    }
    let page = services
        .rooms
        .messages(
            &body.room_id,
            &sender.user_id,
            Some(sender.device_id.to_string()),
            from,
            to,
            dir,
            limit,
            move |e| room_event_matches(&filter, e),
        )
        .await?;
    let mut response = get_message_events::Response::new();
    response.start = page.start;
    response.end = page.end;
    response.chunk = page.chunk.into_iter().map(to_raw).collect::<Result<_>>()?;
    if !body.filter.lazy_load_options.is_disabled() {
        let state = services
            .rooms
            .readable_state(&body.room_id, &sender.user_id, None)
            .await?;
        response.state = state
            .into_iter()
            .filter(|e| {
                e["type"] == "m.room.member"
                    && page.senders.iter().any(|s| e["state_key"] == s.as_str())
            })
            .map(|mut e| {
                e["room_id"] = json!(body.room_id);
                to_raw(e)
            })
            .collect::<Result<_>>()?;
    }
    Ok(response.into())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/members`
pub async fn get_member_events(
    State(services): State<AppState>,
    request: Ruma<get_member_events::Request>,
) -> ApiResult<get_member_events::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let at = body
        .at
        .as_deref()
        .map(str::parse::<PaginationToken>)
        .transpose()?;
    let state = services
        .rooms
        .readable_state(&body.room_id, &sender.user_id, at)
        .await?;
    let chunk = state
        .into_iter()
        .filter(|e| e["type"] == "m.room.member")
        .filter(|e| {
            let membership = e["content"]["membership"].as_str().unwrap_or_default();
            body.membership
                .as_ref()
                .is_none_or(|m| m.as_str() == membership)
                && body
                    .not_membership
                    .as_ref()
                    .is_none_or(|m| m.as_str() != membership)
        })
        .map(|mut e| {
            e["room_id"] = json!(body.room_id);
            to_raw(e)
        })
        .collect::<Result<_>>()?;
    Ok(get_member_events::Response::new(chunk).into())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
pub async fn joined_members(
    State(services): State<AppState>,
    request: Ruma<joined_members::Request>,
) -> ApiResult<joined_members::Response> {
    let sender = request.sender()?;
    let room_id = &request.body.room_id;
    services
        .rooms
        .require_joined(room_id, &sender.user_id)
        .await?;
    let state = services
        .rooms
        .readable_state(room_id, &sender.user_id, None)
        .await?;
    let mut joined = BTreeMap::new();
    for event in state.iter().filter(|e| {
        e["type"] == "m.room.member" && e["content"]["membership"] == MembershipState::Join.as_str()
    }) {
        let Some(user) = event["state_key"]
            .as_str()
            .and_then(|s| OwnedUserId::try_from(s).ok())
        else {
            continue;
        };
        let mut member = joined_members::RoomMember::new();
        member.display_name = event["content"]["displayname"].as_str().map(str::to_owned);
        member.avatar_url = event["content"]["avatar_url"].as_str().map(Into::into);
        joined.insert(user, member);
    }
    Ok(joined_members::Response::new(joined).into())
}
