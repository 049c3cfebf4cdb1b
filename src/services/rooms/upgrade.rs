//! Room upgrades (`/upgrade`), as Synapse performs them, in one database transaction so that a
//! refused step (for instance a user without the power to send `m.room.tombstone`) leaves nothing
//! behind:
//!
//! 1. a new room of the requested version whose `m.room.create` names its `predecessor` (the old
//!    room and, for older clients, its last event), keeping `type` and `m.federate`;
//! 2. the upgrader joins (with the profile of their old membership) and the important state is
//!    copied: power levels (with the upgrader's level; since v12 creators are implicit and left
//!    out), join rules, name, topic, avatar, history visibility, guest access, encryption, server
//!    ACL, a space's children, and bans. While copying, the upgrader's level is raised if needed
//!    and restored afterwards;
//! 3. the local aliases and the canonical alias move to the new room, as does a room directory
//!    listing;
//! 4. `m.room.tombstone` in the old room points to the new one, and the old room's power levels
//!    require 50 (or more than `users_default`) to talk and invite.

use http::StatusCode;
use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
    events::{TimelineEventType, room::member::MembershipState},
};
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::{
    Appended, EventDraft, Rooms, SUPPORTED_ROOM_VERSIONS,
    append::{Signer, Target, append_event},
    read::render,
};
use crate::{
    error::{Error, Result},
    storage::{
        room_upgrade as upgrade_store,
        rooms::{self as store, StateIds},
    },
};

/// State copied from the old room (state key `""`), in this order.
const COPIED_STATE: &[&str] = &[
    "m.room.join_rules",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.encryption",
    "m.room.server_acl",
];

/// Power-level fields holding a single level.
const LEVEL_FIELDS: &[&str] = &[
    "ban",
    "kick",
    "redact",
    "invite",
    "events_default",
    "state_default",
    "users_default",
];

impl Rooms {
    /// Replaces a room by a new one of `new_version`; returns the new room's ID.
    pub async fn upgrade_room(
        &self,
        room_id: &RoomId,
        user: &UserId,
        new_version: &RoomVersionId,
        additional_creators: Vec<OwnedUserId>,
    ) -> Result<OwnedRoomId> {
        if !SUPPORTED_ROOM_VERSIONS.contains(&new_version.as_str()) {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::UnsupportedRoomVersion,
                format!("Room version {new_version} is not supported"),
            ));
        }
        self.room_version(room_id).await?;
        self.require_joined(room_id, user).await?;
        // As Synapse: the upgrade counts once (`rc_room_creation`, `rc_message`), not each event
        // it sends.
        self.limits.room_creation(user).await?;
        let (server_name, key) = (self.server_name.clone(), self.server_key.clone());
        let (old_room, user, new_version) =
            (room_id.to_owned(), user.to_owned(), new_version.clone());
        let (new_room, stream) = self
            .db
            .write(move |tx| {
                let signer = Signer {
                    server_name: &server_name,
                    key: &key,
                };
                let upgrade = Upgrade {
                    tx,
                    signer: &signer,
                    user: &user,
                };
                let new_room = upgrade.run(&old_room, &new_version, &additional_creators)?;
                Ok::<_, Error>((new_room, store::current_stream_position(tx)?))
            })
            .await?;
        self.notify(stream);
        Ok(new_room)
    }
}

struct Upgrade<'a> {
    tx: &'a Connection,
    signer: &'a Signer<'a>,
    user: &'a UserId,
}

/// Was the step refused by the authorization rules (so that it may be skipped)?
fn refused(error: &Error) -> bool {
    matches!(error, Error::Matrix { status, .. } if *status == StatusCode::FORBIDDEN)
}

