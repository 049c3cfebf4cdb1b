use axum::extract::State;
use ruma::{
    api::client::config::{
        get_global_account_data::v3 as get_global, get_room_account_data::v3 as get_room,
        set_global_account_data::v3 as set_global, set_room_account_data::v3 as set_room,
    },
    serde::Raw,
};
use serde_json::Value;

use crate::{
    error::{Error, Result},
    web::{
        AppState,
        ruma::{ApiResult, Ruma},
    },
};

fn content<T>(raw: &Raw<T>) -> Result<Value> {
    serde_json::from_str(raw.json().get())
        .map_err(|e| Error::bad_json(format!("Invalid content: {e}")))
}

fn raw<T>(value: Value) -> Result<Raw<T>> {
    Ok(Raw::from_json(
        serde_json::value::to_raw_value(&value).map_err(Error::internal)?,
    ))
}

fn own(sender: &ruma::UserId, target: &ruma::UserId) -> Result<()> {
    if sender == target {
        Ok(())
    } else {
        Err(Error::forbidden(
            "You can only access your own account data",
        ))
    }
}

/// `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn set_global(
    State(services): State<AppState>,
    request: Ruma<set_global::Request>,
) -> ApiResult<set_global::Response> {
    let sender = request.sender()?;
    own(&sender.user_id, &request.body.user_id)?;
    let data = content(&request.body.data)?;
    services
        .account_data
        .put(
            &services.rooms,
            &sender.user_id,
            None,
            &request.body.event_type.to_string(),
            &data,
        )
        .await?;
    Ok(set_global::Response::new().into())
}

/// `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn get_global(
    State(services): State<AppState>,
    request: Ruma<get_global::Request>,
) -> ApiResult<get_global::Response> {
    let sender = request.sender()?;
    own(&sender.user_id, &request.body.user_id)?;
    let data = services
        .account_data
        .get(&sender.user_id, None, &request.body.event_type.to_string())
        .await?;
    Ok(get_global::Response::new(raw(data)?).into())
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn set_room(
    State(services): State<AppState>,
    request: Ruma<set_room::Request>,
) -> ApiResult<set_room::Response> {
    let sender = request.sender()?;
    own(&sender.user_id, &request.body.user_id)?;
    let data = content(&request.body.data)?;
    let room = &request.body.room_id;
    services
        .account_data
        .put(
            &services.rooms,
            &sender.user_id,
            Some(room),
            &request.body.event_type.to_string(),
            &data,
        )
        .await?;
    Ok(set_room::Response::new().into())
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn get_room(
    State(services): State<AppState>,
    request: Ruma<get_room::Request>,
) -> ApiResult<get_room::Response> {
    let sender = request.sender()?;
    own(&sender.user_id, &request.body.user_id)?;
    let data = services
        .account_data
        .get(
            &sender.user_id,
            Some(&request.body.room_id),
            &request.body.event_type.to_string(),
        )
        .await?;
    Ok(get_room::Response::new(raw(data)?).into())
}
