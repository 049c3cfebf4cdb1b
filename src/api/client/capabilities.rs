use axum::extract::State;
use ruma::api::client::discovery::get_capabilities::v3::{self as get_capabilities, Capabilities};

use crate::web::{
    AppState,
    ruma::{ApiResult, Ruma},
};

/// `GET /_matrix/client/v3/capabilities`
#[allow(deprecated)] // m.set_displayname and m.set_avatar_url are still read by current clients.
pub async fn get_capabilities(
    State(_): State<AppState>,
    request: Ruma<get_capabilities::Request>,
) -> ApiResult<get_capabilities::Response> {
    request.sender()?;
    let mut capabilities = Capabilities::new();
    capabilities.change_password.enabled = true;
    capabilities.set_displayname.enabled = true;
    capabilities.set_avatar_url.enabled = true;
    capabilities.thirdparty_id_changes.enabled = false;
    Ok(get_capabilities::Response::new(capabilities).into())
}