impl Upgrade<'_> {
    fn append(&self, room_id: &RoomId, draft: EventDraft) -> Result<Appended> {
        append_event(
            self.tx,
            self.signer,
            Target::Room(room_id),
            self.user,
            draft,
        )
    }

    /// Like `append`, but a step the authorization rules refuse is skipped.
    fn try_append(&self, room_id: &RoomId, draft: EventDraft) -> Result<()> {
        match self.append(room_id, draft) {
            Ok(_) => Ok(()),
            Err(e) if refused(&e) => {
                tracing::info!(room = %room_id, "room upgrade: skipped a refused step: {e}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn run(
        &self,
        old_room: &RoomId,
        new_version: &RoomVersionId,
        additional_creators: &[OwnedUserId],
    ) -> Result<OwnedRoomId> {
        let tx = self.tx;
        let user = self.user;
        let old_version = store::room_version(tx, old_room.as_str())?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let old_version = RoomVersionId::try_from(old_version.as_str()).map_err(Error::internal)?;
        let rules_of = |version: &RoomVersionId| {
            version
                .rules()
                .ok_or_else(|| Error::internal(format!("no rules for room version {version}")))
        };
        let old_rules = rules_of(&old_version)?.authorization;
        let new_rules = rules_of(new_version)?.authorization;
        if !additional_creators.is_empty() && !new_rules.additional_room_creators {
            return Err(Error::invalid_param(format!(
                "Room version {new_version} has no additional creators"
            )));
        }
        let state = OldState {
            tx,
            version: &old_version,
            ids: store::current_state(tx, old_room.as_str())?,
        };

        // 1. The new room.
        let old_create = state.content("m.room.create", "")?.unwrap_or_default();
        let old_creator = state.sender("m.room.create", "")?;
        let mut predecessor = json!({"room_id": old_room});
        if let Some(last) = upgrade_store::latest_event(tx, old_room.as_str())? {
            predecessor["event_id"] = json!(last);
        }
        let mut create = json!({"room_version": new_version, "predecessor": predecessor});
        if !new_rules.use_room_create_sender {
            create["creator"] = json!(user);
        }
        if old_create["m.federate"] == json!(false) {
            create["m.federate"] = json!(false);
        }
        if let Some(room_type) = old_create.get("type") {
            create["type"] = room_type.clone();
        }
        if !additional_creators.is_empty() {
            create["additional_creators"] = json!(additional_creators);
        }
        let new_room = append_event(
            tx,
            self.signer,
            Target::NewRoom {
                version: new_version,
            },
            user,
            EventDraft::state(TimelineEventType::RoomCreate, "", create),
        )?
        .room_id;

        // 2. The upgrader joins, then the state is copied.
        let mut member = json!({"membership": MembershipState::Join});
        if let Some(old_member) = state.content("m.room.member", user.as_str())? {
            for field in ["displayname", "avatar_url"] {
                if let Some(value) = old_member.get(field).filter(|v| v.is_string()) {
                    member[field] = value.clone();
                }
            }
        }
        self.append(
            &new_room,
            EventDraft::state(TimelineEventType::RoomMember, user.as_str(), member),
        )?;

        let old_levels = normalize_levels(state.content("m.room.power_levels", "")?);
        let old_was_creator = old_rules.explicitly_privilege_room_creators
            && (old_creator.as_deref() == Some(user.as_str())
                || old_create["additional_creators"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|c| c == user.as_str())));
        let user_level = if old_was_creator {
            highest_level(&old_levels).max(100)
        } else {
            level_of(&old_levels, user.as_str())
        };
        let mut levels = old_levels.clone();
        if !levels["users"].is_object() {
            levels["users"] = json!({});
        }
        let mut restore = None;
        if new_rules.explicitly_privilege_room_creators {
            if let Some(users) = levels["users"].as_object_mut() {
                users.remove(user.as_str());
                for creator in additional_creators {
                    users.remove(creator.as_str());
                }
            }
        } else {
            levels["users"][user.as_str()] = json!(user_level);
            let needed = highest_level(&levels);
            if user_level < needed {
                restore = Some(levels.clone());
                levels["users"][user.as_str()] = json!(needed);
            }
        }
        self.append(
            &new_room,
            EventDraft::state(TimelineEventType::RoomPowerLevels, "", levels),
        )?;

        let mut copied: Vec<(String, String)> = COPIED_STATE
            .iter()
            .map(|kind| ((*kind).to_owned(), String::new()))
            .collect();
        if old_create["type"] == "m.space" {
            let mut children: Vec<(String, String)> = state
                .ids
                .keys()
                .filter(|(kind, _)| kind == "m.space.child")
                .cloned()
                .collect();
            children.sort();
            copied.extend(children);
        }
        for (kind, state_key) in copied {
            let Some(content) = state.content(&kind, &state_key)? else {
                continue;
            };
            if content.as_object().is_none_or(Map::is_empty) {
                continue; // unset or redacted
            }
            self.append(
                &new_room,
                EventDraft::state(TimelineEventType::from(kind), state_key, content),
            )?;
        }
        let mut banned: Vec<(&String, Value)> = Vec::new();
        for (kind, target) in state.ids.keys() {
            if kind != "m.room.member" {
                continue;
            }
            if let Some(content) = state.content(kind, target)?
                && content["membership"] == MembershipState::Ban.as_str()
            {
                banned.push((target, content));
            }
        }
        banned.sort_by(|a, b| a.0.cmp(b.0));
        for (target, content) in banned {
            let mut ban = json!({"membership": MembershipState::Ban});
            if let Some(reason) = content.get("reason").filter(|r| r.is_string()) {
                ban["reason"] = reason.clone();
            }
            self.try_append(
                &new_room,
                EventDraft::state(TimelineEventType::RoomMember, target.as_str(), ban),
            )?;
        }

        // 3. Aliases and the directory listing follow the room.
        let moved = upgrade_store::move_aliases(tx, old_room.as_str(), new_room.as_str())?;
        if let Some(canonical) = state.content("m.room.canonical_alias", "")? {
            let is_moved = |v: &Value| v.as_str().is_some_and(|a| moved.iter().any(|m| m == a));
            let mut content = json!({});
            if let Some(alias) = canonical.get("alias").filter(|a| is_moved(a)) {
                content["alias"] = alias.clone();
            }
            if let Some(alt) = canonical["alt_aliases"].as_array() {
                let alt: Vec<Value> = alt.iter().filter(|a| is_moved(a)).cloned().collect();
                if !alt.is_empty() {
                    content["alt_aliases"] = json!(alt);
                }
            }
            if content.as_object().is_some_and(|c| !c.is_empty()) {
                self.try_append(
                    &new_room,
                    EventDraft::state(TimelineEventType::RoomCanonicalAlias, "", content),
                )?;
            }
            if canonical.as_object().is_some_and(|c| !c.is_empty()) {
                self.try_append(
                    old_room,
                    EventDraft::state(TimelineEventType::RoomCanonicalAlias, "", json!({})),
                )?;
            }
        }
        if upgrade_store::is_published(tx, old_room.as_str())? {
            store::set_published(tx, old_room.as_str(), false)?;
            store::set_published(tx, new_room.as_str(), true)?;
        }
        if let Some(levels) = restore {
            self.append(
                &new_room,
                EventDraft::state(TimelineEventType::RoomPowerLevels, "", levels),
            )?;
        }

        // 4. The old room points to the new one and quietens down. The tombstone decides whether
        // the user may upgrade at all: refused, the whole transaction is rolled back.
        self.append(
            old_room,
            EventDraft::state(
                TimelineEventType::RoomTombstone,
                "",
                json!({"body": "This room has been replaced", "replacement_room": new_room}),
            ),
        )?;
        let users_default = old_levels["users_default"].as_i64().unwrap_or(0);
        let restricted = (users_default + 1).max(50);
        let mut quiet = old_levels;
        let mut changed = false;
        for field in ["events_default", "invite"] {
            if quiet[field].as_i64().unwrap_or(0) < restricted {
                quiet[field] = json!(restricted);
                changed = true;
            }
        }
        if changed {
            self.try_append(
                old_room,
                EventDraft::state(TimelineEventType::RoomPowerLevels, "", quiet),
            )?;
        }
        Ok(new_room)
    }
}

/// The old room's current state, read as clients see it (redactions applied).
struct OldState<'a> {
    tx: &'a Connection,
    version: &'a RoomVersionId,
    ids: StateIds,
}

