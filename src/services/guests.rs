//! Guest accounts (`allow_guest_access`): what the server checks beyond the endpoint allow-list
//! of `web::ruma::guest_may_call`. Accounts themselves are made and upgraded in `users.rs`.

use http::StatusCode;
use ruma::{RoomId, RoomOrAliasId, api::error::ErrorKind};

use super::federation::leaves;

use super::Services;
use crate::error::{Error, Result};

/// A guest may join only a room this server is in whose `m.room.guest_access` is `can_join`
/// (the spec's rule; Synapse's answer otherwise: `403 M_GUEST_ACCESS_FORBIDDEN`). A room known
/// only elsewhere has no state here to say so, and is refused too.
pub async fn check_may_join(services: &Services, room: &RoomOrAliasId) -> Result<()> {
    let room_id = match <&RoomId>::try_from(room) {
        Ok(room_id) => room_id.to_owned(),
        Err(alias) => services.directory.resolve_alias(alias).await?.0,
    };
    if services.rooms.is_resident(&room_id).await?
        && services.rooms.guests_can_join(&room_id).await?
    {
        Ok(())
    } else {
        Err(Error::new(
            StatusCode::FORBIDDEN,
            ErrorKind::GuestAccessForbidden,
            "Guest access not allowed in this room",
        ))
    }
}

/// After a local `m.room.guest_access` change: when guests may no longer join, the guests in the
/// room leave it (the spec's MUST; Synapse has each guest leave by itself). Failures are logged:
/// the change itself is already done.
pub async fn after_guest_access_change(services: &Services, room_id: &RoomId) {
    let guests = match services.rooms.guests_can_join(room_id).await {
        Ok(true) => return,
        Ok(false) => services.users.joined_guests(room_id).await,
        Err(e) => Err(e),
    };
    let guests = match guests {
        Ok(guests) => guests,
        Err(e) => {
            tracing::warn!(room = %room_id, error = %e, "cannot list the guests to remove");
            return;
        }
    };
    for guest in guests {
        if let Err(e) = leaves::leave_room(services, &guest, room_id, None).await {
            tracing::warn!(room = %room_id, user = %guest, error = %e, "guest not removed");
        }
    }
}
