//! Joining rooms across servers, both ways.
//!
//! **Outbound** (a local user joins a room this server is not in): `make_join` on one of the
//! candidate servers gives an event template and the room version; we fill in the sender's
//! fields, hash and sign it, and `send_join` (v2) it; the answer holds the room's state before
//! the join and its auth chain, each event checked (format, signatures, hash) before the room
//! layer stores them as outliers and accepts the join with that state. A server that fails is
//! followed by the next candidate.
//!
//! **Inbound** (a user of another server joins one of our rooms): `make_join` answers a template
//! built from the current state (`Rooms::event_template`); `send_join` checks the signed event
//! (a join of the origin's own user, signatures and hash), accepts it like any PDU, sends it to
//! the other servers in the room, and answers with the state before it and its auth chain.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, OwnedServerName,
    RoomId, RoomVersionId, ServerName, UserId,
    api::federation::membership::{create_join_event, prepare_join_event},
    events::room::member::MembershipState,
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
};
use serde_json::value::RawValue as RawJsonValue;

use super::pdu;
use crate::{
    error::{Error, Result},
    services::{
        Services,
        presence::Joined,
        rooms::{self, Arrival, PduOutcome, remote::Membership},
    },
    storage::now_ms,
};

/// `400 M_INCOMPATIBLE_ROOM_VERSION` for a join of a room whose version this server cannot take
/// part in (the spec's answer to a join, both ways).
fn incompatible(room_id: &RoomId, version: RoomVersionId) -> Error {
    let message =
        format!("{room_id} is a room of version {version}, which this server does not support");
    incompatible_with(version, message)
}

/// `400 M_INCOMPATIBLE_ROOM_VERSION` naming `version`, with `message`.
pub(super) fn incompatible_with(version: RoomVersionId, message: String) -> Error {
    Error::new(
        http::StatusCode::BAD_REQUEST,
        ruma::api::error::ErrorKind::IncompatibleRoomVersion(
            ruma::api::error::IncompatibleRoomVersionErrorData::new(version),
        ),
        message,
    )
}

/// Before room version 3 the server that makes an event names it (`$random:server`) and signs
/// that name with the rest: a member event this server builds from a template gets its name.
pub(super) fn name_if_old_format(
    event: &mut CanonicalJsonObject,
    rules: &RoomVersionRules,
    server: &ServerName,
) {
    if rules.event_id_format == EventIdFormatVersion::V1 {
        event.insert(
            "event_id".into(),
            CanonicalJsonValue::String(EventId::new_v1(server).to_string()),
        );
    }
}

/// The room versions this server takes part in over federation, for the `ver` of `make_join`
/// and `make_knock` and the checks of invites.
pub(super) fn supported_versions() -> Vec<RoomVersionId> {
    rooms::federation_versions()
}

/// A local user joins `room_id` through one of `servers` (tried in order).
pub async fn join_remote(
    services: &Services,
    user_id: &UserId,
    room_id: &RoomId,
    servers: &[OwnedServerName],
    content: serde_json::Map<String, serde_json::Value>,
) -> Result<OwnedEventId> {
    let mut failures = Vec::new();
    for server in servers.iter().filter(|s| **s != services.server_name) {
        match join_through(services, user_id, room_id, server, content.clone()).await {
            Ok(event_id) => return Ok(event_id),
            Err(JoinError::Refused(error)) => return Err(error),
            Err(JoinError::Failed(reason)) => {
                tracing::info!(%room_id, %server, reason, "remote join failed; next server");
                failures.push(format!("{server}: {reason}"));
            }
        }
    }
    if failures.is_empty() {
        return Err(Error::not_found(format!(
            "No server to join {room_id} through: give one with `via` or `server_name`"
        )));
    }
    Err(Error::new(
        http::StatusCode::BAD_GATEWAY,
        ruma::api::error::ErrorKind::Unknown,
        format!("Could not join {room_id}: {}", failures.join("; ")),
    ))
}

