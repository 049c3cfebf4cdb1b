//! Presence: `online`, `unavailable` or `offline`, with a status message and the time of the
//! user's last activity, shown to the users who share a room with them.
//!
//! The stored state (table `presence`) sits in the shared stream, so /sync reports the changes
//! since its token with no token format of its own. Activity is kept in memory: every /sync with
//! `set_presence` online is activity, but only changes of state, status message or
//! `currently_active` are written (and broadcast), as in Synapse. A background task
//! ([`spawn_timeouts`]) clears `currently_active` a minute after the last activity and marks
//! users offline once they stop syncing.
//!
//! Over federation (Synapse's behaviour): every change of a local user's presence is queued as an
//! `m.presence` EDU for the servers sharing a room with the user, in the transaction that
//! stores it, and repeated every 25 minutes while the user is not offline; presence received
//! from a server ([`Presence::receive`]) is stored for its own users who share a room with one of
//! ours, shown like local presence, and taken as offline after 30 minutes without news.
//!
//! `PUT /presence/{userId}/status` and /sync's `set_presence` (online by default; `offline` changes
//! nothing) set it; a user is marked offline 150 s after their last sync (longer than the longest
//! long-poll). /sync's `presence.events` holds the changed presence of the user and of everyone
//! sharing a room with them (on a first sync: everyone not offline). [`Presence::share_room`] sends
//! the current presence to servers that start sharing a room (called through `federation::joins`
//! after local and inbound joins, and by `inbound` for accepted joins); [`Presence::receive`] is
//! fed by `inbound::handle_edu`. With `presence: {enabled: false}` the endpoints still answer
//! (everyone reads as offline), and nothing is recorded, sent or accepted.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{
    OwnedServerName, OwnedUserId, RoomId, ServerName, UInt, UserId,
    api::{
        client::filter::{Filter, RoomEventFilter},
        federation::transactions::edu::PresenceUpdate,
    },
    presence::PresenceState,
    serde::Raw,
};
use serde_json::{Value, json};

use super::{Services, federation::sender, filter::room_event_matches, rooms::Rooms};
use crate::shutdown::BackgroundTasks;
use crate::{
    error::{Error, Result},
    storage::{
        Database, now_ms,
        presence::{self as store, PresenceRow},
    },
};

/// Activity within this long keeps `currently_active`; later activity is not broadcast while it
/// is set (Synapse's `LAST_ACTIVE_GRANULARITY`).
const ACTIVE_WINDOW_MS: i64 = 60_000;
/// A user who has neither synced nor set their presence for this long goes offline: longer than
/// the longest /sync long-poll (two minutes), so a client that keeps syncing stays online.
const OFFLINE_AFTER_MS: i64 = 150_000;
/// How often the timeouts are checked.
const TIMEOUT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Most presence events in one /sync when its filter sets no limit.
const MAX_SYNC_EVENTS: usize = 1000;
/// A remote user whose server sent nothing for this long is offline (Synapse's
/// `FEDERATION_TIMEOUT`); servers repeat their users' presence more often than that.
const FEDERATION_TIMEOUT_MS: i64 = 30 * 60_000;
/// How often the presence of a local user who is not offline is sent again to the servers that
/// share a room with them (Synapse's `FEDERATION_PING_INTERVAL`), so that they do not time it out.
const FEDERATION_PING_MS: i64 = 25 * 60_000;
/// Most updates taken from one `m.presence` EDU (a transaction holds at most 100 EDUs).
const MAX_UPDATES_PER_EDU: usize = 100;
/// Most local members whose presence a server joining a room is sent.
const MAX_SHARED_ON_JOIN: usize = 1000;

#[derive(Debug, Clone, Copy)]
struct Activity {
    /// The last /sync or presence change that keeps the user online.
    last_seen: i64,
    /// The last activity (a sync or change with state `online`); 0 when none since start-up.
    last_active: i64,
    /// A local user: when their presence last went to other servers (0: not since start-up).
    /// A remote user: `last_seen` is when their server last told us.
    last_sent: i64,
}

impl Activity {
    fn new(now: i64) -> Self {
        Self {
            last_seen: now,
            last_active: 0,
            last_sent: 0,
        }
    }
}

/// What `GET /presence/{userId}/status` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceView {
    pub state: PresenceState,
    pub status_msg: Option<String>,
    pub last_active_ago: Option<Duration>,
    pub currently_active: Option<bool>,
}

