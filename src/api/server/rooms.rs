//! Room traffic from other servers: transactions and joins.

use axum::extract::State;
use ruma::api::federation::{
    membership::{create_join_event, prepare_join_event},
    transactions::send_transaction_message::v1 as send_transaction,
};

use crate::{
    services::federation::{inbound, joins},
    web::{AppState, ruma::ApiResult, server_auth::Federation},
};

/// `PUT /_matrix/federation/v1/send/{txnId}`
pub async fn send_transaction(
    State(services): State<AppState>,
    request: Federation<send_transaction::Request>,
) -> ApiResult<send_transaction::Response> {
    Ok(inbound::handle_transaction(&services, &request.origin, request.body)
        .await?
        .into())
}

/// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
pub async fn make_join(
    State(services): State<AppState>,
    request: Federation<prepare_join_event::v1::Request>,
) -> ApiResult<prepare_join_event::v1::Response> {
    let body = &request.body;
    Ok(
        joins::make_join(&services, &request.origin, &body.room_id, &body.user_id, &body.ver)
            .await?
            .into(),
    )
}

/// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
pub async fn send_join(
    State(services): State<AppState>,
    request: Federation<create_join_event::v2::Request>,
) -> ApiResult<create_join_event::v2::Response> {
    let body = &request.body;
    Ok(
        joins::send_join(&services, &request.origin, &body.room_id, &body.event_id, &body.pdu)
            .await?
            .into(),
    )
}
