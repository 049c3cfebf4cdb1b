//! Knocking across servers, both ways: `make_knock` and `send_knock` (v1), rooms whose join
//! rule is `knock` (room versions 7 and later).
//!
//! **Outbound**: a local user knocks on a room this server does not hold through the servers
//! of `via`, the alias's answer and the room ID; the knock and the stripped state the room's
//! server answers with are kept in `remote_memberships`, so /sync shows the room under
//! `rooms.knock`. Withdrawing it is a leave (`leaves.rs`).
//!
//! **Inbound**: a user of another server knocks on one of our rooms: checked as `send_join`
//! is, accepted, handed on, answered with the room's stripped state.

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomOrAliasId, RoomVersionId, ServerName,
    UserId,
    api::{
        error::ErrorKind,
        federation::membership::{
            RawStrippedState, create_knock_event as send_knock,
            prepare_knock_event as create_knock_event_template,
        },
    },
    events::room::member::MembershipState,
};
use serde_json::{Value, json, value::RawValue as RawJsonValue};

use super::{
    invites::stripped_room_state,
    joins::{
        accept_member_event, candidate_servers, incompatible_with, member_event_from_template,
        member_template, supported_versions,
    },
};
use crate::{
    error::{Error, Result},
    services::{Services, rooms::Profile},
    storage::remote_memberships::RemoteMembership,
};

/// `/knock/{roomIdOrAlias}`: a room this server is in is knocked on locally; any other through
/// the servers of `via`, of the alias's answer and of the room ID.
pub async fn knock_room(
    services: &Services,
    user_id: &UserId,
    room: &RoomOrAliasId,
    via: &[OwnedServerName],
    profile: Profile,
    reason: Option<String>,
) -> Result<OwnedRoomId> {
    let (room_id, alias_servers) = match <&RoomId>::try_from(room) {
        Ok(room_id) => (room_id.to_owned(), Vec::new()),
        Err(alias) => crate::services::appservice::resolve_alias(services, alias).await?,
    };
    if services.rooms.is_resident(&room_id).await? {
        services
            .rooms
            .knock(&room_id, user_id, profile, reason)
            .await?;
        return Ok(room_id);
    }
    services.limits.event(user_id, false).await?;
    let mut content = serde_json::Map::new();
    if let Some(name) = profile.0 {
        content.insert("displayname".into(), name.into());
    }
    if let Some(avatar) = profile.1 {
        content.insert("avatar_url".into(), avatar.into());
    }
    if let Some(reason) = reason {
        content.insert("reason".into(), reason.into());
    }
    let mut failures = Vec::new();
    let servers = candidate_servers(&room_id, via, &alias_servers);
    for server in servers.iter().filter(|s| **s != services.server_name) {
        match knock_through(services, user_id, &room_id, server, content.clone()).await {
            Ok(row) => {
                services.rooms.put_remote_membership(row).await?;
                return Ok(room_id);
            }
            Err(KnockError::Refused(error)) => return Err(error),
            Err(KnockError::Failed(reason)) => {
                tracing::info!(%room_id, %server, reason, "remote knock failed; next server");
                failures.push(format!("{server}: {reason}"));
            }
        }
    }
    if failures.is_empty() {
        return Err(Error::not_found(format!(
            "No server to knock on {room_id} through: give one with `via` or `server_name`"
        )));
    }
    Err(Error::new(
        http::StatusCode::BAD_GATEWAY,
        ErrorKind::Unknown,
        format!("Could not knock on {room_id}: {}", failures.join("; ")),
    ))
}

enum KnockError {
    /// An answer another server will repeat (not allowed, unsupported version): for the client.
    Refused(Error),
    /// This server could not help: try the next one.
    Failed(String),
}