pub struct Presence {
    db: Database,
    server_name: OwnedServerName,
    enabled: bool,
    activity: Arc<Mutex<HashMap<OwnedUserId, Activity>>>,
}

impl Presence {
    pub fn new(db: Database, server_name: OwnedServerName, enabled: bool) -> Self {
        Self {
            db,
            server_name,
            enabled,
            activity: Arc::default(),
        }
    }

    /// `PUT /presence/{userId}/status`: sets the state and the status message (none clears it).
    /// Accepted and ignored when presence is disabled.
    pub async fn set(
        &self,
        rooms: &Rooms,
        user: &UserId,
        state: &PresenceState,
        status_msg: Option<String>,
    ) -> Result<()> {
        let state = state_name(state)?;
        if !self.enabled {
            return Ok(());
        }
        self.update(rooms, user, state, Some(status_msg)).await
    }

    /// /sync's `set_presence`: `online` (the default) and `unavailable` set the state and count
    /// as activity, `offline` leaves the presence alone.
    pub async fn on_sync(&self, rooms: &Rooms, user: &UserId, state: &PresenceState) -> Result<()> {
        if !self.enabled || *state == PresenceState::Offline {
            return Ok(());
        }
        let state = state_name(state)?;
        self.update(rooms, user, state, None).await
    }

    /// Records activity and writes the new state if anything others see changed.
    async fn update(
        &self,
        rooms: &Rooms,
        user: &UserId,
        state: &'static str,
        status_msg: Option<Option<String>>,
    ) -> Result<()> {
        let now = now_ms();
        {
            let mut activity = lock(&self.activity);
            let entry = activity
                .entry(user.to_owned())
                .or_insert(Activity::new(now));
            entry.last_seen = now;
            if state == "online" {
                entry.last_active = now;
            }
        }
        let user_id = user.to_owned();
        let sent_to = user.to_string();
        let user = user.to_string();
        let (reader, msg) = (user.clone(), status_msg.clone());
        let old = self
            .db
            .read(move |c| store::get(c, &reader).map_err(Error::from))
            .await?;
        if !changes(
            old.as_ref(),
            &next_row(old.as_ref(), &user, state, msg, now),
        ) {
            return Ok(());
        }
        let position = self
            .db
            .write(move |tx| {
                let old = store::get(tx, &user)?;
                let new = next_row(old.as_ref(), &user, state, status_msg, now);
                if changes(old.as_ref(), &new) {
                    let position = store::put(tx, &new)?;
                    sender::enqueue_presence(tx, &user_id, federation_update(&user_id, &new, now))?;
                    Ok::<_, Error>(Some(position))
                } else {
                    Ok(None)
                }
            })
            .await?;
        if let Some(position) = position {
            self.sent(&sent_to, now);
            rooms.notify(position);
        }
        Ok(())
    }

    /// Notes when a local user's presence went to other servers (for the periodic repeat).
    fn sent(&self, user: &str, now: i64) {
        if let Ok(user) = OwnedUserId::try_from(user) {
            lock(&self.activity)
                .entry(user)
                .or_insert(Activity::new(now))
                .last_sent = now;
        }
    }

    /// Servers that start sharing a room learn the presence there at once, as Synapse tells
    /// them, instead of at the next change: a local user who joined `room_id` has their
    /// presence sent to the room's other servers; with `new_server`, a server whose user joined,
    /// that server gets the presence of every local member (offline ones left out). Failures are
    /// logged: a join never fails for presence.
    pub async fn share_room(&self, rooms: &Rooms, room_id: &RoomId, joined: Joined<'_>) {
        if !self.enabled {
            return;
        }
        let own = self.server_name.clone();
        let room = room_id.to_owned();
        let (user, new_server) = match joined {
            Joined::LocalUser(user) => (Some(user.to_owned()), None),
            Joined::Server(server) if server != self.server_name => {
                (None, Some(server.to_string()))
            }
            Joined::Server(_) => return,
        };
        let activity = self.activity.clone();
        let written = self
            .db
            .write(move |tx| {
                let now = now_ms();
                let (rows, destinations) = match (&user, new_server) {
                    (Some(user), _) => (
                        store::get(tx, user.as_str())?
                            .filter(|row| row.state != "offline")
                            .into_iter()
                            .collect::<Vec<_>>(),
                        sender::other_servers_in_room(tx, &own, &room)?,
                    ),
                    (None, Some(server)) => (
                        store::local_members_presence(tx, room.as_str(), MAX_SHARED_ON_JOIN)?,
                        vec![server],
                    ),
                    (None, None) => return Ok::<_, Error>(()),
                };
                let updates = rows
                    .iter()
                    .filter_map(|row| {
                        let user = OwnedUserId::try_from(row.user_id.as_str()).ok()?;
                        let memory = lock(&activity).get(&user).map_or(0, |a| a.last_active);
                        let row = PresenceRow {
                            last_active_ts: row.last_active_ts.max(memory),
                            ..row.clone()
                        };
                        Some(federation_update(&user, &row, now))
                    })
                    .collect();
                sender::enqueue_presence_for(tx, &destinations, updates)?;
                Ok(())
            })
            .await;
        match written {
            // Queued EDUs go out when the sender hears of a commit.
            Ok(()) => rooms.wake(),
            Err(e) => tracing::warn!(%room_id, error = %e, "cannot share presence"),
        }
    }