enum JoinError {
    /// The room's servers said no in a way another server will repeat (not allowed, unsupported
    /// version): answered to the client as is.
    Refused(Error),
    /// This server could not help: try the next one.
    Failed(String),
}

async fn join_through(
    services: &Services,
    user_id: &UserId,
    room_id: &RoomId,
    server: &ServerName,
    content: serde_json::Map<String, serde_json::Value>,
) -> Result<OwnedEventId, JoinError> {
    let client = &services.federation;
    let mut make = prepare_join_event::v1::Request::new(room_id.to_owned(), user_id.to_owned());
    make.ver = rooms::federation_versions();
    let template = client
        .send(server, make)
        .await
        .map_err(|e| match (e.status(), e.kind()) {
            (Some(http::StatusCode::FORBIDDEN), _) => {
                JoinError::Refused(Error::forbidden(format!("{server} refused the join: {e}")))
            }
            // The resident server names the room's version: the client hears it.
            (_, Some(ruma::api::error::ErrorKind::IncompatibleRoomVersion(data))) => {
                JoinError::Refused(incompatible(room_id, data.room_version.clone()))
            }
            _ => JoinError::Failed(format!("make_join: {e}")),
        })?;
    let version = template.room_version.unwrap_or(RoomVersionId::V1);
    // A server that offers a version we did not list is not believed either; one this server
    // does not even know is `M_UNSUPPORTED_ROOM_VERSION`, as Synapse answers its clients.
    let rules = rooms::federation_rules(&version).ok_or_else(|| {
        JoinError::Refused(match version.rules() {
            Some(_) => incompatible(room_id, version.clone()),
            None => Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::UnsupportedRoomVersion,
                format!("{room_id} is a room of version {version}, unknown to this server"),
            ),
        })
    })?;
    let mut event = member_event_from_template(
        &template.event,
        user_id,
        room_id,
        MembershipState::Join,
        content,
    )
    .map_err(JoinError::Failed)?;
    name_if_old_format(&mut event, &rules, &services.server_name);
    ruma::signatures::hash_and_sign_event(
        services.server_name.as_str(),
        services.server_key.key_pair(),
        &mut event,
        &rules.redaction,
    )
    .map_err(|e| JoinError::Failed(format!("cannot sign the join: {e}")))?;
    let event_id =
        rooms::pdu::event_id(&event, &rules).map_err(|e| JoinError::Failed(e.to_string()))?;
    let raw =
        serde_json::value::to_raw_value(&event).map_err(|e| JoinError::Failed(e.to_string()))?;
    let answer = client
        .send(
            server,
            create_join_event::v2::Request::new(room_id.to_owned(), event_id.clone(), raw),
        )
        .await
        .map_err(|e| JoinError::Failed(format!("send_join: {e}")))?;
    let state = answer.room_state;
    // A restricted room's resident server signs the join too (`join_authorised_via_users_server`)
    // and hands it back: that copy is the event.
    let join_raw = match &state.event {
        Some(signed) => signed.clone(),
        None => {
            serde_json::value::to_raw_value(&event).map_err(|e| JoinError::Failed(e.to_string()))?
        }
    };
    let join = pdu::verify(services, &join_raw, room_id, &version)
        .await
        .map_err(|e| JoinError::Failed(format!("the join event came back wrong: {e}")))?;
    if join.event_id != event_id {
        return Err(JoinError::Failed(
            "the join event came back changed".to_owned(),
        ));
    }
    let prepare = rooms::PreparedPdu::new;
    let mut state_events = Vec::new();
    for checked in pdu::verify_all_then(services, state.state, room_id, &version, prepare).await {
        match checked {
            Ok(Ok(event)) => state_events.push(event),
            Ok(Err(e)) => tracing::info!(%server, %room_id, "state event dropped: {e}"),
            Err(dropped) => tracing::info!(%server, %room_id, "state event dropped: {dropped}"),
        }
    }
    let mut auth_chain = Vec::new();
    let checked_chain =
        pdu::verify_all_then(services, state.auth_chain, room_id, &version, prepare).await;
    for checked in checked_chain {
        match checked {
            Ok(Ok(event)) => auth_chain.push(event),
            Ok(Err(e)) => tracing::info!(%server, %room_id, "auth event dropped: {e}"),
            Err(dropped) => tracing::info!(%server, %room_id, "auth event dropped: {dropped}"),
        }
    }
    let _lock = services.rooms.lock_room(room_id).await;
    services
        .rooms
        .persist_joined_room(room_id, &version, state_events, auth_chain, join)
        .await
        .map_err(|e| JoinError::Failed(format!("the room's state does not hold: {e}")))?;
    Ok(event_id)
}

