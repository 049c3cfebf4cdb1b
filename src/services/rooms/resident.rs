//! What federation asks of a room this server is in: whether it is in it at all, templates for
//! another server's user to sign (`make_join`), and where the room's graph ends now.

use ruma::{CanonicalJsonObject, OwnedEventId, RoomId, UserId};

use super::{EventDraft, Rooms, append, federation::joined_servers_in};
use crate::{
    error::{Error, Result},
    storage::rooms as store,
};

impl Rooms {
    /// Whether one of this server's users is joined to the room: then the room's state here is
    /// current, and local joins, `make_join` and invites are served from it.
    pub async fn is_resident(&self, room_id: &RoomId) -> Result<bool> {
        let (room, ours) = (room_id.to_string(), self.server_name.clone());
        self.db
            .read(move |c| {
                if store::room_version(c, &room)?.is_none() {
                    return Ok(false);
                }
                Ok(joined_servers_in(c, &room)?.contains(&ours))
            })
            .await
    }

    /// The unsigned event `sender` (of another server) would send: prev and auth events from the
    /// room's current graph and state (`make_join`).
    pub async fn event_template(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: EventDraft,
    ) -> Result<CanonicalJsonObject> {
        let (room_id, sender, server_name) = (
            room_id.to_owned(),
            sender.to_owned(),
            self.server_name.clone(),
        );
        self.db
            .read(move |c| append::event_template(c, &server_name, &room_id, &sender, &draft))
            .await
    }

    /// The room's forward extremities and the lowest depth among them: `earliest_events` and
    /// `min_depth` of a `/get_missing_events` request.
    pub async fn forward_extremities_with_min_depth(
        &self,
        room_id: &RoomId,
    ) -> Result<(Vec<OwnedEventId>, i64)> {
        let room = room_id.to_string();
        let extremities = self
            .db
            .read(move |c| store::forward_extremities(c, &room).map_err(Error::from))
            .await?;
        let min_depth = extremities
            .iter()
            .map(|e| e.topological_ordering)
            .min()
            .unwrap_or(0);
        let ids = extremities
            .into_iter()
            .filter_map(|e| OwnedEventId::try_from(e.event_id).ok())
            .collect();
        Ok((ids, min_depth))
    }
}
