//! The bridge between axum and ruma: `Ruma<T>` reads any ruma request type (path, query, body,
//! access token) and `RumaResponse<T>` writes any ruma response type. Request and response shapes
//! come from ruma alone, so they follow the spec without hand-written JSON.
//!
//! Routes are registered from ruma's own path metadata (`RumaRoutes::ruma::<Request>`); the access
//! token is read by the endpoint's ruma authentication scheme. JSON bodies are capped at
//! [`JSON_BODY_LIMIT`] (256 KiB; [`LARGE_JSON_BODY_LIMIT`], 4 MiB, for the bulk
//! end-to-end-encryption requests), refused from `Content-Length` before the token is looked up. A
//! body that makes ruma's parser panic is a `400`, not a `500` (`check_known_panics`, then
//! `catch_unwind`); `hostile_requests.rs` sends every registered route malformed requests.

use std::net::IpAddr;

use axum::{
    body::Body,
    extract::{FromRequest, FromRequestParts, Path, Request},
    handler::Handler,
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::StatusCode;
use ruma::api::{
    IncomingRequest, IncomingRequestExt, OutgoingResponse,
    auth_scheme::{
        AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken,
        NoAuthentication, extract_bearer_or_query_token,
    },
    error::{DeserializationError, FromHttpRequestError},
    path_builder::PathBuilder,
};

use super::{AppState, client_ip::ClientIp};
use crate::{
    error::{Error, Result},
    services::sessions::Identity,
};

/// How an endpoint's ruma auth scheme maps to access-token handling here.
pub enum TokenUse {
    /// The endpoint ignores tokens.
    Ignored,
    /// A token identifies the sender if present.
    Optional,
    /// A valid token is required.
    Required,
}

pub trait AuthRequirement {
    const TOKEN: TokenUse;
}

impl AuthRequirement for NoAuthentication {
    const TOKEN: TokenUse = TokenUse::Ignored;
}
impl AuthRequirement for NoAccessToken {
    const TOKEN: TokenUse = TokenUse::Ignored;
}
impl AuthRequirement for AccessToken {
    const TOKEN: TokenUse = TokenUse::Required;
}
impl AuthRequirement for AccessTokenOptional {
    const TOKEN: TokenUse = TokenUse::Optional;
}
// Endpoints that take an application service's token take ordinary user tokens too: every
// token goes through `authenticate` below.
impl AuthRequirement for AppserviceTokenOptional {
    const TOKEN: TokenUse = TokenUse::Optional;
}
impl AuthRequirement for AppserviceToken {
    const TOKEN: TokenUse = TokenUse::Required;
}
// Federation endpoints carry a server signature, not a token: their handlers also take
// `web::server_auth::ServerOrigin`, which verifies it.
impl AuthRequirement for ruma::api::federation::authentication::ServerSignatures {
    const TOKEN: TokenUse = TokenUse::Ignored;
}

/// A parsed ruma request with who sent it.
pub struct Ruma<T> {
    pub body: T,
    /// The authenticated sender; always `Some` for endpoints that require a token.
    pub sender: Option<Identity>,
    pub client_ip: IpAddr,
    /// The request's method and path, and its JSON body as sent (`{}` when empty): for what
    /// ruma's types leave out (extra member content on `/join`) and for binding a UIA session
    /// to the request that started it.
    pub method: http::Method,
    pub path: String,
    pub json: bytes::Bytes,
}

impl<T> Ruma<T> {
    /// The sender of an endpoint that requires authentication.
    pub fn sender(&self) -> Result<&Identity> {
        self.sender.as_ref().ok_or_else(Error::missing_token)
    }

    /// The request as a UIA session is bound to it: method, path, and the body's parameters
    /// when a signed-in user sends it.
    pub fn uia_operation(&self) -> crate::services::uiaa::Operation {
        crate::services::uiaa::Operation::new(
            &self.method,
            &self.path,
            &self.json,
            self.sender.is_some(),
        )
    }
}

impl<T> FromRequest<AppState> for Ruma<T>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: AuthRequirement,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &AppState) -> Result<Self> {
        let (mut parts, body) = request.into_parts();
        // A parameter that is not UTF-8 once percent-decoded, say.
        let mut path_args: Vec<String> = Path::<Vec<String>>::from_request_parts(&mut parts, state)
            .await
            .map(|Path(args)| args)
            .map_err(|e| Error::invalid_param(format!("Invalid path parameter: {e}")))?;
        if let Some(LastPathArg(last)) = parts.extensions.get::<LastPathArg>() {
            path_args.push((*last).to_owned());
        }
        let client_ip = ClientIp::from_parts(&parts);
        // Before the token is looked up: a body announced too large is refused at once.
        let limit = json_body_limit::<T>();
        if announced_length(&parts.headers).is_some_and(|length| length > limit as u64) {
            return Err(refuse_too_large(body, &parts.headers).await);
        }

