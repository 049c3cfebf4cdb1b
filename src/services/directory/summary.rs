//! Room summaries (MSC3266, `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}`): what a
//! client shows of a room before joining it (Element X's room previews).
//!
//! Who may see a summary follows the MSC and Synapse (`_is_local_room_accessible`): anyone,
//! signed in or not, when the join rule is `public`, `knock` or `knock_restricted` or the history
//! is `world_readable`; otherwise a user who is joined or invited, or who is joined to a room a
//! `restricted` join rule allows. Any other room answers `404 M_NOT_FOUND` exactly as a room this
//! server does not know, so that the answer does not tell that it exists.
//!
//! A room this server is not in is asked, as Synapse does, of other servers (`via`, or those of
//! the alias) through their federation `/hierarchy`, and shown under the same rules: they only
//! know that someone on this server asks. (This server does not serve `/hierarchy` itself yet.)

use super::{Directory, content_str};
use crate::{
    error::{Error, Result},
    storage::{directory as store, push as push_store, rooms as rooms_store},
};
use ruma::{
    OwnedRoomId, OwnedServerName, RoomId, RoomOrAliasId, RoomVersionId, UInt, UserId,
    api::federation::space::get_hierarchy::v1 as get_hierarchy,
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
    /// user's membership (`leave` when they have none; `None` when not signed in). A room this
    /// server is not in is asked of the servers in `via` and those of its alias.
    pub async fn room_summary(
        &self,
        room: &RoomOrAliasId,
        via: &[OwnedServerName],
        user: Option<&UserId>,
    ) -> Result<(RoomSummary, Option<MembershipState>)> {
        let (room_id, mut servers) = match <&RoomId>::try_from(room) {
            Ok(room_id) => (room_id.to_owned(), Vec::new()),
            Err(alias) => self.resolve_alias(alias).await?,
        };
        servers.extend(via.iter().cloned());
        let not_found = || Error::not_found(format!("Room {room_id} not found"));
        let (room, reader) = (room_id.clone(), user.map(ToString::to_string));
        let local = self
            .db
            .read(move |c| summarize(c, &room, reader.as_deref()))
            .await?;
        match local {
            Local::Visible(visible) => Ok(*visible),
            Local::Hidden => Err(not_found()),
            Local::Unknown => self
                .remote_summary(&room_id, &servers, user)
                .await?
                .ok_or_else(not_found),
        }
    }

    /// The summary of a room this server is not in, from the first of `servers` that answers
    /// its federation `/hierarchy`, if the user may see it (that server only knows that someone
    /// here asks).
    async fn remote_summary(
        &self,
        room_id: &RoomId,
        servers: &[OwnedServerName],
        user: Option<&UserId>,
    ) -> Result<Option<(RoomSummary, Option<MembershipState>)>> {
        let mut asked = Vec::new();
        for server in servers {
            if *server == self.server_name || asked.contains(&server) {
                continue;
            }
            asked.push(server);
            let request = get_hierarchy::Request::new(room_id.to_owned());
            let summary = match self.federation.send(server, request).await {
                Ok(response) if response.room.summary.room_id == room_id => response.room.summary,
                Ok(_) => continue,
                Err(error) => {
                    tracing::debug!("no summary of {room_id} from {server}: {error}");
                    continue;
                }
            };
            let Some(user) = user.map(ToString::to_string) else {
                return Ok(remote_visible_to_anyone(&summary).then_some((summary, None)));
            };
            let room = room_id.to_string();
            let allowed: Vec<OwnedRoomId> = match &summary.join_rule {
                JoinRuleSummary::Restricted(r) | JoinRuleSummary::KnockRestricted(r) => {
                    r.allowed_room_ids.clone()
                }
                _ => Vec::new(),
            };
            let (membership, in_allowed_room) = self
                .db
                .read(move |c| {
                    let membership = rooms_store::membership(c, &room, &user)?
                        .map_or(MembershipState::Leave, |(m, _)| m.as_str().into());
                    let in_allowed_room =
                        joined_to_any(c, &user, allowed.iter().map(AsRef::as_ref))?;
                    Ok::<_, Error>((membership, in_allowed_room))
                })
                .await?;
            let visible = remote_visible_to_anyone(&summary)
                || in_allowed_room
                || matches!(membership, MembershipState::Join | MembershipState::Invite);
            return Ok(visible.then_some((summary, Some(membership))));
        }
        Ok(None)
    }
}

/// What this server knows of a room for a user.
enum Local {
    /// Not a room this server is in.
    Unknown,
    /// A room the user may not see.
    Hidden,
    Visible(Box<(RoomSummary, Option<MembershipState>)>),
}

/// Another server's room that anyone may see: public, knockable or world-readable (Synapse's
/// `_is_remote_room_accessible`).
fn remote_visible_to_anyone(summary: &RoomSummary) -> bool {
    summary.world_readable
        || matches!(
            summary.join_rule,
            JoinRuleSummary::Public | JoinRuleSummary::Knock | JoinRuleSummary::KnockRestricted(_)
        )
}

/// The summary of a room this server knows, if the user may see it.
fn summarize(conn: &rusqlite::Connection, room_id: &RoomId, user: Option<&str>) -> Result<Local> {
    let room = room_id.as_str();
    let Some(version) = rooms_store::room_version(conn, room)? else {
        return Ok(Local::Unknown);
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
        return Ok(Local::Hidden);
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
    Ok(Local::Visible(Box::new((summary, membership))))
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
