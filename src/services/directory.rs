//! The directories: room aliases, the public room directory (`/publicRooms`, room visibility) and
//! the user directory.
//!
//! Who may do what follows Synapse:
//! * an alias is created by a member of the room (server admins need not be members); it must be
//!   an alias of this server and not taken yet;
//! * an alias is deleted by whoever created it, by a server admin, or by a member of the room with
//!   the power to send `m.room.canonical_alias`; if the room's canonical alias event names it, the
//!   event is sent again without it, as the deleting user (silently skipped when they may not);
//! * a room's local aliases are listed to its members, to anyone when its history is
//!   world-readable, and to server admins;
//! * a room is published or unpublished by a server admin or a member with the power to send
//!   `m.room.canonical_alias`;
//! * the public room list shows published rooms that have joined members and that anyone can
//!   join (join rule `public`, `knock` or `knock_restricted`) or read (`world_readable`), largest
//!   first; application services keep lists of their own per network (`third_party_instance_id`
//!   `{service}|{network}` shows one, `include_all_networks` all of them and the main one), which
//!   only the service edits; another server's list is asked of that server
//!   (`/_matrix/federation/v1/publicRooms`, `POST` when there is a filter), and its error passed
//!   on as Synapse does (`502` when it cannot be reached);
//! * the user directory finds users who share a room with the searcher or who are in a public
//!   room (join rule `public` or world-readable history), or every active local user and every
//!   other server's user in a room here with `user_directory.search_all_users`; other servers'
//!   users with the name and avatar of their newest join event in such a room (Synapse keeps
//!   them from member events too), so a profile change, which arrives as a member event, shows.
//!
//! Storage (`storage/directory.rs`): aliases in `room_aliases` with their creator; the public list
//! is the `published` flag of `rooms` (set by `createRoom` with `visibility: public` or by `PUT
//! /directory/list/room`), paged by `(joined members, room ID)` tokens; the user directory is
//! computed per search from `memberships` (and the member events it points at), with no table
//! of its own.

use std::{cmp::Reverse, sync::Arc};

use http::StatusCode;
use ruma::{
    OwnedMxcUri, OwnedRoomAliasId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomAliasId, RoomId,
    ServerName, UInt, UserId,
    api::error::ErrorKind,
    directory::{Filter, PublicRoomsChunk, PublicRoomsChunkInit, RoomNetwork, RoomTypeFilter},
    events::{StateEventType, TimelineEventType, room::member::MembershipState},
    room::{JoinRuleKind, RoomType},
};
use rusqlite::Connection;
use serde_json::{Map, Value};

mod hierarchy;
mod summary;

use super::{
    federation::client::{FederationClient, FederationError},
    rooms::{EventDraft, Rooms, power_levels},
};
use crate::{
    config::UserDirectoryConfig,
    error::{Error, Result},
    storage::{
        Database,
        directory::{self as store, DirectoryUser, StateContent},
        rooms as rooms_store,
    },
};

/// The error a client gets when another server's room list cannot be had: that server's own
/// Matrix error, else `502` (Synapse's "Failed to fetch room list").
fn remote_list_error(server: &ServerName, error: FederationError) -> Error {
    tracing::info!(%server, "cannot fetch the public room list: {error}");
    match (error.status(), error.kind()) {
        (Some(status), Some(kind)) if status.is_client_error() || status.is_server_error() => {
            Error::new(
                status,
                kind.clone(),
                format!("{server} refused to list its rooms: {error}"),
            )
        }
        _ => Error::new(
            StatusCode::BAD_GATEWAY,
            ErrorKind::Unknown,
            format!("Failed to fetch room list from {server}"),
        ),
    }
}

/// The most users one user directory search returns.
const MAX_SEARCH_LIMIT: usize = 1000;

pub struct Directory {
    db: Database,
    server_name: OwnedServerName,
    search_all_users: bool,
    /// Other servers' aliases and public room lists are asked of them.
    federation: Arc<FederationClient>,
}

/// What `/publicRooms` asks for.
#[derive(Debug, Default)]
pub struct PublicRoomsQuery<'a> {
    /// Another server's directory, asked of that server.
    pub server: Option<&'a ServerName>,
    /// At most this many rooms; `None` or 0: all of them.
    pub limit: Option<UInt>,
    /// A `next_batch` or `prev_batch` token of an earlier page.
    pub since: Option<&'a str>,
    pub filter: Option<&'a Filter>,
    pub network: Option<&'a RoomNetwork>,
}

