//! Invites across servers, both ways (`PUT /_matrix/federation/v2/invite`).
//!
//! **Outbound** (a local user invites another server's user): the invite is built, signed and
//! checked against the room's current state (`Rooms::remote_invite_event`), sent with the
//! room's stripped state to the invitee's server, which signs it too; the countersigned event
//! (both signatures checked) then enters the room through `Rooms::accept_own`, which queues it
//! for the room's other servers.
//!
//! **Inbound** (another server invites one of our users): the spec's checks, our signature,
//! and the invite kept with its stripped state (`remote_memberships`) so that /sync shows it
//! under `rooms.invite` for a room this server does not hold; for a room it is in, the invite
//! also comes through `/send` as any event of the room does.

use ruma::{
    CanonicalJsonObject, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId,
    api::{
        error::{ErrorKind, IncompatibleRoomVersionErrorData},
        federation::membership::{RawStrippedState, create_invite},
    },
    events::room::member::MembershipState,
    signatures::Verified,
};
use serde_json::{Value, json, value::RawValue as RawJsonValue};

use super::{
    client::FederationError,
    joins::{membership_of, supported_versions},
    pdu,
};
use crate::{
    error::{Error, Result},
    services::{
        Services,
        rooms::{IncomingPdu, remote::field},
    },
    storage::remote_memberships::RemoteMembership,
};

/// How long an invite waits for the invitee's profile from their server.
const PROFILE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The servers a remote membership names for reaching its room (the inviter's first).
pub fn servers_of(row: &RemoteMembership) -> Vec<OwnedServerName> {
    serde_json::from_str::<Vec<String>>(&row.servers)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| OwnedServerName::try_from(s).ok())
        .collect()
}

/// A local user (`sender`) invites `invitee`, a user of another server, into a room of this
/// server: the invitee's server must countersign the invite before it is stored.
pub async fn invite_remote(
    services: &Services,
    room_id: &RoomId,
    sender: &UserId,
    invitee: &UserId,
    reason: Option<String>,
    is_direct: bool,
) -> Result<()> {
    services.limits.invite(sender, room_id, invitee).await?;
    services.limits.event(sender, false).await?;
    let mut content = json!({"membership": MembershipState::Invite});
    if let Some(reason) = reason {
        content["reason"] = json!(reason);
    }
    if is_direct {
        content["is_direct"] = json!(true);
    }
    // The invitee's name and avatar, as Synapse puts them in an invite (clients show "Bob
    // invited" rather than a bare ID); a profile that cannot be had leaves them out.
    let profile =
        tokio::time::timeout(PROFILE_TIMEOUT, services.users.profile(invitee, None)).await;
    if let Ok(Ok(profile)) = profile {
        for field in ["displayname", "avatar_url"] {
            if let Some(value) = profile.get(field).filter(|value| value.is_string()) {
                content[field] = value.clone();
            }
        }
    }
    let (own, invite_room_state) = services
        .rooms
        .remote_invite_event(room_id, sender, invitee, content)
        .await?;
    let server = invitee.server_name();
    let request = create_invite::v2::Request::new(
        room_id.to_owned(),
        own.event_id.clone(),
        own.version.clone(),
        serde_json::value::to_raw_value(&own.object).map_err(Error::internal)?,
        invite_room_state
            .into_iter()
            .map(RawStrippedState::Pdu)
            .collect(),
    );
    let answer = services
        .federation
        .send(server, request)
        .await
        .map_err(|e| refused_by(server, e))?;
    let bad_answer = |why: String| {
        Error::new(
            http::StatusCode::BAD_GATEWAY,
            ErrorKind::Unknown,
            format!("{server} answered the invite with {why}"),
        )
    };
    // Our event, with every signature and the content hash intact (same ID, same content) ...
    let rules = pdu::rules(&own.version).map_err(|e| bad_answer(e.to_string()))?;
    let IncomingPdu {
        event_id, object, ..
    } = pdu::parse(&answer.event, room_id, &rules).map_err(|e| bad_answer(e.to_string()))?;
    if event_id != own.event_id {
        return Err(bad_answer("another event".to_owned()));
    }
    match services.server_keys.verify_event(&object, &rules).await {
        Ok(Verified::All) => {}
        Ok(Verified::Signatures) => return Err(bad_answer("changed content".to_owned())),
        Err(e) => return Err(bad_answer(format!("a bad signature: {e}"))),
    }
    // ... and signed by the invitee's server (over the redacted event, as events are signed).
    let redacted = ruma::canonical_json::redact(object.clone(), &rules.redaction, None)
        .map_err(|e| bad_answer(e.to_string()))?;
    services
        .server_keys
        .verify_json(server, &redacted)
        .await
        .map_err(|e| bad_answer(format!("no valid signature of its own: {e}")))?;
    let appended = services
        .rooms
        .accept_own(IncomingPdu {
            event_id,
            room_id: room_id.to_owned(),
            object,
        })
        .await?;
    tracing::info!(%room_id, %invitee, event_id = %appended.event_id, "remote invite sent");
    Ok(())
}

