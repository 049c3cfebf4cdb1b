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
//! know that someone on this server asks.
//!
//! Other servers ask this one the same way (`GET /_matrix/federation/v1/hierarchy/{roomId}`,
//! [`Directory::federation_hierarchy`]): a room and its `m.space.child` children, one level,
//! each summarized by the same [`summarize`] under Synapse's rules for a server
//! (`get_federation_hierarchy`): a room anyone may see, or one where the asking server has a
//! member joined or invited, or whose `restricted` join rule allows a room that server is in.
//! Children this server is in but the asker may not see are named in `inaccessible_children`;
//! children this server is not in are left out (the asker will ask their `via` servers).

use super::{Directory, content_str};
use crate::{
    error::{Error, Result},
    storage::{directory as store, push as push_store, rooms as rooms_store},
};
use ruma::{
    OwnedRoomId, OwnedServerName, RoomId, RoomOrAliasId, RoomVersionId, ServerName, UInt, UserId,
    api::federation::space::{SpaceHierarchyParentSummary, get_hierarchy::v1 as get_hierarchy},
    events::{
        room::{join_rules::RoomJoinRulesEventContent, member::MembershipState},
        space::child::HierarchySpaceChildEvent,
    },
    room::{AllowRule, JoinRule, JoinRuleSummary, RoomSummary, RoomType},
    serde::Raw,
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
            .read(move |c| summarize(c, &room, Viewer::User(reader.as_deref())))
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
        // Each server may be asked (once).
        let mut requests_left = servers.len();
        let Some(room) = self
            .ask_hierarchy(room_id, servers, false, &mut requests_left)
            .await
        else {
            return Ok(None);
        };
        let summary = room.summary;
        let Some(user) = user else {
            return Ok(remote_visible_to_anyone(&summary).then_some((summary, None)));
        };
        let (visible, membership) = self.user_may_see_remote(user, &summary).await?;
        Ok(visible.then_some((summary, Some(membership))))
    }

    /// A room's federation `/hierarchy` answer from the first of `servers` (each once, never
    /// this one) that describes that room; each request made takes one of `requests_left`.
    pub(super) async fn ask_hierarchy(
        &self,
        room_id: &RoomId,
        servers: &[OwnedServerName],
        suggested_only: bool,
        requests_left: &mut usize,
    ) -> Option<SpaceHierarchyParentSummary> {
        let mut asked = Vec::new();
        for server in servers {
            if *server == self.server_name || asked.contains(&server) || *requests_left == 0 {
                continue;
            }
            asked.push(server);
            *requests_left -= 1;
            let mut request = get_hierarchy::Request::new(room_id.to_owned());
            request.suggested_only = suggested_only;
            match self.federation.send(server, request).await {
                Ok(response) if response.room.summary.room_id == room_id => {
                    return Some(response.room);
                }
                Ok(_) => {}
                Err(error) => tracing::debug!("no hierarchy of {room_id} from {server}: {error}"),
            }
        }
        None
    }

    /// Whether `user` may see a room of another server from its summary (public, knockable or
    /// world-readable; or the user is joined or invited; or joined to a room its `restricted`
    /// join rule allows), and the user's membership there.
    pub(super) async fn user_may_see_remote(
        &self,
        user: &UserId,
        summary: &RoomSummary,
    ) -> Result<(bool, MembershipState)> {
        let (room, user) = (summary.room_id.to_string(), user.to_string());
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
                    .map_or(MembershipState::Leave, |m| m.membership.as_str().into());
                let in_allowed_room = joined_to_any(c, &user, allowed.iter().map(AsRef::as_ref))?;
                Ok::<_, Error>((membership, in_allowed_room))
            })
            .await?;
        let visible = remote_visible_to_anyone(summary)
            || in_allowed_room
            || matches!(membership, MembershipState::Join | MembershipState::Invite);
        Ok((visible, membership))
    }
}

/// The most children of a space one federation `/hierarchy` answer looks at (Synapse's
/// `MAX_ROOMS_PER_SPACE`).
const MAX_CHILDREN: usize = 50;