        // Endpoints that ignore tokens are not held to their form: a federation request's
        // `Authorization` header is `X-Matrix …`, not `Bearer …`.
        let token = match T::Authentication::TOKEN {
            TokenUse::Ignored => None,
            TokenUse::Optional | TokenUse::Required => {
                extract_bearer_or_query_token(&http::Request::from_parts(parts.clone(), ()))
                    .map_err(|_| Error::missing_token())?
            }
        };
        let sender = match (T::Authentication::TOKEN, token) {
            (TokenUse::Ignored, _) | (TokenUse::Optional, None) => None,
            (TokenUse::Required, None) => return Err(Error::missing_token()),
            (TokenUse::Required | TokenUse::Optional, Some(token)) => {
                let query = parts.uri.query().filter(|_| takes_user_id::<T>());
                Some(authenticate(state, &token, query, client_ip).await?)
            }
        };
        if sender.as_ref().is_some_and(|s| s.is_guest) && !guest_may_call::<T>() {
            return Err(guest_forbidden());
        }

        let bytes = read_json_body(body, &parts.headers, limit).await?;
        check_is_json(&bytes)?;

        check_known_panics::<T>(&bytes)?;
        // Clients (matrix-nio among them) send no body at all where every field is optional,
        // e.g. to `/join`; like Synapse, take that as `{}`.
        let bytes = if bytes.is_empty() {
            bytes::Bytes::from_static(b"{}")
        } else {
            bytes
        };
        let bytes = fill_optional_fields::<T>(bytes);
        let path_args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        let (method, path) = (parts.method.clone(), parts.uri.path().to_owned());
        let body = parse_without_panics::<T>(parts, &bytes, &path_args)?;
        Ok(Self {
            body,
            sender,
            client_ip,
            method,
            path,
            json: bytes,
        })
    }
}

/// Who a token belongs to: an application service's `as_token` acts as the service (or as the
/// user its `user_id` query parameter names), any other token is a device's.
async fn authenticate(
    state: &AppState,
    token: &str,
    query: Option<&str>,
    client_ip: IpAddr,
) -> Result<Identity> {
    let Some(service) = state.appservices.by_as_token(token) else {
        return state.sessions.authenticate(token, Some(client_ip)).await;
    };
    let parameter = |name: &str| {
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    let user_id = parameter("user_id");
    let device_id = parameter("org.matrix.msc3202.device_id");
    state
        .appservices
        .identity(
            service,
            user_id.as_deref(),
            device_id.as_deref(),
            async |user| state.users.exists(user).await,
            async |user, device| match state.sessions.device(user, device).await {
                Ok(_) => Ok(true),
                Err(Error::Matrix { status, .. }) if status == StatusCode::NOT_FOUND => Ok(false),
                Err(e) => Err(e),
            },
        )
        .await
}

/// Whether an application service may act as one of its users on endpoint `T` with `user_id`:
/// not when it registers or logs in a user (which may not exist yet: mautrix sends `user_id`
/// there too, and Synapse looks only at the token).
fn takes_user_id<T: 'static>() -> bool {
    use ruma::api::client::{account::register::v3 as register, session::login::v3 as login};
    use std::any::TypeId;
    ![
        TypeId::of::<register::Request>(),
        TypeId::of::<login::Request>(),
    ]
    .contains(&TypeId::of::<T>())
}

/// The sender of a request handled without a ruma type (media uploads, the Synapse admin API,
/// deprecated endpoints): the access token from the `Authorization` header or the
/// `access_token` query parameter, required. Guests are refused: see [`authenticate_guest_too`].
pub async fn authenticate_parts(
    state: &AppState,
    parts: &http::request::Parts,
) -> Result<Identity> {
    let sender = authenticate_guest_too(state, parts).await?;
    if sender.is_guest {
        return Err(guest_forbidden());
    }
    Ok(sender)
}

