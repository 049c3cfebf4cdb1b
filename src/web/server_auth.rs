//! `ServerOrigin`: the extractor that authenticates a federation request (`X-Matrix`) before its
//! handler runs. Handlers of federation endpoints take it beside `Ruma<T>`, which leaves
//! server signatures to it.

use axum::extract::FromRequestParts;
use ruma::OwnedServerName;

use super::AppState;
use crate::{error::Error, services::server_auth};

/// The server that signed the request. Only for requests without a body (the signed request
/// object then has no `content`), such as the media endpoints.
pub struct ServerOrigin(pub OwnedServerName);

impl FromRequestParts<AppState> for ServerOrigin {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Error> {
        let request = http::Request::from_parts(parts.clone(), &[][..]);
        let origin = server_auth::verify_request(state, &request)?;
        // A server that talks to us is up: the sender stops backing off from it.
        state.federation_sender.destination_is_up(&origin).await;
        Ok(Self(origin))
    }
}