/// The lists a `/publicRooms` shows.
enum Listed {
    /// The server's own (`published` rooms).
    Main,
    /// An application service's list of one network: (service ID, network ID).
    Appservice(String, String),
    /// The server's and every service's (`include_all_networks`).
    All,
}

/// One page of the public room list.
#[derive(Debug, Default)]
pub struct PublicRoomsPage {
    pub chunk: Vec<PublicRoomsChunk>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    /// Published rooms the list may show (of the room types asked for), whatever the search term.
    pub total_room_count_estimate: u64,
}

/// A user found in the user directory.
#[derive(Debug, Clone)]
pub struct FoundUser {
    pub user_id: OwnedUserId,
    pub display_name: Option<String>,
    pub avatar_url: Option<OwnedMxcUri>,
}

impl Directory {
    pub fn new(
        db: Database,
        server_name: OwnedServerName,
        config: &UserDirectoryConfig,
        federation: Arc<FederationClient>,
    ) -> Self {
        Self {
            db,
            server_name,
            search_all_users: config.search_all_users,
            federation,
        }
    }

    // ---- aliases ----

    /// The room an alias points to, and the servers that can help to join it.
    pub async fn resolve_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        if alias.server_name() != self.server_name {
            return self.resolve_remote_alias(alias).await;
        }
        self.resolve_local_alias(alias).await
    }

    /// An alias of another server, asked of that server (`/query/directory`).
    async fn resolve_remote_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        use ruma::api::federation::query::get_room_information::v1 as query;
        let response = self
            .federation
            .send(alias.server_name(), query::Request::new(alias.to_owned()))
            .await
            .map_err(|e| {
                crate::services::federation::client::remote_error(
                    e,
                    format!("Room alias {alias} not found"),
                )
            })?;
        let mut servers = response.servers;
        // The alias's server knows the room, whatever it listed.
        if !servers.iter().any(|s| s == alias.server_name()) {
            servers.insert(0, alias.server_name().to_owned());
        }
        Ok((response.room_id, servers))
    }

    /// An alias of this server: the room, this server and the servers of its joined members.
    pub async fn resolve_local_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        let key = alias.to_string();
        let found = self
            .db
            .read(move |c| rooms_store::alias_room(c, &key).map_err(Error::from))
            .await?;
        let rooms_store::AliasTarget { room_id, .. } =
            found.ok_or_else(|| Error::not_found(format!("Room alias {alias} not found")))?;
        let room = room_id.clone();
        let joined = self
            .db
            .read(move |c| {
                rooms_store::members_with(c, &room, MembershipState::Join.as_str())
                    .map_err(Error::from)
            })
            .await?;
        // This server first, then the other servers of joined members, each once.
        let mut servers = vec![self.server_name.clone()];
        let others: std::collections::BTreeSet<OwnedServerName> = joined
            .iter()
            .filter_map(|user| <&UserId>::try_from(user.as_str()).ok())
            .map(|user| user.server_name().to_owned())
            .filter(|server| *server != self.server_name)
            .collect();
        servers.extend(others);
        Ok((
            OwnedRoomId::try_from(room_id).map_err(Error::internal)?,
            servers,
        ))
    }

    /// Points a new alias of this server at a room.
    pub async fn create_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<()> {
        self.check_local_alias(alias)?;
        let localpart = alias.alias();
        if localpart.is_empty()
            || localpart
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::invalid_param(format!(
                "Room alias {alias} has an empty local part or invalid characters"
            )));
        }
        let (key, room, user) = (alias.to_string(), room_id.to_string(), user.to_string());
        self.db
            .write(move |tx| {
                if rooms_store::room_version(tx, &room)?.is_none() {
                    return Err(Error::not_found(format!("Unknown room {room}")));
                }
                if !store::is_admin(tx, &user)? && !is_joined(tx, &room, &user)? {
                    return Err(Error::forbidden(
                        "You must be in the room to create an alias for it",
                    ));
                }
                if !rooms_store::insert_alias(tx, &key, &room, &user)? {
                    return Err(Error::new(
                        StatusCode::CONFLICT,
                        ErrorKind::Unknown,
                        format!("Room alias {key} already exists"),
                    ));
                }
                Ok(())
            })
            .await?;
        tracing::info!(%alias, room = %room_id, "room alias created");
        Ok(())
    }

    /// Removes an alias, and drops it from the room's `m.room.canonical_alias` event.
    pub async fn delete_alias(
        &self,
        rooms: &Rooms,
        alias: &RoomAliasId,
        user: &UserId,
    ) -> Result<()> {
        self.check_local_alias(alias)?;
        let (key, user_s) = (alias.to_string(), user.to_string());
        let room_id = self
            .db
            .write(move |tx| {
                let rooms_store::AliasTarget { room_id, creator } =
                    rooms_store::alias_room(tx, &key)?
                        .ok_or_else(|| Error::not_found(format!("Room alias {key} not found")))?;
                if creator != user_s
                    && !store::is_admin(tx, &user_s)?
                    && !can_edit_directory(tx, &room_id, &user_s)?
                {
                    return Err(Error::forbidden(
                        "You may not delete this alias: it is not yours and you may not change \
                         the room's aliases",
                    ));
                }
                store::delete_alias(tx, &key)?;
                Ok(room_id)
            })
            .await?;
        tracing::info!(%alias, room = %room_id, "room alias deleted");
        let room_id = OwnedRoomId::try_from(room_id).map_err(Error::internal)?;
        if let Err(e) = self
            .drop_from_canonical_alias(rooms, &room_id, alias, user)
            .await
        {
            tracing::warn!(%alias, room = %room_id, "cannot update m.room.canonical_alias: {e}");
        }
        Ok(())
    }

    /// Sends the room's canonical alias event again without `alias`, if it names it.
    async fn drop_from_canonical_alias(
        &self,
        rooms: &Rooms,
        room_id: &RoomId,
        alias: &RoomAliasId,
        user: &UserId,
    ) -> Result<()> {
        let room = room_id.to_string();
        let current = self
            .db
            .read(move |c| {
                store::current_state_contents(c, &room, &["m.room.canonical_alias"])
                    .map_err(Error::from)
            })
            .await?;
        let Some(event) = current.into_iter().next().filter(|e| !e.redacted) else {
            return Ok(());
        };
        let Ok(Value::Object(mut content)) = serde_json::from_str::<Value>(&event.content) else {
            return Ok(());
        };
        if !without_alias(&mut content, alias.as_str()) {
            return Ok(());
        }
        rooms
            .append(
                room_id,
                user,
                EventDraft::state(
                    TimelineEventType::RoomCanonicalAlias,
                    "",
                    Value::Object(content),
                ),
            )
            .await?;
        Ok(())
    }

    /// The aliases of this server that point to the room.
    pub async fn room_aliases(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Vec<OwnedRoomAliasId>> {
        let (room, user) = (room_id.to_string(), user.to_string());
        let aliases = self
            .db
            .read(move |c| {
                let allowed = is_joined(c, &room, &user)?
                    || store::is_admin(c, &user)?
                    || is_world_readable(c, &room)?;
                if !allowed {
                    return Err(Error::forbidden("You are not in this room"));
                }
                Ok(store::aliases_of_room(c, &room)?)
            })
            .await?;
        Ok(aliases
            .into_iter()
            .filter_map(|a| OwnedRoomAliasId::try_from(a).ok())
            .collect())
    }

    fn check_local_alias(&self, alias: &RoomAliasId) -> Result<()> {
        if alias.server_name() == self.server_name {
            Ok(())
        } else {
            Err(Error::invalid_param(format!(
                "Room alias {alias} is not an alias of this server ({})",
                self.server_name
            )))
        }
    }

    // ---- the room directory ----

    /// Whether the room is listed in the public room directory.
    pub async fn is_published(&self, room_id: &RoomId) -> Result<bool> {
        let room = room_id.to_string();
        self.db
            .read(move |c| store::published(c, &room).map_err(Error::from))
            .await?
            .ok_or_else(|| Error::not_found(format!("Unknown room {room_id}")))
    }

    /// Lists the room in the public room directory, or takes it off.
    pub async fn set_published(
        &self,
        room_id: &RoomId,
        user: &UserId,
        published: bool,
    ) -> Result<()> {
        let (room, user_s) = (room_id.to_string(), user.to_string());
        self.db
            .write(move |tx| {
                if store::published(tx, &room)?.is_none() {
                    return Err(Error::not_found(format!("Unknown room {room}")));
                }
                if !store::is_admin(tx, &user_s)? && !can_edit_directory(tx, &room, &user_s)? {
                    return Err(Error::forbidden(
                        "You may not change whether this room is published",
                    ));
                }
                rooms_store::set_published(tx, &room, published)?;
                Ok(())
            })
            .await?;
        tracing::info!(room = %room_id, %user, published, "room directory visibility changed");
        Ok(())
    }

    /// Adds a room to the list an application service keeps for one of its networks
    /// (`PUT /directory/list/appservice/{networkId}/{roomId}`), or takes it off.
    pub async fn set_appservice_listed(
        &self,
        appservice: &str,
        network: &str,
        room_id: &RoomId,
        listed: bool,
    ) -> Result<()> {
        let (service, network_s, room) = (
            appservice.to_owned(),
            network.to_owned(),
            room_id.to_string(),
        );
        self.db
            .write(move |tx| {
                store::set_appservice_listed(tx, &service, &network_s, &room, listed)
                    .map_err(Error::from)
            })
            .await?;
        tracing::info!(%appservice, %network, room = %room_id, listed, "appservice room list");
        Ok(())
    }

    /// One page of the public room list.
    pub async fn public_rooms(&self, query: PublicRoomsQuery<'_>) -> Result<PublicRoomsPage> {
        if let Some(server) = query.server
            && server != self.server_name
        {
            return self.remote_public_rooms(server, query).await;
        }
        // Which lists (Synapse's `network_tuple`): the main one, one service's list of a
        // network, or all of them.
        let list = match query.network {
            None | Some(RoomNetwork::Matrix) => Listed::Main,
            Some(RoomNetwork::All) => Listed::All,
            Some(RoomNetwork::ThirdParty(id)) => match id.split_once('|') {
                Some((service, network)) if !network.contains('|') => {
                    Listed::Appservice(service.to_owned(), network.to_owned())
                }
                _ => {
                    return Err(Error::new(
                        StatusCode::BAD_REQUEST,
                        ErrorKind::Unknown,
                        format!("Invalid ID {id:?}"),
                    ));
                }
            },
            Some(other) => {
                return Err(Error::invalid_param(format!(
                    "Unknown room network {other:?}"
                )));
            }
        };
        let since = query.since.map(ListToken::parse).transpose()?;
        let default_filter = Filter::default();
        let filter = query.filter.unwrap_or(&default_filter);

        let mut rooms =
            self.db
                .read(move |c| {
                    let mut rooms = match &list {
                        Listed::Main | Listed::All => store::published_rooms(c)?,
                        Listed::Appservice(..) => Vec::new(),
                    };
                    match &list {
                        Listed::Main => {}
                        Listed::All => rooms.extend(store::appservice_listed_rooms(c, None)?),
                        Listed::Appservice(service, network) => rooms
                            .extend(store::appservice_listed_rooms(c, Some((service, network)))?),
                    }
                    // A room of the main list and a service's once.
                    rooms.sort();
                    rooms.dedup();
                    let mut listed = Vec::new();
                    for store::ListedRoom {
                        room_id,
                        joined_members: joined,
                    } in rooms
                    {
                        if joined <= 0 {
                            continue;
                        }
                        if let Some(room) = listed_room(c, &room_id, joined)? {
                            listed.push(room);
                        }
                    }
                    Ok::<_, Error>(listed)
                })
                .await?;
        if !filter.room_types.is_empty() {
            rooms.retain(|room| {
                filter
                    .room_types
                    .contains(&RoomTypeFilter::from(room.room_type.clone()))
            });
        }
        let total = rooms.len() as u64;
        if let Some(term) = filter
            .generic_search_term
            .as_deref()
            .map(str::to_lowercase)
            .filter(|t| !t.is_empty())
        {
            rooms.retain(|room| matches_search(room, &term));
        }
        // Largest first; ties in room ID order, descending, as Synapse.
        rooms.sort_by_key(|room| Reverse(ListToken::key_of(room)));

        let limit = query
            .limit
            .map(u64::from)
            .filter(|&l| l > 0)
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        // `rooms` is in list order; `[start, end)` is the page.
        let (start, end) = match &since {
            None => (0, limit.min(rooms.len())),
            Some(ListToken::After(key)) => {
                let start = rooms.partition_point(|r| ListToken::key_of(r) >= *key);
                (start, start.saturating_add(limit).min(rooms.len()))
            }
            Some(ListToken::Before(key)) => {
                let end = rooms.partition_point(|r| ListToken::key_of(r) > *key);
                (end.saturating_sub(limit), end)
            }
        };
        let next_batch = (end < rooms.len() && end > start)
            .then(|| ListToken::After(ListToken::key_of(&rooms[end - 1])).to_string());
        let prev_batch = (start > 0 && end > start)
            .then(|| ListToken::Before(ListToken::key_of(&rooms[start])).to_string());
        Ok(PublicRoomsPage {
            chunk: rooms.drain(start..end).collect(),
            next_batch,
            prev_batch,
            total_room_count_estimate: total,
        })
    }

    /// Another server's public room list, asked over federation. Always with the filtered
    /// (`POST`) form, which every server has and which carries `since`, `limit` and the network
    /// as the `GET` one does, plus the filter when there is one.
    async fn remote_public_rooms(
        &self,
        server: &ServerName,
        query: PublicRoomsQuery<'_>,
    ) -> Result<PublicRoomsPage> {
        use ruma::api::federation::directory::get_public_rooms_filtered::v1 as filtered;
        let mut request = filtered::Request::new();
        request.limit = query.limit;
        request.since = query.since.map(str::to_owned);
        request.filter = query.filter.cloned().unwrap_or_default();
        request.room_network = query.network.cloned().unwrap_or_default();
        let response = self
            .federation
            .send(server, request)
            .await
            .map_err(|e| remote_list_error(server, e))?;
        Ok(PublicRoomsPage {
            total_room_count_estimate: response
                .total_room_count_estimate
                .map_or(response.chunk.len() as u64, u64::from),
            chunk: response.chunk,
            next_batch: response.next_batch,
            prev_batch: response.prev_batch,
        })
    }

    // ---- the user directory ----

    /// Users whose ID localpart or display name contain every word of `term` (ignoring case);
    /// at most `limit` of them, best matches first, and whether more matched.
    pub async fn search_users(
        &self,
        searcher: &UserId,
        term: &str,
        limit: UInt,
    ) -> Result<(Vec<FoundUser>, bool)> {
        let term = term.trim().to_lowercase();
        if term.is_empty() {
            return Ok((Vec::new(), false));
        }
        let limit = usize::try_from(u64::from(limit))
            .unwrap_or(usize::MAX)
            .min(MAX_SEARCH_LIMIT);
        let (searcher, all) = (searcher.to_string(), self.search_all_users);
        let candidates = self
            .db
            .read(move |c| {
                let mut users = if all {
                    store::active_users(c)
                } else {
                    store::users_visible_to(c, &searcher)
                }?;
                users.extend(store::remote_users_visible_to(c, &searcher, all)?);
                Ok::<_, Error>(users)
            })
            .await?;
        let mut found: Vec<(u8, DirectoryUser)> = candidates
            .into_iter()
            .filter_map(|user| match_rank(&user, &term).map(|rank| (rank, user)))
            .collect();
        found.sort_by(|(rank_a, a), (rank_b, b)| {
            (
                rank_a,
                a.displayname.is_none(),
                a.avatar_url.is_none(),
                &a.user_id,
            )
                .cmp(&(
                    rank_b,
                    b.displayname.is_none(),
                    b.avatar_url.is_none(),
                    &b.user_id,
                ))
        });
        let limited = found.len() > limit;
        let users = found
            .into_iter()
            .take(limit)
            .filter_map(|(_, user)| {
                Some(FoundUser {
                    user_id: OwnedUserId::try_from(user.user_id).ok()?,
                    display_name: user.displayname,
                    avatar_url: user.avatar_url.map(OwnedMxcUri::from),
                })
            })
            .collect();
        Ok((users, limited))
    }
}

