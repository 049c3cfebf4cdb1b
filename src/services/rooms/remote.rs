//! Membership across servers as the room layer sees it: the invite of another server's user
//! (built here, countersigned there, stored through `accept` with `Arrival::Own`), the stripped
//! state invitees and knockers see, and local users' memberships in rooms this server does not
//! hold (`storage/remote_memberships.rs`: invites received, knocks sent, the leaves that end
//! them).

use ruma::{CanonicalJsonObject, CanonicalJsonValue, RoomId, UserId, events::TimelineEventType};
use rusqlite::Connection;
use serde_json::{Value, value::RawValue as RawJsonValue};

use super::{
    Appended, EventDraft, Rooms,
    append::{self, OwnEvent, Signer},
    federation::{Arrival, IncomingPdu, PduOutcome},
};
use crate::{
    error::{Error, Result},
    storage::{
        remote_memberships::{self as remote_store, RemoteMembership},
        rooms as store,
    },
};

/// The state events an invitee or knocker sees before joining (with an empty state key), as
/// Synapse's default `room_prejoin_state`.
const PREJOIN_STATE: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.canonical_alias",
    "m.room.encryption",
];

/// The events of the stripped state an invitee or knocker sees: the room's current
/// [`PREJOIN_STATE`] and the member event of `sender` (the inviter), for local invitees in
/// /sync and for another server's invitee in `invite_room_state` alike.
pub fn prejoin_state_ids(
    conn: &Connection,
    room_id: &str,
    sender: Option<&str>,
) -> Result<Vec<String>> {
    let state = store::current_state(conn, room_id)?;
    let mut ids: Vec<String> = state
        .iter()
        .filter(|((kind, key), _)| PREJOIN_STATE.contains(&kind.as_str()) && key.is_empty())
        .map(|(_, id)| id.clone())
        .collect();
    if let Some(sender) = sender
        && let Some(id) = state.get(&("m.room.member".to_owned(), sender.to_owned()))
    {
        ids.push(id.clone());
    }
    Ok(ids)
}

/// The prejoin state as PDUs as other servers take them (without `unsigned`).
fn prejoin_state_pdus(
    conn: &Connection,
    room_id: &RoomId,
    sender: Option<&str>,
) -> Result<Vec<Box<RawJsonValue>>> {
    let ids = prejoin_state_ids(conn, room_id.as_str(), sender)?;
    let mut pdus = Vec::new();
    for row in store::events_by_id(conn, &ids)? {
        let mut object: CanonicalJsonObject =
            serde_json::from_str(&row.json).map_err(Error::internal)?;
        object.remove("unsigned");
        pdus.push(serde_json::value::to_raw_value(&object).map_err(Error::internal)?);
    }
    Ok(pdus)
}

/// Which membership of a local user in a room counts: the newest of the room's own
/// (`memberships`) and the one kept for a room this server does not hold.
#[derive(Debug, Clone)]
pub enum Membership {
    /// From the room's state here (a room this server holds): `Rooms::membership`.
    Local,
    /// From `remote_memberships`: the room is not held, or the row is newer than the room's.
    Remote(RemoteMembership),
    /// Never a member.
    Never,
}

impl Rooms {
    /// An invite of `invitee` (another server's user) by `sender`, built, signed and checked
    /// against the room's current state, with the room's stripped state as full PDUs for the
    /// invitee's server (`invite_room_state`; Matrix 1.16 asks for PDUs, not stripped events).
    pub async fn remote_invite_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        invitee: &UserId,
        content: Value,
    ) -> Result<(OwnEvent, Vec<Box<RawJsonValue>>)> {
        let (room_id, sender) = (room_id.to_owned(), sender.to_owned());
        let draft = EventDraft::state(TimelineEventType::RoomMember, invitee.as_str(), content);
        let (server_name, key) = (self.server_name.clone(), self.server_key.clone());
        self.db
            .read(move |c| {
                let signer = Signer {
                    server_name: &server_name,
                    key: &key,
                };
                let event = append::own_event(c, &signer, &room_id, &sender, &draft)?;
                let pdus = prejoin_state_pdus(c, &room_id, Some(sender.as_str()))?;
                Ok((event, pdus))
            })
            .await
    }

    /// The prejoin state (see [`prejoin_state_ids`]) as full PDUs, for another server's
    /// knocker (`knock_room_state`).
    pub async fn prejoin_state_pdus(
        &self,
        room_id: &RoomId,
        sender: Option<&UserId>,
    ) -> Result<Vec<Box<RawJsonValue>>> {
        let (room_id, sender) = (room_id.to_owned(), sender.map(|s| s.to_string()));
        self.db
            .read(move |c| prejoin_state_pdus(c, &room_id, sender.as_deref()))
            .await
    }

    /// Stores this server's event countersigned by another server (see [`Arrival::Own`]);
    /// refused with `403` when the room's rules or current state no longer allow it.
    pub async fn accept_own(&self, pdu: IncomingPdu) -> Result<Appended> {
        let (event_id, room_id) = (pdu.event_id.clone(), pdu.room_id.clone());
        let outcome = {
            let _lock = self.lock_room(&room_id).await;
            self.accept(pdu, Arrival::Own).await?
        };
        match outcome {
            PduOutcome::Accepted { stream } => Ok(Appended {
                event_id,
                room_id,
                stream,
            }),
            PduOutcome::AlreadyKnown => Err(Error::forbidden("The event is known already")),
            PduOutcome::SoftFailed => Err(Error::forbidden(
                "Event not allowed by the room's current state",
            )),
            PduOutcome::Rejected(reason) => {
                Err(Error::forbidden(format!("Event not allowed: {reason}")))
            }
        }
    }

    /// The membership of a local user in a room that counts (see [`Membership`]).
    pub async fn membership_anywhere(&self, room_id: &RoomId, user: &UserId) -> Result<Membership> {
        let (room, user) = (room_id.to_string(), user.to_string());
        self.db
            .read(move |c| {
                let local = store::membership(c, &room, &user)?;
                let remote = remote_store::get(c, &room, &user)?;
                Ok(match (local, remote) {
                    (Some(local), Some(remote))
                        if remote.stream_ordering > local.stream_ordering =>
                    {
                        Membership::Remote(remote)
                    }
                    (Some(_), _) => Membership::Local,
                    (None, Some(remote)) => Membership::Remote(remote),
                    (None, None) => Membership::Never,
                })
            })
            .await
    }

    /// Records a local user's membership in a room this server does not hold, at a new
    /// stream position (so /sync reports it), and wakes their syncs.
    pub async fn put_remote_membership(&self, mut row: RemoteMembership) -> Result<i64> {
        let stream = self
            .db
            .write(move |tx| {
                row.stream_ordering = store::next_stream_position(tx)?;
                remote_store::put(tx, &row)?;
                Ok::<_, Error>(row.stream_ordering)
            })
            .await?;
        self.notify(stream);
        Ok(stream)
    }

    /// Hides a left room this server does not hold from the user's syncs.
    pub async fn forget_remote(&self, room_id: &RoomId, user: &UserId) -> Result<bool> {
        let (room, user) = (room_id.to_string(), user.to_string());
        self.db
            .write(move |tx| remote_store::forget(tx, &room, &user).map_err(Error::from))
            .await
    }
}

/// A string field of a PDU.
pub fn field<'a>(object: &'a CanonicalJsonObject, name: &str) -> Option<&'a str> {
    match object.get(name) {
        Some(CanonicalJsonValue::String(s)) => Some(s),
        _ => None,
    }
}
