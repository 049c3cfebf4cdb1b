//! Joining rooms of this server from other servers: `make_join` and `send_join` (v2).

use axum::{Router, extract::State};
use ruma::api::federation::membership::{create_join_event, prepare_join_event};

use crate::{
    services::federation::joins,
    web::{
        AppState,
        ruma::{ApiResult, RumaRoutes},
        server_auth::Federation,
    },
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<prepare_join_event::v1::Request, _, _>(make_join)
        .ruma::<create_join_event::v2::Request, _, _>(send_join)
}

/// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
async fn make_join(
    State(services): State<AppState>,
    request: Federation<prepare_join_event::v1::Request>,
) -> ApiResult<prepare_join_event::v1::Response> {
    let body = &request.body;
    Ok(joins::make_join(
        &services,
        &request.origin,
        &body.room_id,
        &body.user_id,
        &body.ver,
    )
    .await?
    .into())
}

/// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
async fn send_join(
    State(services): State<AppState>,
    request: Federation<create_join_event::v2::Request>,
) -> ApiResult<create_join_event::v2::Response> {
    let body = &request.body;
    Ok(joins::send_join(
        &services,
        &request.origin,
        &body.room_id,
        &body.event_id,
        &body.pdu,
    )
    .await?
    .into())
}
