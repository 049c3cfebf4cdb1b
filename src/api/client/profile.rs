use axum::extract::State;
use ruma::{
    UserId,
    api::client::profile::{
        delete_profile_field::v3 as delete_profile_field, get_avatar_url::v3 as get_avatar_url,
        get_display_name::v3 as get_display_name, get_profile::v3 as get_profile,
        get_profile_field::v3 as get_profile_field, set_avatar_url::v3 as set_avatar_url,
        set_display_name::v3 as set_display_name, set_profile_field::v3 as set_profile_field,
    },
    profile::{AvatarUrl, DisplayName, ProfileFieldName, ProfileFieldValue},
};

use crate::{
    error::{Error, Result},
    services::{rooms::INLINE_PROFILE_ROOMS, users::check_profile_field_name},
    web::{
        AppState,
        ruma::{ApiResult, Ruma},
    },
};

/// `GET /_matrix/client/v3/profile/{userId}`: a local user's, or asked of the user's server.
pub async fn get_profile(
    State(services): State<AppState>,
    request: Ruma<get_profile::Request>,
) -> ApiResult<get_profile::Response> {
    crate::services::appservice::ensure_user(&services, &request.body.user_id).await?;
    let mut response = get_profile::Response::new();
    response.data = services.users.profile(&request.body.user_id, None).await?;
    Ok(response.into())
}

/// `GET /_matrix/client/v3/profile/{userId}/displayname`
pub async fn get_display_name(
    State(services): State<AppState>,
    request: Ruma<get_display_name::Request>,
) -> ApiResult<get_display_name::Response> {
    crate::services::appservice::ensure_user(&services, &request.body.user_id).await?;
    let profile = services
        .users
        .profile(&request.body.user_id, Some(&ProfileFieldName::DisplayName))
        .await?;
    let name = profile
        .get_static::<DisplayName>()
        .map_err(|e| Error::internal(format!("bad display name: {e}")))?;
    Ok(get_display_name::Response::new(name).into())
}

/// `PUT /_matrix/client/v3/profile/{userId}/displayname`
pub async fn set_display_name(
    State(services): State<AppState>,
    request: Ruma<set_display_name::Request>,
) -> ApiResult<set_display_name::Response> {
    let sender = request.sender()?;
    if request.body.user_id != sender.user_id {
        return Err(Error::forbidden(
            "You can only change your own display name",
        ));
    }
    change_display_name(&services, &sender.user_id, request.body.displayname.clone()).await?;
    Ok(set_display_name::Response::new().into())
}

/// `GET /_matrix/client/v3/profile/{userId}/avatar_url`
pub async fn get_avatar_url(
    State(services): State<AppState>,
    request: Ruma<get_avatar_url::Request>,
) -> ApiResult<get_avatar_url::Response> {
    crate::services::appservice::ensure_user(&services, &request.body.user_id).await?;
    let profile = services
        .users
        .profile(&request.body.user_id, Some(&ProfileFieldName::AvatarUrl))
        .await?;
    let mut response = get_avatar_url::Response::new(None);
    // Another server's answer may hold anything there: shown only if it is an MXC URI.
    response.avatar_url = profile.get_static::<AvatarUrl>().ok().flatten();
    Ok(response.into())
}

/// `PUT /_matrix/client/v3/profile/{userId}/avatar_url`
pub async fn set_avatar_url(
    State(services): State<AppState>,
    request: Ruma<set_avatar_url::Request>,
) -> ApiResult<set_avatar_url::Response> {
    let sender = request.sender()?;
    if request.body.user_id != sender.user_id {
        return Err(Error::forbidden("You can only change your own avatar"));
    }
    let url = request.body.avatar_url.as_ref().map(|u| u.to_string());
    change_avatar_url(&services, &sender.user_id, url).await?;
    Ok(set_avatar_url::Response::new().into())
}

