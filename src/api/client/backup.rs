//! Server-side key backups: `/room_keys/version[/{version}]` and `/room_keys/keys[/{roomId}[/{sessionId}]]`.

use std::collections::BTreeMap;

use axum::{Router, extract::State};
use ruma::{
    OwnedRoomId,
    api::client::backup::{
        RoomKeyBackup, add_backup_keys::v3 as add_keys,
        add_backup_keys_for_room::v3 as add_room_keys,
        add_backup_keys_for_session::v3 as add_session_key,
        create_backup_version::v3 as create_version, delete_backup_keys::v3 as delete_keys,
        delete_backup_keys_for_room::v3 as delete_room_keys,
        delete_backup_keys_for_session::v3 as delete_session_key,
        delete_backup_version::v3 as delete_version, get_backup_info::v3 as get_version,
        get_backup_keys::v3 as get_keys, get_backup_keys_for_room::v3 as get_room_keys,
        get_backup_keys_for_session::v3 as get_session_key,
        get_latest_backup_info::v3 as get_latest_version,
        update_backup_version::v3 as update_version,
    },
};

use crate::{
    error::{Error, Result},
    services::e2ee::backup::{self, NewKey},
    storage::key_backup::KeyRow,
    web::{
        AppState,
        ruma::{ApiResult, Ruma, RumaRoutes},
    },
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma::<create_version::Request, _, _>(create_version)
        .ruma::<get_latest_version::Request, _, _>(get_latest_version)
        .ruma::<get_version::Request, _, _>(get_version)
        .ruma::<update_version::Request, _, _>(update_version)
        .ruma::<delete_version::Request, _, _>(delete_version)
        .ruma::<add_keys::Request, _, _>(add_keys)
        .ruma::<add_room_keys::Request, _, _>(add_room_keys)
        .ruma::<add_session_key::Request, _, _>(add_session_key)
        .ruma::<get_keys::Request, _, _>(get_keys)
        .ruma::<get_room_keys::Request, _, _>(get_room_keys)
        .ruma::<get_session_key::Request, _, _>(get_session_key)
        .ruma::<delete_keys::Request, _, _>(delete_keys)
        .ruma::<delete_room_keys::Request, _, _>(delete_room_keys)
        .ruma::<delete_session_key::Request, _, _>(delete_session_key)
}

/// `POST /_matrix/client/v3/room_keys/version`
async fn create_version(
    State(services): State<AppState>,
    request: Ruma<create_version::Request>,
) -> ApiResult<create_version::Response> {
    let sender = request.sender()?;
    let version =
        backup::create_version(&services, &sender.user_id, &request.body.algorithm).await?;
    Ok(create_version::Response::new(version).into())
}

/// `GET /_matrix/client/v3/room_keys/version`
async fn get_latest_version(
    State(services): State<AppState>,
    request: Ruma<get_latest_version::Request>,
) -> ApiResult<get_latest_version::Response> {
    let info = backup::version_info(&services, &request.sender()?.user_id, None).await?;
    Ok(
        get_latest_version::Response::new(info.algorithm, info.count, info.etag, info.version)
            .into(),
    )
}

/// `GET /_matrix/client/v3/room_keys/version/{version}`
async fn get_version(
    State(services): State<AppState>,
    request: Ruma<get_version::Request>,
) -> ApiResult<get_version::Response> {
    let sender = request.sender()?;
    let info =
        backup::version_info(&services, &sender.user_id, Some(&request.body.version)).await?;
    Ok(get_version::Response::new(info.algorithm, info.count, info.etag, info.version).into())
}

/// `PUT /_matrix/client/v3/room_keys/version/{version}`
async fn update_version(
    State(services): State<AppState>,
    request: Ruma<update_version::Request>,
) -> ApiResult<update_version::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    backup::update_version(&services, &sender.user_id, &body.version, &body.algorithm).await?;
    Ok(update_version::Response::new().into())
}

/// `DELETE /_matrix/client/v3/room_keys/version/{version}`
async fn delete_version(
    State(services): State<AppState>,
    request: Ruma<delete_version::Request>,
) -> ApiResult<delete_version::Response> {
    let sender = request.sender()?;
    backup::delete_version(&services, &sender.user_id, &request.body.version).await?;
    Ok(delete_version::Response::new().into())
}

