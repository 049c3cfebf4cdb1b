//! Endpoints for application services themselves (`/_matrix/client/v1/appservice/…`).

use std::time::Duration;

use axum::{Router, extract::State};
use ruma::api::client::appservice::request_ping::v1 as request_ping;

use crate::web::{
    AppState,
    ruma::{ApiResult, Ruma, RumaRoutes},
};

pub fn routes() -> Router<AppState> {
    Router::new().ruma::<request_ping::Request, _, _>(ping)
}

/// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`
async fn ping(
    State(services): State<AppState>,
    request: Ruma<request_ping::Request>,
) -> ApiResult<request_ping::Response> {
    let by = request.sender()?.appservice.as_deref();
    let body = &request.body;
    let duration: Duration = services
        .appservices
        .ping(by, &body.appservice_id, body.transaction_id.clone())
        .await?;
    Ok(request_ping::Response::new(duration).into())
}
