//! The deprecated endpoints still in the spec (`services::legacy`): `GET /events`,
//! `GET /initialSync`, `GET /rooms/{roomId}/initialSync`, `GET /events/{eventId}`. ruma has a
//! type for the room's initialSync only (its `/events` type insists on `room_id`, which the
//! spec makes optional), so the other three read their query here.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::get,
};
use ruma::{
    OwnedRoomId, UInt,
    api::client::{peeking::get_current_state::v3 as room_initial_sync, room::Visibility},
    serde::Raw,
};
use serde::Deserialize;
use serde_json::Value;

use crate::{
    error::{Error, Result},
    services::legacy,
    web::{
        AppState,
        ruma::{ApiResult, Ruma, RumaRoutes, authenticate_guest_too, authenticate_parts},
    },
};

/// How long `GET /events` waits without a `timeout` (Synapse's default).
const DEFAULT_EVENTS_TIMEOUT: Duration = Duration::from_secs(30);

pub fn routes() -> Router<AppState> {
    let mut router = Router::new().ruma::<room_initial_sync::Request, _, _>(room_initial_sync);
    for version in ["r0", "v3"] {
        router = router
            .route(&format!("/_matrix/client/{version}/events"), get(events))
            .route(
                &format!("/_matrix/client/{version}/events/{{event_id}}"),
                get(event),
            )
            .route(
                &format!("/_matrix/client/{version}/initialSync"),
                get(initial_sync),
            );
    }
    router
}

fn to_raw<T>(value: Value) -> Result<Raw<T>> {
    Raw::new(&value)
        .map(Raw::cast_unchecked)
        .map_err(Error::internal)
}

/// `GET /_matrix/client/v3/rooms/{roomId}/initialSync`
async fn room_initial_sync(
    State(services): State<AppState>,
    request: Ruma<room_initial_sync::Request>,
) -> ApiResult<room_initial_sync::Response> {
    let sender = request.sender()?;
    let room_id = &request.body.room_id;
    let snapshot = legacy::room_snapshot(
        &services,
        &sender.user_id,
        sender.device_id.as_str(),
        room_id,
    )
    .await?;
    let mut response = room_initial_sync::Response::new(room_id.clone());
    response.membership = snapshot.membership;
    response.state = snapshot
        .state
        .into_iter()
        .map(to_raw)
        .collect::<Result<_>>()?;
    let chunk = snapshot
        .messages
        .into_iter()
        .map(to_raw)
        .collect::<Result<_>>()?;
    let mut messages = room_initial_sync::PaginationChunk::new(chunk, snapshot.end);
    messages.start = snapshot.start;
    response.messages = Some(messages);
    response.visibility = Some(if snapshot.public {
        Visibility::Public
    } else {
        Visibility::Private
    });
    Ok(response.into())
}

#[derive(Deserialize)]
struct EventsQuery {
    from: Option<String>,
    timeout: Option<u64>,
    room_id: Option<OwnedRoomId>,
}

/// `GET /_matrix/client/v3/events` (guests too, as the spec says)
async fn events(
    State(services): State<AppState>,
    parts: http::request::Parts,
) -> Result<Json<Value>> {
    let sender = authenticate_guest_too(&services, &parts).await?;
    let Query(query) = Query::<EventsQuery>::try_from_uri(&parts.uri)
        .map_err(|e| Error::invalid_param(format!("Invalid query: {e}")))?;
    let timeout = query
        .timeout
        .map_or(DEFAULT_EVENTS_TIMEOUT, Duration::from_millis);
    let body = legacy::events(
        &services,
        &sender.user_id,
        sender.device_id.as_str(),
        query.from.as_deref(),
        timeout,
        query.room_id,
    )
    .await?;
    Ok(Json(body))
}

/// `GET /_matrix/client/v3/events/{eventId}`
async fn event(
    State(services): State<AppState>,
    Path(event_id): Path<String>,
    parts: http::request::Parts,
) -> Result<Json<Value>> {
    let sender = authenticate_parts(&services, &parts).await?;
    let event = legacy::event(
        &services,
        &sender.user_id,
        sender.device_id.as_str(),
        &event_id,
    )
    .await?;
    Ok(Json(event))
}

#[derive(Deserialize)]
struct InitialSyncQuery {
    limit: Option<UInt>,
    #[serde(default)]
    archived: bool,
}

/// `GET /_matrix/client/v3/initialSync`
async fn initial_sync(
    State(services): State<AppState>,
    parts: http::request::Parts,
) -> Result<Json<Value>> {
    let sender = authenticate_parts(&services, &parts).await?;
    let Query(query) = Query::<InitialSyncQuery>::try_from_uri(&parts.uri)
        .map_err(|e| Error::invalid_param(format!("Invalid query: {e}")))?;
    let body = legacy::initial_sync(
        &services,
        &sender.user_id,
        sender.device_id.as_str(),
        query.limit,
        query.archived,
    )
    .await?;
    Ok(Json(body))
}
