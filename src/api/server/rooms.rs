//! Room data for other servers: `/state`, `/state_ids`, `/event`, `/event_auth`, `/backfill`,
//! `/get_missing_events`, `/timestamp_to_event`, the public room list (`/publicRooms`) and
//! space hierarchies (`/hierarchy`). Who may read what is decided in `services::federation::serve`
//! (room summaries: `services::directory::summary`).

use axum::{Router, extract::State};
use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::federation::{
        authorization::get_event_authorization::v1 as get_event_auth,
        backfill::get_backfill::v1 as get_backfill,
        directory::{
            get_public_rooms::v1 as get_public_rooms,
            get_public_rooms_filtered::v1 as get_public_rooms_filtered,
        },
        event::{
            get_event::v1 as get_event, get_event_by_timestamp::v1 as get_event_by_timestamp,
            get_missing_events::v1 as get_missing_events, get_room_state::v1 as get_room_state,
            get_room_state_ids::v1 as get_room_state_ids,
        },
        space::get_hierarchy::v1 as get_hierarchy,
    },
    directory::{Filter, RoomNetwork},
};

use crate::{
    error::{Error, Result},
    services::directory::{PublicRoomsPage, PublicRoomsQuery},
    web::{
        AppState,
        ruma::{ApiResult, RumaRoutes},
        server_auth::Federation,
    },
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<get_room_state::Request, _, _>(state)
        .ruma::<get_room_state_ids::Request, _, _>(state_ids)
        .ruma::<get_event::Request, _, _>(event)
        .ruma::<get_event_auth::Request, _, _>(event_auth)
        .ruma::<get_backfill::Request, _, _>(backfill)
        .ruma::<get_missing_events::Request, _, _>(missing_events)
        .ruma::<get_event_by_timestamp::Request, _, _>(timestamp_to_event)
        .ruma::<get_public_rooms::Request, _, _>(public_rooms)
        .ruma::<get_public_rooms_filtered::Request, _, _>(public_rooms_filtered)
        .ruma::<get_hierarchy::Request, _, _>(hierarchy)
}

/// `GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only=`
async fn hierarchy(
    State(services): State<AppState>,
    request: Federation<get_hierarchy::Request>,
) -> ApiResult<get_hierarchy::Response> {
    let body = &request.body;
    let response = services
        .directory
        .federation_hierarchy(&request.origin, &body.room_id, body.suggested_only)
        .await?;
    Ok(response.into())
}

/// `GET /_matrix/federation/v1/state/{roomId}`
async fn state(
    State(services): State<AppState>,
    request: Federation<get_room_state::Request>,
) -> ApiResult<get_room_state::Response> {
    let origin = &request.origin;
    let body = request.body;
    let state = services
        .federation_serve
        .state(origin, &body.room_id, &body.event_id)
        .await?;
    Ok(get_room_state::Response::new(state.auth_chain, state.pdus).into())
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}`
async fn state_ids(
    State(services): State<AppState>,
    request: Federation<get_room_state_ids::Request>,
) -> ApiResult<get_room_state_ids::Response> {
    let origin = &request.origin;
    let body = request.body;
    let state = services
        .federation_serve
        .state_ids(origin, &body.room_id, &body.event_id)
        .await?;
    Ok(get_room_state_ids::Response::new(state.auth_chain_ids, state.pdu_ids).into())
}

/// `GET /_matrix/federation/v1/event/{eventId}`
async fn event(
    State(services): State<AppState>,
    request: Federation<get_event::Request>,
) -> ApiResult<get_event::Response> {
    let origin = &request.origin;
    let pdu = services
        .federation_serve
        .event(origin, &request.body.event_id)
        .await?;
    Ok(get_event::Response::new(
        services.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
        pdu,
    )
    .into())
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`
async fn event_auth(
    State(services): State<AppState>,
    request: Federation<get_event_auth::Request>,
) -> ApiResult<get_event_auth::Response> {
    let origin = &request.origin;
    let body = request.body;
    let chain = services
        .federation_serve
        .event_auth(origin, &body.room_id, &body.event_id)
        .await?;
    Ok(get_event_auth::Response::new(chain).into())
}

/// `GET /_matrix/federation/v1/backfill/{roomId}`
async fn backfill(
    State(services): State<AppState>,
    request: Federation<get_backfill::Request>,
) -> ApiResult<get_backfill::Response> {
    let origin = &request.origin;
    let body = request.body;
    let pdus = services
        .federation_serve
        .backfill(origin, &body.room_id, body.v, body.limit)
        .await?;
    Ok(get_backfill::Response::new(
        services.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
        pdus,
    )
    .into())
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`
async fn missing_events(
    State(services): State<AppState>,
    request: Federation<get_missing_events::Request>,
) -> ApiResult<get_missing_events::Response> {
    let origin = &request.origin;
    let body = request.body;
    let events = services
        .federation_serve
        .missing_events(
            origin,
            &body.room_id,
            body.earliest_events,
            body.latest_events,
            body.limit,
            body.min_depth,
        )
        .await?;
    Ok(get_missing_events::Response::new(events).into())
}

/// `GET /_matrix/federation/v1/timestamp_to_event/{roomId}`
async fn timestamp_to_event(
    State(services): State<AppState>,
    request: Federation<get_event_by_timestamp::Request>,
) -> ApiResult<get_event_by_timestamp::Response> {
    let origin = &request.origin;
    let body = request.body;
    let found = services
        .federation_serve
        .timestamp_to_event(origin, &body.room_id, body.ts, body.dir)
        .await?;
    Ok(get_event_by_timestamp::Response::new(found.event_id, found.origin_server_ts).into())
}

/// The public room list for another server, if `allow_public_rooms_over_federation`.
async fn public_room_page(
    services: &AppState,
    limit: Option<UInt>,
    since: Option<&str>,
    filter: Option<&Filter>,
    network: &RoomNetwork,
) -> Result<PublicRoomsPage> {
    if !services.config.allow_public_rooms_over_federation {
        return Err(Error::forbidden(
            "This server does not share its public room list with other servers",
        ));
    }
    services
        .directory
        .public_rooms(PublicRoomsQuery {
            server: None,
            limit,
            since,
            filter,
            network: Some(network),
        })
        .await
}

/// `GET /_matrix/federation/v1/publicRooms`
async fn public_rooms(
    State(services): State<AppState>,
    request: Federation<get_public_rooms::Request>,
) -> ApiResult<get_public_rooms::Response> {
    let origin = &request.origin;
    tracing::debug!(%origin, "public room list over federation");
    let body = &request.body;
    let page = public_room_page(
        &services,
        body.limit,
        body.since.as_deref(),
        None,
        &body.room_network,
    )
    .await?;
    let mut response = get_public_rooms::Response::new();
    response.chunk = page.chunk;
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = UInt::new(page.total_room_count_estimate);
    Ok(response.into())
}

/// `POST /_matrix/federation/v1/publicRooms`
async fn public_rooms_filtered(
    State(services): State<AppState>,
    request: Federation<get_public_rooms_filtered::Request>,
) -> ApiResult<get_public_rooms_filtered::Response> {
    let origin = &request.origin;
    tracing::debug!(%origin, "filtered public room list over federation");
    let body = &request.body;
    let page = public_room_page(
        &services,
        body.limit,
        body.since.as_deref(),
        Some(&body.filter),
        &body.room_network,
    )
    .await?;
    let mut response = get_public_rooms_filtered::Response::new();
    response.chunk = page.chunk;
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = UInt::new(page.total_room_count_estimate);
    Ok(response.into())
}
