//! Creating rooms and changing membership.

use axum::extract::State;
use ruma::{
    UserId,
    api::client::{
        knock::knock_room::v3 as knock_room,
        membership::{
            ban_user::v3 as ban_user,
            forget_room::v3 as forget_room,
            invite_user::v3::{self as invite_user, InvitationRecipient},
            join_room_by_id::v3 as join_room_by_id,
            join_room_by_id_or_alias::v3 as join_by_id_or_alias,
            joined_rooms::v3 as joined_rooms,
            kick_user::v3 as kick_user,
            leave_room::v3 as leave_room,
            unban_user::v3 as unban_user,
        },
        room::{Visibility, create_room::v3 as create_room},
    },
    events::room::member::MembershipState,
};
use serde_json::{Map, Value};

use crate::{
    error::{Error, Result},
    services::{
        Services,
        federation::{invites, joins, knocks, leaves},
        guests,
        rooms::{CreateRoom, Preset},
    },
    web::{
        AppState,
        ruma::{ApiResult, Ruma},
    },
};

/// Display name and avatar for a member event.
async fn profile(services: &Services, user: &UserId) -> Result<(Option<String>, Option<String>)> {
    let row = services.users.get(user).await?;
    Ok(row
        .map(|r| (r.displayname, r.avatar_url))
        .unwrap_or_default())
}

fn raw_object<T>(raw: &ruma::serde::Raw<T>, what: &str) -> Result<Map<String, Value>> {
    serde_json::from_str(raw.json().get())
        .map_err(|e| Error::bad_json(format!("Invalid {what}: {e}")))
}

/// The member content a `/join` body asks for: every field but those the endpoint itself
/// reads (`reason` stays: it belongs in the event), as Synapse keeps them.
fn join_extra_content(json: &[u8]) -> Result<Map<String, Value>> {
    let mut body: Map<String, Value> = serde_json::from_slice(json)
        .map_err(|e| Error::bad_json(format!("Invalid request body: {e}")))?;
    for field in [
        "membership",
        "third_party_signed",
        "via",
        "server_name",
        "join_authorised_via_users_server",
    ] {
        body.remove(field);
    }
    if body.get("reason").is_some_and(|r| !r.is_string()) {
        return Err(Error::bad_json("reason must be a string"));
    }
    Ok(body)
}

