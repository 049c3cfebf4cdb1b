use axum::extract::State;
use ruma::api::client::{
    account::{
        ThirdPartyIdRemovalStatus, change_password::v3 as change_password,
        deactivate::v3 as deactivate, request_openid_token::v3 as openid, whoami::v3 as whoami,
    },
    uiaa::{AuthFlow, AuthType},
};

use crate::{
    error::Error,
    services::sessions::OPENID_TOKEN_LIFETIME,
    web::{
        AppState,
        ruma::{ApiResult, Ruma},
    },
};

fn password_flow() -> Vec<AuthFlow> {
    vec![AuthFlow::new(vec![AuthType::Password])]
}

/// `GET /_matrix/client/v3/account/whoami`
pub async fn whoami(
    State(_): State<AppState>,
    request: Ruma<whoami::Request>,
) -> ApiResult<whoami::Response> {
    let sender = request.sender()?;
    let mut response = whoami::Response::new(sender.user_id.clone(), sender.is_guest);
    response.device_id = Some(sender.device_id.clone());
    Ok(response.into())
}

/// `POST /_matrix/client/v3/user/{userId}/openid/request_token`: a token another server trades
/// for the user's ID at `/_matrix/federation/v1/openid/userinfo` (only for oneself, as Synapse).
pub async fn request_openid_token(
    State(services): State<AppState>,
    request: Ruma<openid::Request>,
) -> ApiResult<openid::Response> {
    let sender = request.sender()?;
    if request.body.user_id != sender.user_id {
        return Err(Error::forbidden("Cannot request tokens for other users."));
    }
    let token = services
        .sessions
        .request_openid_token(&sender.user_id)
        .await?;
    Ok(openid::Response::new(
        token,
        ruma::authentication::TokenType::Bearer,
        services.server_name.clone(),
        OPENID_TOKEN_LIFETIME,
    )
    .into())
}

/// `POST /_matrix/client/v3/account/password`
pub async fn change_password(
    State(services): State<AppState>,
    request: Ruma<change_password::Request>,
) -> ApiResult<change_password::Response> {
    let sender = request.sender()?;
    services
        .uiaa
        .authenticate(
            &services,
            request.body.auth.as_ref(),
            &password_flow(),
            Some(&sender.user_id),
            &request.uia_operation(),
        )
        .await?;
    services
        .users
        .set_password(
            &sender.user_id,
            request.body.new_password.clone(),
            request.body.logout_devices,
            Some(sender.device_id.to_string()),
        )
        .await?;
    tracing::info!(user = %sender.user_id, "password changed");
    Ok(change_password::Response::new().into())
}

/// `POST /_matrix/client/v3/account/deactivate`
pub async fn deactivate(
    State(services): State<AppState>,
    request: Ruma<deactivate::Request>,
) -> ApiResult<deactivate::Response> {
    let sender = request.sender()?;
    services
        .uiaa
        .authenticate(
            &services,
            request.body.auth.as_ref(),
            &password_flow(),
            Some(&sender.user_id),
            &request.uia_operation(),
        )
        .await?;
    services.users.deactivate(&sender.user_id).await?;
    tracing::info!(user = %sender.user_id, "account deactivated");
    Ok(deactivate::Response::new(ThirdPartyIdRemovalStatus::NoSupport).into())
}
