//! Leaving across servers, both ways: `make_leave` and `send_leave` (v2).
//!
//! **Outbound**: a local user rejects an invite (or withdraws a knock) of a room this server
//! does not hold: the leave is made through the inviting server (then the room's ID's server);
//! when none of them can be reached or none accepts it, the invite is still rejected here with
//! a leave event of our own (as Synapse's "out-of-band" leave), so the user is never stuck with
//! an invite they cannot get rid of.
//!
//! **Inbound**: a user of another server leaves one of our rooms through us (their server is
//! not in the room: they reject an invite or withdraw a knock): checked as `send_join` is.

use ruma::{
    CanonicalJsonObject, OwnedEventId, RoomId, ServerName, UserId,
    api::federation::membership::{create_leave_event, prepare_leave_event},
    events::room::member::MembershipState,
};
use serde_json::value::RawValue as RawJsonValue;

use super::{
    invites::servers_of,
    joins::{accept_member_event, member_event_from_template, member_template, name_if_old_format},
    pdu,
};
use crate::{
    error::{Error, Result},
    services::{Services, rooms::remote::Membership},
    storage::{now_ms, remote_memberships::RemoteMembership},
};

/// `/rooms/{roomId}/leave`: a room this server holds is left locally; an invite or a knock of a
/// room it does not hold is rejected or withdrawn through the room's servers.
pub async fn leave_room(
    services: &Services,
    user_id: &UserId,
    room_id: &RoomId,
    reason: Option<String>,
) -> Result<()> {
    match services.rooms.membership_anywhere(room_id, user_id).await? {
        Membership::Remote(row) if row.membership == MembershipState::Leave.as_str() => Ok(()),
        Membership::Remote(row) => leave_remote(services, user_id, row, reason).await,
        _ => {
            services
                .rooms
                .leave(room_id, user_id, user_id, reason)
                .await?;
            Ok(())
        }
    }
}

/// `/rooms/{roomId}/forget`, for rooms held here or not.
pub async fn forget_room(services: &Services, user_id: &UserId, room_id: &RoomId) -> Result<()> {
    match services.rooms.membership_anywhere(room_id, user_id).await? {
        Membership::Remote(row) if row.membership == MembershipState::Leave.as_str() => {
            services.rooms.forget_remote(room_id, user_id).await?;
            Ok(())
        }
        Membership::Remote(_) => Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::Unknown,
            "Leave the room before forgetting it",
        )),
        _ => services.rooms.forget(room_id, user_id).await,
    }
}

async fn leave_remote(
    services: &Services,
    user_id: &UserId,
    row: RemoteMembership,
    reason: Option<String>,
) -> Result<()> {
    services.limits.event(user_id, false).await?;
    let room_id = ruma::OwnedRoomId::try_from(row.room_id.as_str()).map_err(Error::internal)?;
    let mut content = serde_json::Map::new();
    if let Some(reason) = &reason {
        content.insert("reason".into(), reason.clone().into());
    }
    let mut servers = servers_of(&row);
    if let Some(server) = room_id.server_name()
        && !servers.iter().any(|s| s == server)
    {
        servers.push(server.to_owned());
    }
    let mut leave = None;
    for server in servers.iter().filter(|s| **s != services.server_name) {
        match leave_through(services, user_id, &room_id, server, content.clone()).await {
            Ok(event) => {
                leave = Some(event);
                break;
            }
            Err(reason) => {
                tracing::info!(%room_id, %server, reason, "remote leave failed");
            }
        }
    }
    let event = match leave {
        Some(event) => event,
        None => {
            tracing::info!(%room_id, %user_id, "no server took the leave: rejected here only");
            out_of_band_leave(services, user_id, &row, content)?
        }
    };
    let json = serde_json::to_string(&event).map_err(Error::internal)?;
    let version =
        ruma::RoomVersionId::try_from(row.room_version.as_str()).map_err(Error::internal)?;
    let rules = pdu::rules(&version).map_err(|e| Error::internal(e.to_string()))?;
    let event_id = crate::services::rooms::pdu::event_id(&event, &rules)
        .map_err(|e| Error::internal(e.to_string()))?;
    services
        .rooms
        .put_remote_membership(RemoteMembership {
            membership: MembershipState::Leave.as_str().to_owned(),
            event_id: event_id.to_string(),
            event_json: json,
            ..row
        })
        .await?;
    Ok(())
}

