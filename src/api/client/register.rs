use std::net::IpAddr;

use axum::extract::State;
use http::StatusCode;
use ruma::{
    OwnedDeviceId, OwnedUserId,
    api::{
        client::account::{
            check_registration_token_validity::v1 as token_validity,
            get_username_availability::v3 as username_availability,
            register::{LoginType, RegistrationKind, v3 as register},
        },
        error::ErrorKind,
    },
};

use crate::{
    error::Error,
    services::{registration::consume_token, users::normalize_new_user_name},
    web::{
        AppState,
        ruma::{ApiResult, Ruma},
    },
};

/// `POST /_matrix/client/v3/register`: a full account, a guest account (`kind=guest`), or a
/// guest's upgrade to a full account (`guest_access_token`).
pub async fn register(
    State(services): State<AppState>,
    request: Ruma<register::Request>,
) -> ApiResult<register::Response> {
    let registration = &services.registration;
    if request.body.login_type == Some(LoginType::ApplicationService) {
        return register_ghost(services, request).await;
    }
    if request.body.kind == RegistrationKind::Guest {
        return register_guest(&services, request).await;
    }
    if !registration.is_open() {
        return Err(Error::forbidden("Registration has been disabled"));
    }
    services.registration_limit.peek(&request.client_ip)?;
    let operation = request.uia_operation();
    let body = request.body;
    // The password first, then the name, both before the auth stages (Synapse's order): no
    // registration token is spent on an account that cannot be made.
    if let Some(password) = &body.password {
        services.users.check_password_policy(password)?;
    }
    let guest = match &body.guest_access_token {
        Some(token) => Some(upgradable_guest(&services, token, body.username.as_deref()).await?),
        None => None,
    };
    // Check the name before the client goes through the auth stages, as Synapse does.
    let user_id = match (&guest, &body.username) {
        (Some(guest), _) => guest.clone(),
        (None, Some(name)) => services.users.new_user_id(&normalize_new_user_name(name))?,
        (None, None) => services.users.new_user_id(&random_localpart())?,
    };
    if guest.is_none() && services.users.exists(&user_id).await? {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::UserInUse,
            "User ID already taken",
        ));
    }
    services
        .appservices
        .check_user_not_exclusive(&user_id, None)?;
    let completed = services
        .uiaa
        .authenticate(
            &services,
            body.auth.as_ref(),
            &registration.flows(),
            None,
            &operation,
        )
        .await?;
    let Some(password) = body.password else {
        return Err(Error::missing_param("A password is required"));
    };
    services.registration_limit.take(&request.client_ip)?;
    let token = completed.registration_token;
    let spend_token = move |tx: &rusqlite::Transaction<'_>| match &token {
        Some(token) => consume_token(tx, token),
        None => Ok(()),
    };
    if guest.is_some() {
        services
            .users
            .upgrade_guest(&user_id, password, spend_token)
            .await?;
        tracing::info!(user = %user_id, "guest upgraded to a full account");
    } else {
        services
            .users
            .create(&user_id, Some(password), false, spend_token)
            .await?;
        tracing::info!(user = %user_id, "registered");
    }
    let session = if body.inhibit_login {
        None
    } else {
        Some((body.device_id, body.initial_device_display_name))
    };
    registered(&services, user_id, session, request.client_ip).await
}

/// `POST /register` with `type: m.login.application_service`: an application service makes one
/// of its users (no auth stages, no password), even while registration is closed.
async fn register_ghost(
    services: AppState,
    request: Ruma<register::Request>,
) -> ApiResult<register::Response> {
    let service = match &request.sender {
        None => return Err(Error::missing_token()),
        Some(identity) => identity
            .appservice
            .as_deref()
            .and_then(|id| services.appservices.by_id(id))
            .ok_or_else(Error::unknown_token)?
            .clone(),
    };
    let body = request.body;
    let Some(name) = &body.username else {
        return Err(Error::missing_param(
            "An application service must name the user",
        ));
    };
    let user_id = services.users.new_user_id(&normalize_new_user_name(name))?;
    if !service.is_interested_in_user(user_id.as_str()) {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Exclusive,
            "Invalid user localpart for this application service.",
        ));
    }
    services
        .appservices
        .check_user_not_exclusive(&user_id, Some(&service))?;
    if services.users.exists(&user_id).await? {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::UserInUse,
            "User ID already taken",
        ));
    }
    services
        .users
        .create(&user_id, None, false, |_| Ok(()))
        .await?;
    tracing::info!(user = %user_id, appservice = %service.registration.id, "registered");
    let session = if body.inhibit_login {
        None
    } else {
        Some((body.device_id, body.initial_device_display_name))
    };
    registered(&services, user_id, session, request.client_ip).await
}

