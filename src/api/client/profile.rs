use axum::extract::State;
use ruma::{
    OwnedMxcUri, UserId,
    api::client::profile::{
        get_avatar_url::v3 as get_avatar_url, get_display_name::v3 as get_display_name,
        get_profile::v3 as get_profile, set_avatar_url::v3 as set_avatar_url,
        set_display_name::v3 as set_display_name,
    },
    profile::UserProfile,
};

use crate::{
    error::{Error, Result},
    services::Services,
    storage::users::UserRow,
    web::{
        AppState,
        ruma::{ApiResult, Ruma},
    },
};

/// The profile of a local user; remote profiles come with federation.
async fn local_profile(services: &Services, user_id: &UserId) -> Result<UserRow> {
    if user_id.server_name() != services.server_name {
        return Err(Error::not_found(
            "Profiles of other servers are not available yet",
        ));
    }
    services
        .users
        .get(user_id)
        .await?
        .ok_or_else(|| Error::not_found("Profile not found"))
}

/// `GET /_matrix/client/v3/profile/{userId}`
pub async fn get_profile(
    State(services): State<AppState>,
    request: Ruma<get_profile::Request>,
) -> ApiResult<get_profile::Response> {
    let user = local_profile(&services, &request.body.user_id).await?;
    let mut profile = UserProfile::new();
    if let Some(name) = user.displayname {
        profile.set("displayname".to_owned(), name.into());
    }
    if let Some(url) = user.avatar_url {
        profile.set("avatar_url".to_owned(), url.into());
    }
    let mut response = get_profile::Response::new();
    response.data = profile;
    Ok(response.into())
}

/// `GET /_matrix/client/v3/profile/{userId}/displayname`
pub async fn get_display_name(
    State(services): State<AppState>,
    request: Ruma<get_display_name::Request>,
) -> ApiResult<get_display_name::Response> {
    let user = local_profile(&services, &request.body.user_id).await?;
    Ok(get_display_name::Response::new(user.displayname).into())
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
    // Synapse counts a profile change once against `rc_message` (its member events are not
    // counted one by one); checked before the change, so a refused one changes nothing.
    services.limits.event(&sender.user_id, false).await?;
    services
        .users
        .set_displayname(&sender.user_id, request.body.displayname.clone())
        .await?;
    propagate_profile(&services, &sender.user_id).await?;
    Ok(set_display_name::Response::new().into())
}

/// `GET /_matrix/client/v3/profile/{userId}/avatar_url`
pub async fn get_avatar_url(
    State(services): State<AppState>,
    request: Ruma<get_avatar_url::Request>,
) -> ApiResult<get_avatar_url::Response> {
    let user = local_profile(&services, &request.body.user_id).await?;
    let mut response = get_avatar_url::Response::new(None);
    response.avatar_url = user.avatar_url.map(OwnedMxcUri::from);
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
    services.limits.event(&sender.user_id, false).await?;
    services.users.set_avatar_url(&sender.user_id, url).await?;
    propagate_profile(&services, &sender.user_id).await?;
    Ok(set_avatar_url::Response::new().into())
}

/// Rooms show names and avatars from member events: the new profile goes to every joined room.
async fn propagate_profile(services: &Services, user_id: &UserId) -> Result<()> {
    let user = services
        .users
        .get(user_id)
        .await?
        .ok_or_else(|| Error::not_found("No such user"))?;
    services
        .rooms
        .update_profile(user_id, (user.displayname, user.avatar_url))
        .await?;
    Ok(())
}
