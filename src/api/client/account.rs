use axum::extract::State;
use ruma::api::client::{
    account::{
        ThirdPartyIdRemovalStatus, change_password::v3 as change_password,
        deactivate::v3 as deactivate, whoami::v3 as whoami,
    },
    uiaa::{AuthFlow, AuthType},
};

use crate::web::{
    AppState,
    ruma::{ApiResult, Ruma},
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
    let mut response = whoami::Response::new(sender.user_id.clone(), false);
    response.device_id = Some(sender.device_id.clone());
    Ok(response.into())
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
        )
        .await?;
    services.users.deactivate(&sender.user_id).await?;
    tracing::info!(user = %sender.user_id, "account deactivated");
    Ok(deactivate::Response::new(ThirdPartyIdRemovalStatus::NoSupport).into())
}
