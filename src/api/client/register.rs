use axum::extract::State;
use http::StatusCode;
use ruma::api::{
    client::account::{
        check_registration_token_validity::v1 as token_validity,
        get_username_availability::v3 as username_availability,
        register::{RegistrationKind, v3 as register},
    },
    error::ErrorKind,
};

use crate::{
    error::Error,
    services::{registration::consume_token, users::normalize_new_user_name},
    web::{
        AppState,
        ruma::{ApiResult, Ruma},
    },
};

/// `POST /_matrix/client/v3/register`
pub async fn register(
    State(services): State<AppState>,
    request: Ruma<register::Request>,
) -> ApiResult<register::Response> {
    let registration = &services.registration;
    if request.body.kind == RegistrationKind::Guest {
        return Err(Error::new(
            StatusCode::FORBIDDEN,
            ErrorKind::GuestAccessForbidden,
            "Guest access is disabled",
        ));
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
    // Check the name before the client goes through the auth stages, as Synapse does.
    let user_id = match &body.username {
        Some(name) => services.users.new_user_id(&normalize_new_user_name(name))?,
        None => services.users.new_user_id(&random_localpart())?,
    };
    if services.users.exists(&user_id).await? {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::UserInUse,
            "User ID already taken",
        ));
    }
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
    services
        .users
        .create(&user_id, Some(password), false, move |tx| match &token {
            Some(token) => consume_token(tx, token),
            None => Ok(()),
        })
        .await?;
    tracing::info!(user = %user_id, "registered");
    let mut response = register::Response::new(user_id.clone());
    if !body.inhibit_login {
        let session = services
            .sessions
            .create(
                &user_id,
                body.device_id,
                body.initial_device_display_name,
                Some(request.client_ip),
            )
            .await?;
        response.access_token = Some(session.access_token);
        response.device_id = Some(session.device_id);
    }
    Ok(response.into())
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
