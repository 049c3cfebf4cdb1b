//! `createRoom`: the spec's sequence of initial events, written in one transaction so that a
//! crash never leaves half a room.

use ruma::{
    OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomVersionId, UserId,
    events::{TimelineEventType, room::member::MembershipState},
};
use serde_json::{Map, Value, json};

use super::{
    Rooms, SUPPORTED_ROOM_VERSIONS,
    append::{EventDraft, Signer, Target, append_event},
};
use crate::{
    error::{Error, Result},
    storage::rooms as store,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Private,
    TrustedPrivate,
    Public,
}

#[derive(Debug, Default)]
pub struct CreateRoom {
    pub version: Option<RoomVersionId>,
    pub preset: Option<Preset>,
    /// `visibility: public`: listed in the room directory.
    pub published: bool,
    pub name: Option<String>,
    pub topic: Option<String>,
    /// Every invitee (power levels of `trusted_private_chat`); only this server's users are
    /// invited inside the creation: other servers must countersign their users' invites, which
    /// the caller sends once the room exists (`federation::invites::invite_remote`).
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    pub initial_state: Vec<(TimelineEventType, String, Value)>,
    pub power_level_content_override: Option<Map<String, Value>>,
    pub creation_content: Option<Map<String, Value>>,
    pub alias_localpart: Option<String>,
    /// Display name and avatar of the creator, for their membership event.
    pub creator_profile: (Option<String>, Option<String>),
}

impl Rooms {
    pub async fn create_room(&self, creator: &UserId, spec: CreateRoom) -> Result<OwnedRoomId> {
        let version = spec
            .version
            .clone()
            .unwrap_or_else(|| self.default_version.clone());
        if !SUPPORTED_ROOM_VERSIONS.contains(&version.as_str()) {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::UnsupportedRoomVersion,
                format!("Room version {version} is not supported"),
            ));
        }
        let alias = match &spec.alias_localpart {
            Some(localpart) => Some(
                RoomAliasId::parse(format!("#{localpart}:{}", self.server_name))
                    .map_err(|e| Error::invalid_param(format!("Invalid room alias: {e}")))?,
            ),
            None => None,
        };
        // As Synapse: the request counts once (`rc_room_creation`, `rc_message`), not each
        // initial event.
        self.limits
            .invites_at_creation(creator, spec.invite.len())
            .await?;
        self.limits.room_creation(creator).await?;
        let (server_name, key, creator) = (
            self.server_name.clone(),
            self.server_key.clone(),
            creator.to_owned(),
        );
        let (room_id, stream) = self
            .db
            .write(move |tx| {
                let signer = Signer {
                    server_name: &server_name,
                    key: &key,
                };
                create_in_transaction(tx, &signer, &creator, &version, spec, alias)
            })
            .await?;
        self.notify(stream);
        Ok(room_id)
    }
}

