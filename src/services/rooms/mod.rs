//! Rooms: creating them, membership, sending events, and reading state and timelines with the
//! spec's visibility rules. Every write goes through `append` (one transaction per event).
//!
//! Every event is a complete PDU of its room version: [`SUPPORTED_ROOM_VERSIONS`] (3 to 12) for
//! rooms created here, 12 by default (`default_room_version`); over federation also 2
//! ([`federation_rules`]: state resolution v2 only, version 1 refused). The PDU carries
//! `prev_events`, `auth_events`, `depth`, the content hash, the server's ed25519 signature and its
//! ID (since version 12, a room's ID is derived from its create event). `pdu::event_id` is the one
//! place an event ID is derived; version 2's `[ID, hashes]` references are read by
//! `pdu::event_references` and written by `append`.
//!
//! Two orderings. `stream_ordering` is the order in which this server stored things: one global
//! sequence shared by events, account data, receipts, presence and device-list changes, so a sync
//! token is one number (plus the in-memory typing serial). `topological_ordering` is the event's
//! depth, used by `/messages` and `/relations` (`t<depth>_<stream>` tokens). For local events both
//! grow together; an event that arrives late over federation gets a new stream position but keeps
//! its depth; backfilled events get positions counting down from 0
//! (`storage::pdus::reserve_backfill_positions`), below every live one, so /sync never takes them
//! for new while `/messages` pages them by depth.
//!
//! State at every event is recoverable from state groups (`storage::rooms`): each event row points
//! at the group holding the room state after it; a group is its parent group plus a delta, and a
//! chain is cut by a snapshot every 64 links, so reading any state costs at most 64 indexed
//! lookups. History visibility, /sync's state before the timeline, federation's `/state_ids` and
//! state resolution read it. `current_state` and `memberships` are kept beside the groups for fast
//! reads ("rooms of this user"). A local event after a fork gets a group holding the difference
//! from its first parent's group (`append.rs`).
//!
//! Idempotency: `(user, device, txnId) -> event_id` is written in the transaction of the event
//! ([`Rooms::send_with_txn`]), so a retried send returns the first event and a crash leaves neither
//! half. After each commit the new stream position is published ([`publish`]), which wakes
//! waiting /syncs.

mod append;
mod context;
mod create;
// Parts wait for their callers (so far only the tests use them).
#[allow(dead_code)]
mod federation;
#[cfg(test)]
mod federation_tests;
pub mod format;
pub mod limits;
mod membership;
pub mod pdu;
pub mod power_levels;
pub mod read;
pub mod relations;
pub mod remote;
mod resident;
mod search;
mod state;
pub mod stored;
pub mod timestamp;
mod upgrade;

use std::sync::Arc;

use ruma::{
    OwnedEventId, OwnedServerName, RoomId, RoomVersionId, UserId,
    events::room::member::MembershipState, room_version_rules::RoomVersionRules,
};
use tokio::sync::watch;

#[allow(unused_imports)]
pub use crate::storage::rooms::StateIds;
pub use append::{Appended, EventDraft};
pub use create::{CreateRoom, Preset};
pub use federation::{Arrival, IncomingPdu, PduOutcome, PreparedPdu, state_before_event};
pub use limits::{MAX_PDU_BYTES, check_type_and_state_key};
pub use membership::{INLINE_PROFILE_ROOMS, Profile, join_content};
pub use read::{Direction, PaginationToken};

use self::append::{Signer, Target, append_event};
use crate::{
    error::{Error, Result},
    services::{rate_limit::AccountLimits, server_key::ServerKey, sessions::Identity},
    storage::{Database, rooms as store},
};

/// Room versions this server creates and joins: 3 and later (event IDs are hashes; the
/// authorization rules and state resolution of ruma-state-res apply).
pub const SUPPORTED_ROOM_VERSIONS: &[&str] = &["3", "4", "5", "6", "7", "8", "9", "10", "11", "12"];

/// Room versions this server joins and takes part in over federation: those ruma-state-res can
/// resolve, state resolution v2 (versions 2 and later). Version 2 keeps version 1's event format
/// (`event_id` inside the event, `[ID, hashes]` references), which `pdu` reads and `append`
/// writes. Version 1 needs state resolution v1, which ruma does not have: refused.
pub fn federation_rules(version: &RoomVersionId) -> Option<RoomVersionRules> {
    version
        .rules()
        .filter(|rules| rules.state_res.v2_rules().is_some())
}

