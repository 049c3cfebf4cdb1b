use std::time::Duration;

use axum::{
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
};
use ruma::api::{
    OutgoingResponseExt,
    client::{
        filter::{create_filter::v3 as create_filter, get_filter::v3 as get_filter},
        sync::sync_events::{v3 as sync_events, v5 as sliding},
    },
};
use serde_json::{Map, Value, json};

use crate::{
    error::{Error, Result},
    services::sync::{self, SyncRequest, SyncToken, sliding::SlidingRequest},
    web::{
        AppState,
        ruma::{ApiResult, Ruma, RumaResponse},
    },
};

/// `GET /_matrix/client/v3/sync`
pub async fn sync_events(
    State(services): State<AppState>,
    request: Ruma<sync_events::Request>,
) -> Result<Response> {
    let sender = request.sender()?.clone();
    let body = request.body;
    let filter = sync::resolve_filter(&services, &sender.user_id, body.filter).await?;
    let since = body
        .since
        .as_deref()
        .map(str::parse::<SyncToken>)
        .transpose()?;
    services
        .presence
        .on_sync(&services.rooms, &sender.user_id, &body.set_presence)
        .await?;
    let response = sync::sync(
        &services,
        SyncRequest {
            user: sender.user_id,
            device: sender.device_id.to_string(),
            since,
            full_state: body.full_state,
            timeout: body.timeout.unwrap_or(Duration::ZERO),
            filter,
        },
    )
    .await?;
    with_always_present_fields(response)
}

/// `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync` (MSC4186)
pub async fn sliding_sync(
    State(services): State<AppState>,
    request: Ruma<sliding::Request>,
) -> ApiResult<sliding::Response> {
    let sender = request.sender()?.clone();
    let body = request.body;
    services
        .presence
        .on_sync(&services.rooms, &sender.user_id, &body.set_presence)
        .await?;
    let request = SlidingRequest {
        user: sender.user_id,
        device: sender.device_id.to_string(),
        body,
    };
    Ok(sync::sliding::sync(&services, request).await?.into())
}

/// A section of a /sync body's `rooms` (`join`, `leave`), when there: `get_mut`, not indexing,
/// which would add a missing one as `null`.
fn rooms_section<'a>(body: &'a mut Value, kind: &str) -> Option<&'a mut Map<String, Value>> {
    body.get_mut("rooms")?.get_mut(kind)?.as_object_mut()
}

/// ruma leaves out a left room's `state` when it is empty, but clients such as matrix-nio
/// require `state.events` in every left room (Synapse always sends it); likewise a timeline's
/// `limited` when false.
fn with_always_present_fields(response: sync_events::Response) -> Result<Response> {
    if response.rooms.leave.is_empty() && response.rooms.join.is_empty() {
        return Ok(RumaResponse(response).into_response());
    }
    let (mut parts, body) = response
        .try_into_http_response::<Vec<u8>>()
        .map_err(Error::internal)?
        .into_parts();
    let mut body: Value = serde_json::from_slice(&body).map_err(Error::internal)?;
    if let Some(left) = rooms_section(&mut body, "leave") {
        for room in left.values_mut().filter_map(Value::as_object_mut) {
            room.entry("state").or_insert_with(|| json!({"events": []}));
        }
    }
    // `limited` always said, false included (ruma leaves a false one out), as Synapse does:
    // some clients read a missing one as unknown.
    for kind in ["join", "leave"] {
        let Some(rooms) = rooms_section(&mut body, kind) else {
            continue;
        };
        for room in rooms.values_mut().filter_map(Value::as_object_mut) {
            let timeline = room
                .entry("timeline")
                .or_insert_with(|| json!({"events": []}));
            if let Some(timeline) = timeline.as_object_mut() {
                timeline.entry("limited").or_insert(json!(false));
            }
        }
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let body = serde_json::to_vec(&body).map_err(Error::internal)?;
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// `POST /_matrix/client/v3/user/{userId}/filter`
pub async fn create_filter(
    State(services): State<AppState>,
    request: Ruma<create_filter::Request>,
) -> ApiResult<create_filter::Response> {
    let sender = request.sender()?;
    if request.body.user_id != sender.user_id {
        return Err(Error::forbidden("You can only create filters for yourself"));
    }
    let json = serde_json::to_string(&request.body.filter).map_err(Error::internal)?;
    let id = services
        .account_data
        .create_filter(&sender.user_id, json)
        .await?;
    Ok(create_filter::Response::new(id.to_string()).into())
}

/// `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
pub async fn get_filter(
    State(services): State<AppState>,
    request: Ruma<get_filter::Request>,
) -> ApiResult<get_filter::Response> {
    let sender = request.sender()?;
    if request.body.user_id != sender.user_id {
        return Err(Error::forbidden("You can only read your own filters"));
    }
    let id: i64 = request
        .body
        .filter_id
        .parse()
        .map_err(|_| Error::not_found("No such filter"))?;
    let json = services.account_data.filter(&sender.user_id, id).await?;
    Ok(get_filter::Response::new(serde_json::from_str(&json).map_err(Error::internal)?).into())
}
