//! Who sent a federation request: the `X-Matrix` signature checked with ruma's signature code
//! against the origin's public key. Fetching other servers' keys comes with federation; until
//! then the only key known is this server's own, so only requests signed by this server pass
//! and every other origin is refused with `401 M_UNAUTHORIZED`.

use http::StatusCode;
use ruma::{
    OwnedServerName,
    api::{error::ErrorKind, federation::authentication::XMatrix},
    serde::Base64,
    signatures::PublicKeyMap,
};

use super::Services;
use crate::error::{Error, Result};

fn unauthorized(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(StatusCode::UNAUTHORIZED, ErrorKind::Unauthorized, message)
}

/// Checks the `Authorization: X-Matrix …` header of a request (method, path and query, and the
/// JSON body if any) and returns the server that signed it.
pub fn verify_request(
    services: &Services,
    request: &http::Request<&[u8]>,
) -> Result<OwnedServerName> {
    let x_matrix = XMatrix::extract_from_http_headers(request.headers())
        .map_err(|e| unauthorized(format!("Missing or invalid X-Matrix authorization: {e}")))?;
    let public_keys = known_keys(services, &x_matrix)?;
    x_matrix
        .verify_http_request(request, &services.server_name, &public_keys)
        .map_err(|e| unauthorized(format!("Invalid X-Matrix signature: {e}")))?;
    Ok(x_matrix.origin)
}

/// The keys this server can check `x_matrix` with.
fn known_keys(services: &Services, x_matrix: &XMatrix) -> Result<PublicKeyMap> {
    if x_matrix.origin != services.server_name {
        return Err(unauthorized(format!(
            "Cannot verify requests from {}: fetching other servers' keys is not available yet",
            x_matrix.origin
        )));
    }
    let key = &services.server_key;
    let public_key = Base64::new(key.key_pair().public_key().to_vec());
    let keys = [(key.key_id(), public_key)].into_iter().collect();
    Ok([(services.server_name.to_string(), keys)]
        .into_iter()
        .collect())
}