    /// An `m.presence` EDU from `origin`: the updates of its own users who share a room with one
    /// of ours are stored (at most [`MAX_UPDATES_PER_EDU`], in one transaction) and shown like
    /// local presence; anything else is ignored, as is everything when presence is disabled.
    pub async fn receive(&self, rooms: &Rooms, origin: &ServerName, updates: Vec<PresenceUpdate>) {
        if !self.enabled || origin == self.server_name {
            return;
        }
        let now = now_ms();
        let updates: Vec<PresenceUpdate> = updates
            .into_iter()
            .filter(|u| u.user_id.server_name() == origin)
            .filter(|u| state_name(&u.presence).is_ok())
            .take(MAX_UPDATES_PER_EDU)
            .collect();
        if updates.is_empty() {
            return;
        }
        let written = self
            .db
            .write(move |tx| {
                let mut position = None;
                let mut stored = Vec::new();
                for update in updates {
                    let user = update.user_id.as_str();
                    if !crate::storage::rooms::shares_a_room_with_a_local_user(tx, user)? {
                        continue;
                    }
                    stored.push(update.user_id.clone());
                    let ago = i64::try_from(u64::from(update.last_active_ago)).unwrap_or(i64::MAX);
                    let new = PresenceRow {
                        user_id: user.to_owned(),
                        state: state_name(&update.presence).unwrap_or("offline").to_owned(),
                        status_msg: update.status_msg,
                        last_active_ts: now.saturating_sub(ago).max(0),
                        currently_active: update.currently_active,
                    };
                    let old = store::get(tx, user)?;
                    // `last_active_ago` moves with every repeat: only what others see counts.
                    if changes(old.as_ref(), &new) {
                        position = Some(store::put(tx, &new)?);
                    }
                }
                Ok::<_, Error>((position, stored))
            })
            .await;
        match written {
            Ok((position, stored)) => {
                let mut activity = lock(&self.activity);
                for user in stored {
                    activity.entry(user).or_insert(Activity::new(now)).last_seen = now;
                }
                drop(activity);
                if let Some(position) = position {
                    rooms.notify(position);
                }
            }
            Err(e) => tracing::warn!(%origin, error = %e, "cannot store remote presence"),
        }
    }

    /// A user's presence as `requester` may see it: their own, or that of someone they share a
    /// room with (else `M_FORBIDDEN`). Offline for everyone when presence is disabled.
    pub async fn get(&self, requester: &UserId, user: &UserId) -> Result<PresenceView> {
        let (me, them) = (requester.to_string(), user.to_string());
        let row = self
            .db
            .read(move |c| {
                if me != them && !store::share_a_room(c, &me, &them)? {
                    return Err(Error::forbidden(
                        "You are not allowed to see their presence",
                    ));
                }
                Ok(store::get(c, &them)?)
            })
            .await?;
        let offline = PresenceView {
            state: PresenceState::Offline,
            status_msg: None,
            last_active_ago: None,
            currently_active: None,
        };
        let Some(row) = row.filter(|_| self.enabled) else {
            return Ok(offline);
        };
        let last_active = self.last_active(&row);
        let content = content(&row, last_active, now_ms());
        Ok(PresenceView {
            state: PresenceState::from(row.state.as_str()),
            status_msg: row.status_msg,
            last_active_ago: content["last_active_ago"]
                .as_u64()
                .map(Duration::from_millis),
            currently_active: content["currently_active"].as_bool(),
        })
    }