/// `GET /_matrix/client/v3/profile/{userId}/{keyName}`: any field of a profile (Matrix 1.16's
/// extended profiles; `displayname` and `avatar_url` have routes of their own on the same
/// paths, which this one serves only under MSC4133's unstable prefix). `404 M_NOT_FOUND` for a
/// field the profile does not have.
pub async fn get_profile_field(
    State(services): State<AppState>,
    request: Ruma<get_profile_field::Request>,
) -> ApiResult<get_profile_field::Response> {
    let body = &request.body;
    check_profile_field_name(body.field.as_str())?;
    crate::services::appservice::ensure_user(&services, &body.user_id).await?;
    let profile = services
        .users
        .profile(&body.user_id, Some(&body.field))
        .await?;
    // Another server's answer may hold a value of the wrong type for a key the spec defines.
    let value = profile
        .get(body.field.as_str())
        .and_then(|value| ProfileFieldValue::new(body.field.as_str(), value.clone()).ok())
        .ok_or_else(|| Error::not_found("The profile has no such field"))?;
    Ok(get_profile_field::Response::new(value).into())
}

/// `PUT /_matrix/client/v3/profile/{userId}/{keyName}`: one of the user's own fields.
pub async fn set_profile_field(
    State(services): State<AppState>,
    request: Ruma<set_profile_field::Request>,
) -> ApiResult<set_profile_field::Response> {
    let sender = request.sender()?;
    if request.body.user_id != sender.user_id {
        return Err(Error::forbidden("You can only change your own profile"));
    }
    match &request.body.value {
        ProfileFieldValue::DisplayName(name) => {
            change_display_name(&services, &sender.user_id, Some(name.clone())).await?
        }
        ProfileFieldValue::AvatarUrl(url) => {
            change_avatar_url(&services, &sender.user_id, Some(url.to_string())).await?
        }
        value => {
            let field = value.field_name();
            services
                .users
                .set_profile_field(&sender.user_id, field.as_str(), value.value().into_owned())
                .await?
        }
    }
    Ok(set_profile_field::Response::new().into())
}

/// `DELETE /_matrix/client/v3/profile/{userId}/{keyName}`: one of the user's own fields.
pub async fn delete_profile_field(
    State(services): State<AppState>,
    request: Ruma<delete_profile_field::Request>,
) -> ApiResult<delete_profile_field::Response> {
    let sender = request.sender()?;
    if request.body.user_id != sender.user_id {
        return Err(Error::forbidden("You can only change your own profile"));
    }
    match &request.body.field {
        ProfileFieldName::DisplayName => {
            change_display_name(&services, &sender.user_id, None).await?
        }
        ProfileFieldName::AvatarUrl => change_avatar_url(&services, &sender.user_id, None).await?,
        field => {
            services
                .users
                .delete_profile_field(&sender.user_id, field.as_str())
                .await?
        }
    }
    Ok(delete_profile_field::Response::new().into())
}

/// Rooms show names and avatars from member events: the new profile goes to every joined room
/// (`Rooms::finish_profile_update`). With many rooms the answer does not wait for it; the change
/// is stored as waiting (`pending_profile_updates`), so a restart still finishes it.
async fn propagate_profile(services: &AppState, user_id: &UserId) -> Result<()> {
    let rooms = services.rooms.joined_rooms(user_id).await?.len();
    if rooms <= INLINE_PROFILE_ROOMS {
        return services.rooms.finish_profile_update(user_id).await;
    }
    let (services, user_id) = (services.clone(), user_id.to_owned());
    tokio::spawn(async move {
        if let Err(e) = services.rooms.finish_profile_update(&user_id).await {
            tracing::warn!(user = %user_id, error = %e, "profile change not copied to rooms yet");
        }
    });
    Ok(())
}

/// A new display name (or none), copied to the user's rooms.
async fn change_display_name(
    services: &AppState,
    user_id: &UserId,
    name: Option<String>,
) -> Result<()> {
    // Synapse counts a profile change once against `rc_message` (its member events are not
    // counted one by one); checked before the change, so a refused one changes nothing.
    services.limits.event(user_id, false).await?;
    services.users.set_displayname(user_id, name).await?;
    propagate_profile(services, user_id).await
}

/// A new avatar (or none), copied to the user's rooms.
async fn change_avatar_url(
    services: &AppState,
    user_id: &UserId,
    url: Option<String>,
) -> Result<()> {
    services.limits.event(user_id, false).await?;
    services.users.set_avatar_url(user_id, url).await?;
    propagate_profile(services, user_id).await
}
