//! Abuse reports: `POST /rooms/{roomId}/report/{eventId}`, `POST /rooms/{roomId}/report` and
//! `POST /users/{userId}/report`, stored for the admins (`services::reports`).

use axum::{Router, extract::State};
use ruma::api::client::{
    reporting::report_user::v3 as report_user,
    room::{report_content::v3 as report_event, report_room::v3 as report_room},
};

use crate::web::{
    AppState,
    ruma::{ApiResult, Ruma, RumaRoutes},
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<report_event::Request, _, _>(report_event)
        .ruma::<report_room::Request, _, _>(report_room)
        .ruma::<report_user::Request, _, _>(report_user)
}

/// `POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}`
async fn report_event(
    State(services): State<AppState>,
    request: Ruma<report_event::Request>,
) -> ApiResult<report_event::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    services
        .reports
        .report_event(
            &services.rooms,
            &sender.user_id,
            &body.room_id,
            &body.event_id,
            body.reason.clone(),
        )
        .await?;
    Ok(report_event::Response::new().into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/report`
async fn report_room(
    State(services): State<AppState>,
    request: Ruma<report_room::Request>,
) -> ApiResult<report_room::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    services
        .reports
        .report_room(
            &services.rooms,
            &sender.user_id,
            &body.room_id,
            body.reason.clone(),
        )
        .await?;
    Ok(report_room::Response::new().into())
}

/// `POST /_matrix/client/v3/users/{userId}/report`: `200 {}` whether or not the user exists.
async fn report_user(
    State(services): State<AppState>,
    request: Ruma<report_user::Request>,
) -> ApiResult<report_user::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    services
        .reports
        .report_user(&sender.user_id, &body.user_id, body.reason.clone())
        .await?;
    Ok(report_user::Response::new().into())
}