/// The versions of [`federation_rules`], for `make_join`'s `ver`.
pub fn federation_versions() -> Vec<RoomVersionId> {
    ["2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"]
        .into_iter()
        .filter_map(|v| RoomVersionId::try_from(v).ok())
        .filter(|v| federation_rules(v).is_some())
        .collect()
}

/// Finishes, in the background at start-up, the profile changes a restart interrupted before
/// they reached every joined room (`Rooms::finish_profile_updates`).
pub fn spawn_profile_updates(
    services: &Arc<crate::services::Services>,
    tasks: &crate::shutdown::BackgroundTasks,
) {
    let services = services.clone();
    tasks.spawn(|_shutdown| async move {
        if let Err(e) = services.rooms.finish_profile_updates().await {
            tracing::warn!(error = %e, "cannot finish interrupted profile changes");
        }
    });
}

/// Publishes a stream position written and committed, waking /sync long-polls.
pub fn publish(stream: &watch::Sender<i64>, position: i64) {
    stream.send_if_modified(|current| {
        if position > *current {
            *current = position;
            true
        } else {
            false
        }
    });
}

pub struct Rooms {
    db: Database,
    server_name: OwnedServerName,
    server_key: Arc<ServerKey>,
    default_version: RoomVersionId,
    /// The newest stream position; /sync waits on it.
    stream: watch::Sender<i64>,
    /// Synapse's per-account limits, checked by the methods clients reach (the `send_*`
    /// methods, membership changes, room creation and upgrade); `append` is not limited, for
    /// the events the server sends itself.
    limits: Arc<AccountLimits>,
    /// Per-room locks for inbound federation (`lock_room`).
    room_locks: federation::RoomLocks,
}

impl Rooms {
    pub fn new(
        db: Database,
        server_name: OwnedServerName,
        server_key: Arc<ServerKey>,
        default_version: RoomVersionId,
        position: i64,
        limits: Arc<AccountLimits>,
    ) -> Self {
        Self {
            db,
            server_name,
            server_key,
            default_version,
            stream: watch::Sender::new(position),
            limits,
            room_locks: federation::RoomLocks::default(),
        }
    }