/// [`authenticate_parts`] for the one raw endpoint the spec opens to guests (`GET /events`).
pub async fn authenticate_guest_too(
    state: &AppState,
    parts: &http::request::Parts,
) -> Result<Identity> {
    let token = extract_bearer_or_query_token(&http::Request::from_parts(parts.clone(), ()))
        .map_err(|_| Error::missing_token())?
        .ok_or_else(Error::missing_token)?;
    // An application service's token too: bridges upload media as their users.
    authenticate(
        state,
        &token,
        parts.uri.query(),
        ClientIp::from_parts(parts),
    )
    .await
}

/// `403 M_GUEST_ACCESS_FORBIDDEN`: the answer to a guest calling what guests may not.
fn guest_forbidden() -> Error {
    Error::new(
        StatusCode::FORBIDDEN,
        ruma::api::error::ErrorKind::GuestAccessForbidden,
        "Guest access not allowed",
    )
}

/// Whether a guest account may call the endpoint `T`: the spec's list ("Guest access": reading
/// rooms and media, joining, leaving, sending, to-device messages, display name, devices,
/// whoami, keys), and what Synapse also lets guests do with their own session and rooms
/// (typing, receipts, account data, filters, relations, public rooms, capabilities, registering
/// to upgrade, logging out, TURN as `turn_allow_guests` says). Everything else is refused here,
/// in one place, before any handler runs; raw handlers go through [`authenticate_parts`].
pub fn guest_may_call<T: 'static>() -> bool {
    use ruma::api::client::{
        account, authenticated_media as media, config, context, device, directory, discovery,
        filter, keys, membership, message, peeking, profile, read_marker, receipt, relations, room,
        session, state, sync, thirdparty, to_device, typing, voip,
    };
    use std::any::TypeId;
    let allowed = [
        // Reading rooms and media.
        TypeId::of::<state::get_state_events::v3::Request>(),
        TypeId::of::<context::get_context::v3::Request>(),
        TypeId::of::<room::get_room_event::v3::Request>(),
        TypeId::of::<state::get_state_event_for_key::v3::Request>(),
        TypeId::of::<message::get_message_events::v3::Request>(),
        TypeId::of::<membership::get_member_events::v3::Request>(),
        TypeId::of::<membership::joined_members::v3::Request>(),
        TypeId::of::<membership::joined_rooms::v3::Request>(),
        TypeId::of::<peeking::get_current_state::v3::Request>(),
        TypeId::of::<peeking::listen_to_new_events::v3::Request>(),
        TypeId::of::<sync::sync_events::v3::Request>(),
        TypeId::of::<filter::create_filter::v3::Request>(),
        TypeId::of::<filter::get_filter::v3::Request>(),
        TypeId::of::<relations::get_relating_events::v1::Request>(),
        TypeId::of::<relations::get_relating_events_with_rel_type::v1::Request>(),
        TypeId::of::<relations::get_relating_events_with_rel_type_and_event_type::v1::Request>(),
        TypeId::of::<media::get_content::v1::Request>(),
        TypeId::of::<media::get_content_as_filename::v1::Request>(),
        TypeId::of::<media::get_content_thumbnail::v1::Request>(),
        TypeId::of::<media::get_media_config::v1::Request>(),
        TypeId::of::<directory::get_public_rooms::v3::Request>(),
        TypeId::of::<directory::get_public_rooms_filtered::v3::Request>(),
        TypeId::of::<thirdparty::get_protocols::v3::Request>(),
        TypeId::of::<discovery::get_capabilities::v3::Request>(),
        TypeId::of::<profile::get_profile::v3::Request>(),
        TypeId::of::<profile::get_display_name::v3::Request>(),
        TypeId::of::<profile::get_avatar_url::v3::Request>(),
        // Taking part in rooms.
        TypeId::of::<membership::join_room_by_id::v3::Request>(),
        TypeId::of::<membership::join_room_by_id_or_alias::v3::Request>(),
        TypeId::of::<membership::leave_room::v3::Request>(),
        TypeId::of::<message::send_message_event::v3::Request>(),
        TypeId::of::<state::send_state_event::v3::Request>(),
        TypeId::of::<to_device::send_event_to_device::v3::Request>(),
        TypeId::of::<typing::create_typing_event::v3::Request>(),
        TypeId::of::<receipt::create_receipt::v3::Request>(),
        TypeId::of::<read_marker::set_read_marker::v3::Request>(),
        TypeId::of::<voip::get_turn_server_info::v3::Request>(),
        // Their own account.
        TypeId::of::<profile::set_display_name::v3::Request>(),
        TypeId::of::<device::get_devices::v3::Request>(),
        TypeId::of::<device::get_device::v3::Request>(),
        TypeId::of::<device::update_device::v3::Request>(),
        TypeId::of::<account::whoami::v3::Request>(),
        TypeId::of::<account::register::v3::Request>(),
        TypeId::of::<session::logout::v3::Request>(),
        TypeId::of::<config::get_global_account_data::v3::Request>(),
        TypeId::of::<config::set_global_account_data::v3::Request>(),
        TypeId::of::<config::get_room_account_data::v3::Request>(),
        TypeId::of::<config::set_room_account_data::v3::Request>(),
        // End-to-end encryption.
        TypeId::of::<keys::upload_keys::v3::Request>(),
        TypeId::of::<keys::get_keys::v3::Request>(),
        TypeId::of::<keys::claim_keys::v3::Request>(),
        TypeId::of::<keys::get_key_changes::v3::Request>(),
        TypeId::of::<keys::upload_signatures::v3::Request>(),
    ];
    allowed.contains(&TypeId::of::<T>())
}

