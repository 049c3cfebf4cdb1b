//! `GET /voip/turnServer`: TURN credentials for calls, from the built-in relay or an external
//! coturn sharing `turn_shared_secret`.

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use ruma::api::client::voip::get_turn_server_info::v3 as turn_server;

use crate::{
    error::{Error, Result},
    web::{
        AppState,
        ruma::{Ruma, RumaResponse},
    },
};

/// `GET /_matrix/client/v3/voip/turnServer`
pub(super) async fn get_turn_server(
    State(services): State<AppState>,
    request: Ruma<turn_server::Request>,
) -> Result<Response> {
    let sender = request.sender()?;
    // `turn_allow_guests` decides for guests, as in Synapse.
    let credentials = services
        .voip
        .credentials(sender.user_id.as_str(), sender.is_guest)
        .map_err(|_| Error::forbidden("Guest access not allowed"))?;
    Ok(match credentials {
        Some(c) => RumaResponse(turn_server::Response::new(
            c.username, c.password, c.uris, c.ttl,
        ))
        .into_response(),
        // Synapse's answer when no TURN server is configured; clients then call without one.
        None => Json(serde_json::json!({})).into_response(),
    })
}
