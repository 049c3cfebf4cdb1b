//! Transactions from other servers (`PUT /send/{txnId}`): PDUs and EDUs, each PDU through the
//! spec's checks in `services::federation::inbound`.

use axum::{Router, extract::State};
use ruma::api::federation::transactions::send_transaction_message::v1 as send_transaction;

use crate::{
    services::federation::inbound,
    web::{
        AppState,
        ruma::{ApiResult, RumaRoutes},
        server_auth::Federation,
    },
};

pub fn routes() -> Router<AppState> {
    Router::new().ruma::<send_transaction::Request, _, _>(send_transaction)
}

/// `PUT /_matrix/federation/v1/send/{txnId}`
async fn send_transaction(
    State(services): State<AppState>,
    request: Federation<send_transaction::Request>,
) -> ApiResult<send_transaction::Response> {
    Ok(
        inbound::handle_transaction(&services, &request.origin, request.body)
            .await?
            .into(),
    )
}
