//! `PUT /rooms/{roomId}/state/m.room.member/{userId}`: a member event sent as plain state,
//! routed as Synapse routes it (to the membership paths) so that each transition keeps its own
//! checks. The common use is one's own per-room display name or avatar (Element's
//! `/myroomnick`): a join over one's join, with the content as sent (a name or avatar left out
//! is the profile's, as Synapse fills it). Joining a room one is not joined to goes through
//! `/join`'s path (local or over federation); an invite of another server's user through
//! `/invite`'s (their server countersigns it); everything else is a local state event that the
//! authorization rules decide.

use ruma::{OwnedEventId, RoomId, UserId, events::room::member::MembershipState};
use serde_json::Value;

use super::{invites, joins};
use crate::{
    error::{Error, Result},
    services::{
        Services,
        rooms::{EventDraft, Profile, join_content},
    },
};

/// Sends `sender`'s member event about `target` with `content`; answers its event ID (the
/// current one when the content only repeats it).
pub async fn set_member_state(
    services: &Services,
    room_id: &RoomId,
    sender: &UserId,
    target: &str,
    content: Value,
) -> Result<OwnedEventId> {
    let target = UserId::parse(target)
        .map_err(|e| Error::invalid_param(format!("The state key must be a user ID: {e}")))?;
    let Some(Value::String(membership)) = content.get("membership") else {
        return Err(Error::bad_json("A member event needs a membership"));
    };
    let membership = MembershipState::from(membership.as_str());
    match membership {
        // As Synapse: a join (or invite) that leaves out the name or avatar gets the profile's.
        MembershipState::Join if target == sender => {
            let Value::Object(extra) = content else {
                return Err(Error::bad_json("Event content must be a JSON object"));
            };
            let profile = profile(services, sender).await?;
            if services.rooms.membership(room_id, sender).await? == Some(MembershipState::Join) {
                let content = Value::Object(join_content(extra, profile));
                return send(services, room_id, sender, &target, content).await;
            }
            let room = <&ruma::RoomOrAliasId>::from(room_id);
            joins::join_room(services, sender, room, &[], profile, extra).await?;
            member_event_id(services, room_id, &target).await
        }
        MembershipState::Invite if target.server_name() != services.server_name => {
            let reason = string_field(&content, "reason");
            let is_direct = content.get("is_direct") == Some(&Value::Bool(true));
            invites::invite_remote(services, room_id, sender, &target, reason, is_direct).await?;
            member_event_id(services, room_id, &target).await
        }
        MembershipState::Invite => {
            if !services.users.exists(&target).await? {
                return Err(Error::not_found(format!(
                    "No such user on this server: {target}"
                )));
            }
            services.limits.invite(sender, room_id, &target).await?;
            let Value::Object(mut content) = content else {
                return Err(Error::bad_json("Event content must be a JSON object"));
            };
            let (name, avatar) = profile(services, &target).await?;
            for (key, value) in [("displayname", name), ("avatar_url", avatar)] {
                if let Some(value) = value {
                    content.entry(key).or_insert(Value::String(value));
                }
            }
            send(services, room_id, sender, &target, Value::Object(content)).await
        }
        _ => send(services, room_id, sender, &target, content).await,
    }
}

async fn profile(services: &Services, user: &UserId) -> Result<Profile> {
    Ok(match services.users.get(user).await? {
        Some(user) => (user.displayname, user.avatar_url),
        None => (None, None),
    })
}

async fn send(
    services: &Services,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    content: Value,
) -> Result<OwnedEventId> {
    let draft = EventDraft::state(
        ruma::events::TimelineEventType::RoomMember,
        target.as_str(),
        content,
    );
    Ok(services
        .rooms
        .send_state(room_id, sender, draft)
        .await?
        .event_id)
}

fn string_field(content: &Value, field: &str) -> Option<String> {
    content
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The member event now in force for `target` (what a join or invite through another path
/// stored).
async fn member_event_id(
    services: &Services,
    room_id: &RoomId,
    target: &UserId,
) -> Result<OwnedEventId> {
    services
        .rooms
        .current_state_event_id(room_id, "m.room.member", target.as_str())
        .await?
        .ok_or_else(|| Error::internal("the member event just sent is not in the room state"))
}
