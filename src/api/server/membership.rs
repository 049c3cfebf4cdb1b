//! Membership across servers: joining and leaving rooms of this server from other servers
//! (`make_join` / `send_join` v2, `make_leave` / `send_leave` v2, `make_knock` / `send_knock`
//! v1), and invites of our users (`invite` v2, and the deprecated v1).

use axum::{Router, extract::State};
use ruma::{
    RoomVersionId,
    api::federation::membership::{
        create_invite, create_join_event, create_knock_event, create_leave_event,
        prepare_join_event, prepare_knock_event, prepare_leave_event,
    },
};

use crate::{
    error::Error,
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
        .ruma::<create_invite::v1::Request, _, _>(invite_v1)
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

/// `PUT /_matrix/federation/v1/invite/{roomId}/{eventId}` (deprecated): the body is the invite
/// PDU itself, with the stripped state in its `unsigned`, and no room version. Served as v2 with
/// room version 2, as Synapse serves it with version 1: v1 and v2 events have one format and the
/// invite is only checked and signed, never resolved. The answer is `[200, {"event": …}]`.
async fn invite_v1(
    State(services): State<AppState>,
    request: Federation<create_invite::v1::Request>,
) -> ApiResult<create_invite::v1::Response> {
    let event = serde_json::from_slice(&request.raw_body)
        .map_err(|e| Error::bad_json(format!("Invalid invite event: {e}")))?;
    let v1 = request.body;
    let v2 = create_invite::v2::Request::new(
        v1.room_id,
        v1.event_id,
        RoomVersionId::V2,
        event,
        v1.unsigned.invite_room_state,
    );
    let signed = invites::receive_invite(&services, &request.origin, v2).await?;
    // ruma writes its field as the array's second element (`[200, <field>]`), where the spec
    // and Synapse put `{"event": …}`: the field is given that object.
    let answer = serde_json::value::to_raw_value(&serde_json::json!({ "event": signed }))
        .map_err(Error::internal)?;
    Ok(create_invite::v1::Response::new(answer).into())
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
