//! Room tags (`/user/{userId}/rooms/{roomId}/tags`), kept as `m.tag` room account data.

use axum::{Router, extract::State};
use ruma::{
    UserId,
    api::client::tag::{
        create_tag::v3 as create_tag, delete_tag::v3 as delete_tag, get_tags::v3 as get_tags,
    },
};

use crate::{
    error::{Error, Result},
    services::tags,
    web::{
        AppState,
        ruma::{ApiResult, Ruma, RumaRoutes},
    },
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<get_tags::Request, _, _>(get_tags)
        .ruma::<create_tag::Request, _, _>(create_tag)
        .ruma::<delete_tag::Request, _, _>(delete_tag)
}

fn own(sender: &UserId, target: &UserId) -> Result<()> {
    if sender == target {
        Ok(())
    } else {
        Err(Error::forbidden("You can only access your own tags"))
    }
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags`
async fn get_tags(
    State(services): State<AppState>,
    request: Ruma<get_tags::Request>,
) -> ApiResult<get_tags::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    own(&sender.user_id, &body.user_id)?;
    let tags = tags::tags(&services, &sender.user_id, &body.room_id).await?;
    Ok(get_tags::Response::new(tags).into())
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
async fn create_tag(
    State(services): State<AppState>,
    request: Ruma<create_tag::Request>,
) -> ApiResult<create_tag::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    own(&sender.user_id, &body.user_id)?;
    let info = serde_json::to_value(&body.tag_info).map_err(Error::internal)?;
    tags::set_tag(&services, &sender.user_id, &body.room_id, &body.tag, info).await?;
    Ok(create_tag::Response::new().into())
}

/// `DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
async fn delete_tag(
    State(services): State<AppState>,
    request: Ruma<delete_tag::Request>,
) -> ApiResult<delete_tag::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    own(&sender.user_id, &body.user_id)?;
    tags::delete_tag(&services, &sender.user_id, &body.room_id, &body.tag).await?;
    Ok(delete_tag::Response::new().into())
}