/// The member event from a `make_join` (`make_leave`, `make_knock`) template: the template's
/// room, auth and prev events and depth, our user's membership fields, and a fresh timestamp;
/// nothing the resident server might have added that we do not sign for (hashes, signatures,
/// `event_id`, `unsigned`).
pub(super) fn member_event_from_template(
    template: &RawJsonValue,
    user_id: &UserId,
    room_id: &RoomId,
    membership: MembershipState,
    extra_content: serde_json::Map<String, serde_json::Value>,
) -> Result<CanonicalJsonObject, String> {
    let mut event: CanonicalJsonObject = serde_json::from_str(template.get())
        .map_err(|e| format!("the template is not canonical JSON: {e}"))?;
    for field in ["event_id", "hashes", "signatures", "unsigned", "origin"] {
        event.remove(field);
    }
    let string = |s: &str| CanonicalJsonValue::String(s.to_owned());
    let mut content = match event.remove("content") {
        Some(CanonicalJsonValue::Object(content)) => content,
        _ => CanonicalJsonObject::new(),
    };
    for (key, value) in extra_content {
        if key != "membership" && key != "join_authorised_via_users_server" {
            let value = CanonicalJsonValue::try_from(value).map_err(|e| e.to_string())?;
            content.insert(key, value);
        }
    }
    content.insert("membership".into(), string(membership.as_str()));
    event.insert("content".into(), CanonicalJsonValue::Object(content));
    event.insert("type".into(), string("m.room.member"));
    event.insert("sender".into(), string(user_id.as_str()));
    event.insert("state_key".into(), string(user_id.as_str()));
    event.insert("room_id".into(), string(room_id.as_str()));
    event.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(ruma::Int::new(now_ms()).unwrap_or_default()),
    );
    Ok(event)
}

/// `make_join` served: a template for `user_id` (of `origin`) to join `room_id`.
pub async fn make_join(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    user_id: &UserId,
    versions: &[RoomVersionId],
) -> Result<prepare_join_event::v1::Response> {
    let (version, template) = member_template(
        services,
        origin,
        room_id,
        user_id,
        MembershipState::Join,
        Some(versions),
    )
    .await?;
    let mut response = prepare_join_event::v1::Response::new(template);
    response.room_version = Some(version);
    Ok(response)
}