/// The client's error for an invite the invitee's server did not sign: its own refusal (a 4xx
/// with its errcode) as it is, as Synapse passes it on; anything else `502`.
fn refused_by(server: &ServerName, error: FederationError) -> Error {
    match (error.status(), error.kind()) {
        (Some(status), kind) if status.is_client_error() => Error::new(
            status,
            kind.cloned().unwrap_or(ErrorKind::Unknown),
            format!("{server} refused the invite: {error}"),
        ),
        _ => Error::new(
            http::StatusCode::BAD_GATEWAY,
            ErrorKind::Unknown,
            format!("Could not send the invite to {server}: {error}"),
        ),
    }
}

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}` served: `origin` invites one of our
/// users; the answer is the event with our signature added.
pub async fn receive_invite(
    services: &Services,
    origin: &ServerName,
    request: create_invite::v2::Request,
) -> Result<Box<RawJsonValue>> {
    let version = request.room_version.clone();
    if !supported_versions().contains(&version) {
        return Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            ErrorKind::IncompatibleRoomVersion(IncompatibleRoomVersionErrorData::new(
                version.clone(),
            )),
            format!("This server does not support room version {version}"),
        ));
    }
    let room_id = &request.room_id;
    let rules = pdu::rules(&version).map_err(|e| Error::bad_json(e.to_string()))?;
    let IncomingPdu {
        event_id,
        mut object,
        ..
    } = pdu::parse(&request.event, room_id, &rules)
        .map_err(|e| Error::bad_json(format!("Invalid invite event: {e}")))?;
    if event_id != request.event_id {
        return Err(Error::bad_json("The event ID does not match the event"));
    }
    // Synapse's checks, in its order and with its codes.
    let invitee = field(&object, "state_key").map(UserId::parse);
    if field(&object, "type") != Some("m.room.member")
        || membership_of(&object) != Some(MembershipState::Invite.as_str())
    {
        return Err(Error::invalid_param(
            "The event is not an m.room.member invite event",
        ));
    }
    let sender = field(&object, "sender").map(UserId::parse);
    if !matches!(&sender, Some(Ok(sender)) if sender.server_name() == origin) {
        return Err(Error::invalid_param(
            "The invite event is not from the server sending it",
        ));
    }
    let invitee = match invitee {
        Some(Ok(invitee)) if invitee.server_name() == services.server_name => invitee,
        _ => {
            return Err(Error::invalid_param(
                "The invite event must be for a user of this server",
            ));
        }
    };
    if !services.users.exists(&invitee).await? {
        return Err(Error::not_found(format!("No such user: {invitee}")));
    }
    match services.server_keys.verify_event(&object, &rules).await? {
        Verified::All => {}
        Verified::Signatures => {
            return Err(Error::forbidden("The invite event's content hash is wrong"));
        }
    }
    ruma::signatures::hash_and_sign_event(
        services.server_name.as_str(),
        services.server_key.key_pair(),
        &mut object,
        &rules.redaction,
    )
    .map_err(|e| Error::internal(format!("cannot sign the invite: {e}")))?;
    let signed = serde_json::value::to_raw_value(&object).map_err(Error::internal)?;

    // A room we are in hears of the invite through `/send` too, as every event of it.
    if services.rooms.is_resident(room_id).await? {
        return Ok(signed);
    }
    let stripped_state =
        stripped_room_state(services, room_id, &version, &request.invite_room_state).await;
    let json = serde_json::to_string(&object).map_err(Error::internal)?;
    services
        .rooms
        .put_remote_membership(RemoteMembership {
            room_id: room_id.to_string(),
            user_id: invitee.to_string(),
            membership: MembershipState::Invite.as_str().to_owned(),
            event_id: event_id.to_string(),
            room_version: version.to_string(),
            event_json: json,
            stripped_state: Value::Array(stripped_state).to_string(),
            servers: json!([origin]).to_string(),
            stream_ordering: 0,
        })
        .await?;
    tracing::info!(%room_id, %invitee, %origin, "invite received");
    Ok(signed)
}

/// The stripped state of an `invite_room_state` / `knock_room_state` for clients: full PDUs
/// (Matrix 1.16) are checked (format, room, signatures, hash) and stripped; older servers'
/// stripped events are taken as they are. Entries that fail are left out, as the spec asks.
pub async fn stripped_room_state(
    services: &Services,
    room_id: &RoomId,
    version: &RoomVersionId,
    entries: &[RawStrippedState],
) -> Vec<Value> {
    let mut stripped = Vec::new();
    for entry in entries {
        let shown = match entry {
            RawStrippedState::Pdu(raw) => {
                match pdu::verify(services, raw, room_id, version).await {
                    Ok(pdu) => serde_json::to_string(&pdu.object)
                        .ok()
                        .and_then(|json| crate::services::rooms::format::stripped_state(&json)),
                    Err(e) => {
                        tracing::info!(%room_id, "stripped state event left out: {e}");
                        None
                    }
                }
            }
            #[allow(deprecated)] // what servers before Matrix 1.16 send
            RawStrippedState::Stripped(raw) => {
                let object: Option<CanonicalJsonObject> = raw.deserialize_as().ok();
                object.and_then(|o| {
                    let (kind, key, sender) = (
                        field(&o, "type")?,
                        field(&o, "state_key")?,
                        field(&o, "sender")?,
                    );
                    let content = o.get("content")?.as_object()?;
                    Some(json!({"type": kind, "state_key": key, "sender": sender,
                        "content": content}))
                })
            }
            _ => None,
        };
        stripped.extend(shown);
    }
    stripped
}
