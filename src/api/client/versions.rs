use std::collections::BTreeMap;

use axum::extract::State;
use ruma::api::client::discovery::get_supported_versions;

use crate::web::{
    AppState,
    ruma::{ApiResult, Ruma},
};

/// The spec versions whose client-server API this server implements.
const SUPPORTED_VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
    "v1.9", "v1.10", "v1.11", "v1.12",
];

/// `GET /_matrix/client/versions`
pub async fn get_supported_versions(
    State(_): State<AppState>,
    _: Ruma<get_supported_versions::Request>,
) -> ApiResult<get_supported_versions::Response> {
    let mut response = get_supported_versions::Response::new(
        SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
    );
    response.unstable_features = BTreeMap::new();
    Ok(response.into())
}