    /// The `m.presence` events for /sync: presence of the user and of everyone sharing a room
    /// with them, changed in `(since, upto]` (on a first sync: everyone not offline).
    pub async fn sync_events<T>(
        &self,
        user: &UserId,
        since: Option<i64>,
        upto: i64,
        filter: &Filter,
    ) -> Result<Vec<Raw<T>>> {
        if !self.enabled || filter.limit.is_some_and(|l| l == ruma::UInt::MIN) {
            return Ok(Vec::new());
        }
        let limit = filter.limit.map_or(MAX_SYNC_EVENTS, |l| {
            u64::from(l).min(MAX_SYNC_EVENTS as u64) as usize
        });
        let user = user.to_string();
        let updates = self
            .db
            .read(move |c| {
                store::changed_for(c, &user, since.unwrap_or(0), upto, since.is_none(), limit)
                    .map_err(Error::from)
            })
            .await?;
        let mut event_filter = RoomEventFilter::default();
        event_filter.types = filter.types.clone();
        event_filter.not_types = filter.not_types.clone();
        event_filter.senders = filter.senders.clone();
        event_filter.not_senders = filter.not_senders.clone();
        let now = now_ms();
        let mut events = Vec::new();
        for update in updates {
            let mut content = content(&update.row, self.last_active(&update.row), now);
            if let Some(name) = update.displayname {
                content["displayname"] = json!(name);
            }
            if let Some(url) = update.avatar_url {
                content["avatar_url"] = json!(url);
            }
            let event =
                json!({"type": "m.presence", "sender": update.row.user_id, "content": content});
            if room_event_matches(&event_filter, &event) {
                events.push(Raw::from_json(
                    serde_json::value::to_raw_value(&event).map_err(Error::internal)?,
                ));
            }
        }
        Ok(events)
    }

    /// The `m.presence` event of a stored presence, as Synapse pushes it to application
    /// services (no profile fields).
    pub fn event(&self, row: &PresenceRow) -> Value {
        json!({
            "type": "m.presence",
            "sender": row.user_id,
            "content": content(row, self.last_active(row), now_ms()),
        })
    }

    /// The newest known activity of a stored presence (memory knows of activity not written).
    fn last_active(&self, row: &PresenceRow) -> i64 {
        let memory = OwnedUserId::try_from(row.user_id.as_str())
            .ok()
            .and_then(|user| lock(&self.activity).get(&user).map(|a| a.last_active));
        row.last_active_ts.max(memory.unwrap_or(0))
    }

    /// Applies the timeouts: a local user's `currently_active` ends a minute after the last
    /// activity, users who stopped syncing go offline, and both changes go to other servers; a
    /// local user who is not offline is repeated to them every 25 minutes; a remote user whose
    /// server sent nothing for 30 minutes goes offline here.
    pub async fn apply_timeouts(&self, rooms: &Rooms) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let now = now_ms();
        let rows = self
            .db
            .read(|c| store::not_offline(c).map_err(Error::from))
            .await?;
        let due: Vec<(OwnedUserId, Due)> = {
            let mut activity = lock(&self.activity);
            rows.iter()
                .filter_map(|row| {
                    let user = OwnedUserId::try_from(row.user_id.as_str()).ok()?;
                    // After a restart nobody has synced yet: they get the full timeout.
                    let seen = *activity.entry(user.clone()).or_insert(Activity::new(now));
                    let due = if user.server_name() != self.server_name {
                        (now - seen.last_seen > FEDERATION_TIMEOUT_MS).then_some(Due::RemoteTimeout)
                    } else if timed_out(row, &seen, now).is_some() {
                        Some(Due::LocalTimeout)
                    } else {
                        (now - seen.last_sent > FEDERATION_PING_MS).then_some(Due::Repeat)
                    };
                    due.map(|due| (user, due))
                })
                .collect()
        };
        for (user, due) in due {
            let (activity, sent_to) = (self.activity.clone(), user.clone());
            // Checked again in the transaction: a sync or an EDU may have come in meanwhile.
            let position = self
                .db
                .write(move |tx| {
                    let Some(row) = store::get(tx, user.as_str())? else {
                        return Ok::<_, Error>(None);
                    };
                    let now = now_ms();
                    let Some(seen) = lock(&activity).get(&user).copied() else {
                        return Ok(None);
                    };
                    match due {
                        Due::RemoteTimeout => {
                            if now - seen.last_seen <= FEDERATION_TIMEOUT_MS {
                                return Ok(None);
                            }
                            let offline = PresenceRow {
                                state: "offline".to_owned(),
                                currently_active: false,
                                ..row
                            };
                            Ok(Some(store::put(tx, &offline)?))
                        }
                        Due::LocalTimeout => match timed_out(&row, &seen, now) {
                            Some(new) => {
                                let position = store::put(tx, &new)?;
                                let update = federation_update(&user, &new, now);
                                sender::enqueue_presence(tx, &user, update)?;
                                Ok(Some(position))
                            }
                            None => Ok(None),
                        },
                        Due::Repeat => {
                            let last_active = row.last_active_ts.max(seen.last_active);
                            let row = PresenceRow {
                                last_active_ts: last_active,
                                ..row
                            };
                            let update = federation_update(&user, &row, now);
                            sender::enqueue_presence(tx, &user, update)?;
                            Ok(None)
                        }
                    }
                })
                .await?;
            if due != Due::RemoteTimeout {
                self.sent(sent_to.as_str(), now);
            }
            if due == Due::Repeat {
                rooms.wake(); // EDUs queued without a new stream position
            }
            if let Some(position) = position {
                rooms.notify(position);
            }
        }
        Ok(())
    }
}

