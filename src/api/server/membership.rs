//! Membership across servers: joining and leaving rooms of this server from other servers
//! (`make_join` / `send_join` v2, `make_leave` / `send_leave` v2, `make_knock` / `send_knock`
//! v1), and invites of our users (`invite` v2).

use axum::{Router, extract::State};
use ruma::api::federation::membership::{
    create_invite, create_join_event, create_knock_event, create_leave_event, prepare_join_event,
    prepare_knock_event, prepare_leave_event,
};

use crate::{
    services::federation::{invites, joins, knocks, leaves},
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
        .ruma::<prepare_leave_event::v1::Request, _, _>(make_leave)
        .ruma::<create_leave_event::v2::Request, _, _>(send_leave)
        .ruma::<create_invite::v2::Request, _, _>(invite)
        .ruma::<prepare_knock_event::v1::Request, _, _>(make_knock)
        .ruma::<create_knock_event::v1::Request, _, _>(send_knock)
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

/// `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`
async fn make_leave(
    State(services): State<AppState>,
    request: Federation<prepare_leave_event::v1::Request>,
) -> ApiResult<prepare_leave_event::v1::Response> {
    let body = &request.body;
    Ok(
        leaves::make_leave(&services, &request.origin, &body.room_id, &body.user_id)
            .await?
            .into(),
    )
}

/// `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`
async fn send_leave(
    State(services): State<AppState>,
    request: Federation<create_leave_event::v2::Request>,
) -> ApiResult<create_leave_event::v2::Response> {
    let body = &request.body;
    Ok(leaves::send_leave(
        &services,
        &request.origin,
        &body.room_id,
        &body.event_id,
        &body.pdu,
    )
    .await?
    .into())
}

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`
async fn invite(
    State(services): State<AppState>,
    request: Federation<create_invite::v2::Request>,
) -> ApiResult<create_invite::v2::Response> {
    let event = invites::receive_invite(&services, &request.origin, request.body).await?;
    Ok(create_invite::v2::Response::new(event).into())
}

/// `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`
async fn make_knock(
    State(services): State<AppState>,
    request: Federation<prepare_knock_event::v1::Request>,
) -> ApiResult<prepare_knock_event::v1::Response> {
    let body = &request.body;
    Ok(knocks::make_knock(
        &services,
        &request.origin,
        &body.room_id,
        &body.user_id,
        &body.ver,
    )
    .await?
    .into())
}

/// `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`
async fn send_knock(
    State(services): State<AppState>,
    request: Federation<create_knock_event::v1::Request>,
) -> ApiResult<create_knock_event::v1::Response> {
    let body = &request.body;
    Ok(knocks::send_knock(
        &services,
        &request.origin,
        &body.room_id,
        &body.event_id,
        &body.pdu,
    )
    .await?
    .into())
}
