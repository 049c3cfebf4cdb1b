//! Room summaries (MSC3266, `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}`): what a
//! client shows of a room before joining it (Element X's room previews).
//!
//! Who may see a summary follows the MSC and Synapse (`_is_local_room_accessible`): anyone,
//! signed in or not, when the join rule is `public`, `knock` or `knock_restricted` or the history
//! is `world_readable`; otherwise a user who is joined or invited, or who is joined to a room a
//! `restricted` join rule allows. Any other room answers `404 M_NOT_FOUND` exactly as a room this
//! server does not know, so that the answer does not tell that it exists.
//!
//! Only rooms this server is in are summarised: Synapse asks another server's `/hierarchy` for a
//! room it does not know, which this server does not serve or ask yet.

use super::{Directory, content_str};
use crate::{
    error::{Error, Result},
    storage::{directory as store, push as push_store, rooms as rooms_store},
};
use ruma::{
    OwnedRoomId, RoomId, RoomOrAliasId, RoomVersionId, UInt, UserId,
    events::room::{join_rules::RoomJoinRulesEventContent, member::MembershipState},
    room::{AllowRule, JoinRule, JoinRuleSummary, RoomSummary, RoomType},
};

/// The state events a summary reads (all with an empty state key).
const SUMMARY_STATE: &[&str] = &[
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.canonical_alias",
    "m.room.avatar",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.encryption",
];

impl Directory {
    /// The summary of a room (by ID or alias) for `user` (`None`: not signed in), with the
    /// user's membership (`leave` when they have none; `None` when not signed in).
    pub async fn room_summary(
        &self,
        room: &RoomOrAliasId,
        user: Option<&UserId>,
    ) -> Result<(RoomSummary, Option<MembershipState>)> {
        let room_id: OwnedRoomId = match <&RoomId>::try_from(room) {
            Ok(room_id) => room_id.to_owned(),
            Err(alias) => self.resolve_alias(alias).await?.0,
        };
        let (room, user) = (room_id.clone(), user.map(ToString::to_string));
        self.db
            .read(move |c| summarize(c, &room, user.as_deref()))
            .await?
            .ok_or_else(|| Error::not_found(format!("Room {room_id} not found")))
    }
}

/// The summary, or `None` when the room is unknown or the user may not see it.
fn summarize(
    conn: &rusqlite::Connection,
    room_id: &RoomId,
    user: Option<&str>,
) -> Result<Option<(RoomSummary, Option<MembershipState>)>> {
    let room = room_id.as_str();
    let Some(version) = rooms_store::room_version(conn, room)? else {
        return Ok(None);
    };
    let state = store::current_state_contents(conn, room, SUMMARY_STATE)?;
    let event = |event_type: &str| state.iter().find(|e| e.event_type == event_type);
    let field = |event_type: &str, name: &str| event(event_type).and_then(|e| content_str(e, name));

    let join_rule = event("m.room.join_rules")
        .and_then(|e| serde_json::from_str::<RoomJoinRulesEventContent>(&e.content).ok())
        .map_or(JoinRule::Invite, |content| content.join_rule);
    let world_readable = field("m.room.history_visibility", "history_visibility").as_deref()
        == Some("world_readable");
    let membership = match user {
        Some(user) => Some(
            rooms_store::membership(conn, room, user)?.map_or(MembershipState::Leave, |(m, _)| {
                MembershipState::from(m.as_str())
            }),
        ),
        None => None,
    };

    let visible = world_readable
        || matches!(
            join_rule,
            JoinRule::Public | JoinRule::Knock | JoinRule::KnockRestricted(_)
        )
        || matches!(
            membership,
            Some(MembershipState::Join | MembershipState::Invite)
        )
        || match (&join_rule, user) {
            (JoinRule::Restricted(restricted), Some(user)) => {
                let allowed = restricted.allow.iter().filter_map(|rule| match rule {
                    AllowRule::RoomMembership(m) => Some(m.room_id.as_ref()),
                    _ => None,
                });
                joined_to_any(conn, user, allowed)?
            }
            _ => false,
        };
    if !visible {
        return Ok(None);
    }

    let joined = push_store::joined_member_count(conn, room)?;
    let mut summary = RoomSummary::new(
        room_id.to_owned(),
        JoinRuleSummary::from(join_rule),
        field("m.room.guest_access", "guest_access").as_deref() == Some("can_join"),
        UInt::try_from(joined.max(0) as u64).unwrap_or(UInt::MAX),
        world_readable,
    );
    summary.name = field("m.room.name", "name").filter(|n| !n.is_empty());
    summary.topic = field("m.room.topic", "topic").filter(|t| !t.is_empty());
    summary.canonical_alias =
        field("m.room.canonical_alias", "alias").and_then(|a| a.try_into().ok());
    summary.avatar_url = field("m.room.avatar", "url")
        .filter(|u| !u.is_empty())
        .map(Into::into);
    summary.room_type = field("m.room.create", "type").map(|t| RoomType::from(t.as_str()));
    summary.encryption = field("m.room.encryption", "algorithm").map(|a| a.as_str().into());
    summary.room_version = RoomVersionId::try_from(version.as_str()).ok();
    Ok(Some((summary, membership)))
}

/// Whether the user is joined to one of the rooms a `restricted` join rule allows.
fn joined_to_any<'a>(
    conn: &rusqlite::Connection,
    user: &str,
    rooms: impl IntoIterator<Item = &'a RoomId>,
) -> Result<bool> {
    for room in rooms {
        if rooms_store::membership(conn, room.as_str(), user)?.is_some_and(|(m, _)| m == "join") {
            return Ok(true);
        }
    }
    Ok(false)
}