/// The largest JSON body most endpoints accept. The spec caps an event at 64 KiB; no other
/// request of the client-server API but the bulk end-to-end-encryption ones below comes near.
pub const JSON_BODY_LIMIT: usize = 256 * 1024;
/// The largest JSON body of the bulk end-to-end-encryption requests: `/sendToDevice` (clients
/// send a room key to up to a few hundred devices at once, ~1.5 KiB each), key backup uploads
/// (clients send up to a few hundred sessions per request), `/keys/upload` and
/// `/keys/signatures/upload`. Each needs a valid access token before its body is read.
pub const LARGE_JSON_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The body limit of the endpoint `T`.
fn json_body_limit<T: 'static>() -> usize {
    use ruma::api::client::{backup, keys, to_device};
    use std::any::TypeId;
    let large = [
        TypeId::of::<to_device::send_event_to_device::v3::Request>(),
        TypeId::of::<backup::add_backup_keys::v3::Request>(),
        TypeId::of::<backup::add_backup_keys_for_room::v3::Request>(),
        TypeId::of::<keys::upload_keys::v3::Request>(),
        TypeId::of::<keys::upload_signatures::v3::Request>(),
    ];
    if large.contains(&TypeId::of::<T>()) {
        LARGE_JSON_BODY_LIMIT
    } else {
        JSON_BODY_LIMIT
    }
}

/// The `Content-Length` a request announces, if it is a number.
pub fn announced_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads a JSON body of at most `limit` bytes: chunk by chunk, so a larger one is refused with
/// `413 M_TOO_LARGE` as soon as it passes the limit, with no more than `limit` bytes held.
pub(super) async fn read_json_body(
    body: Body,
    headers: &http::HeaderMap,
    limit: usize,
) -> Result<Bytes> {
    let mut stream = body.into_data_stream();
    let mut buffer = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Error::body_unreadable("Cannot read the request body", &e))?;
        if buffer.len() + chunk.len() > limit {
            return Err(refuse_too_large(Body::from_stream(stream), headers).await);
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// A JSON body read with [`JSON_BODY_LIMIT`] and the spec's errors, for the few endpoints that
/// have no ruma type (`/_synapse/admin/v1/register`).
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Error;

    async fn from_request(request: Request, _: &S) -> Result<Self> {
        let (parts, body) = request.into_parts();
        if announced_length(&parts.headers).is_some_and(|length| length > JSON_BODY_LIMIT as u64) {
            return Err(refuse_too_large(body, &parts.headers).await);
        }
        read_json_body(body, &parts.headers, JSON_BODY_LIMIT)
            .await
            .map(Self)
    }
}

/// `413 M_TOO_LARGE`, after reading and dropping the rest of the body (bounded; see
/// [`super::drain`]) so that the client gets to read the answer.
pub async fn refuse_too_large(body: Body, headers: &http::HeaderMap) -> Error {
    super::drain(body, headers).await;
    Error::too_large("The request body is too large")
}

/// `M_NOT_JSON` for a body that is not JSON at all, before ruma reports the finer `M_BAD_JSON`.
pub(super) fn check_is_json(bytes: &[u8]) -> Result<()> {
    // Like Synapse, the Content-Type is not trusted: clients such as curl send a form type.
    if !bytes.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::NotJson,
            "Content not JSON",
        ));
    }
    Ok(())
}