/// `register?kind=guest`, with `allow_guest_access`: a new guest account and its one device.
/// The spec has every parameter but `initial_device_display_name` ignored, and the server pick
/// the device ID; registration need not be open (Synapse's rule).
async fn register_guest(
    services: &AppState,
    request: Ruma<register::Request>,
) -> ApiResult<register::Response> {
    if !services.config.allow_guest_access {
        return Err(Error::new(
            StatusCode::FORBIDDEN,
            ErrorKind::GuestAccessForbidden,
            "Guest access is disabled",
        ));
    }
    services.registration_limit.take(&request.client_ip)?;
    let user_id = services.users.create_guest().await?;
    tracing::info!(user = %user_id, "guest registered");
    // The server picks a guest's device ID (the spec ignores the client's).
    let session = Some((None, request.body.initial_device_display_name));
    registered(services, user_id, session, request.client_ip).await
}

/// The answer to a registration: the new user, and unless the client inhibited login
/// (`session` is `None`), a session on a new device (the client's device ID, if it named one,
/// and its display name).
async fn registered(
    services: &AppState,
    user_id: OwnedUserId,
    session: Option<(Option<OwnedDeviceId>, Option<String>)>,
    client_ip: IpAddr,
) -> ApiResult<register::Response> {
    let mut response = register::Response::new(user_id.clone());
    if let Some((device_id, display_name)) = session {
        let session = services
            .sessions
            .create(&user_id, device_id, display_name, Some(client_ip))
            .await?;
        response.access_token = Some(session.access_token);
        response.device_id = Some(session.device_id);
    }
    Ok(response.into())
}

/// The guest whose access token an upgrade carries: a valid token of a guest account, and the
/// `username` (which the spec requires, and Synapse does not) that guest's own localpart.
async fn upgradable_guest(
    services: &AppState,
    token: &str,
    username: Option<&str>,
) -> Result<OwnedUserId, Error> {
    let guest = services.sessions.authenticate(token, None).await?;
    let same_name =
        username.is_none_or(|name| normalize_new_user_name(name) == guest.user_id.localpart());
    if !guest.is_guest || !same_name {
        return Err(Error::forbidden(
            "Cannot register taken user ID without valid guest credentials for that user.",
        ));
    }
    Ok(guest.user_id)
}

/// A user name for clients that register without choosing one.
fn random_localpart() -> String {
    format!("user{}", hex::encode(rand::random::<[u8; 5]>()))
}

/// `GET /_matrix/client/v3/register/available`
pub async fn username_available(
    State(services): State<AppState>,
    request: Ruma<username_availability::Request>,
) -> ApiResult<username_availability::Response> {
    services.registration_limit.peek(&request.client_ip)?;
    let user_id = services
        .users
        .new_user_id(&normalize_new_user_name(&request.body.username))?;
    if services.users.exists(&user_id).await? {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::UserInUse,
            "User ID already taken",
        ));
    }
    services
        .appservices
        .check_user_not_exclusive(&user_id, None)?;
    Ok(username_availability::Response::new(true).into())
}

/// `GET /_matrix/client/v1/register/m.login.registration_token/validity`
pub async fn registration_token_validity(
    State(services): State<AppState>,
    request: Ruma<token_validity::Request>,
) -> ApiResult<token_validity::Response> {
    if !services.registration.requires_token() {
        return Err(Error::forbidden(
            "Registration tokens are not in use on this server",
        ));
    }
    services.registration_limit.take(&request.client_ip)?;
    let valid = services
        .registration
        .token_is_valid(&request.body.token)
        .await?;
    Ok(token_validity::Response::new(valid).into())
}
