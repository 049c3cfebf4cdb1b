//! Third-party identifiers (e-mail addresses, phone numbers) and third-party networks.
//!
//! The appliance sends no mail and no SMS and never talks to identity servers, so an account has
//! no 3PIDs and none can be added or bound: the endpoints answer with the errcodes Synapse gives
//! when e-mail or phone numbers are not configured, which clients show as "not supported here".
//! Third-party networks come from bridges (application services) that declare `protocols`:
//! `services::thirdparty` asks them.

use axum::{Router, extract::State};
use http::StatusCode;
use ruma::api::{
    client::{
        account::{
            ThirdPartyIdRemovalStatus, add_3pid::v3 as add_3pid, bind_3pid::v3 as bind_3pid,
            delete_3pid::v3 as delete_3pid, get_3pids::v3 as get_3pids,
            request_3pid_management_token_via_email::v3 as email_token,
            request_3pid_management_token_via_msisdn::v3 as msisdn_token,
            unbind_3pid::v3 as unbind_3pid,
        },
        thirdparty::{
            get_location_for_protocol::v3 as location_for_protocol,
            get_location_for_room_alias::v3 as location_for_alias,
            get_protocol::v3 as get_protocol, get_protocols::v3 as get_protocols,
            get_user_for_protocol::v3 as user_for_protocol,
            get_user_for_user_id::v3 as user_for_user_id,
        },
    },
    error::ErrorKind,
};

use crate::{
    error::Error,
    services::thirdparty,
    web::{
        AppState,
        ruma::{ApiResult, Ruma, RumaRoutes},
    },
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<get_3pids::Request, _, _>(get_3pids)
        .ruma::<email_token::Request, _, _>(request_email_token)
        .ruma::<msisdn_token::Request, _, _>(request_msisdn_token)
        .ruma::<add_3pid::Request, _, _>(add_3pid)
        .ruma::<bind_3pid::Request, _, _>(bind_3pid)
        .ruma::<unbind_3pid::Request, _, _>(unbind_3pid)
        .ruma::<delete_3pid::Request, _, _>(delete_3pid)
        .ruma::<get_protocols::Request, _, _>(get_protocols)
        .ruma::<get_protocol::Request, _, _>(get_protocol)
        .ruma::<user_for_protocol::Request, _, _>(user_for_protocol)
        .ruma::<location_for_protocol::Request, _, _>(location_for_protocol)
        .ruma::<user_for_user_id::Request, _, _>(user_for_user_id)
        .ruma::<location_for_alias::Request, _, _>(location_for_alias)
}

/// `GET /_matrix/client/v3/account/3pid`: no account has any.
async fn get_3pids(request: Ruma<get_3pids::Request>) -> ApiResult<get_3pids::Response> {
    request.sender()?;
    Ok(get_3pids::Response::new(Vec::new()).into())
}

/// `POST /_matrix/client/v3/account/3pid/email/requestToken`: there is no mail to send it with
/// (Synapse's answer without an e-mail configuration).
async fn request_email_token(
    _request: Ruma<email_token::Request>,
) -> ApiResult<email_token::Response> {
    Err(Error::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::ThreepidMediumNotSupported,
        "Adding an email to your account is disabled on this server: it sends no mail",
    ))
}

/// `POST /_matrix/client/v3/account/3pid/msisdn/requestToken`: no SMS either.
async fn request_msisdn_token(
    _request: Ruma<msisdn_token::Request>,
) -> ApiResult<msisdn_token::Response> {
    Err(Error::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::ThreepidMediumNotSupported,
        "Adding phone numbers to user account is not supported by this homeserver",
    ))
}

/// `POST /_matrix/client/v3/account/3pid/add`: Synapse's answer for a session it has not
/// validated, which here is every session (no token is ever sent). Refused before the
/// user-interactive auth, so that nobody types a password for nothing.
async fn add_3pid(request: Ruma<add_3pid::Request>) -> ApiResult<add_3pid::Response> {
    request.sender()?;
    Err(Error::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::ThreepidAuthFailed,
        "No validated 3pid session found: this server does not verify e-mail or phone numbers",
    ))
}

