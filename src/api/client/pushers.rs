//! Pushers (`/pushers`, `/pushers/set`) and `/notifications`; the logic is
//! `services/pushers/`.

use axum::{Router, extract::State};
use ruma::api::client::push::{
    get_notifications::v3 as get_notifications, get_pushers::v3 as get_pushers,
    set_pusher::v3 as set_pusher,
};

use crate::{
    services::pushers,
    web::{
        AppState,
        ruma::{ApiResult, Ruma, RumaRoutes},
    },
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<get_pushers::Request, _, _>(get_pushers)
        .ruma::<set_pusher::Request, _, _>(set_pusher)
        .ruma::<get_notifications::Request, _, _>(get_notifications)
}

/// `GET /_matrix/client/v3/pushers`
async fn get_pushers(
    State(services): State<AppState>,
    request: Ruma<get_pushers::Request>,
) -> ApiResult<get_pushers::Response> {
    let sender = request.sender()?;
    let pushers = pushers::list(&services, &sender.user_id).await?;
    Ok(get_pushers::Response::new(pushers).into())
}

/// `POST /_matrix/client/v3/pushers/set`
async fn set_pusher(
    State(services): State<AppState>,
    request: Ruma<set_pusher::Request>,
) -> ApiResult<set_pusher::Response> {
    let sender = request.sender()?.clone();
    pushers::set(&services, &sender, request.body.action).await?;
    Ok(set_pusher::Response::new().into())
}

/// `GET /_matrix/client/v3/notifications`
async fn get_notifications(
    State(services): State<AppState>,
    request: Ruma<get_notifications::Request>,
) -> ApiResult<get_notifications::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let page = pushers::notifications(
        &services,
        &sender.user_id,
        body.from.as_deref(),
        body.limit,
        body.only.as_deref(),
    )
    .await?;
    let mut response = get_notifications::Response::new(page.notifications);
    response.next_token = page.next_token;
    Ok(response.into())
}