fn create_in_transaction(
    tx: &rusqlite::Connection,
    signer: &Signer<'_>,
    creator: &UserId,
    version: &RoomVersionId,
    spec: CreateRoom,
    alias: Option<OwnedRoomAliasId>,
) -> Result<(OwnedRoomId, i64)> {
    let rules = version
        .rules()
        .ok_or_else(|| Error::internal("no rules for room version"))?;
    let preset = spec.preset.unwrap_or(if spec.published {
        Preset::Public
    } else {
        Preset::Private
    });

    let mut create_content = spec.creation_content.clone().unwrap_or_default();
    create_content.insert("room_version".into(), json!(version.as_str()));
    if !rules.authorization.use_room_create_sender {
        create_content.insert("creator".into(), json!(creator));
    }
    let create = append_event(
        tx,
        signer,
        Target::NewRoom { version },
        creator,
        EventDraft::state(
            TimelineEventType::RoomCreate,
            "",
            Value::Object(create_content),
        ),
    )?;
    let room_id = create.room_id.clone();
    let mut last_stream = create.stream;
    let mut add = |draft: EventDraft, sender: &UserId| -> Result<()> {
        last_stream = append_event(tx, signer, Target::Room(&room_id), sender, draft)?.stream;
        Ok(())
    };

    let mut member = json!({"membership": MembershipState::Join});
    if let Some(name) = &spec.creator_profile.0 {
        member["displayname"] = json!(name);
    }
    if let Some(url) = &spec.creator_profile.1 {
        member["avatar_url"] = json!(url);
    }
    add(
        EventDraft::state(TimelineEventType::RoomMember, creator.as_str(), member),
        creator,
    )?;

    // Since v12 creators have unlimited power implicitly and must not be listed.
    let mut users = Map::new();
    if !rules.authorization.explicitly_privilege_room_creators {
        users.insert(creator.to_string(), json!(100));
    }
    if preset == Preset::TrustedPrivate {
        for invitee in &spec.invite {
            users.insert(invitee.to_string(), json!(100));
        }
    }
    let mut power_levels = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": if preset == Preset::Public { 50 } else { 0 },
        "notifications": {"room": 50},
    });
    if let Some(overrides) = spec.power_level_content_override {
        for (key, value) in overrides {
            power_levels[key] = value;
        }
    }
    add(
        EventDraft::state(TimelineEventType::RoomPowerLevels, "", power_levels),
        creator,
    )?;

    if let Some(alias) = &alias {
        if !store::insert_alias(tx, alias.as_str(), room_id.as_str(), creator.as_str())? {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::RoomInUse,
                "Room alias already taken",
            ));
        }
        add(
            EventDraft::state(
                TimelineEventType::RoomCanonicalAlias,
                "",
                json!({"alias": alias}),
            ),
            creator,
        )?;
    }

    let (join_rule, guest_access) = match preset {
        Preset::Public => ("public", "forbidden"),
        Preset::Private | Preset::TrustedPrivate => ("invite", "can_join"),
    };
    add(
        EventDraft::state(
            TimelineEventType::RoomJoinRules,
            "",
            json!({"join_rule": join_rule}),
        ),
        creator,
    )?;
    add(
        EventDraft::state(
            TimelineEventType::RoomHistoryVisibility,
            "",
            json!({"history_visibility": "shared"}),
        ),
        creator,
    )?;
    add(
        EventDraft::state(
            TimelineEventType::RoomGuestAccess,
            "",
            json!({"guest_access": guest_access}),
        ),
        creator,
    )?;

    for (kind, state_key, content) in spec.initial_state {
        if matches!(
            kind,
            TimelineEventType::RoomCreate | TimelineEventType::RoomMember
        ) {
            return Err(Error::invalid_param(format!(
                "{kind} cannot be set in initial_state"
            )));
        }
        add(EventDraft::state(kind, state_key, content), creator)?;
    }
    if let Some(name) = spec.name {
        add(
            EventDraft::state(TimelineEventType::RoomName, "", json!({"name": name})),
            creator,
        )?;
    }
    if let Some(topic) = spec.topic {
        add(
            EventDraft::state(TimelineEventType::RoomTopic, "", json!({"topic": topic})),
            creator,
        )?;
    }
    for invitee in spec
        .invite
        .iter()
        .filter(|i| i.server_name() == signer.server_name)
    {
        let Some(user) = crate::storage::users::get_user(tx, invitee.as_str())? else {
            return Err(Error::not_found(format!(
                "Cannot invite {invitee}: no such user on this server"
            )));
        };
        // The invitee's profile, as `/invite` puts it: the invitee's client names the inviter
        // and itself from these member events before joining.
        let mut content = json!({"membership": MembershipState::Invite});
        if let Some(name) = user.displayname {
            content["displayname"] = json!(name);
        }
        if let Some(url) = user.avatar_url {
            content["avatar_url"] = json!(url);
        }
        if spec.is_direct {
            content["is_direct"] = json!(true);
        }
        add(
            EventDraft::state(TimelineEventType::RoomMember, invitee.as_str(), content),
            creator,
        )?;
    }
    if spec.published {
        store::set_published(tx, room_id.as_str(), true)?;
    }
    Ok((room_id, last_stream))
}
