use axum::extract::State;
use ruma::api::federation::discovery::get_server_keys::v2 as get_server_keys;

use crate::{
    error::Error,
    web::{
        AppState,
        ruma::{ApiResult, Ruma},
    },
};

/// `GET /_matrix/key/v2/server`: this server's signing key, signed by itself.
pub async fn get_server_keys(
    State(services): State<AppState>,
    _: Ruma<get_server_keys::Request>,
) -> ApiResult<get_server_keys::Response> {
    let signed = services
        .server_key
        .signed_server_keys()
        .map_err(Error::internal)?;
    Ok(get_server_keys::Response::new(signed).into())
}
