//! `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event` (MSC3030, Element's
//! `/jumptodate`), as Synapse's `TimestampLookupHandler`: the room's event held here closest to
//! the point in time (`Rooms::event_at_timestamp`); when none is held, or the one found is next
//! to a gap in the history held here (a join through another server leaves the room's earlier
//! history unheld), the room's other servers are asked with the federation
//! `/timestamp_to_event`, one after another until one answers. Their event is fetched and placed
//! in the timeline as backfilled (`backfill::backfill_event`) and answered when it is closer to
//! the point in time than the event held here.

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, UserId,
    api::{Direction, federation::event::get_event_by_timestamp::v1 as get_event_by_timestamp},
};

use super::backfill::{self, MAX_SERVERS};
use crate::{
    error::{Error, Result},
    services::Services,
};

/// The event of the room closest to `ts` in `dir`, for `user` (who must be able to read the
/// room: `403` otherwise); `404 M_NOT_FOUND` when neither this server nor another has one.
pub async fn event_at_timestamp(
    services: &Services,
    room_id: &RoomId,
    user: &UserId,
    ts: MilliSecondsSinceUnixEpoch,
    dir: Direction,
) -> Result<(OwnedEventId, MilliSecondsSinceUnixEpoch)> {
    let local = services
        .rooms
        .event_at_timestamp(room_id, user, ts, dir)
        .await?;
    if local.as_ref().is_none_or(|local| local.next_to_gap)
        && let Some((event_id, event_ts)) = ask_other_servers(services, room_id, ts, dir).await
    {
        let closer = local
            .as_ref()
            .is_none_or(|local| distance(event_ts, ts) < distance(local.origin_server_ts, ts));
        if closer {
            return Ok((event_id, event_ts));
        }
    }
    let local = local.ok_or_else(|| {
        Error::not_found(format!(
            "Unable to find event from {} in direction {}",
            ts.get(),
            if dir == Direction::Forward { "f" } else { "b" }
        ))
    })?;
    Ok((local.event_id, local.origin_server_ts))
}

fn distance(a: MilliSecondsSinceUnixEpoch, b: MilliSecondsSinceUnixEpoch) -> u64 {
    u64::from(a.get()).abs_diff(u64::from(b.get()))
}

/// The first answer of the room's other servers whose event could be fetched and placed here,
/// with the event's own `origin_server_ts` (not the one the server claimed). Failures are
/// logged and the next server asked: the client then gets what is held here.
async fn ask_other_servers(
    services: &Services,
    room_id: &RoomId,
    ts: MilliSecondsSinceUnixEpoch,
    dir: Direction,
) -> Option<(OwnedEventId, MilliSecondsSinceUnixEpoch)> {
    let servers = match services.rooms.joined_servers(room_id).await {
        Ok(servers) => servers,
        Err(e) => {
            tracing::info!(%room_id, "timestamp_to_event: no servers to ask: {e}");
            return None;
        }
    };
    let others = servers.into_iter().filter(|s| *s != services.server_name);
    for server in others.take(MAX_SERVERS) {
        let request = get_event_by_timestamp::Request::new(room_id.to_owned(), ts, dir);
        let Some(answer) =
            backfill::ask_server(services, &server, room_id, "timestamp_to_event", request).await
        else {
            continue;
        };
        let event_id = answer.event_id;
        match backfill::backfill_event(services, &server, room_id, &event_id).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(%room_id, %server, %event_id, "timestamp_to_event: not placed");
                continue;
            }
            Err(e) => {
                tracing::info!(%room_id, %server, %event_id, "timestamp_to_event: {e}");
                continue;
            }
        }
        match services.rooms.timeline_event_ts(room_id, &event_id).await {
            Ok(Some(event_ts)) => {
                if event_ts != answer.origin_server_ts {
                    tracing::info!(
                        %room_id, %server, %event_id,
                        "timestamp_to_event: the server's origin_server_ts is not the event's"
                    );
                }
                return Some((event_id, event_ts));
            }
            Ok(None) => continue,
            Err(e) => {
                tracing::info!(%room_id, %event_id, "timestamp_to_event: {e}");
                continue;
            }
        }
    }
    None
}