/// The served half of `make_join`, `make_leave` and `make_knock`: a template of `user_id`'s
/// member event of `membership` in `room_id`, built from the current state, with the room's
/// version. Checked in this order: the user is the origin's, the room is ours, its version is
/// one of the origin's `versions` (join and knock; a knock needs a version that has knocking),
/// the room's ACL allows the origin.
pub(super) async fn member_template(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    user_id: &UserId,
    membership: MembershipState,
    versions: Option<&[RoomVersionId]>,
) -> Result<(RoomVersionId, Box<RawJsonValue>)> {
    if user_id.server_name() != origin {
        return Err(Error::forbidden(if membership == MembershipState::Join {
            "A server can only join its own users"
        } else {
            "A server can only send its own users' membership"
        }));
    }
    let version = services.rooms.room_version(room_id).await?;
    if let Some(versions) = versions {
        if membership == MembershipState::Knock {
            let knocking = version.rules().is_some_and(|r| r.authorization.knocking);
            if !versions.contains(&version) || !knocking {
                let message =
                    format!("Room version {version} cannot be knocked on by the knocking server");
                return Err(incompatible_with(version, message));
            }
        } else if !versions.contains(&version) {
            return Err(incompatible(room_id, version));
        }
    }
    if !services
        .federation_serve
        .acl_allows(room_id, origin)
        .await?
    {
        return Err(Error::forbidden("The room's server ACL denies your server"));
    }
    let template = services
        .rooms
        .event_template(
            room_id,
            user_id,
            rooms::EventDraft::state(
                "m.room.member",
                user_id.as_str(),
                serde_json::json!({"membership": membership.as_str()}),
            ),
        )
        .await?;
    let raw = serde_json::value::to_raw_value(&template).map_err(Error::internal)?;
    Ok((version, raw))
}

/// The served half of `send_join`, `send_leave` and `send_knock`: the origin's signed member
/// event of `membership` (allowed by the room's ACL, verified, of the origin's user), accepted
/// under the room's lock and handed on to the room's other servers, which learn of it from us.
/// `true` when it was new here.
pub(super) async fn accept_member_event(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    raw: &RawJsonValue,
    membership: MembershipState,
) -> Result<bool> {
    let what = membership.as_str();
    let version = services.rooms.room_version(room_id).await?;
    if !services
        .federation_serve
        .acl_allows(room_id, origin)
        .await?
    {
        return Err(Error::forbidden("The room's server ACL denies your server"));
    }
    let incoming = pdu::verify(services, raw, room_id, &version)
        .await
        .map_err(|e| Error::bad_json(format!("Invalid {what} event: {e}")))?;
    if incoming.event_id != *event_id {
        return Err(Error::bad_json("The event ID does not match the event"));
    }
    check_member_event(&incoming.object, origin, membership.clone())?;
    let member = super::inbound::member_of(&incoming);
    let outcome = {
        let _lock = services.rooms.lock_room(room_id).await;
        services.rooms.accept(incoming, Arrival::Live).await?
    };
    match outcome {
        PduOutcome::Accepted { stream } => {
            // A member event may carry a new profile: the cached one is stale.
            if let Some(member) = member {
                services.users.forget_remote_profile(&member);
            }
            services
                .federation_sender
                .forward_remote_event(room_id, event_id, stream, origin)
                .await?;
            Ok(true)
        }
        PduOutcome::AlreadyKnown => Ok(false),
        PduOutcome::SoftFailed => Err(Error::forbidden(format!(
            "The {what} is not allowed by the room's current state"
        ))),
        PduOutcome::Rejected(reason) => Err(Error::forbidden(format!(
            "The {what} is not allowed: {reason}"
        ))),
    }
}

/// `send_join` served: the origin's signed join event, accepted, then the state before it.
pub async fn send_join(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    raw: &RawJsonValue,
) -> Result<create_join_event::v2::Response> {
    // The joining server learns our users' presence.
    if accept_member_event(
        services,
        origin,
        room_id,
        event_id,
        raw,
        MembershipState::Join,
    )
    .await?
    {
        share_presence(services, room_id, Joined::Server(origin)).await;
    }
    // The state before the join and its auth chain, as `/state` serves them.
    let state_before = services
        .federation_serve
        .state(origin, room_id, event_id)
        .await?;
    let mut room_state = create_join_event::v2::RoomState::new();
    room_state.state = state_before.pdus;
    room_state.auth_chain = state_before.auth_chain;
    room_state.servers_in_room = Some(
        services
            .rooms
            .joined_servers(room_id)
            .await?
            .into_iter()
            .map(|s| s.to_string())
            .collect(),
    );
    Ok(create_join_event::v2::Response::new(room_state))
}