/// Bodies that make ruma's deserializers panic instead of failing, refused with the error the
/// spec asks for: ruma 0.17's `LoginInfo` indexes its object with `["type"]`, which panics when
/// the key is missing (`POST /login` with `{}`).
fn check_known_panics<T: 'static>(bytes: &[u8]) -> Result<()> {
    use std::any::TypeId;
    if TypeId::of::<T>() == TypeId::of::<ruma::api::client::session::login::v3::Request>() {
        #[derive(serde::Deserialize)]
        struct LoginType {
            #[serde(rename = "type")]
            login_type: Option<serde::de::IgnoredAny>,
        }
        // Any other shape is left for ruma to refuse.
        if let Ok(LoginType { login_type: None }) = serde_json::from_slice::<LoginType>(bytes) {
            return Err(Error::missing_param("Missing the login `type`"));
        }
    }
    Ok(())
}

/// Fields the spec makes optional but ruma's type requires, filled with Synapse's default
/// before ruma parses the body: `timeout` of a typing notice (30 s) when `typing` is true.
fn fill_optional_fields<T: 'static>(bytes: Bytes) -> Bytes {
    use std::any::TypeId;
    type Typing = ruma::api::client::typing::create_typing_event::v3::Request;
    if TypeId::of::<T>() != TypeId::of::<Typing>() {
        return bytes;
    }
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes) {
        Ok(mut body)
            if body.get("typing") == Some(&serde_json::Value::Bool(true))
                && !body.contains_key("timeout") =>
        {
            body.insert("timeout".to_owned(), 30_000.into());
            serde_json::to_vec(&body).map(Bytes::from).unwrap_or(bytes)
        }
        _ => bytes,
    }
}

/// ruma's parser for `T`, with a panic inside it (a ruma bug that [`check_known_panics`] does
/// not know yet) turned into `400 M_BAD_JSON` for this request instead of a `500`.
pub(super) fn parse_without_panics<T: IncomingRequest>(
    parts: http::request::Parts,
    body: &[u8],
    path_args: &[&str],
) -> Result<T> {
    let parse = std::panic::AssertUnwindSafe(|| {
        T::try_from_http_request(http::Request::from_parts(parts, body), path_args)
    });
    match std::panic::catch_unwind(parse) {
        Ok(parsed) => parsed.map_err(request_error),
        Err(_) => {
            tracing::warn!(
                endpoint = std::any::type_name::<T>(),
                "ruma's request parser panicked; answered 400"
            );
            Err(Error::bad_json("Invalid request body"))
        }
    }
}

fn request_error(error: FromHttpRequestError) -> Error {
    match error {
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            Error::bad_json(format!("Invalid request body: {e}"))
        }
        FromHttpRequestError::MethodMismatch { .. } => {
            Error::unrecognized(StatusCode::METHOD_NOT_ALLOWED, "Unrecognized request")
        }
        other => Error::invalid_param(format!("Invalid request: {other}")),
    }
}

/// Any ruma response, written as HTTP.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> From<T> for RumaResponse<T> {
    fn from(response: T) -> Self {
        Self(response)
    }
}

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match ruma::api::OutgoingResponseExt::try_into_http_response::<BytesMut>(self.0) {
            Ok(response) => response.map(|body| Body::from(body.freeze())),
            Err(e) => Error::internal(format!("cannot serialize response: {e}")).into_response(),
        }
    }
}

/// The handler result type.
pub type ApiResult<T> = Result<RumaResponse<T>>;

