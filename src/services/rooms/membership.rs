//! Joining, inviting, leaving, kicking, banning and knocking: each is a `m.room.member` event
//! whose validity the authorization rules decide.

use ruma::{
    OwnedRoomId, RoomId, UserId,
    events::{TimelineEventType, room::member::MembershipState},
};
use serde_json::{Map, Value, json};

use super::{Appended, EventDraft, Rooms};
use crate::{
    error::{Error, Result},
    storage::{rooms as store, users as users_store},
};

/// Profile fields copied into a member event.
pub type Profile = (Option<String>, Option<String>);

impl Rooms {
    /// Joins a room this server holds. `extra` is the member content the client asked for
    /// (`reason` and any other field of the `/join` body, kept as Synapse keeps them); the
    /// profile fills `displayname` and `avatar_url` where it does not set them.
    pub async fn join(
        &self,
        room_id: &RoomId,
        user: &UserId,
        profile: Profile,
        extra: Map<String, Value>,
    ) -> Result<Appended> {
        self.room_version(room_id)
            .await
            .map_err(|_| Error::not_found("This server does not know that room"))?;
        // Synapse's `rc_joins.local` counts joins of rooms one is not joined to yet.
        if self.membership(room_id, user).await? != Some(MembershipState::Join) {
            self.limits.local_join(user).await?;
        }
        self.limits.event(user, false).await?;
        let content = join_content(extra, profile);
        self.set_member(room_id, user, user, Value::Object(content))
            .await
    }

    pub async fn invite(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        invitee: &UserId,
        profile: Profile,
        reason: Option<String>,
        is_direct: bool,
    ) -> Result<Appended> {
        self.limits.invite(sender, room_id, invitee).await?;
        self.limits.event(sender, false).await?;
        let mut content = member_content(MembershipState::Invite, reason);
        with_profile(&mut content, profile);
        if is_direct {
            content["is_direct"] = json!(true);
        }
        self.set_member(room_id, sender, invitee, content).await
    }

    /// Leaving, rejecting an invite or withdrawing a knock (sender == target), or kicking (or
    /// unbanning: `unban` ends here and is counted here, once).
    pub async fn leave(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<Appended> {
        self.limits.event(sender, false).await?;
        let content = member_content(MembershipState::Leave, reason);
        self.set_member(room_id, sender, target, content).await
    }

    pub async fn ban(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<Appended> {
        self.limits.event(sender, false).await?;
        let content = member_content(MembershipState::Ban, reason);
        self.set_member(room_id, sender, target, content).await
    }

    pub async fn unban(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<Appended> {
        if self.membership(room_id, target).await? != Some(MembershipState::Ban) {
            return Err(Error::forbidden(format!("{target} is not banned")));
        }
        self.leave(room_id, sender, target, reason).await
    }

    pub async fn knock(
        &self,
        room_id: &RoomId,
        user: &UserId,
        profile: Profile,
        reason: Option<String>,
    ) -> Result<Appended> {
        self.room_version(room_id)
            .await
            .map_err(|_| Error::not_found("This server does not know that room"))?;
        self.limits.event(user, false).await?;
        let mut content = member_content(MembershipState::Knock, reason);
        with_profile(&mut content, profile);
        self.set_member(room_id, user, user, content).await
    }

    /// Hides a room the user has left from their future syncs.
    pub async fn forget(&self, room_id: &RoomId, user: &UserId) -> Result<()> {
        use MembershipState::{Invite, Join, Knock};
        match self.membership(room_id, user).await? {
            Some(Join | Invite | Knock) => Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::Unknown,
                "Leave the room before forgetting it",
            )),
            None => Err(Error::not_found("You have never been in this room")),
            Some(_) => {
                let (room, user) = (room_id.to_string(), user.to_string());
                self.db
                    .write(move |tx| store::forget(tx, &room, &user).map_err(Error::from))
                    .await?;
                Ok(())
            }
        }
    }
}

impl Rooms {
    /// Sends `sender`'s `m.room.member` event about `target`.
    async fn set_member(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        content: Value,
    ) -> Result<Appended> {
        self.append(
            room_id,
            sender,
            EventDraft::state(TimelineEventType::RoomMember, target.as_str(), content),
        )
        .await
    }
}

fn member_content(membership: MembershipState, reason: Option<String>) -> Value {
    let mut content = json!({"membership": membership});
    if let Some(reason) = reason {
        content["reason"] = json!(reason);
    }
    content
}

/// The content of a join: the client's fields, the profile where they leave it out, and
/// `membership` (which the client cannot choose).
pub fn join_content(mut extra: Map<String, Value>, (name, avatar): Profile) -> Map<String, Value> {
    for (key, value) in [("displayname", name), ("avatar_url", avatar)] {
        if let Some(value) = value
            && !extra.contains_key(key)
        {
            extra.insert(key.to_owned(), json!(value));
        }
    }
    extra.insert("membership".to_owned(), json!(MembershipState::Join));
    extra
}

fn with_profile(content: &mut Value, (name, avatar): Profile) {
    if let Some(name) = name {
        content["displayname"] = json!(name);
    }
    if let Some(avatar) = avatar {
        content["avatar_url"] = json!(avatar);
    }
}

/// A profile change reaches at most this many joined rooms before the answer; with more, the
/// copy goes on after it (durably: `pending_profile_updates`).
pub const INLINE_PROFILE_ROOMS: usize = 10;

impl Rooms {
    /// Copies `user`'s waiting profile change, if any, into their member events
    /// ([`Self::update_profile`]), then marks it done unless a newer change came meanwhile.
    pub async fn finish_profile_update(&self, user: &UserId) -> Result<()> {
        let id = user.to_string();
        let (generation, row) = self
            .db
            .read(move |c| {
                Ok::<_, Error>((
                    users_store::pending_profile_generation(c, &id)?,
                    users_store::get_user(c, &id)?,
                ))
            })
            .await?;
        let Some(generation) = generation else {
            return Ok(());
        };
        if let Some(row) = row.filter(|row| !row.deactivated) {
            self.update_profile(user, (row.displayname, row.avatar_url))
                .await?;
        }
        let id = user.to_string();
        self.db
            .write(move |tx| {
                users_store::clear_profile_update(tx, &id, generation).map_err(Error::from)
            })
            .await
    }

