//! Our users' devices and end-to-end encryption keys for other servers: `/user/devices`,
//! `/user/keys/query`, `/user/keys/claim` (`services::e2ee::{federation, remote_lists}`).

use axum::{Router, extract::State};
use ruma::api::federation::{
    device::get_devices::v1 as get_devices,
    keys::{claim_keys::v1 as claim_keys, get_keys::v1 as get_keys},
};

use crate::{
    services::e2ee::{federation, remote_lists},
    web::{
        AppState,
        ruma::{ApiResult, RumaRoutes},
        server_auth::Federation,
    },
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<get_devices::Request, _, _>(user_devices)
        .ruma::<get_keys::Request, _, _>(query_keys)
        .ruma::<claim_keys::Request, _, _>(claim_keys)
}

/// `GET /_matrix/federation/v1/user/devices/{userId}`
async fn user_devices(
    State(services): State<AppState>,
    request: Federation<get_devices::Request>,
) -> ApiResult<get_devices::Response> {
    Ok(remote_lists::user_devices(&services, &request.body.user_id)
        .await?
        .into())
}

/// `POST /_matrix/federation/v1/user/keys/query`
async fn query_keys(
    State(services): State<AppState>,
    request: Federation<get_keys::Request>,
) -> ApiResult<get_keys::Response> {
    Ok(federation::serve_query(&services, request.body.device_keys)
        .await?
        .into())
}

/// `POST /_matrix/federation/v1/user/keys/claim`
async fn claim_keys(
    State(services): State<AppState>,
    request: Federation<claim_keys::Request>,
) -> ApiResult<claim_keys::Response> {
    Ok(
        federation::serve_claim(&services, request.body.one_time_keys)
            .await?
            .into(),
    )
}
