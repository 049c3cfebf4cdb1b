//! What other servers ask about this one: its software version, its room aliases, its users'
//! profiles, and whose OpenID token a client showed them.

use axum::extract::State;
use ruma::{
    api::federation::{
        discovery::get_server_version::v1 as get_version,
        openid::get_openid_userinfo::v1 as openid_userinfo,
        query::{get_profile_information::v1 as get_profile, get_room_information::v1 as get_room},
    },
    profile::ProfileFieldName,
};

use crate::{
    error::Error,
    web::{
        AppState,
        ruma::{ApiResult, Ruma},
        server_auth::Federation,
    },
};

/// `GET /_matrix/federation/v1/version` (no signature required, as the spec says).
pub async fn version(
    _: State<AppState>,
    _: Ruma<get_version::Request>,
) -> ApiResult<get_version::Response> {
    let mut server = get_version::Server::new();
    server.name = Some("matrix-appliance".to_owned());
    server.version = Some(env!("CARGO_PKG_VERSION").to_owned());
    let mut response = get_version::Response::new();
    response.server = Some(server);
    Ok(response.into())
}

/// `GET /_matrix/federation/v1/query/directory?room_alias=`
pub async fn directory(
    State(services): State<AppState>,
    request: Federation<get_room::Request>,
) -> ApiResult<get_room::Response> {
    let alias = &request.body.room_alias;
    tracing::debug!(origin = %request.origin, %alias, "directory query");
    if alias.server_name() != services.server_name {
        return Err(Error::not_found(format!(
            "Room alias {alias} is not of this server"
        )));
    }
    let (room_id, servers) = services.directory.resolve_local_alias(alias).await?;
    Ok(get_room::Response::new(room_id, servers).into())
}

/// `GET /_matrix/federation/v1/query/profile?user_id=&field=`
pub async fn profile(
    State(services): State<AppState>,
    request: Federation<get_profile::Request>,
) -> ApiResult<get_profile::Response> {
    let body = &request.body;
    tracing::debug!(origin = %request.origin, user = %body.user_id, "profile query");
    if body.user_id.server_name() != services.server_name {
        return Err(Error::not_found("The user is not of this server"));
    }
    let profile = services
        .users
        .profile(&body.user_id, body.field.as_ref())
        .await?;
    // An extended field the user does not have is `404`, as Synapse answers (an unset display
    // name or avatar is an empty answer).
    if let Some(field) = &body.field
        && !matches!(
            field,
            ProfileFieldName::DisplayName | ProfileFieldName::AvatarUrl
        )
        && profile.get(field.as_str()).is_none()
    {
        return Err(Error::not_found("Profile was not found"));
    }
    let mut response = get_profile::Response::new();
    response.data = profile;
    Ok(response.into())
}

/// `GET /_matrix/federation/v1/openid/userinfo?access_token=`: not signed (the asker may be an
/// integration manager, not a homeserver); `{"sub": user_id}` for a valid token, else
/// `401 M_UNKNOWN_TOKEN`.
pub async fn openid_userinfo(
    State(services): State<AppState>,
    request: Ruma<openid_userinfo::Request>,
) -> ApiResult<openid_userinfo::Response> {
    let user_id = services
        .sessions
        .openid_token_user(&request.body.access_token)
        .await?;
    Ok(openid_userinfo::Response::new(user_id).into())
}