/// Removes `alias` from a canonical alias content; returns whether it was there.
fn without_alias(content: &mut Map<String, Value>, alias: &str) -> bool {
    let mut changed = false;
    if content.get("alias").and_then(Value::as_str) == Some(alias) {
        content.remove("alias");
        changed = true;
    }
    if let Some(Value::Array(alt)) = content.get_mut("alt_aliases")
        && alt.iter().any(|a| a.as_str() == Some(alias))
    {
        alt.retain(|a| a.as_str() != Some(alias));
        if alt.is_empty() {
            content.remove("alt_aliases");
        }
        changed = true;
    }
    changed
}

fn is_joined(conn: &Connection, room_id: &str, user_id: &str) -> Result<bool> {
    Ok(rooms_store::membership(conn, room_id, user_id)?
        .is_some_and(|m| m.membership == MembershipState::Join.as_str()))
}

fn is_world_readable(conn: &Connection, room_id: &str) -> Result<bool> {
    let state = store::current_state_contents(conn, room_id, &["m.room.history_visibility"])?;
    Ok(state
        .iter()
        .any(|e| content_str(e, "history_visibility").as_deref() == Some("world_readable")))
}

/// A joined member who may send `m.room.canonical_alias`: Synapse's test for changing the
/// room's aliases and its place in the directory.
fn can_edit_directory(conn: &Connection, room_id: &str, user_id: &str) -> Result<bool> {
    if !is_joined(conn, room_id, user_id)? {
        return Ok(false);
    }
    let room = RoomId::parse(room_id).map_err(Error::internal)?;
    let Some(levels) = power_levels::current(conn, &room)? else {
        return Ok(false);
    };
    let user = UserId::parse(user_id).map_err(Error::internal)?;
    Ok(levels.user_can_send_state(&user, StateEventType::RoomCanonicalAlias))
}