/// Who started sharing a room, for [`Presence::share_room`].
pub enum Joined<'a> {
    /// A local user joined.
    LocalUser(&'a UserId),
    /// A user of this server joined.
    Server(&'a ServerName),
}

/// What [`Presence::apply_timeouts`] found to do for a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    LocalTimeout,
    Repeat,
    RemoteTimeout,
}

/// The federation form of a stored presence (`m.presence` EDU's `push` entry).
fn federation_update(user: &UserId, row: &PresenceRow, now: i64) -> PresenceUpdate {
    let ago = if row.last_active_ts > 0 {
        now - row.last_active_ts
    } else {
        now // never active: the receiver computes "active at the epoch", as Synapse sends it
    };
    let mut update = PresenceUpdate::new(
        user.to_owned(),
        PresenceState::from(row.state.as_str()),
        UInt::try_from(ago.max(0)).unwrap_or(UInt::MAX),
    );
    update.status_msg = row.status_msg.clone();
    update.currently_active = row.currently_active;
    update
}

/// Starts the task that applies presence timeouts while the server runs (nothing when presence
/// is disabled).
pub fn spawn_timeouts(services: &Arc<Services>, tasks: &BackgroundTasks) {
    if !services.presence.enabled {
        return;
    }
    let services = Arc::downgrade(services);
    tasks.spawn(|shutdown| async move {
        let mut interval = tokio::time::interval(TIMEOUT_CHECK_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = shutdown.stopping() => break,
            }
            let Some(services) = services.upgrade() else {
                break;
            };
            if let Err(e) = services.presence.apply_timeouts(&services.rooms).await {
                tracing::warn!(error = %e, "cannot apply presence timeouts");
            }
        }
    });
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn state_name(state: &PresenceState) -> Result<&'static str> {
    match state {
        PresenceState::Online => Ok("online"),
        PresenceState::Unavailable => Ok("unavailable"),
        PresenceState::Offline => Ok("offline"),
        other => Err(Error::invalid_param(format!(
            "Unknown presence state `{other}`: use online, unavailable or offline"
        ))),
    }
}

/// The presence after a change: `status_msg` `None` keeps the old message (a sync), `online`
/// is activity.
fn next_row(
    old: Option<&PresenceRow>,
    user: &str,
    state: &str,
    status_msg: Option<Option<String>>,
    now: i64,
) -> PresenceRow {
    let active = state == "online";
    PresenceRow {
        user_id: user.to_owned(),
        state: state.to_owned(),
        status_msg: status_msg.unwrap_or_else(|| old.and_then(|o| o.status_msg.clone())),
        last_active_ts: if active {
            now
        } else {
            old.map_or(0, |o| o.last_active_ts)
        },
        currently_active: active,
    }
}

