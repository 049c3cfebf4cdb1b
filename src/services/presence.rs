//! Presence: `online`, `unavailable` or `offline`, with a status message and the time of the
//! user's last activity, shown to the users who share a room with them.
//!
//! The stored state (table `presence`) sits in the shared stream, so /sync reports the changes
//! since its token with no token format of its own. Activity is kept in memory: every /sync with
//! `set_presence` online is activity, but only changes of state, status message or
//! `currently_active` are written (and broadcast), as in Synapse. A background task
//! ([`spawn_timeouts`]) clears `currently_active` a minute after the last activity and marks
//! users offline once they stop syncing.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{
    OwnedUserId, UserId,
    api::client::filter::{Filter, RoomEventFilter},
    presence::PresenceState,
    serde::Raw,
};
use serde_json::{Value, json};

use super::{Services, filter::room_event_matches, rooms::Rooms};
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

#[derive(Debug, Clone, Copy)]
struct Activity {
    /// The last /sync or presence change that keeps the user online.
    last_seen: i64,
    /// The last activity (a sync or change with state `online`); 0 when none since start-up.
    last_active: i64,
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
    enabled: bool,
    activity: Arc<Mutex<HashMap<OwnedUserId, Activity>>>,
}

impl Presence {
    pub fn new(db: Database, enabled: bool) -> Self {
        Self {
            db,
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
            let entry = activity.entry(user.to_owned()).or_insert(Activity {
                last_seen: now,
                last_active: 0,
            });
            entry.last_seen = now;
            if state == "online" {
                entry.last_active = now;
            }
        }
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
                    Ok::<_, Error>(Some(store::put(tx, &new)?))
                } else {
                    Ok(None)
                }
            })
            .await?;
        if let Some(position) = position {
            rooms.notify(position);
        }
        Ok(())
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

    /// The newest known activity of a stored presence (memory knows of activity not written).
    fn last_active(&self, row: &PresenceRow) -> i64 {
        let memory = OwnedUserId::try_from(row.user_id.as_str())
            .ok()
            .and_then(|user| lock(&self.activity).get(&user).map(|a| a.last_active));
        row.last_active_ts.max(memory.unwrap_or(0))
    }

    /// Applies the timeouts: `currently_active` ends a minute after the last activity, and users
    /// who stopped syncing go offline.
    pub async fn apply_timeouts(&self, rooms: &Rooms) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let now = now_ms();
        let rows = self
            .db
            .read(|c| store::not_offline(c).map_err(Error::from))
            .await?;
        let due: Vec<String> = {
            let mut activity = lock(&self.activity);
            rows.iter()
                .filter_map(|row| {
                    let user = OwnedUserId::try_from(row.user_id.as_str()).ok()?;
                    // After a restart nobody has synced yet: they get the full timeout.
                    let seen = activity.entry(user).or_insert(Activity {
                        last_seen: now,
                        last_active: 0,
                    });
                    timed_out(row, seen, now).map(|_| row.user_id.clone())
                })
                .collect()
        };
        for user in due {
            let activity = self.activity.clone();
            // Checked again in the transaction: a sync may have come in meanwhile.
            let position = self
                .db
                .write(move |tx| {
                    let Some(row) = store::get(tx, &user)? else {
                        return Ok::<_, Error>(None);
                    };
                    let seen = OwnedUserId::try_from(user.as_str())
                        .ok()
                        .and_then(|u| lock(&activity).get(&u).copied());
                    match seen.and_then(|seen| timed_out(&row, &seen, now_ms())) {
                        Some(new) => Ok(Some(store::put(tx, &new)?)),
                        None => Ok(None),
                    }
                })
                .await?;
            if let Some(position) = position {
                rooms.notify(position);
            }
        }
        Ok(())
    }
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
        };
        assert_eq!(timed_out(&row, &busy, 80_000), None);
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
