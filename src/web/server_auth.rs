//! The extractors of federation requests: `Federation<T>` reads a ruma request (as `Ruma<T>`
//! does: path, query, JSON body with a size cap) and verifies its `X-Matrix` signature over
//! method, URI, destination and body before the handler runs; `ServerOrigin` verifies a request
//! without a body (the media endpoints, whose answers are written by hand).

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use ruma::{OwnedServerName, api::IncomingRequest};

use super::{
    AppState,
    ruma::{
        JSON_BODY_LIMIT, announced_length, check_is_json, parse_without_panics, read_json_body,
        refuse_too_large,
    },
};
use crate::{
    error::{Error, Result},
    services::server_auth,
};

/// A federation transaction (`PUT /send/{txnId}`) holds up to 50 PDUs of at most 64 KiB and
/// 100 EDUs.
pub const TRANSACTION_BODY_LIMIT: usize = 8 * 1024 * 1024;
/// Other federation requests carry one event, or one with the room's stripped state (invites).
pub const FEDERATION_BODY_LIMIT: usize = 4 * JSON_BODY_LIMIT;

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
        server_auth::verify_request(state, &request).await.map(Self)
    }
}

/// A verified federation request: the ruma request `T` and the server that signed it.
pub struct Federation<T> {
    pub origin: OwnedServerName,
    pub body: T,
    /// The JSON body as it came (shared, not copied): `invite` v1's body is the whole PDU, of
    /// which ruma's type keeps only some fields.
    pub raw_body: bytes::Bytes,
}

fn body_limit<T: 'static>() -> usize {
    use std::any::TypeId;
    if TypeId::of::<T>()
        == TypeId::of::<ruma::api::federation::transactions::send_transaction_message::v1::Request>(
        )
    {
        TRANSACTION_BODY_LIMIT
    } else {
        FEDERATION_BODY_LIMIT
    }
}

impl<T> FromRequest<AppState> for Federation<T>
where
    T: IncomingRequest + Send + 'static,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &AppState) -> Result<Self> {
        let (mut parts, body) = request.into_parts();
        let path_args: Vec<String> = Path::<Vec<String>>::from_request_parts(&mut parts, state)
            .await
            .map(|Path(args)| args)
            .map_err(|e| Error::invalid_param(format!("Invalid path parameter: {e}")))?;
        let limit = body_limit::<T>();
        if announced_length(&parts.headers).is_some_and(|length| length > limit as u64) {
            return Err(refuse_too_large(body, &parts.headers).await);
        }
        let bytes = read_json_body(body, &parts.headers, limit).await?;
        // The signature first: nothing of an unsigned request is looked at.
        let origin = server_auth::verify_request(
            state,
            &http::Request::from_parts(parts.clone(), &bytes[..]),
        )
        .await?;
        check_is_json(&bytes)?;
        let raw_body = bytes;
        let bytes: &[u8] = if raw_body.is_empty() {
            b"{}"
        } else {
            &raw_body
        };
        let path_args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        let body = parse_without_panics::<T>(parts, bytes, &path_args)?;
        Ok(Self {
            origin,
            body,
            raw_body,
        })
    }
}