impl Directory {
    /// `GET /_matrix/federation/v1/hierarchy/{roomId}` for `origin`: the room with its
    /// `m.space.child` events, the children it may see and those it may not. A room this server
    /// does not know, or one `origin` may not see, is `404 M_NOT_FOUND`.
    pub async fn federation_hierarchy(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        suggested_only: bool,
    ) -> Result<get_hierarchy::Response> {
        let (origin, room, ours) = (
            origin.to_string(),
            room_id.to_owned(),
            self.server_name.to_string(),
        );
        let answer = self
            .db
            .read(move |c| hierarchy_for_server(c, &room, &origin, &ours, suggested_only))
            .await?;
        answer.ok_or_else(|| Error::not_found(format!("Room {room_id} not found")))
    }
}

/// The federation `/hierarchy` answer, `None` when `origin` may not see the room.
fn hierarchy_for_server(
    conn: &rusqlite::Connection,
    room_id: &RoomId,
    origin: &str,
    ours: &str,
    suggested_only: bool,
) -> Result<Option<get_hierarchy::Response>> {
    let Local::Visible(visible) = summarize(conn, room_id, Viewer::Server(origin))? else {
        return Ok(None);
    };
    let mut children_state = Vec::new();
    let mut children = Vec::new();
    let mut inaccessible_children = Vec::new();
    for (raw, event) in child_links(conn, room_id, suggested_only)? {
        children_state.push(raw);
        // Every link is shown, the first ones described (Synapse's `get_federation_hierarchy`).
        // A room this server is not in is not for it to describe: the asker asks its `via`.
        if children_state.len() > MAX_CHILDREN
            || !store::server_has_member(conn, event.state_key.as_str(), ours, false)?
        {
            continue;
        }
        match summarize(conn, &event.state_key, Viewer::Server(origin))? {
            Local::Visible(child) => children.push(child.0),
            Local::Hidden => inaccessible_children.push(event.state_key),
            Local::Unknown => {}
        }
    }
    let mut response =
        get_hierarchy::Response::new(SpaceHierarchyParentSummary::new(visible.0, children_state));
    response.children = children;
    response.inaccessible_children = inaccessible_children;
    Ok(Some(response))
}

/// A space's links to its children: its current `m.space.child` events that still link (not
/// redacted, with a `via`), only the suggested ones when `suggested_only`, as stored and read.
pub(super) fn child_links(
    conn: &rusqlite::Connection,
    room_id: &RoomId,
    suggested_only: bool,
) -> Result<Vec<(Raw<HierarchySpaceChildEvent>, HierarchySpaceChildEvent)>> {
    let mut links = Vec::new();
    for child in store::space_children(conn, room_id.as_str())? {
        // A redacted `m.space.child` (no `via`) no longer links the room, as in Synapse.
        if child.redacted {
            continue;
        }
        let json = serde_json::json!({
            "type": "m.space.child",
            "state_key": child.state_key,
            "sender": child.sender,
            "origin_server_ts": child.origin_server_ts,
            "content": serde_json::from_str::<serde_json::Value>(&child.content)
                .unwrap_or_default(),
        });
        let Ok(raw) =
            serde_json::value::to_raw_value(&json).map(Raw::<HierarchySpaceChildEvent>::from_json)
        else {
            continue;
        };
        let Ok(event) = raw.deserialize() else {
            // Stored data that does not read as a child link is left out, not an error.
            continue;
        };
        if event.content.via.is_empty() || (suggested_only && !event.content.suggested) {
            continue;
        }
        links.push((raw, event));
    }
    Ok(links)
}

