//! Who sent a federation request: the `X-Matrix` signature checked with ruma's signature code
//! against the origin's public key, fetched (or read from the cache) by `ServerKeys`.
//!
//! As Synapse: a missing or malformed header, a wrong `destination`, an unknown key or a bad
//! signature is `401 M_UNAUTHORIZED`; an origin outside `federation_domain_whitelist` is
//! `403 M_FORBIDDEN` (and costs no key fetch).

use std::time::Duration;

use http::StatusCode;
use ruma::{
    OwnedServerName,
    api::{error::ErrorKind, federation::authentication::XMatrix},
};

use super::Services;
use crate::{
    error::{Error, Result},
    storage::now_ms,
};

/// How long a request waits for the origin's keys.
const KEY_FETCH_TIMEOUT: Duration = Duration::from_secs(30);

fn unauthorized(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(StatusCode::UNAUTHORIZED, ErrorKind::Unauthorized, message)
}

/// Checks the `Authorization: X-Matrix …` header of a request (method, path and query,
/// destination, and the JSON body if any) and returns the server that signed it.
pub async fn verify_request(
    services: &Services,
    request: &http::Request<&[u8]>,
) -> Result<OwnedServerName> {
    let x_matrix = XMatrix::extract_from_http_headers(request.headers())
        .map_err(|e| unauthorized(format!("Missing or invalid X-Matrix authorization: {e}")))?;
    if let Some(destination) = &x_matrix.destination
        && *destination != services.server_name
    {
        return Err(unauthorized(format!(
            "The request is for {destination}, not this server"
        )));
    }
    if let Some(whitelist) = &services.config.federation_domain_whitelist
        && !whitelist
            .iter()
            .any(|name| *name == x_matrix.origin.as_str())
    {
        return Err(Error::forbidden(format!(
            "Federation with {} is not allowed (federation_domain_whitelist)",
            x_matrix.origin
        )));
    }
    let key_id = x_matrix.key.to_string();
    let now = u64::try_from(now_ms()).unwrap_or(0);
    let keys = tokio::time::timeout(
        KEY_FETCH_TIMEOUT,
        services
            .server_keys
            .public_keys(&x_matrix.origin, std::slice::from_ref(&key_id), now),
    )
    .await
    .map_err(|_| unauthorized(format!("No answer for the keys of {}", x_matrix.origin)))??;
    if !keys.contains_key(&key_id) {
        return Err(unauthorized(format!(
            "Unknown key {key_id} of {}",
            x_matrix.origin
        )));
    }
    let public_keys = [(x_matrix.origin.to_string(), keys)].into_iter().collect();
    x_matrix
        .verify_http_request(request, &services.server_name, &public_keys)
        .map_err(|e| unauthorized(format!("Invalid X-Matrix signature: {e}")))?;
    // A server that talks to us is up: the outbound sender stops backing off from it.
    services
        .federation_sender
        .destination_is_up(&x_matrix.origin)
        .await;
    Ok(x_matrix.origin)
}
