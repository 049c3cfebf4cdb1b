use std::time::Duration;

use axum::extract::State;
use ruma::api::client::{
    filter::{create_filter::v3 as create_filter, get_filter::v3 as get_filter},
    sync::sync_events::v3 as sync_events,
};

use crate::{
    error::Error,
    services::sync::{self, SyncRequest, SyncToken},
    web::{
        AppState,
        ruma::{ApiResult, Ruma},
    },
};

/// `GET /_matrix/client/v3/sync`
pub async fn sync_events(
    State(services): State<AppState>,
    request: Ruma<sync_events::Request>,
) -> ApiResult<sync_events::Response> {
    let sender = request.sender()?.clone();
    let body = request.body;
    let filter = sync::resolve_filter(&services, &sender.user_id, body.filter).await?;
    let since = body
        .since
        .as_deref()
        .map(str::parse::<SyncToken>)
        .transpose()?;
    services
        .presence
        .on_sync(&services.rooms, &sender.user_id, &body.set_presence)
        .await?;
    let response = sync::sync(
        &services,
        SyncRequest {
            user: sender.user_id,
            device: sender.device_id.to_string(),
            since,
            full_state: body.full_state,
            timeout: body.timeout.unwrap_or(Duration::ZERO),
            filter,
        },
    )
    .await?;
    Ok(response.into())
}

/// `POST /_matrix/client/v3/user/{userId}/filter`
pub async fn create_filter(
    State(services): State<AppState>,
    request: Ruma<create_filter::Request>,
) -> ApiResult<create_filter::Response> {
    let sender = request.sender()?;
    if request.body.user_id != sender.user_id {
        return Err(Error::forbidden("You can only create filters for yourself"));
    }
    let json = serde_json::to_string(&request.body.filter).map_err(Error::internal)?;
    let id = services
        .account_data
        .create_filter(&sender.user_id, json)
        .await?;
    Ok(create_filter::Response::new(id.to_string()).into())
}

/// `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
pub async fn get_filter(
    State(services): State<AppState>,
    request: Ruma<get_filter::Request>,
) -> ApiResult<get_filter::Response> {
    let sender = request.sender()?;
    if request.body.user_id != sender.user_id {
        return Err(Error::forbidden("You can only read your own filters"));
    }
    let id: i64 = request
        .body
        .filter_id
        .parse()
        .map_err(|_| Error::not_found("No such filter"))?;
    let json = services.account_data.filter(&sender.user_id, id).await?;
    Ok(get_filter::Response::new(serde_json::from_str(&json).map_err(Error::internal)?).into())
}