/// Does the change show to others? Activity alone does not while `currently_active` holds.
fn changes(old: Option<&PresenceRow>, new: &PresenceRow) -> bool {
    old.is_none_or(|old| {
        old.state != new.state
            || old.status_msg != new.status_msg
            || old.currently_active != new.currently_active
    })
}

/// The presence after the timeouts, if they change it.
fn timed_out(row: &PresenceRow, seen: &Activity, now: i64) -> Option<PresenceRow> {
    let last_active = row.last_active_ts.max(seen.last_active);
    if now - seen.last_seen > OFFLINE_AFTER_MS {
        return Some(PresenceRow {
            state: "offline".to_owned(),
            currently_active: false,
            last_active_ts: last_active,
            ..row.clone()
        });
    }
    if row.currently_active && now - last_active > ACTIVE_WINDOW_MS {
        return Some(PresenceRow {
            currently_active: false,
            last_active_ts: last_active,
            ..row.clone()
        });
    }
    None
}

/// The content of an `m.presence` event.
fn content(row: &PresenceRow, last_active: i64, now: i64) -> Value {
    let mut content = json!({"presence": row.state});
    if last_active > 0 {
        content["last_active_ago"] = json!((now - last_active).max(0));
    }
    if row.state == "online" {
        content["currently_active"] = json!(row.currently_active);
    }
    if let Some(msg) = &row.status_msg {
        content["status_msg"] = json!(msg);
    }
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(now: i64) -> PresenceRow {
        next_row(None, "@a:x", "online", Some(Some("hi".into())), now)
    }

    #[test]
    fn activity_alone_is_not_a_change_while_currently_active() {
        let first = online(1_000);
        assert!(changes(None, &first));
        let again = next_row(Some(&first), "@a:x", "online", None, 20_000);
        assert_eq!(
            again.status_msg.as_deref(),
            Some("hi"),
            "a sync keeps the message"
        );
        assert!(!changes(Some(&first), &again));
        let away = next_row(Some(&first), "@a:x", "unavailable", None, 30_000);
        assert!(changes(Some(&first), &away));
        assert_eq!(away.last_active_ts, 1_000, "unavailable is not activity");
        assert!(!away.currently_active);
    }

    #[test]
    fn timeouts_end_activity_then_go_offline() {
        let row = online(1_000);
        let seen = Activity {
            last_seen: 1_000,
            last_active: 1_000,
            last_sent: 1_000,
        };
        assert_eq!(timed_out(&row, &seen, 30_000), None);
        let idle = timed_out(&row, &seen, 1_000 + ACTIVE_WINDOW_MS + 1).unwrap();
        assert_eq!(idle.state, "online");
        assert!(!idle.currently_active);
        let gone = timed_out(&idle, &seen, 1_000 + OFFLINE_AFTER_MS + 1).unwrap();
        assert_eq!(gone.state, "offline");
        assert_eq!(gone.status_msg.as_deref(), Some("hi"));
        // Activity known only in memory postpones the end of `currently_active`.
        let busy = Activity {
            last_seen: 70_000,
            last_active: 70_000,
            last_sent: 70_000,
        };
        assert_eq!(timed_out(&row, &busy, 80_000), None);
    }

    #[test]
    fn federation_updates_carry_what_clients_see() {
        let user = ruma::user_id!("@a:x");
        let update = federation_update(user, &online(1_000), 4_000);
        assert_eq!(update.presence, PresenceState::Online);
        assert_eq!(update.last_active_ago, UInt::from(3_000_u32));
        assert!(update.currently_active);
        assert_eq!(update.status_msg.as_deref(), Some("hi"));
        // Never active: "active at the epoch", which the receiver stores as never.
        let never = next_row(None, "@a:x", "offline", Some(None), 5);
        let update = federation_update(user, &never, 10);
        assert_eq!(update.last_active_ago, UInt::from(10_u32));
        assert_eq!(update.status_msg, None);
    }

    #[test]
    fn content_shows_what_the_spec_asks() {
        let row = online(1_000);
        assert_eq!(
            content(&row, 1_000, 4_000),
            json!({"presence": "online", "last_active_ago": 3_000, "currently_active": true, "status_msg": "hi"})
        );
        let never = next_row(None, "@a:x", "offline", Some(None), 5);
        assert_eq!(content(&never, 0, 10), json!({"presence": "offline"}));
    }
}
