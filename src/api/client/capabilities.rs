use axum::extract::State;
use ruma::{
    RoomVersionId,
    api::client::discovery::get_capabilities::v3::{
        self as get_capabilities, Capabilities, ProfileFieldsCapability, RoomVersionStability,
    },
};

use crate::services::rooms::SUPPORTED_ROOM_VERSIONS;
use crate::web::{
    AppState,
    ruma::{ApiResult, Ruma},
};

/// `GET /_matrix/client/v3/capabilities`
#[allow(deprecated)] // m.set_displayname and m.set_avatar_url are still read by current clients.
pub async fn get_capabilities(
    State(services): State<AppState>,
    request: Ruma<get_capabilities::Request>,
) -> ApiResult<get_capabilities::Response> {
    request.sender()?;
    let mut capabilities = Capabilities::new();
    capabilities.change_password.enabled = true;
    capabilities.set_displayname.enabled = true;
    capabilities.set_avatar_url.enabled = true;
    capabilities.thirdparty_id_changes.enabled = false;
    // Extended profiles (Matrix 1.16): every field may be set, as Synapse answers by default.
    capabilities.profile_fields = Some(ProfileFieldsCapability::new(true));
    capabilities.room_versions.default =
        RoomVersionId::try_from(services.config.default_room_version.as_str())
            .map_err(crate::error::Error::internal)?;
    capabilities.room_versions.available = SUPPORTED_ROOM_VERSIONS
        .iter()
        .filter_map(|v| RoomVersionId::try_from(*v).ok())
        .map(|v| (v, RoomVersionStability::Stable))
        .collect();
    // Delayed events (MSC4140), as Synapse lists them whether they are on or not.
    capabilities
        .set(
            "org.matrix.msc4140.delayed_events",
            serde_json::json!({
                "max_delay_ms": services.delayed_events.max_delay().as_millis() as u64,
                "max_scheduled": crate::services::delayed_events::MAX_PER_USER,
            }),
        )
        .map_err(crate::error::Error::internal)?;
    Ok(get_capabilities::Response::new(capabilities).into())
}