async fn knock_through(
    services: &Services,
    user_id: &UserId,
    room_id: &RoomId,
    server: &ServerName,
    content: serde_json::Map<String, Value>,
) -> Result<RemoteMembership, KnockError> {
    let mut make =
        create_knock_event_template::v1::Request::new(room_id.to_owned(), user_id.to_owned());
    make.ver = supported_versions();
    let template =
        services
            .federation
            .send(server, make)
            .await
            .map_err(|e| match (e.status(), e.kind()) {
                (Some(http::StatusCode::FORBIDDEN), _) => KnockError::Refused(Error::forbidden(
                    format!("{server} refused the knock: {e}"),
                )),
                (_, Some(ErrorKind::IncompatibleRoomVersion { .. })) => {
                    KnockError::Refused(incompatible_with(
                        RoomVersionId::V1,
                        format!("{server} refused the knock: {e}"),
                    ))
                }
                _ => KnockError::Failed(format!("make_knock: {e}")),
            })?;
    let version = template.room_version;
    let rules = version
        .rules()
        .filter(|rules| supported_versions().contains(&version) && rules.authorization.knocking)
        .ok_or_else(|| {
            KnockError::Refused(incompatible_with(
                version.clone(),
                format!(
                    "{room_id} is a room of version {version}, which this server cannot knock on"
                ),
            ))
        })?;
    let mut event = member_event_from_template(
        &template.event,
        user_id,
        room_id,
        MembershipState::Knock,
        content,
    )
    .map_err(KnockError::Failed)?;
    ruma::signatures::hash_and_sign_event(
        services.server_name.as_str(),
        services.server_key.key_pair(),
        &mut event,
        &rules.redaction,
    )
    .map_err(|e| KnockError::Failed(format!("cannot sign the knock: {e}")))?;
    let event_id = crate::services::rooms::pdu::event_id(&event, &rules)
        .map_err(|e| KnockError::Failed(e.to_string()))?;
    let raw =
        serde_json::value::to_raw_value(&event).map_err(|e| KnockError::Failed(e.to_string()))?;
    let answer = services
        .federation
        .send(
            server,
            send_knock::v1::Request::new(room_id.to_owned(), event_id.clone(), raw),
        )
        .await
        .map_err(|e| match e.status() {
            Some(http::StatusCode::FORBIDDEN) => {
                KnockError::Refused(Error::forbidden(format!("{server} refused the knock: {e}")))
            }
            _ => KnockError::Failed(format!("send_knock: {e}")),
        })?;
    let stripped = stripped_room_state(services, room_id, &version, &answer.knock_room_state).await;
    Ok(RemoteMembership {
        room_id: room_id.to_string(),
        user_id: user_id.to_string(),
        membership: MembershipState::Knock.as_str().to_owned(),
        event_id: event_id.to_string(),
        room_version: version.to_string(),
        event_json: serde_json::to_string(&event).map_err(|e| KnockError::Failed(e.to_string()))?,
        stripped_state: Value::Array(stripped).to_string(),
        servers: json!([server]).to_string(),
        stream_ordering: 0,
    })
}

/// `make_knock` served: a template for `user_id` (of `origin`) to knock on `room_id`.
pub async fn make_knock(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    user_id: &UserId,
    versions: &[RoomVersionId],
) -> Result<create_knock_event_template::v1::Response> {
    let (version, template) = member_template(
        services,
        origin,
        room_id,
        user_id,
        MembershipState::Knock,
        Some(versions),
    )
    .await?;
    Ok(create_knock_event_template::v1::Response::new(
        version, template,
    ))
}

/// `send_knock` served: the origin's signed knock, accepted and handed on to the room's other
/// servers; answered with the room's stripped state (full PDUs, as for invites).
pub async fn send_knock(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    raw: &RawJsonValue,
) -> Result<send_knock::v1::Response> {
    accept_member_event(
        services,
        origin,
        room_id,
        event_id,
        raw,
        MembershipState::Knock,
    )
    .await?;
    let state = services.rooms.prejoin_state_pdus(room_id, None).await?;
    Ok(send_knock::v1::Response::new(
        state.into_iter().map(RawStrippedState::Pdu).collect(),
    ))
}