/// Marks routes registered with their last path parameter spelled out (empty: the segment left
/// out): the value the extractor gives that parameter.
#[derive(Clone, Copy)]
struct LastPathArg(&'static str);

/// Registers a handler on every path (stable, legacy `r0`, unstable) ruma knows for `Req`.
pub trait RumaRoutes {
    fn ruma<Req, H, X>(self, handler: H) -> Self
    where
        Req: IncomingRequest,
        H: Handler<X, AppState>,
        X: 'static;

    /// Also serves the paths with their last parameter missing (or empty), passing it as "".
    fn ruma_with_empty_last_arg<Req, H, X>(self, handler: H) -> Self
    where
        Req: IncomingRequest,
        H: Handler<X, AppState>,
        X: 'static;

    /// Serves the paths with their last parameter spelled `last`: for a method of `Req` on a
    /// path where a route with that literal segment already serves other methods (which would
    /// otherwise answer `405` for it, the literal segment winning over the parameter).
    fn ruma_with_fixed_last_arg<Req, H, X>(self, handler: H, last: &'static str) -> Self
    where
        Req: IncomingRequest,
        H: Handler<X, AppState>,
        X: 'static;
}

impl RumaRoutes for axum::Router<AppState> {
    fn ruma<Req, H, X>(mut self, handler: H) -> Self
    where
        Req: IncomingRequest,
        H: Handler<X, AppState>,
        X: 'static,
    {
        let filter =
            MethodFilter::try_from(Req::METHOD).expect("ruma endpoints use standard methods");
        #[cfg(test)]
        record_route(Req::METHOD, Req::PATH_BUILDER.all_paths().last());
        for path in Req::PATH_BUILDER.all_paths() {
            self = self.route(path, on(filter, handler.clone()));
        }
        self
    }

    fn ruma_with_empty_last_arg<Req, H, X>(self, handler: H) -> Self
    where
        Req: IncomingRequest,
        H: Handler<X, AppState>,
        X: 'static,
    {
        route_with_last_arg::<Req, H, X>(self, handler, "")
    }

    fn ruma_with_fixed_last_arg<Req, H, X>(self, handler: H, last: &'static str) -> Self
    where
        Req: IncomingRequest,
        H: Handler<X, AppState>,
        X: 'static,
    {
        route_with_last_arg::<Req, H, X>(self, handler, last)
    }
}

/// `Req`'s paths with their last parameter replaced by `last`, which the extractor then gives
/// the handler as that parameter ([`LastPathArg`]); an empty `last` serves the path without the
/// segment, with and without its trailing slash.
fn route_with_last_arg<Req, H, X>(
    mut router: axum::Router<AppState>,
    handler: H,
    last: &'static str,
) -> axum::Router<AppState>
where
    Req: IncomingRequest,
    H: Handler<X, AppState>,
    X: 'static,
{
    let filter = MethodFilter::try_from(Req::METHOD).expect("ruma endpoints use standard methods");
    for path in Req::PATH_BUILDER.all_paths() {
        let Some((prefix, _last)) = path.rsplit_once('/') else {
            continue;
        };
        let route = on(filter, handler.clone()).layer(axum::Extension(LastPathArg(last)));
        if last.is_empty() {
            #[cfg(test)]
            record_route(Req::METHOD, Some(prefix));
            router = router
                .route(prefix, route.clone())
                .route(&format!("{prefix}/"), route);
        } else {
            router = router.route(&format!("{prefix}/{last}"), route);
        }
    }
    router
}

/// Every ruma route registered so far, for the tests that send each one hostile requests.
#[cfg(test)]
pub static REGISTERED_ROUTES: std::sync::Mutex<Vec<(http::Method, &'static str)>> =
    std::sync::Mutex::new(Vec::new());

#[cfg(test)]
fn record_route(method: http::Method, path: Option<&'static str>) {
    let Some(path) = path else { return };
    let mut routes = REGISTERED_ROUTES.lock().unwrap();
    if !routes.iter().any(|(m, p)| *m == method && *p == path) {
        routes.push((method, path));
    }
}

#[cfg(test)]
mod tests {
    use ruma::api::client::session::login::v3::Request as Login;

    use super::*;

    fn errcode(error: &Error) -> (StatusCode, String) {
        match error {
            Error::Matrix { status, kind, .. } => (*status, kind.errcode().to_string()),
            other => panic!("not a Matrix error: {other}"),
        }
    }

    #[test]
    fn a_login_without_a_type_is_refused_before_ruma_sees_it() {
        let error = check_known_panics::<Login>(b"{}").unwrap_err();
        assert_eq!(
            errcode(&error),
            (StatusCode::BAD_REQUEST, "M_MISSING_PARAM".to_owned())
        );
        // Other shapes are ruma's to judge.
        assert!(check_known_panics::<Login>(br#"{"type": "m.login.token"}"#).is_ok());
        assert!(check_known_panics::<Login>(b"[]").is_ok());
    }

    #[test]
    fn a_panic_inside_rumas_parser_is_a_400_for_that_request() {
        let (parts, ()) = http::Request::post("/_matrix/client/v3/login")
            .body(())
            .unwrap()
            .into_parts();
        // Past `check_known_panics`: ruma 0.17's `LoginInfo` panics on an object without `type`.
        let error = parse_without_panics::<Login>(parts, b"{}", &[]).unwrap_err();
        assert_eq!(
            errcode(&error),
            (StatusCode::BAD_REQUEST, "M_BAD_JSON".to_owned())
        );
    }
}