/// `POST /_matrix/client/v3/createRoom`
pub async fn create_room(
    State(services): State<AppState>,
    request: Ruma<create_room::Request>,
) -> ApiResult<create_room::Response> {
    let identity = request.sender()?.clone();
    let sender = identity.user_id.clone();
    let body = request.body;
    if let Some(localpart) = &body.room_alias_name
        && let Ok(alias) =
            ruma::RoomAliasId::parse(format!("#{localpart}:{}", services.server_name))
    {
        services
            .appservices
            .check_alias_not_exclusive_for(&alias, &identity)?;
    }
    if !body.invite_3pid.is_empty() {
        return Err(Error::invalid_param(
            "Third-party invites are not supported",
        ));
    }
    let mut initial_state = Vec::new();
    for event in &body.initial_state {
        let event = raw_object(event, "initial_state event")?;
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::bad_json("initial_state event without type"))?;
        let state_key = event
            .get("state_key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let content = event
            .get("content")
            .cloned()
            .unwrap_or(Value::Object(Map::new()));
        initial_state.push((kind.into(), state_key.to_owned(), content));
    }
    let preset = body.preset.as_ref().map(|p| match p.as_str() {
        "public_chat" => Ok(Preset::Public),
        "trusted_private_chat" => Ok(Preset::TrustedPrivate),
        "private_chat" => Ok(Preset::Private),
        other => Err(Error::invalid_param(format!("Unknown preset {other}"))),
    });
    let spec = CreateRoom {
        version: body.room_version.clone(),
        preset: preset.transpose()?,
        published: body.visibility == Visibility::Public,
        name: body.name.clone(),
        topic: body.topic.clone(),
        invite: body.invite.clone(),
        is_direct: body.is_direct,
        initial_state,
        power_level_content_override: body
            .power_level_content_override
            .as_ref()
            .map(|r| raw_object(r, "power_level_content_override"))
            .transpose()?,
        creation_content: body
            .creation_content
            .as_ref()
            .map(|r| raw_object(r, "creation_content"))
            .transpose()?,
        alias_localpart: body.room_alias_name.clone(),
        creator_profile: profile(&services, &sender).await?,
    };
    let room_id = services.rooms.create_room(&sender, spec).await?;
    tracing::info!(room = %room_id, creator = %sender, "room created");
    // Users of other servers are invited once the room exists: their servers must countersign
    // each invite, which cannot happen inside the room's creation. The room is answered even
    // when one fails (Synapse answers the error though the room exists, and a client that
    // retries makes a second room); the invitee is then simply not invited.
    for invitee in body
        .invite
        .iter()
        .filter(|user| user.server_name() != services.server_name)
    {
        if let Err(e) =
            invites::invite_remote(&services, &room_id, &sender, invitee, None, body.is_direct)
                .await
        {
            tracing::warn!(room = %room_id, %invitee, "invite at creation failed: {e}");
        }
    }
    Ok(create_room::Response::new(room_id).into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/join`
pub async fn join_room_by_id(
    State(services): State<AppState>,
    request: Ruma<join_room_by_id::Request>,
) -> ApiResult<join_room_by_id::Response> {
    let user = request.sender()?.user_id.clone();
    let room_id = request.body.room_id.clone();
    if request.sender()?.is_guest {
        guests::check_may_join(&services, <&ruma::RoomOrAliasId>::from(&*room_id)).await?;
    }
    joins::join_room(
        &services,
        &user,
        <&ruma::RoomOrAliasId>::from(&*room_id),
        &[],
        profile(&services, &user).await?,
        join_extra_content(&request.json)?,
    )
    .await?;
    Ok(join_room_by_id::Response::new(room_id).into())
}

/// `POST /_matrix/client/v3/join/{roomIdOrAlias}`
pub async fn join_room_by_id_or_alias(
    State(services): State<AppState>,
    request: Ruma<join_by_id_or_alias::Request>,
) -> ApiResult<join_by_id_or_alias::Response> {
    let user = request.sender()?.user_id.clone();
    if request.sender()?.is_guest {
        guests::check_may_join(&services, &request.body.room_id_or_alias).await?;
    }
    let room_id = joins::join_room(
        &services,
        &user,
        &request.body.room_id_or_alias,
        &request.body.via,
        profile(&services, &user).await?,
        join_extra_content(&request.json)?,
    )
    .await?;
    Ok(join_by_id_or_alias::Response::new(room_id).into())
}

/// `POST /_matrix/client/v3/knock/{roomIdOrAlias}`
pub async fn knock_room(
    State(services): State<AppState>,
    request: Ruma<knock_room::Request>,
) -> ApiResult<knock_room::Response> {
    let user = request.sender()?.user_id.clone();
    let room_id = knocks::knock_room(
        &services,
        &user,
        &request.body.room_id_or_alias,
        &request.body.via,
        profile(&services, &user).await?,
        request.body.reason.clone(),
    )
    .await?;
    Ok(knock_room::Response::new(room_id).into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/invite`
pub async fn invite_user(
    State(services): State<AppState>,
    request: Ruma<invite_user::Request>,
) -> ApiResult<invite_user::Response> {
    let sender = request.sender()?.user_id.clone();
    let InvitationRecipient::UserId(recipient) = &request.body.recipient else {
        return Err(Error::invalid_param(
            "Third-party invites are not supported",
        ));
    };
    let invitee = recipient.user_id.clone();
    if invitee.server_name() != services.server_name {
        invites::invite_remote(
            &services,
            &request.body.room_id,
            &sender,
            &invitee,
            recipient.reason.clone(),
            false,
        )
        .await?;
        return Ok(invite_user::Response::new().into());
    }
    crate::services::appservice::ensure_user(&services, &invitee).await?;
    if !services.users.exists(&invitee).await? {
        return Err(Error::not_found(format!(
            "No such user on this server: {invitee}"
        )));
    }
    let profile = profile(&services, &invitee).await?;
    services
        .rooms
        .invite(
            &request.body.room_id,
            &sender,
            &invitee,
            profile,
            recipient.reason.clone(),
            false,
        )
        .await?;
    Ok(invite_user::Response::new().into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/leave`
pub async fn leave_room(
    State(services): State<AppState>,
    request: Ruma<leave_room::Request>,
) -> ApiResult<leave_room::Response> {
    let user = request.sender()?.user_id.clone();
    leaves::leave_room(
        &services,
        &user,
        &request.body.room_id,
        request.body.reason.clone(),
    )
    .await?;
    Ok(leave_room::Response::new().into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/kick`
pub async fn kick_user(
    State(services): State<AppState>,
    request: Ruma<kick_user::Request>,
) -> ApiResult<kick_user::Response> {
    let sender = request.sender()?.user_id.clone();
    let body = &request.body;
    match services
        .rooms
        .membership(&body.room_id, &body.user_id)
        .await?
    {
        Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock) => {}
        _ => {
            return Err(Error::forbidden(format!(
                "{} is not in the room",
                body.user_id
            )));
        }
    }
    services
        .rooms
        .leave(&body.room_id, &sender, &body.user_id, body.reason.clone())
        .await?;
    Ok(kick_user::Response::new().into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/ban`
pub async fn ban_user(
    State(services): State<AppState>,
    request: Ruma<ban_user::Request>,
) -> ApiResult<ban_user::Response> {
    let sender = request.sender()?.user_id.clone();
    let body = &request.body;
    services
        .rooms
        .ban(&body.room_id, &sender, &body.user_id, body.reason.clone())
        .await?;
    Ok(ban_user::Response::new().into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/unban`
pub async fn unban_user(
    State(services): State<AppState>,
    request: Ruma<unban_user::Request>,
) -> ApiResult<unban_user::Response> {
    let sender = request.sender()?.user_id.clone();
    let body = &request.body;
    services
        .rooms
        .unban(&body.room_id, &sender, &body.user_id, body.reason.clone())
        .await?;
    Ok(unban_user::Response::new().into())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/forget`
pub async fn forget_room(
    State(services): State<AppState>,
    request: Ruma<forget_room::Request>,
) -> ApiResult<forget_room::Response> {
    leaves::forget_room(&services, &request.sender()?.user_id, &request.body.room_id).await?;
    Ok(forget_room::Response::new().into())
}

/// `GET /_matrix/client/v3/joined_rooms`
pub async fn joined_rooms(
    State(services): State<AppState>,
    request: Ruma<joined_rooms::Request>,
) -> ApiResult<joined_rooms::Response> {
    let rooms = services
        .rooms
        .joined_rooms(&request.sender()?.user_id)
        .await?;
    Ok(joined_rooms::Response::new(rooms).into())
}
