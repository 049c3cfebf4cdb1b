//! This server's half of `GET /rooms/{roomId}/timestamp_to_event` (MSC3030, "jump to date"): the
//! room's event held here closest to a point in time, and whether it sits next to a gap in the
//! history held here, in which case `services::federation::timestamp` asks the room's other
//! servers too. The event is found by the same query that answers other servers
//! (`federation_reads::event_closest_to_ts`).

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, UInt, UserId, api::Direction,
};

use super::Rooms;
use crate::{
    error::{Error, Result},
    storage::{federation_reads as reads, pdus},
};

/// The event held here closest to a point in time.
#[derive(Debug, Clone)]
pub struct LocalEventAtTimestamp {
    pub event_id: OwnedEventId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    /// Whether history this server does not hold may lie between the point in time and the
    /// event: looking forward, the event or one of its parents is a backward extremity; looking
    /// backward, no event held follows it and it is not one of the room's newest.
    pub next_to_gap: bool,
}

impl Rooms {
    /// The room's event held here closest to `ts` in `dir` (`None` when there is none), for a
    /// user who may read the room: joined to it, or anyone when its history is world-readable
    /// (Synapse's `check_user_in_room_or_world_readable`); `403` otherwise.
    pub async fn event_at_timestamp(
        &self,
        room_id: &RoomId,
        user: &UserId,
        ts: MilliSecondsSinceUnixEpoch,
        dir: Direction,
    ) -> Result<Option<LocalEventAtTimestamp>> {
        self.check_can_read_current(room_id, user).await?;
        let room = room_id.to_string();
        let forward = dir == Direction::Forward;
        self.db
            .read(move |c| {
                let Some(found) = reads::event_closest_to_ts(c, &room, ts.get().into(), forward)?
                else {
                    return Ok(None);
                };
                let next_to_gap = if forward {
                    pdus::next_to_backward_gap(c, &room, &found.event_id)?
                } else {
                    pdus::next_to_forward_gap(c, &room, &found.event_id)?
                };
                Ok(Some(LocalEventAtTimestamp {
                    event_id: OwnedEventId::try_from(found.event_id).map_err(Error::internal)?,
                    origin_server_ts: MilliSecondsSinceUnixEpoch(
                        UInt::try_from(found.origin_server_ts).unwrap_or_default(),
                    ),
                    next_to_gap,
                }))
            })
            .await
    }

    /// The `origin_server_ts` of an event of the room's timeline held here (`None` if it is
    /// not held, or only as an outlier, soft-failed or rejected).
    pub async fn timeline_event_ts(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Option<MilliSecondsSinceUnixEpoch>> {
        let (room, event) = (room_id.to_string(), event_id.to_string());
        let ts = self
            .db
            .read(move |c| reads::timeline_event_ts(c, &room, &event).map_err(Error::from))
            .await?;
        Ok(ts.map(|ts| MilliSecondsSinceUnixEpoch(UInt::try_from(ts).unwrap_or_default())))
    }
}