impl OldState<'_> {
    fn row(&self, kind: &str, state_key: &str) -> Result<Option<store::EventRow>> {
        let Some(id) = self.ids.get(&(kind.to_owned(), state_key.to_owned())) else {
            return Ok(None);
        };
        Ok(store::get_event(self.tx, id)?)
    }

    fn content(&self, kind: &str, state_key: &str) -> Result<Option<Value>> {
        let Some(row) = self.row(kind, state_key)? else {
            return Ok(None);
        };
        // An event that cannot be shown (logged) is not copied.
        let event = render(self.tx, &row, self.version, None, false)?;
        Ok(event.and_then(|event| event.get("content").cloned()))
    }

    fn sender(&self, kind: &str, state_key: &str) -> Result<Option<String>> {
        let Some(row) = self.row(kind, state_key)? else {
            return Ok(None);
        };
        Ok(Some(row.sender))
    }
}

/// A level as an integer; old room versions allow numeric strings.
fn as_level(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Power levels with every level an integer (room versions since 10 require it).
fn normalize_levels(levels: Option<Value>) -> Value {
    let mut levels = match levels {
        Some(Value::Object(map)) => Value::Object(map),
        _ => json!({}),
    };
    for field in LEVEL_FIELDS {
        if let Some(level) = levels.get(*field).and_then(as_level) {
            levels[*field] = json!(level);
        }
    }
    for map in ["users", "events", "notifications"] {
        if let Some(entries) = levels.get_mut(map).and_then(Value::as_object_mut) {
            for value in entries.values_mut() {
                if let Some(level) = as_level(value) {
                    *value = json!(level);
                }
            }
        }
    }
    levels
}

fn level_of(levels: &Value, user: &str) -> i64 {
    levels["users"]
        .get(user)
        .and_then(as_level)
        .or_else(|| as_level(&levels["users_default"]))
        .unwrap_or(0)
}

/// The highest level any action of the power levels requires (the spec's defaults for unset
/// fields), so that someone at it may send all the state an upgrade copies.
fn highest_level(levels: &Value) -> i64 {
    let defaults = [
        ("ban", 50),
        ("state_default", 50),
        ("kick", 50),
        ("redact", 50),
    ];
    let mut highest = defaults
        .iter()
        .map(|(field, default)| levels.get(*field).and_then(as_level).unwrap_or(*default))
        .max()
        .unwrap_or(50);
    for field in ["events_default", "invite"] {
        highest = highest.max(levels.get(field).and_then(as_level).unwrap_or(0));
    }
    if let Some(events) = levels["events"].as_object() {
        highest = highest.max(events.values().filter_map(as_level).max().unwrap_or(0));
    }
    highest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_normalized_and_measured() {
        let levels = normalize_levels(Some(json!({
            "users": {"@a:x": "100", "@b:x": 10},
            "users_default": "5",
            "events": {"m.room.tombstone": "150"},
            "ban": 40,
        })));
        assert_eq!(levels["users"]["@a:x"], 100);
        assert_eq!(levels["users_default"], 5);
        assert_eq!(level_of(&levels, "@a:x"), 100);
        assert_eq!(level_of(&levels, "@c:x"), 5);
        assert_eq!(highest_level(&levels), 150);
        assert_eq!(highest_level(&json!({})), 50);
    }
}