/// A string field of a state event's content; `None` for a redacted event whose field a
/// redaction removes.
fn content_str(event: &StateContent, field: &str) -> Option<String> {
    let kept_by_redaction = matches!(
        (event.event_type.as_str(), field),
        ("m.room.join_rules", "join_rule")
            | ("m.room.history_visibility", "history_visibility")
            | ("m.room.create", _)
    );
    if event.redacted && !kept_by_redaction {
        return None;
    }
    let content: Value = serde_json::from_str(&event.content).ok()?;
    content.get(field)?.as_str().map(str::to_owned)
}

/// The directory entry of a published room, if the list may show it.
fn listed_room(conn: &Connection, room_id: &str, joined: i64) -> Result<Option<PublicRoomsChunk>> {
    let state = store::current_state_contents(
        conn,
        room_id,
        &[
            "m.room.create",
            "m.room.name",
            "m.room.topic",
            "m.room.canonical_alias",
            "m.room.avatar",
            "m.room.join_rules",
            "m.room.history_visibility",
            "m.room.guest_access",
        ],
    )?;
    let field = |event_type: &str, field: &str| {
        state
            .iter()
            .find(|e| e.event_type == event_type)
            .and_then(|e| content_str(e, field))
    };
    let join_rule = field("m.room.join_rules", "join_rule");
    let world_readable = field("m.room.history_visibility", "history_visibility").as_deref()
        == Some("world_readable");
    let joinable = matches!(
        join_rule.as_deref(),
        Some("public" | "knock" | "knock_restricted")
    );
    if !joinable && !world_readable {
        return Ok(None);
    }
    let Ok(room_id) = OwnedRoomId::try_from(room_id) else {
        return Ok(None);
    };
    let mut chunk = PublicRoomsChunk::from(PublicRoomsChunkInit {
        num_joined_members: UInt::try_from(joined.max(0) as u64).unwrap_or(UInt::MAX),
        room_id,
        world_readable,
        guest_can_join: field("m.room.guest_access", "guest_access").as_deref() == Some("can_join"),
    });
    chunk.name = field("m.room.name", "name").filter(|n| !n.is_empty());
    chunk.topic = field("m.room.topic", "topic").filter(|t| !t.is_empty());
    chunk.canonical_alias =
        field("m.room.canonical_alias", "alias").and_then(|a| OwnedRoomAliasId::try_from(a).ok());
    chunk.avatar_url = field("m.room.avatar", "url")
        .filter(|u| !u.is_empty())
        .map(OwnedMxcUri::from);
    if let Some(rule) = join_rule {
        chunk.join_rule = JoinRuleKind::from(rule.as_str());
    }
    chunk.room_type = field("m.room.create", "type").map(|t| RoomType::from(t.as_str()));
    Ok(Some(chunk))
}