/// `PUT /_matrix/client/v3/room_keys/keys`
async fn add_keys(
    State(services): State<AppState>,
    request: Ruma<add_keys::Request>,
) -> ApiResult<add_keys::Response> {
    let sender = request.sender()?.clone();
    let body = request.body;
    let keys = body
        .rooms
        .into_iter()
        .flat_map(|(room_id, room)| {
            room.sessions
                .into_iter()
                .map(move |(session_id, data)| NewKey {
                    room_id: room_id.to_string(),
                    session_id,
                    data,
                })
        })
        .collect();
    let (etag, count) = backup::put_keys(&services, &sender.user_id, &body.version, keys).await?;
    Ok(add_keys::Response::new(etag, count).into())
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}`
async fn add_room_keys(
    State(services): State<AppState>,
    request: Ruma<add_room_keys::Request>,
) -> ApiResult<add_room_keys::Response> {
    let sender = request.sender()?.clone();
    let body = request.body;
    let keys = body
        .sessions
        .into_iter()
        .map(|(session_id, data)| NewKey {
            room_id: body.room_id.to_string(),
            session_id,
            data,
        })
        .collect();
    let (etag, count) = backup::put_keys(&services, &sender.user_id, &body.version, keys).await?;
    Ok(add_room_keys::Response::new(etag, count).into())
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
async fn add_session_key(
    State(services): State<AppState>,
    request: Ruma<add_session_key::Request>,
) -> ApiResult<add_session_key::Response> {
    let sender = request.sender()?.clone();
    let body = request.body;
    let key = NewKey {
        room_id: body.room_id.to_string(),
        session_id: body.session_id,
        data: body.session_data,
    };
    let (etag, count) =
        backup::put_keys(&services, &sender.user_id, &body.version, vec![key]).await?;
    Ok(add_session_key::Response::new(etag, count).into())
}

/// Groups stored keys by room, as `GET /room_keys/keys` answers.
fn by_room(rows: Vec<KeyRow>) -> Result<BTreeMap<OwnedRoomId, RoomKeyBackup>> {
    let mut rooms: BTreeMap<OwnedRoomId, BTreeMap<_, _>> = BTreeMap::new();
    for row in rows {
        let room_id = OwnedRoomId::try_from(row.room_id.as_str()).map_err(Error::internal)?;
        let data = backup::to_backup_data(&row)?;
        rooms
            .entry(room_id)
            .or_default()
            .insert(row.session_id, data);
    }
    Ok(rooms
        .into_iter()
        .map(|(room, sessions)| (room, RoomKeyBackup::new(sessions)))
        .collect())
}

/// `GET /_matrix/client/v3/room_keys/keys`
async fn get_keys(
    State(services): State<AppState>,
    request: Ruma<get_keys::Request>,
) -> ApiResult<get_keys::Response> {
    let sender = request.sender()?;
    let rows = backup::get_keys(
        &services,
        &sender.user_id,
        &request.body.version,
        None,
        None,
    )
    .await?;
    Ok(get_keys::Response::new(by_room(rows)?).into())
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}`
async fn get_room_keys(
    State(services): State<AppState>,
    request: Ruma<get_room_keys::Request>,
) -> ApiResult<get_room_keys::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let rows = backup::get_keys(
        &services,
        &sender.user_id,
        &body.version,
        Some(body.room_id.as_str()),
        None,
    )
    .await?;
    let sessions = rows
        .iter()
        .map(|row| Ok((row.session_id.clone(), backup::to_backup_data(row)?)))
        .collect::<Result<_>>()?;
    Ok(get_room_keys::Response::new(sessions).into())
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
async fn get_session_key(
    State(services): State<AppState>,
    request: Ruma<get_session_key::Request>,
) -> ApiResult<get_session_key::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let rows = backup::get_keys(
        &services,
        &sender.user_id,
        &body.version,
        Some(body.room_id.as_str()),
        Some(&body.session_id),
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| Error::not_found("No backed-up key for this session"))?;
    Ok(get_session_key::Response::new(backup::to_backup_data(row)?).into())
}

/// `DELETE /_matrix/client/v3/room_keys/keys`
async fn delete_keys(
    State(services): State<AppState>,
    request: Ruma<delete_keys::Request>,
) -> ApiResult<delete_keys::Response> {
    let sender = request.sender()?;
    let (etag, count) = backup::delete_keys(
        &services,
        &sender.user_id,
        &request.body.version,
        None,
        None,
    )
    .await?;
    Ok(delete_keys::Response::new(etag, count).into())
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}`
async fn delete_room_keys(
    State(services): State<AppState>,
    request: Ruma<delete_room_keys::Request>,
) -> ApiResult<delete_room_keys::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let (etag, count) = backup::delete_keys(
        &services,
        &sender.user_id,
        &body.version,
        Some(body.room_id.as_str()),
        None,
    )
    .await?;
    Ok(delete_room_keys::Response::new(etag, count).into())
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
async fn delete_session_key(
    State(services): State<AppState>,
    request: Ruma<delete_session_key::Request>,
) -> ApiResult<delete_session_key::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let (etag, count) = backup::delete_keys(
        &services,
        &sender.user_id,
        &body.version,
        Some(body.room_id.as_str()),
        Some(&body.session_id),
    )
    .await?;
    Ok(delete_session_key::Response::new(etag, count).into())
}
