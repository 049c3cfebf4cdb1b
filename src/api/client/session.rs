use axum::extract::State;
use http::StatusCode;
use ruma::api::{
    client::{
        session::{
            get_login_types::v3::{
                self as get_login_types, ApplicationServiceLoginType, LoginType, PasswordLoginType,
            },
            login::v3::{self as login, LoginInfo},
            logout::v3 as logout,
            logout_all::v3 as logout_all,
        },
        uiaa::UserIdentifier,
    },
    error::ErrorKind,
};

use crate::{
    error::Error,
    web::{
        AppState,
        ruma::{ApiResult, Ruma},
    },
};

/// `GET /_matrix/client/v3/login`
pub async fn get_login_types(
    State(services): State<AppState>,
    _: Ruma<get_login_types::Request>,
) -> ApiResult<get_login_types::Response> {
    // `password_config.enabled: false` offers no password login (Synapse's rule).
    let mut types = if services.config.password_config.enabled {
        vec![LoginType::Password(PasswordLoginType::new())]
    } else {
        Vec::new()
    };
    if !services.appservices.all().is_empty() {
        types.push(LoginType::ApplicationService(
            ApplicationServiceLoginType::new(),
        ));
    }
    Ok(get_login_types::Response::new(types).into())
}

/// `POST /_matrix/client/v3/login`
#[allow(deprecated)] // the legacy top-level `user` field is still sent by some clients
pub async fn login(
    State(services): State<AppState>,
    request: Ruma<login::Request>,
) -> ApiResult<login::Response> {
    // An application service logs its users in with its token: no password to guess, and
    // no address limit for a bridge that logs in many users.
    if let LoginInfo::ApplicationService(info) = &request.body.login_info {
        let claimed = match (&info.identifier, &info.user) {
            (Some(UserIdentifier::Matrix(id)), _) => id.user.clone(),
            (None, Some(user)) => user.clone(),
            _ => return Err(Error::missing_param("Missing identifier")),
        };
        return login_ghost(&services, &request, &claimed).await;
    }
    let limits = &services.login_limits;
    limits.per_address.take(&request.client_ip)?;
    if !services.config.password_config.enabled
        && matches!(request.body.login_info, LoginInfo::Password(_))
    {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Unknown,
            "Password login has been disabled",
        ));
    }
    let LoginInfo::Password(password) = &request.body.login_info else {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Unknown,
            "Unsupported login type",
        ));
    };
    let claimed = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(id)), _) => id.user.as_str(),
        (None, Some(user)) => user.as_str(),
        (Some(_), _) => {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::Unknown,
                "Only m.id.user identifiers are supported",
            ));
        }
        (None, None) => return Err(Error::missing_param("Missing identifier")),
    };
    let invalid = || Error::forbidden("Invalid username or password");
    let user_id = services
        .users
        .parse_local_user(claimed)
        .map_err(|_| invalid())?;
    limits.per_account.take(&user_id.to_string())?;
    limits.failed_attempts.peek(&user_id.to_string())?;
    if !services
        .users
        .check_password(&user_id, &password.password)
        .await?
    {
        limits.failed_attempts.record(&user_id.to_string());
        return Err(invalid());
    }
    let body = request.body;
    let session = services
        .sessions
        .create(
            &user_id,
            body.device_id,
            body.initial_device_display_name,
            Some(request.client_ip),
        )
        .await?;
    tracing::info!(user = %user_id, device = %session.device_id, "logged in");
    Ok(login::Response::new(user_id, session.access_token, session.device_id).into())
}

/// `POST /login` with `m.login.application_service`: a new device of one of the service's users,
/// with the service's `as_token` as the proof (Synapse's checks and messages).
#[allow(deprecated)]
async fn login_ghost(
    services: &AppState,
    request: &Ruma<login::Request>,
    claimed: &str,
) -> ApiResult<login::Response> {
    let service = match &request.sender {
        None => return Err(Error::missing_token()),
        Some(identity) => identity
            .appservice
            .as_deref()
            .and_then(|id| services.appservices.by_id(id))
            .ok_or_else(Error::unknown_token)?
            .clone(),
    };
    let user_id = services
        .users
        .parse_local_user(claimed)
        .map_err(|_| Error::forbidden("Invalid username"))?;
    if !service.is_interested_in_user(user_id.as_str()) {
        return Err(Error::forbidden(
            "Application service cannot log in as this user",
        ));
    }
    if !services.users.exists(&user_id).await? {
        return Err(Error::forbidden("Invalid username"));
    }
    let body = &request.body;
    let session = services
        .sessions
        .create(
            &user_id,
            body.device_id.clone(),
            body.initial_device_display_name.clone(),
            Some(request.client_ip),
        )
        .await?;
    tracing::info!(user = %user_id, device = %session.device_id, "appservice login");
    Ok(login::Response::new(user_id, session.access_token, session.device_id).into())
}

/// `POST /_matrix/client/v3/logout`
pub async fn logout(
    State(services): State<AppState>,
    request: Ruma<logout::Request>,
) -> ApiResult<logout::Response> {
    services.sessions.logout(request.sender()?).await?;
    Ok(logout::Response::new().into())
}

/// `POST /_matrix/client/v3/logout/all`
pub async fn logout_all(
    State(services): State<AppState>,
    request: Ruma<logout_all::Request>,
) -> ApiResult<logout_all::Response> {
    services
        .sessions
        .logout_all(&request.sender()?.user_id)
        .await?;
    Ok(logout_all::Response::new().into())
}
