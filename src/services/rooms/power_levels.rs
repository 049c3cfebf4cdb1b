//! A room's power levels as ruma reads them: its `m.room.power_levels` content with the room
//! version's rules and, since room version 12, the creators of its `m.room.create` (ruma's
//! `RoomPowerLevels`). The one place they are built; callers ask ruma's methods
//! (`user_can_redact_event_of_other`, `user_can_send_state`, `for_user`, ...).

use std::collections::HashSet;

use ruma::{
    RoomId, RoomVersionId,
    events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent},
    room_version_rules::AuthorizationRules,
    state_res::{Event, events::RoomCreateEvent},
};
use rusqlite::Connection;

use super::state::{EventCache, StateView};
use crate::{error::Result, storage::rooms as store};

/// The power levels of a room state. Without a power levels event the spec's defaults apply
/// (before room version 12 the creator is at 100). A content ruma cannot read (the
/// authorization rules let none in) counts as missing, with a warning.
pub(super) fn at_state(
    rules: &AuthorizationRules,
    state: &StateView,
    cache: &EventCache<'_>,
) -> Result<RoomPowerLevels> {
    let creators = match state.event(cache, "m.room.create", "")? {
        // The rules refused a create event without valid creators, so this reads one.
        Some(create) => RoomCreateEvent::new(create)
            .creators(rules)
            .unwrap_or_default(),
        None => HashSet::new(),
    };
    let content = state
        .event(cache, "m.room.power_levels", "")?
        .and_then(|event| {
            serde_json::from_str::<RoomPowerLevelsEventContent>(event.content().get())
                .inspect_err(|e| {
                    tracing::warn!(event_id = %event.event_id(), "unreadable power levels: {e}");
                })
                .ok()
        });
    Ok(RoomPowerLevels::new(content.into(), rules, creators))
}

/// The room's current power levels; `None` for a room this server does not hold (or of a
/// version it has no rules for).
pub fn current(conn: &Connection, room_id: &RoomId) -> Result<Option<RoomPowerLevels>> {
    let Some(version) = store::room_version(conn, room_id.as_str())? else {
        return Ok(None);
    };
    let Some(rules) = RoomVersionId::try_from(version.as_str())
        .ok()
        .and_then(|v| v.rules())
    else {
        return Ok(None);
    };
    let state = StateView::Current(room_id.to_string());
    at_state(&rules.authorization, &state, &EventCache::new(conn)).map(Some)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::{
        OwnedServerName, OwnedUserId, RoomVersionId, UserId, events::StateEventType,
        events::room::power_levels::UserPowerLevel, int,
    };
    use serde_json::json;

    use super::*;
    use crate::{
        config::Config,
        services::{
            rate_limit::AccountLimits,
            rooms::{CreateRoom, Rooms},
            server_key::ServerKey,
        },
        storage::Database,
    };

    fn user(id: &str) -> OwnedUserId {
        UserId::parse(id).unwrap()
    }

    /// The levels of a room alice creates with carol as an additional creator (where the room
    /// version knows them), bob at 50 and `redact` at 60.
    async fn levels_of_new_room(version: RoomVersionId) -> RoomPowerLevels {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("appliance.db")).unwrap();
        let server_name = OwnedServerName::try_from("local.test").unwrap();
        let key = Arc::new(ServerKey::load_or_create(dir.path(), &server_name).unwrap());
        let limits = Arc::new(AccountLimits::new(db.clone(), &Config::default()));
        let rooms = Rooms::new(db.clone(), server_name, key, version.clone(), 0, limits);
        let mut creation = json!({});
        let mut overrides = json!({"users": {"@bob:local.test": 50}, "redact": 60});
        if version == RoomVersionId::V12 {
            creation["additional_creators"] = json!(["@carol:local.test"]);
        } else {
            // Before v12 the creator holds power by the power levels only.
            overrides["users"]["@alice:local.test"] = json!(100);
        }
        let room = rooms
            .create_room(
                &user("@alice:local.test"),
                CreateRoom {
                    creation_content: creation.as_object().cloned(),
                    power_level_content_override: overrides.as_object().cloned(),
                    ..CreateRoom::default()
                },
            )
            .await
            .unwrap();
        let unknown = RoomId::parse("!unknown:local.test").unwrap();
        db.read(move |c| {
            assert!(
                current(c, &unknown)?.is_none(),
                "a room this server does not hold"
            );
            current(c, &room)
        })
        .await
        .unwrap()
        .unwrap()
    }

    #[tokio::test]
    async fn creators_are_privileged_from_room_version_12() {
        let (alice, bob, carol) = (
            user("@alice:local.test"),
            user("@bob:local.test"),
            user("@carol:local.test"),
        );
        let levels = levels_of_new_room(RoomVersionId::V12).await;
        assert_eq!(levels.for_user(&alice), UserPowerLevel::Infinite);
        assert_eq!(levels.for_user(&carol), UserPowerLevel::Infinite);
        assert_eq!(levels.for_user(&bob), UserPowerLevel::Int(int!(50)));
        assert!(levels.user_can_redact_event_of_other(&carol));
        assert!(!levels.user_can_redact_event_of_other(&bob));
        assert!(levels.user_can_send_state(&bob, StateEventType::RoomCanonicalAlias));

        let levels = levels_of_new_room(RoomVersionId::V11).await;
        assert_eq!(levels.for_user(&alice), UserPowerLevel::Int(int!(100)));
        assert_eq!(levels.for_user(&carol), UserPowerLevel::Int(int!(0)));
        assert!(levels.user_can_redact_event_of_other(&alice));
        assert!(!levels.user_can_redact_event_of_other(&bob));
        assert!(!levels.user_can_send_state(&carol, StateEventType::RoomCanonicalAlias));
    }
}