/// Who asks for a summary.
#[derive(Clone, Copy)]
pub(super) enum Viewer<'a> {
    /// A user of this server (`None`: not signed in).
    User(Option<&'a str>),
    /// Another server, over federation (its name).
    Server(&'a str),
}

/// What this server knows of a room for a user or a server.
pub(super) enum Local {
    /// Not a room this server is in.
    Unknown,
    /// A room the viewer may not see.
    Hidden,
    Visible(Box<(RoomSummary, Option<MembershipState>)>),
}

/// Another server's room that anyone may see: public, knockable or world-readable (Synapse's
/// `_is_remote_room_accessible`).
pub(super) fn remote_visible_to_anyone(summary: &RoomSummary) -> bool {
    summary.world_readable
        || matches!(
            summary.join_rule,
            JoinRuleSummary::Public | JoinRuleSummary::Knock | JoinRuleSummary::KnockRestricted(_)
        )
}

/// The summary of a room this server knows, if the viewer may see it: the one place that says
/// what a room's summary is, for room previews and for other servers' `/hierarchy`.
pub(super) fn summarize(
    conn: &rusqlite::Connection,
    room_id: &RoomId,
    viewer: Viewer,
) -> Result<Local> {
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
    let user = match viewer {
        Viewer::User(user) => user,
        Viewer::Server(_) => None,
    };
    let membership = match user {
        Some(user) => Some(
            rooms_store::membership(conn, room, user)?.map_or(MembershipState::Leave, |m| {
                MembershipState::from(m.membership.as_str())
            }),
        ),
        None => None,
    };

    let allowed: Vec<&RoomId> = match &join_rule {
        JoinRule::Restricted(r) | JoinRule::KnockRestricted(r) => r
            .allow
            .iter()
            .filter_map(|rule| match rule {
                AllowRule::RoomMembership(m) => Some(m.room_id.as_ref()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
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
        || match viewer {
            Viewer::User(Some(user)) => joined_to_any(conn, user, allowed.iter().copied())?,
            Viewer::User(None) => false,
            // The asking server filters for its own users (Synapse's `_is_local_room_accessible`
            // with an origin): it may see a room where it has someone, or could have.
            Viewer::Server(origin) => {
                store::server_has_member(conn, room, origin, true)?
                    || allowed.iter().try_fold(false, |found, allowed| {
                        Ok::<_, Error>(
                            found
                                || store::server_has_member(conn, allowed.as_str(), origin, false)?,
                        )
                    })?
            }
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
        let membership = rooms_store::membership(conn, room.as_str(), user)?;
        if membership.is_some_and(|m| m.membership == MembershipState::Join.as_str()) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Writes a current state event of a room (and the room, the first time).
    fn state(conn: &rusqlite::Connection, room: &str, kind: &str, key: &str, content: Value) {
        conn.execute(
            "INSERT OR IGNORE INTO rooms (room_id, room_version, creator, created_ts)
             VALUES (?1, '12', '@alice:here', 0)",
            [room],
        )
        .unwrap();
        let event_id = format!("${room}{kind}{key}");
        let json = json!({"type": kind, "state_key": key, "sender": "@alice:here",
            "origin_server_ts": 7, "content": content});
        conn.execute(
            "INSERT INTO events (event_id, room_id, type, state_key, sender, origin_server_ts,
                                 topological_ordering, state_group, json)
             VALUES (?1, ?2, ?3, ?4, '@alice:here', 7, 1, 0, ?5)",
            [&event_id, room, kind, key, &json.to_string()],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO UPDATE SET event_id = excluded.event_id",
            [room, kind, key, &event_id],
        )
        .unwrap();
    }

    fn member(conn: &rusqlite::Connection, room: &str, user: &str, membership: &str) {
        conn.execute(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_ordering)
             VALUES (?1, ?2, ?3, '$m', 0)
             ON CONFLICT DO UPDATE SET membership = excluded.membership",
            [room, user, membership],
        )
        .unwrap();
    }

    fn room(conn: &rusqlite::Connection, id: &str, join_rule: Value) {
        state(conn, id, "m.room.create", "", json!({}));
        state(conn, id, "m.room.join_rules", "", join_rule);
        member(conn, id, "@alice:here", "join");
    }

    fn hierarchy(
        conn: &rusqlite::Connection,
        room: &str,
        origin: &str,
        suggested_only: bool,
    ) -> Option<get_hierarchy::Response> {
        let room = RoomId::parse(room).unwrap();
        hierarchy_for_server(conn, &room, origin, "here", suggested_only).unwrap()
    }

    /// The federation `/hierarchy` of a space: its public child is described, its invite-only
    /// child is named inaccessible, a child this server is not in and a redacted link are left
    /// out; `suggested_only` keeps only suggested links.
    #[test]
    fn a_space_shows_other_servers_what_they_may_see() {
        let conn = crate::storage::migrated_in_memory();
        room(&conn, "!space:here", json!({"join_rule": "public"}));
        room(&conn, "!open:here", json!({"join_rule": "public"}));
        room(&conn, "!closed:here", json!({"join_rule": "invite"}));
        let link = |child: &str, content: Value| {
            state(&conn, "!space:here", "m.space.child", child, content);
        };
        link("!open:here", json!({"via": ["here"], "suggested": true}));
        link("!closed:here", json!({"via": ["here"]}));
        link("!elsewhere:there", json!({"via": ["there"]}));
        link("!unlinked:here", json!({}));

        let answer = hierarchy(&conn, "!space:here", "there", false).unwrap();
        assert_eq!(answer.room.summary.room_id, "!space:here");
        let linked: Vec<String> = answer
            .room
            .children_state
            .iter()
            .map(|e| e.deserialize().unwrap().state_key.to_string())
            .collect();
        assert_eq!(linked, ["!closed:here", "!elsewhere:there", "!open:here"]);
        let children: Vec<&RoomId> = answer.children.iter().map(|c| &*c.room_id).collect();
        assert_eq!(children, ["!open:here"]);
        assert_eq!(answer.inaccessible_children, ["!closed:here"]);

        let suggested = hierarchy(&conn, "!space:here", "there", true).unwrap();
        assert_eq!(suggested.room.children_state.len(), 1);
        assert_eq!(suggested.children.len(), 1);
        assert!(suggested.inaccessible_children.is_empty());
    }

    /// An invite-only room is seen by a server with a user invited or joined to it, a
    /// `restricted` one by a server with a user in an allowed room; no other server sees either,
    /// nor a room this server does not know.
    #[test]
    fn a_private_room_is_seen_only_by_servers_with_someone_there() {
        let conn = crate::storage::migrated_in_memory();
        room(&conn, "!closed:here", json!({"join_rule": "invite"}));
        room(&conn, "!club:here", json!({"join_rule": "invite"}));
        room(
            &conn,
            "!restricted:here",
            json!({"join_rule": "restricted", "allow": [
                {"type": "m.room_membership", "room_id": "!club:here"}]}),
        );
        assert!(hierarchy(&conn, "!unknown:here", "there", false).is_none());
        for room in ["!closed:here", "!restricted:here"] {
            assert!(hierarchy(&conn, room, "there", false).is_none(), "{room}");
        }
        member(&conn, "!closed:here", "@bob:there", "invite");
        assert!(hierarchy(&conn, "!closed:here", "there", false).is_some());
        assert!(hierarchy(&conn, "!closed:here", "elsewhere", false).is_none());
        // An invite to the allowed room is not enough: the server needs someone joined to it.
        member(&conn, "!club:here", "@bob:there", "invite");
        assert!(hierarchy(&conn, "!restricted:here", "there", false).is_none());
        member(&conn, "!club:here", "@bob:there", "join");
        let answer = hierarchy(&conn, "!restricted:here", "there", false).unwrap();
        let JoinRuleSummary::Restricted(restricted) = &answer.room.summary.join_rule else {
            panic!("{:?}", answer.room.summary.join_rule);
        };
        assert_eq!(restricted.allowed_room_ids, ["!club:here"]);
        member(&conn, "!closed:here", "@bob:there", "leave");
        assert!(hierarchy(&conn, "!closed:here", "there", false).is_none());
    }
}