    /// Every profile change a restart interrupted, finished (at start-up).
    pub async fn finish_profile_updates(&self) -> Result<()> {
        let pending = self
            .db
            .read(|c| users_store::pending_profile_updates(c).map_err(Error::from))
            .await?;
        for user in pending {
            let Ok(user) = ruma::OwnedUserId::try_from(user) else {
                continue;
            };
            if let Err(e) = self.finish_profile_update(&user).await {
                tracing::warn!(%user, error = %e, "profile change not copied to rooms");
            }
        }
        Ok(())
    }

    /// Re-sends the user's join event with their new display name and avatar in every room they
    /// are joined to, as Synapse does: clients show names and avatars from member events. A
    /// room whose rules refuse the change keeps the old profile; the others still get it.
    pub async fn update_profile(&self, user: &UserId, (name, avatar): Profile) -> Result<()> {
        for room_id in self.joined_rooms(user).await? {
            let mut content = match self
                .state_content(&room_id, user, "m.room.member", user.as_str())
                .await
            {
                Ok(content) => content,
                Err(e) => {
                    tracing::warn!(room = %room_id, error = %e, "no member event to update");
                    continue;
                }
            };
            let Some(fields) = content.as_object_mut() else {
                continue;
            };
            // A join event's reason belongs to the join, not to a profile change.
            fields.remove("reason");
            let before = fields.clone();
            for (key, value) in [("displayname", &name), ("avatar_url", &avatar)] {
                match value {
                    Some(value) => fields.insert(key.to_owned(), json!(value)),
                    None => fields.remove(key),
                };
            }
            if *fields == before {
                continue;
            }
            if let Err(e) = self.set_member(&room_id, user, user, content).await {
                tracing::warn!(room = %room_id, error = %e, "profile change not sent to room");
            }
        }
        Ok(())
    }

    pub async fn joined_rooms(&self, user: &UserId) -> Result<Vec<OwnedRoomId>> {
        let user = user.to_string();
        let rows = self
            .db
            .read(move |c| store::memberships_of_user(c, &user).map_err(Error::from))
            .await?;
        rows.into_iter()
            .filter(|row| row.membership == MembershipState::Join.as_str())
            .map(|row| OwnedRoomId::try_from(row.room_id).map_err(Error::internal))
            .collect()
    }
}
