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
