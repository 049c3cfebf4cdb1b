//! The space hierarchy for clients (`GET /_matrix/client/v1/rooms/{roomId}/hierarchy`): a space
//! and the rooms it links to, depth first in the spec's order of children, each room only when
//! the user may see its summary (the same rules and the same [`summarize`] as room previews).
//!
//! A room this server is in is described from its own state; one it is not in is asked of the
//! servers of the link's `via` through their federation `/hierarchy`, as Synapse does. Pages are
//! positions in that walk: each page walks again from the root (the hierarchy is not kept
//! between requests), bounded by [`MAX_WALK`] rooms and [`MAX_REMOTE`] remote requests.

use std::collections::HashSet;

use ruma::{
    OwnedRoomId, OwnedServerName, RoomId, UInt, UserId,
    api::client::space::{SpaceHierarchyRoomsChunk, get_hierarchy::v1 as client_hierarchy},
    events::space::child::HierarchySpaceChildEvent,
    serde::Raw,
};

use super::{
    Directory,
    summary::{Local, Viewer, child_links, summarize},
};
use crate::error::{Error, Result};

/// Rooms per page when the client names no `limit`, and the most it may ask for.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 100;
/// How deep the walk goes when the client names no `max_depth`, and the deepest it may ask.
const MAX_DEPTH: usize = 50;
/// The most rooms one request looks at, the pages before it included.
const MAX_WALK: usize = 1_000;
/// The most rooms of other servers one request asks about.
const MAX_REMOTE: usize = 20;

/// A room to visit: how it was linked and how deep.
struct Visit {
    room_id: OwnedRoomId,
    via: Vec<OwnedServerName>,
    depth: usize,
}

/// A visited room the user may see: its entry in the answer and its links to follow.
struct Seen {
    chunk: SpaceHierarchyRoomsChunk,
    links: Vec<HierarchySpaceChildEvent>,
}

impl Directory {
    /// `GET /_matrix/client/v1/rooms/{roomId}/hierarchy` for `user`. The root must be a room
    /// the user may see (`403 M_FORBIDDEN` otherwise, as Synapse answers); `from` is a
    /// `next_batch` of an earlier page.
    pub async fn client_hierarchy(
        &self,
        user: &UserId,
        root: &RoomId,
        from: Option<&str>,
        limit: Option<UInt>,
        max_depth: Option<UInt>,
        suggested_only: bool,
    ) -> Result<client_hierarchy::Response> {
        let skip = match from {
            None => 0,
            Some(token) => token
                .parse::<usize>()
                .map_err(|_| Error::invalid_param("Unknown pagination token"))?,
        };
        let limit = match limit.map(|l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX)) {
            None => DEFAULT_LIMIT,
            Some(0) => return Err(Error::invalid_param("limit must be greater than zero")),
            Some(limit) => limit.min(MAX_LIMIT),
        };
        let max_depth = max_depth.map_or(MAX_DEPTH, |d| {
            usize::try_from(u64::from(d))
                .unwrap_or(usize::MAX)
                .min(MAX_DEPTH)
        });

        let mut response = client_hierarchy::Response::new();
        let mut to_visit = vec![Visit {
            room_id: root.to_owned(),
            via: Vec::new(),
            depth: 0,
        }];
        let (mut visited, mut remote_left, mut shown) = (HashSet::new(), MAX_REMOTE, 0);
        while let Some(visit) = to_visit.pop() {
            if visited.len() >= MAX_WALK {
                break;
            }
            if !visited.insert(visit.room_id.clone()) {
                continue;
            }
            let seen = self
                .visit(user, &visit, suggested_only, &mut remote_left)
                .await?;
            let Some(Seen { chunk, mut links }) = seen else {
                if visit.depth == 0 {
                    return Err(Error::forbidden(format!("You cannot see the room {root}")));
                }
                continue;
            };
            if shown >= skip {
                if response.rooms.len() == limit {
                    response.next_batch = Some(shown.to_string());
                    break;
                }
                response.rooms.push(chunk);
            }
            shown += 1;
            if visit.depth < max_depth {
                sort_children(&mut links);
                // Depth first, the first child next: pushed last.
                for link in links.into_iter().rev() {
                    to_visit.push(Visit {
                        room_id: link.state_key,
                        via: link.content.via,
                        depth: visit.depth + 1,
                    });
                }
            }
        }
        Ok(response)
    }

    /// A room of the walk, if the user may see it: from this server's state, or asked of the
    /// link's `via` servers for a room this server is not in.
    async fn visit(
        &self,
        user: &UserId,
        visit: &Visit,
        suggested_only: bool,
        remote_left: &mut usize,
    ) -> Result<Option<Seen>> {
        let (room, reader) = (visit.room_id.clone(), user.to_string());
        let local = self
            .db
            .read(move |c| {
                let local = summarize(c, &room, Viewer::User(Some(&reader)))?;
                let links = match &local {
                    Local::Visible(_) => child_links(c, &room, suggested_only)?,
                    _ => Vec::new(),
                };
                Ok::<_, Error>((local, links))
            })
            .await?;
        match local {
            (Local::Visible(visible), links) => {
                let (raws, links): (Vec<_>, Vec<_>) = links.into_iter().unzip();
                Ok(Some(Seen {
                    chunk: SpaceHierarchyRoomsChunk::new(visible.0, raws),
                    links,
                }))
            }
            (Local::Hidden, _) => Ok(None),
            (Local::Unknown, _) => {
                self.visit_remote(user, visit, suggested_only, remote_left)
                    .await
            }
        }
    }

    /// A room this server is not in, from the first of the link's `via` servers that describes
    /// it, if the user may see it (Synapse's `_is_remote_room_accessible`).
    async fn visit_remote(
        &self,
        user: &UserId,
        visit: &Visit,
        suggested_only: bool,
        remote_left: &mut usize,
    ) -> Result<Option<Seen>> {
        let Some(room) = self
            .ask_hierarchy(&visit.room_id, &visit.via, suggested_only, remote_left)
            .await
        else {
            return Ok(None);
        };
        if !self.user_may_see_remote(user, &room.summary).await?.0 {
            return Ok(None);
        }
        let links = links_of(&room.children_state, suggested_only);
        Ok(Some(Seen {
            chunk: SpaceHierarchyRoomsChunk::new(room.summary, room.children_state),
            links,
        }))
    }
}

/// The links of another server's answer that still link (with a `via`; only the suggested
/// ones when `suggested_only`).
fn links_of(
    children_state: &[Raw<HierarchySpaceChildEvent>],
    suggested_only: bool,
) -> Vec<HierarchySpaceChildEvent> {
    children_state
        .iter()
        .filter_map(|raw| raw.deserialize().ok())
        .filter(|link| !link.content.via.is_empty() && (!suggested_only || link.content.suggested))
        .collect()
}

/// The spec's order of a space's children: those with an `order` first, by `order`; then by
/// the link's `origin_server_ts`; then by room ID.
fn sort_children(links: &mut [HierarchySpaceChildEvent]) {
    links.sort_by(|a, b| {
        let order = |link: &HierarchySpaceChildEvent| {
            link.content.order.as_ref().map(|o| o.as_str().to_owned())
        };
        match (order(a), order(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then(a.origin_server_ts.cmp(&b.origin_server_ts))
        .then(a.state_key.cmp(&b.state_key))
    });
}