/// Synapse's search: the term is a substring of the name, topic or canonical alias.
fn matches_search(room: &PublicRoomsChunk, term: &str) -> bool {
    let contains = |s: Option<&str>| s.is_some_and(|s| s.to_lowercase().contains(term));
    contains(room.name.as_deref())
        || contains(room.topic.as_deref())
        || contains(room.canonical_alias.as_ref().map(|a| a.as_str()))
}

/// A position in the public room list, which is ordered by (joined members, room ID), both
/// descending. `n<members>_<room ID>` continues after a room, `p<members>_<room ID>` goes back
/// to the rooms before it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ListToken {
    After((u64, String)),
    Before((u64, String)),
}

impl ListToken {
    fn key_of(room: &PublicRoomsChunk) -> (u64, String) {
        (u64::from(room.num_joined_members), room.room_id.to_string())
    }

    fn parse(token: &str) -> Result<Self> {
        let invalid = || Error::invalid_param(format!("Invalid pagination token `{token}`"));
        let mut chars = token.chars();
        let direction = chars.next().ok_or_else(invalid)?;
        let (members, room_id) = chars.as_str().split_once('_').ok_or_else(invalid)?;
        let key = (members.parse().map_err(|_| invalid())?, room_id.to_owned());
        match direction {
            'n' => Ok(Self::After(key)),
            'p' => Ok(Self::Before(key)),
            _ => Err(invalid()),
        }
    }
}