/// `POST /_matrix/client/v3/account/3pid/bind`: the server does not talk to identity servers
/// (the errcode Synapse gives when 3PID changes are disabled).
async fn bind_3pid(request: Ruma<bind_3pid::Request>) -> ApiResult<bind_3pid::Response> {
    request.sender()?;
    Err(Error::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::Forbidden,
        "This server does not use identity servers: 3PIDs cannot be bound",
    ))
}

/// `POST /_matrix/client/v3/account/3pid/unbind`: nothing was ever bound; `no-support` is the
/// spec's answer when the homeserver cannot unbind from an identity server.
async fn unbind_3pid(request: Ruma<unbind_3pid::Request>) -> ApiResult<unbind_3pid::Response> {
    request.sender()?;
    Ok(unbind_3pid::Response::new(ThirdPartyIdRemovalStatus::NoSupport).into())
}

/// `POST /_matrix/client/v3/account/3pid/delete`: the account has no such 3PID, so there is
/// nothing to delete, and no identity server to unbind it from (Synapse answers the same).
async fn delete_3pid(request: Ruma<delete_3pid::Request>) -> ApiResult<delete_3pid::Response> {
    request.sender()?;
    Ok(delete_3pid::Response::new(ThirdPartyIdRemovalStatus::NoSupport).into())
}

/// `GET /_matrix/client/v3/thirdparty/protocols`
async fn get_protocols(
    State(services): State<AppState>,
    request: Ruma<get_protocols::Request>,
) -> ApiResult<get_protocols::Response> {
    request.sender()?;
    let protocols = thirdparty::protocols(&services.appservices, None).await;
    Ok(get_protocols::Response::new(protocols).into())
}

/// `GET /_matrix/client/v3/thirdparty/protocol/{protocol}`: `404` for an unknown protocol.
async fn get_protocol(
    State(services): State<AppState>,
    request: Ruma<get_protocol::Request>,
) -> ApiResult<get_protocol::Response> {
    request.sender()?;
    let name = &request.body.protocol;
    let protocol = thirdparty::protocols(&services.appservices, Some(name))
        .await
        .remove(name)
        .ok_or_else(|| Error::not_found("Unknown protocol"))?;
    Ok(get_protocol::Response::new(protocol).into())
}

/// `GET /_matrix/client/v3/thirdparty/user/{protocol}`: the spec's `404` when nothing matches.
async fn user_for_protocol(
    State(services): State<AppState>,
    request: Ruma<user_for_protocol::Request>,
) -> ApiResult<user_for_protocol::Response> {
    request.sender()?;
    let body = &request.body;
    let users = thirdparty::users(&services.appservices, &body.protocol, &body.fields).await;
    found(users, "No users were found").map(|u| user_for_protocol::Response::new(u).into())
}

/// `GET /_matrix/client/v3/thirdparty/location/{protocol}`
async fn location_for_protocol(
    State(services): State<AppState>,
    request: Ruma<location_for_protocol::Request>,
) -> ApiResult<location_for_protocol::Response> {
    request.sender()?;
    let body = &request.body;
    let locations =
        thirdparty::locations(&services.appservices, &body.protocol, &body.fields).await;
    found(locations, "No portal rooms were found")
        .map(|l| location_for_protocol::Response::new(l).into())
}

/// `GET /_matrix/client/v3/thirdparty/user?userid=…`
async fn user_for_user_id(
    State(services): State<AppState>,
    request: Ruma<user_for_user_id::Request>,
) -> ApiResult<user_for_user_id::Response> {
    request.sender()?;
    let users = thirdparty::users_for_matrix_id(&services.appservices, &request.body.userid).await;
    found(users, "No users were found").map(|u| user_for_user_id::Response::new(u).into())
}

/// `GET /_matrix/client/v3/thirdparty/location?alias=…`
async fn location_for_alias(
    State(services): State<AppState>,
    request: Ruma<location_for_alias::Request>,
) -> ApiResult<location_for_alias::Response> {
    request.sender()?;
    let locations =
        thirdparty::locations_for_alias(&services.appservices, &request.body.alias).await;
    found(locations, "No portal rooms were found")
        .map(|l| location_for_alias::Response::new(l).into())
}

/// The spec answers an empty lookup with `404 M_NOT_FOUND`, not an empty list.
fn found<T>(results: Vec<T>, message: &'static str) -> Result<Vec<T>, Error> {
    if results.is_empty() {
        Err(Error::not_found(message))
    } else {
        Ok(results)
    }
}
