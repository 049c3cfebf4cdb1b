//! Presence (`/presence/{userId}/status`).

use axum::{Router, extract::State};
use ruma::api::client::presence::{
    get_presence::v3 as get_presence, set_presence::v3 as set_presence,
};

use crate::{
    error::Error,
    web::{
        AppState,
        ruma::{ApiResult, Ruma, RumaRoutes},
    },
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<get_presence::Request, _, _>(get_presence)
        .ruma::<set_presence::Request, _, _>(set_presence)
}

/// `PUT /_matrix/client/v3/presence/{userId}/status`
async fn set_presence(
    State(services): State<AppState>,
    request: Ruma<set_presence::Request>,
) -> ApiResult<set_presence::Response> {
    let sender = request.sender()?.user_id.clone();
    let body = request.body;
    if body.user_id != sender {
        return Err(Error::forbidden("You can only set your own presence"));
    }
    services
        .presence
        .set(&services.rooms, &sender, &body.presence, body.status_msg)
        .await?;
    Ok(set_presence::Response::new().into())
}

/// `GET /_matrix/client/v3/presence/{userId}/status`
async fn get_presence(
    State(services): State<AppState>,
    request: Ruma<get_presence::Request>,
) -> ApiResult<get_presence::Response> {
    let sender = request.sender()?;
    let view = services
        .presence
        .get(&sender.user_id, &request.body.user_id)
        .await?;
    let mut response = get_presence::Response::new(view.state);
    response.status_msg = view.status_msg;
    response.last_active_ago = view.last_active_ago;
    response.currently_active = view.currently_active;
    Ok(response.into())
}