    /// Waits for new stream positions (events, account data, receipts, typing).
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.stream.subscribe()
    }

    /// Wakes /sync long-polls after something at `position` was written.
    pub fn notify(&self, position: i64) {
        publish(&self.stream, position);
    }

    /// The stream position's sender, for services that write to the stream outside rooms (device
    /// changes are device-list changes).
    pub fn stream_sender(&self) -> watch::Sender<i64> {
        self.stream.clone()
    }

    /// Wakes every /sync long-poll so that it re-checks ephemeral state (typing).
    pub fn wake(&self) {
        self.stream.send_modify(|_| {});
    }

    /// Adds one event to a room, checked against the authorization rules. A state event that
    /// repeats the current one (same sender and content) is not added again: the current
    /// one is answered (`append::existing_state`).
    pub async fn append(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: EventDraft,
    ) -> Result<Appended> {
        let (room_id, sender) = (room_id.to_owned(), sender.to_owned());
        let (server_name, key) = (self.server_name.clone(), self.server_key.clone());
        let appended = self
            .db
            .write(move |tx| {
                let signer = Signer {
                    server_name: &server_name,
                    key: &key,
                };
                if let Some(existing) = append::existing_state(tx, &room_id, &sender, &draft)? {
                    return Ok(existing);
                }
                append_event(tx, &signer, Target::Room(&room_id), &sender, draft)
            })
            .await?;
        self.notify(appended.stream);
        Ok(appended)
    }

    /// A client's state event: `append` within the sender's `rc_message`.
    pub async fn send_state(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: EventDraft,
    ) -> Result<Appended> {
        self.limits.event(sender, false).await?;
        self.append(room_id, sender, draft).await
    }

    /// Sends a client event once per (device, txnId): a retry returns the first event's ID.
    /// Counts against the sender's `rc_message` (or `rc_admin_redaction` for a redaction of
    /// someone else's event); a retry of a send that was stored is answered before the limit is
    /// looked at, as Synapse answers it from its transaction cache: a client that lost the
    /// response must learn its event ID, not be told to wait.
    pub async fn send_with_txn(
        &self,
        room_id: &RoomId,
        sender: &Identity,
        txn_id: &str,
        draft: EventDraft,
    ) -> Result<OwnedEventId> {
        let (user, device, txn) = (
            sender.user_id.to_string(),
            sender.device_id.to_string(),
            txn_id.to_owned(),
        );
        let earlier = self
            .db
            .read(move |c| store::txn_event(c, &user, &device, &txn).map_err(Error::from))
            .await?;
        if let Some(existing) = earlier {
            return OwnedEventId::try_from(existing).map_err(Error::internal);
        }
        let redacts_another_sender = match &draft.redacts {
            Some(target) if self.limits.distinguishes_admin_redactions() => self
                .event_sender(target)
                .await?
                .is_some_and(|target_sender| target_sender != sender.user_id.as_str()),
            _ => false,
        };
        self.limits
            .event(&sender.user_id, redacts_another_sender)
            .await?;
        let (room_id, user, device, txn) = (
            room_id.to_owned(),
            sender.user_id.clone(),
            sender.device_id.to_string(),
            txn_id.to_owned(),
        );
        let (server_name, key) = (self.server_name.clone(), self.server_key.clone());
        let (event_id, stream) = self
            .db
            .write(move |tx| {
                if let Some(existing) = store::txn_event(tx, user.as_str(), &device, &txn)? {
                    return Ok((
                        OwnedEventId::try_from(existing).map_err(Error::internal)?,
                        None,
                    ));
                }
                let signer = Signer {
                    server_name: &server_name,
                    key: &key,
                };
                let appended = append_event(tx, &signer, Target::Room(&room_id), &user, draft)?;
                store::insert_txn(tx, user.as_str(), &device, &txn, appended.event_id.as_str())?;
                Ok::<_, Error>((appended.event_id, Some(appended.stream)))
            })
            .await?;
        if let Some(stream) = stream {
            self.notify(stream);
        }
        Ok(event_id)
    }

    /// The current membership of a user in a room (`join`, `invite`, `leave`, `ban`, `knock`).
    pub async fn membership(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<Option<MembershipState>> {
        let (room, user) = (room_id.to_string(), user_id.to_string());
        Ok(self
            .db
            .read(move |c| store::membership(c, &room, &user).map_err(Error::from))
            .await?
            .map(|m| MembershipState::from(m.membership)))
    }

    /// Refuses unless the user is joined.
    pub async fn require_joined(&self, room_id: &RoomId, user_id: &UserId) -> Result<()> {
        match self.membership(room_id, user_id).await? {
            Some(MembershipState::Join) => Ok(()),
            _ => Err(Error::forbidden(format!(
                "{user_id} is not in room {room_id}"
            ))),
        }
    }

    /// The ID of the room's current state event of `(event_type, state_key)`, if any.
    pub async fn current_state_event_id(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<OwnedEventId>> {
        let (room, kind, key) = (
            room_id.to_string(),
            event_type.to_owned(),
            state_key.to_owned(),
        );
        let id = self
            .db
            .read(move |c| store::current_state_event(c, &room, &kind, &key).map_err(Error::from))
            .await?;
        id.map(OwnedEventId::try_from)
            .transpose()
            .map_err(Error::internal)
    }

    /// Who sent an event this server has, for telling moderators' redactions apart.
    async fn event_sender(&self, event_id: &ruma::EventId) -> Result<Option<String>> {
        let event_id = event_id.to_string();
        let row = self
            .db
            .read(move |c| store::get_event(c, &event_id).map_err(Error::from))
            .await?;
        Ok(row.map(|row| row.sender))
    }

    pub async fn room_version(&self, room_id: &RoomId) -> Result<RoomVersionId> {
        let room = room_id.to_string();
        let version = self
            .db
            .read(move |c| store::room_version(c, &room).map_err(Error::from))
            .await?;
        let version = version.ok_or_else(|| Error::not_found("Unknown room"))?;
        RoomVersionId::try_from(version.as_str()).map_err(Error::internal)
    }

    /// This server's name: events of users of other names came over federation.
    pub fn server_name(&self) -> &ruma::ServerName {
        &self.server_name
    }
}