/// The membership of a member event (`None` when it is not one).
pub(super) fn membership_of(object: &CanonicalJsonObject) -> Option<&str> {
    match object.get("content") {
        Some(CanonicalJsonValue::Object(content)) => match content.get("membership") {
            Some(CanonicalJsonValue::String(m)) => Some(m),
            _ => None,
        },
        _ => None,
    }
}

/// `send_join` / `send_leave` / `send_knock`: the event must be `membership` of its own sender,
/// a user of `origin`.
pub(super) fn check_member_event(
    object: &CanonicalJsonObject,
    origin: &ServerName,
    membership: MembershipState,
) -> Result<()> {
    let field = |name: &str| match object.get(name) {
        Some(CanonicalJsonValue::String(s)) => Some(s.as_str()),
        _ => None,
    };
    let sender = field("sender").unwrap_or_default();
    if field("type") != Some("m.room.member")
        || membership_of(object) != Some(membership.as_str())
        || field("state_key") != Some(sender)
    {
        return Err(Error::bad_json(format!(
            "Not a {} event of its sender",
            membership.as_str()
        )));
    }
    match UserId::parse(sender) {
        Ok(user) if user.server_name() == origin => Ok(()),
        _ => Err(Error::forbidden(
            "A server can only send its own users' membership",
        )),
    }
}

/// Room IDs and servers from the client's `/join/{roomIdOrAlias}`: candidate servers for a room
/// this server is not in.
pub fn candidate_servers(
    room_id: &RoomId,
    via: &[OwnedServerName],
    from_alias: &[OwnedServerName],
) -> Vec<OwnedServerName> {
    let mut servers: Vec<OwnedServerName> = Vec::new();
    for server in via.iter().chain(from_alias) {
        if !servers.contains(server) {
            servers.push(server.clone());
        }
    }
    // Before v12 a room ID names the server that made it, a good last resort.
    if let Some(server) = room_id.server_name()
        && !servers.iter().any(|s| s == server)
    {
        servers.push(server.to_owned());
    }
    servers
}

/// `/join/{roomIdOrAlias}` and `/rooms/{roomId}/join`: a room this server is in (one of our
/// users is joined) is joined locally; any other goes through the servers of `via`, of the
/// alias's answer and of the room ID.
pub async fn join_room(
    services: &Services,
    user_id: &UserId,
    room: &ruma::RoomOrAliasId,
    via: &[OwnedServerName],
    profile: crate::services::rooms::Profile,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<OwnedRoomId> {
    let (room_id, alias_servers) = match <&RoomId>::try_from(room) {
        Ok(room_id) => (room_id.to_owned(), Vec::new()),
        Err(alias) => crate::services::appservice::resolve_alias(services, alias).await?,
    };
    if services.rooms.is_resident(&room_id).await? {
        services
            .rooms
            .join(&room_id, user_id, profile, extra)
            .await?;
        share_presence(services, &room_id, Joined::LocalUser(user_id)).await;
        return Ok(room_id);
    }
    services.limits.remote_join(user_id).await?;
    let content = crate::services::rooms::join_content(extra, profile);
    // An invite (or knock) from another server names servers in the room: the inviter's.
    let mut alias_servers = alias_servers;
    if let Membership::Remote(row) = services
        .rooms
        .membership_anywhere(&room_id, user_id)
        .await?
    {
        alias_servers.extend(super::invites::servers_of(&row));
    }
    let servers = candidate_servers(&room_id, via, &alias_servers);
    join_remote(services, user_id, &room_id, &servers, content).await?;
    share_presence(services, &room_id, Joined::LocalUser(user_id)).await;
    Ok(room_id)
}

/// The room's servers learn the presence of whoever started sharing it (`Presence::share_room`).
pub async fn share_presence(services: &Services, room_id: &RoomId, joined: Joined<'_>) {
    services
        .presence
        .share_room(&services.rooms, room_id, joined)
        .await;
}
