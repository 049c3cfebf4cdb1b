//! Abuse reports: `POST /rooms/{roomId}/report/{eventId}` and `POST /rooms/{roomId}/report`,
//! stored for the admins (`services::reports`).

use axum::{Router, extract::State};
use ruma::api::client::room::{report_content::v3 as report_event, report_room::v3 as report_room};

use crate::web::{
    AppState,
    ruma::{ApiResult, Ruma, RumaRoutes},
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<report_event::Request, _, _>(report_event)
        .ruma::<report_room::Request, _, _>(report_room)
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