/// `make_leave` and `send_leave` through one server: the signed leave event, or why not.
async fn leave_through(
    services: &Services,
    user_id: &UserId,
    room_id: &RoomId,
    server: &ServerName,
    content: serde_json::Map<String, serde_json::Value>,
) -> Result<CanonicalJsonObject, String> {
    let template = services
        .federation
        .send(
            server,
            prepare_leave_event::v1::Request::new(room_id.to_owned(), user_id.to_owned()),
        )
        .await
        .map_err(|e| format!("make_leave: {e}"))?;
    let version = template.room_version.ok_or("make_leave: no room version")?;
    let rules = pdu::rules(&version).map_err(|e| e.to_string())?;
    let mut event = member_event_from_template(
        &template.event,
        user_id,
        room_id,
        MembershipState::Leave,
        content,
    )?;
    name_if_old_format(&mut event, &rules, &services.server_name);
    ruma::signatures::hash_and_sign_event(
        services.server_name.as_str(),
        services.server_key.key_pair(),
        &mut event,
        &rules.redaction,
    )
    .map_err(|e| format!("cannot sign the leave: {e}"))?;
    let event_id =
        crate::services::rooms::pdu::event_id(&event, &rules).map_err(|e| e.to_string())?;
    let raw = serde_json::value::to_raw_value(&event).map_err(|e| e.to_string())?;
    services
        .federation
        .send(
            server,
            create_leave_event::v2::Request::new(room_id.to_owned(), event_id, raw),
        )
        .await
        .map_err(|e| format!("send_leave: {e}"))?;
    Ok(event)
}

/// A leave of our own after the invite (or knock), signed by us, that no other server has:
/// what /sync shows when the room's servers could not take the rejection.
fn out_of_band_leave(
    services: &Services,
    user_id: &UserId,
    row: &RemoteMembership,
    content: serde_json::Map<String, serde_json::Value>,
) -> Result<CanonicalJsonObject> {
    let version =
        ruma::RoomVersionId::try_from(row.room_version.as_str()).map_err(Error::internal)?;
    let rules = pdu::rules(&version).map_err(|e| Error::internal(e.to_string()))?;
    let depth = serde_json::from_str::<serde_json::Value>(&row.event_json)
        .ok()
        .and_then(|e| e["depth"].as_i64())
        .unwrap_or(0)
        + 1;
    let mut content = content;
    content.insert("membership".into(), MembershipState::Leave.as_str().into());
    let event = serde_json::json!({
        "type": "m.room.member",
        "room_id": row.room_id,
        "sender": user_id,
        "state_key": user_id,
        "content": content,
        "origin_server_ts": now_ms(),
        "depth": depth,
        "prev_events": [row.event_id],
        "auth_events": [row.event_id],
    });
    let mut event: CanonicalJsonObject = serde_json::from_value(event).map_err(Error::internal)?;
    // Never sent anywhere (no server took the leave): kept so that /sync shows the rejection.
    name_if_old_format(&mut event, &rules, &services.server_name);
    ruma::signatures::hash_and_sign_event(
        services.server_name.as_str(),
        services.server_key.key_pair(),
        &mut event,
        &rules.redaction,
    )
    .map_err(|e| Error::internal(format!("cannot sign the leave: {e}")))?;
    Ok(event)
}

/// `make_leave` served: a template for `user_id` (of `origin`) to leave `room_id`.
pub async fn make_leave(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<prepare_leave_event::v1::Response> {
    let (version, template) = member_template(
        services,
        origin,
        room_id,
        user_id,
        MembershipState::Leave,
        None,
    )
    .await?;
    Ok(prepare_leave_event::v1::Response::new(
        Some(version),
        template,
    ))
}

/// `send_leave` served: the origin's signed leave event, accepted and handed on to the room's
/// other servers.
pub async fn send_leave(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    raw: &RawJsonValue,
) -> Result<create_leave_event::v2::Response> {
    accept_member_event(
        services,
        origin,
        room_id,
        event_id,
        raw,
        MembershipState::Leave,
    )
    .await?;
    Ok(create_leave_event::v2::Response::new())
}