impl std::fmt::Display for ListToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::After((members, room)) => write!(f, "n{members}_{room}"),
            Self::Before((members, room)) => write!(f, "p{members}_{room}"),
        }
    }
}

/// How well a user matches a lowercased search term: 0 exactly, 1 every word starts the
/// localpart or a word of the display name, 2 every word is inside them; `None` otherwise. A term
/// that starts the full user ID (`@ali`, `@alice:exa`) matches too.
fn match_rank(user: &DirectoryUser, term: &str) -> Option<u8> {
    let localpart = user.localpart.to_lowercase();
    let name = user
        .displayname
        .as_deref()
        .unwrap_or_default()
        .to_lowercase();
    let user_id = user.user_id.to_lowercase();
    if term == localpart || term == name || term == user_id {
        return Some(0);
    }
    if user_id.starts_with(term) {
        return Some(1);
    }
    let words: Vec<&str> = term.split_whitespace().collect();
    let starts = |word: &str| {
        localpart.starts_with(word) || name.split_whitespace().any(|n| n.starts_with(word))
    };
    if words.iter().all(|w| starts(w)) {
        return Some(1);
    }
    if words
        .iter()
        .all(|w| localpart.contains(w) || name.contains(w))
    {
        return Some(2);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(localpart: &str, name: Option<&str>) -> DirectoryUser {
        DirectoryUser {
            user_id: format!("@{localpart}:example.org"),
            localpart: localpart.to_owned(),
            displayname: name.map(str::to_owned),
            avatar_url: None,
        }
    }

    #[test]
    fn users_match_on_localpart_and_display_name_ignoring_case() {
        let alice = user("alice", Some("Alice Liddell"));
        assert_eq!(match_rank(&alice, "alice"), Some(0));
        assert_eq!(match_rank(&alice, "ali"), Some(1));
        assert_eq!(match_rank(&alice, "lidd"), Some(1));
        assert_eq!(match_rank(&alice, "liddell al"), Some(1));
        assert_eq!(match_rank(&alice, "dell"), Some(2));
        assert_eq!(match_rank(&alice, "@alice:ex"), Some(1));
        assert_eq!(
            match_rank(&alice, "example"),
            None,
            "the server name is not searched"
        );
        assert_eq!(match_rank(&alice, "bob"), None);
        let accented = user("eve", Some("ÉLODIE"));
        assert_eq!(match_rank(&accented, "élo"), Some(1));
    }

    #[test]
    fn list_tokens_round_trip() {
        for token in [
            ListToken::After((3, "!a_b:example.org".to_owned())),
            ListToken::Before((0, "!x:example.org".to_owned())),
        ] {
            assert_eq!(ListToken::parse(&token.to_string()).unwrap(), token);
        }
        for bad in ["", "x1_!a:b", "n_!a:b", "nx_!a:b", "n1"] {
            assert!(ListToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deleting_an_alias_edits_the_canonical_alias_content() {
        let mut content = serde_json::json!({
            "alias": "#a:x", "alt_aliases": ["#a:x", "#b:x"]
        })
        .as_object()
        .unwrap()
        .clone();
        assert!(without_alias(&mut content, "#a:x"));
        assert_eq!(
            Value::Object(content.clone()),
            serde_json::json!({"alt_aliases": ["#b:x"]})
        );
        assert!(without_alias(&mut content, "#b:x"));
        assert_eq!(Value::Object(content.clone()), serde_json::json!({}));
        assert!(!without_alias(&mut content, "#c:x"));
    }
}
