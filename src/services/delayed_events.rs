//! Delayed events (MSC4140), as Synapse serves them: a client sends a message or state event
//! with `?org.matrix.msc4140.delay=<ms>` and gets a `delay_id` instead of an event ID; the event
//! is sent that much later unless the client restarts (a heartbeat), cancels or sends it first.
//! Element Call schedules its "left the call" member state this way, so that a client that
//! vanishes still leaves.
//!
//! * Off unless `max_event_delay_duration` is set (Synapse's key and default); a longer delay is
//!   refused with `400 ORG.MATRIX.MSC4140_DELAY_TOO_LARGE`, a 101st pending event of a user
//!   with `429` (Synapse's `msc4140_max_delayed_events_per_user` default, [`MAX_PER_USER`]).
//! * Scheduling counts against `rc_message` (Synapse's request limiter) and the row is stored
//!   before the client hears its `delay_id`; a retried `PUT /send/…/{txnId}` gets the same one.
//! * Managing (`cancel`, `restart`, `send`, listing) counts against `rc_delayed_event_mgmt`.
//!   The `delay_id` is the capability: as in Synapse, anyone holding it may manage the event
//!   (a call's media server restarts it for the client), while listing shows only one's own.
//! * When due, the event goes through [`crate::services::send`], the path of `PUT /send` and
//!   `PUT /state`, as the user and device that scheduled it: authorization, `rc_message` (a
//!   refusal puts the event back until the limit allows it), push and federation as for any
//!   other event. A message is sent with its `delay_id` as transaction ID and a state event
//!   repeating the current one is not sent twice, so an event cut off by a stop and sent again
//!   at start-up is not duplicated.
//! * A pending delayed *state* event is cancelled when someone else sets the same state (room,
//!   type, state key) after it was scheduled, as Synapse does on every change of current state.
//! * One background task ([`spawn`]) sleeps until the earliest due time ([`DelayedEvents`]
//!   publishes it after every change), sends what is due, and looks at state changes only while
//!   a delayed state event waits. At start-up it sends what fell due while the server was down.

use std::{collections::HashSet, net::IpAddr, sync::Arc, time::Duration};

use rand::{RngExt, distr::Alphanumeric};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, RoomId, UInt, UserId,
    api::{
        client::delayed_events::DelayedEventData,
        error::{ErrorKind, RetryAfter},
    },
    events::TimelineEventType,
    serde::Raw,
};
use rusqlite::Transaction;
use serde_json::Value;
use tokio::sync::watch;

use crate::{
    config::Config,
    error::{Error, Result},
    services::{Services, rate_limit::AccountLimits, send, sessions::Identity},
    shutdown::{BackgroundTasks, Shutdown},
    storage::{
        Database,
        delayed_events::{self as store, DelayedRow, NewDelayed},
        now_ms,
    },
};

/// The most delayed events one user may have pending (Synapse's default of
/// `experimental_features.msc4140_max_delayed_events_per_user`).
pub const MAX_PER_USER: i64 = 100;

/// How long the task waits after a database failure before it tries again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// An event to be sent later, as the client asked for it.
pub struct Scheduled {
    pub room_id: OwnedRoomId,
    pub kind: TimelineEventType,
    /// `Some` for a state event.
    pub state_key: Option<String>,
    pub content: Value,
    pub delay: Duration,
}

pub struct DelayedEvents {
    db: Database,
    max_delay: Option<Duration>,
    limits: Arc<AccountLimits>,
    /// The earliest due time of a pending event, as the database last said: the task sleeps
    /// until it and wakes when it changes (an earlier event scheduled, the earliest cancelled).
    next_due: watch::Sender<Option<i64>>,
}

impl DelayedEvents {
    pub fn new(db: Database, config: &Config, limits: Arc<AccountLimits>) -> Self {
        Self {
            db,
            max_delay: config.max_event_delay_duration.map(|d| d.0),
            limits,
            next_due: watch::Sender::new(None),
        }
    }

    /// Whether clients may schedule delayed events (`org.matrix.msc4140` in `/versions`).
    pub fn enabled(&self) -> bool {
        self.max_delay.is_some()
    }

    /// The longest delay allowed (zero when delayed events are off), for `/capabilities`.
    pub fn max_delay(&self) -> Duration {
        self.max_delay.unwrap_or_default()
    }

    /// Runs a write that changes the schedule, then publishes the earliest due time it leaves
    /// (read in the same transaction), so that the task neither sleeps past an earlier event
    /// nor wakes for a cancelled one.
    async fn change_schedule<T, F>(&self, change: F) -> Result<T>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let (value, next) = self
            .db
            .write(move |tx| {
                let value = change(tx)?;
                Ok::<_, Error>((value, store::next_due(tx)?))
            })
            .await?;
        self.publish(next);
        Ok(value)
    }

    fn publish(&self, next_due: Option<i64>) {
        self.next_due.send_if_modified(|current| {
            let changed = *current != next_due;
            *current = next_due;
            changed
        });
    }

    /// A user's pending delayed events, soonest first (`rc_delayed_event_mgmt`).
    pub async fn list(&self, user: &UserId, address: IpAddr) -> Result<Vec<DelayedEventData>> {
        self.limits.delayed_event_mgmt(Some(user), address).await?;
        let user_id = user.to_string();
        let rows = self
            .db
            .read(move |c| store::list_for_user(c, &user_id).map_err(Error::from))
            .await?;
        // A row that cannot be shown (never written so by this server) is left out.
        Ok(rows.iter().filter_map(shown).collect())
    }

    /// One of a user's pending delayed events: `404` for anyone else's, as for an unknown one.
    pub async fn get(
        &self,
        user: &UserId,
        address: IpAddr,
        delay_id: &str,
    ) -> Result<DelayedEventData> {
        self.limits.delayed_event_mgmt(Some(user), address).await?;
        let (user_id, delay_id) = (user.to_string(), delay_id.to_owned());
        let row = self
            .db
            .read(move |c| store::get_for_user(c, &delay_id, &user_id).map_err(Error::from))
            .await?;
        row.as_ref().and_then(shown).ok_or_else(not_found)
    }

    /// Cancels a pending delayed event: it will never be sent.
    pub async fn cancel(
        &self,
        actor: Option<&UserId>,
        address: IpAddr,
        delay_id: &str,
    ) -> Result<()> {
        self.limits.delayed_event_mgmt(actor, address).await?;
        let delay_id = delay_id.to_owned();
        self.change_schedule(move |tx| {
            if !store::cancel(tx, &delay_id)? {
                return Err(not_found());
            }
            Ok(())
        })
        .await
    }

    /// Starts a pending delayed event's delay again from now (a client's heartbeat).
    pub async fn restart(
        &self,
        actor: Option<&UserId>,
        address: IpAddr,
        delay_id: &str,
    ) -> Result<()> {
        self.limits.delayed_event_mgmt(actor, address).await?;
        let delay_id = delay_id.to_owned();
        self.change_schedule(move |tx| {
            if !store::restart(tx, &delay_id, now_ms())? {
                return Err(not_found());
            }
            Ok(())
        })
        .await
    }

    /// Puts back a taken event whose send was refused for now, due again at `send_ts`.
    async fn release(&self, delay_id: &str, send_ts: i64) -> Result<()> {
        let delay_id = delay_id.to_owned();
        self.change_schedule(move |tx| Ok(store::release(tx, &delay_id, send_ts)?))
            .await
    }

    async fn delete(&self, delay_id: &str) -> Result<()> {
        let delay_id = delay_id.to_owned();
        self.db
            .write(move |tx| store::delete(tx, &delay_id).map_err(Error::from))
            .await
    }

    /// After a send of a taken event: a rate-limited one waits until the limit allows it (an
    /// event the user scheduled is not lost to a burst of their own), any other is done.
    async fn finish(&self, row: &DelayedRow, outcome: &Result<OwnedEventId>) -> Result<()> {
        if let Err(Error::Matrix {
            kind: ErrorKind::LimitExceeded(data),
            ..
        }) = outcome
        {
            let wait = match data.retry_after {
                Some(RetryAfter::Delay(wait)) => wait,
                _ => Duration::from_secs(1),
            };
            let send_ts = now_ms().saturating_add(wait.as_millis() as i64);
            return self.release(&row.delay_id, send_ts).await;
        }
        self.delete(&row.delay_id).await
    }
}

/// `404 M_NOT_FOUND`, Synapse's answer for a `delay_id` it has no pending event of.
fn not_found() -> Error {
    Error::not_found("Delayed event not found")
}

/// A stored row as the API shows it.
fn shown(row: &DelayedRow) -> Option<DelayedEventData> {
    let room_id = OwnedRoomId::try_from(row.room_id.as_str()).ok()?;
    let content = serde_json::value::RawValue::from_string(row.content.clone()).ok()?;
    let running_since = UInt::new(row.send_ts.saturating_sub(row.delay_ms).max(0) as u64)?;
    Some(DelayedEventData::new(
        row.delay_id.clone(),
        room_id,
        TimelineEventType::from(row.event_type.as_str()),
        row.state_key.clone(),
        Raw::from_json(content),
        Duration::from_millis(row.delay_ms.max(0) as u64),
        MilliSecondsSinceUnixEpoch(running_since),
    ))
}

/// A new `delay_id`: as Synapse's, `syd_` and 20 random letters and digits.
fn new_delay_id() -> String {
    let random: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    format!("syd_{random}")
}

/// Schedules `event` for `sender`; answers its `delay_id`. With a transaction ID (`PUT
/// /send/{eventType}/{txnId}`), a retry gets the first request's `delay_id`. Checked as
/// Synapse checks at this point: `rc_message`, the feature on, the delay allowed, the room
/// known, the user's count; whether the user may send it is decided when it is sent.
pub async fn schedule(
    services: &Services,
    sender: &Identity,
    txn_id: Option<&str>,
    event: Scheduled,
) -> Result<String> {
    let delayed = &services.delayed_events;
    let (user, device) = (sender.user_id.to_string(), sender.device_id.to_string());
    if let Some(txn) = txn_id {
        let (user, device, txn) = (user.clone(), device.clone(), txn.to_owned());
        let earlier = services
            .db
            .read(move |c| store::txn_delay_id(c, &user, &device, &txn).map_err(Error::from))
            .await?;
        if let Some(delay_id) = earlier {
            return Ok(delay_id);
        }
    }
    services.limits.event(&sender.user_id, false).await?;
    let Some(max_delay) = delayed.max_delay else {
        return Err(Error::forbidden(
            "Sending delayed events has been disallowed",
        ));
    };
    if event.delay > max_delay {
        return Err(delay_too_large(event.delay, max_delay));
    }
    match &event.state_key {
        Some(_) => send::check_state_type(&event.kind)?,
        None => send::check_message_type(&event.kind)?,
    }
    services.rooms.room_version(&event.room_id).await?;

    let delay_id = new_delay_id();
    let content = serde_json::to_string(&event.content).map_err(Error::internal)?;
    let (txn, answer) = (txn_id.map(str::to_owned), delay_id.clone());
    let (room_id, kind) = (event.room_id.to_string(), event.kind.to_string());
    let state_key = event.state_key;
    let delay_ms = i64::try_from(event.delay.as_millis()).unwrap_or(i64::MAX);
    delayed
        .change_schedule(move |tx| {
            if let Some(txn) = &txn
                && let Some(earlier) = store::txn_delay_id(tx, &user, &device, txn)?
            {
                return Ok(earlier);
            }
            let count = store::count_for_user(tx, &user)?;
            if count >= MAX_PER_USER {
                let now = now_ms();
                let free_at = store::due_when_under(tx, &user, count, MAX_PER_USER)?;
                let wait = free_at.map_or(0, |at| at.saturating_sub(now)).max(0);
                let mut error = Error::limit_exceeded(Duration::from_millis(wait as u64));
                if let Error::Matrix { message, .. } = &mut error {
                    *message = "The maximum number of delayed events has been reached.".into();
                }
                return Err(error);
            }
            store::insert(
                tx,
                &NewDelayed {
                    delay_id: &answer,
                    user_id: &user,
                    device_id: &device,
                    room_id: &room_id,
                    event_type: &kind,
                    state_key: state_key.as_deref(),
                    content: &content,
                    delay_ms,
                    now_ms: now_ms(),
                },
            )?;
            if let Some(txn) = &txn {
                store::insert_txn(tx, &user, &device, txn, &answer)?;
            }
            Ok(answer)
        })
        .await
}

/// `400 ORG.MATRIX.MSC4140_DELAY_TOO_LARGE`, Synapse's answer to a delay over the maximum.
fn delay_too_large(delay: Duration, max: Duration) -> Error {
    let kind = serde_json::from_value::<ErrorKind>(serde_json::json!({
        "errcode": "ORG.MATRIX.MSC4140_DELAY_TOO_LARGE"
    }))
    .unwrap_or(ErrorKind::InvalidParam);
    Error::new(
        http::StatusCode::BAD_REQUEST,
        kind,
        format!(
            "The requested delay ({}ms) exceeds the allowed maximum ({}ms)",
            delay.as_millis(),
            max.as_millis()
        ),
    )
}

/// Sends a pending delayed event now instead of when it is due. The send's own refusal (the
/// user left the room, say) is the answer, and the event is then gone, as in Synapse; a
/// rate-limited send keeps the event pending.
pub async fn send_now(
    services: &Services,
    actor: Option<&UserId>,
    address: IpAddr,
    delay_id: &str,
) -> Result<()> {
    let delayed = &services.delayed_events;
    delayed.limits.delayed_event_mgmt(actor, address).await?;
    let id = delay_id.to_owned();
    let row = delayed
        .change_schedule(move |tx| store::take(tx, &id)?.ok_or_else(not_found))
        .await?;
    let outcome = send_row(services, &row).await;
    if let Err(e) = delayed.finish(&row, &outcome).await {
        tracing::warn!(error = %e, delay_id, "cannot finish a delayed event");
    }
    outcome.map(|_| ())
}

/// Sends a taken row as its user would have sent it.
async fn send_row(services: &Services, row: &DelayedRow) -> Result<OwnedEventId> {
    let room_id = RoomId::parse(&row.room_id).map_err(Error::internal)?;
    let user_id = UserId::parse(&row.user_id).map_err(Error::internal)?;
    let content: Value = serde_json::from_str(&row.content).map_err(Error::internal)?;
    let kind = TimelineEventType::from(row.event_type.as_str());
    match &row.state_key {
        Some(state_key) => {
            send::state(
                services,
                &room_id,
                &user_id,
                kind,
                state_key.clone(),
                content,
            )
            .await
        }
        None => {
            let sender = Identity {
                user_id,
                device_id: row.device_id.as_str().into(),
                is_guest: false,
                appservice: None,
            };
            // The `delay_id` as transaction ID: sent again after a stop, it is not duplicated.
            send::message(services, &room_id, &sender, &row.delay_id, kind, content).await
        }
    }
}

/// Starts the task that sends delayed events when they are due.
pub fn spawn(services: &Arc<Services>, tasks: &BackgroundTasks) {
    let services = services.clone();
    tasks.spawn(|shutdown| async move { run(services, shutdown).await });
}

async fn run(services: Arc<Services>, shutdown: Shutdown) {
    let delayed = &services.delayed_events;
    // Events a stop cut off while they were being sent are due again, now.
    loop {
        let started = delayed
            .change_schedule(|tx| Ok(store::release_all_taken(tx, now_ms())?))
            .await;
        match started {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the delayed events");
                tokio::select! {
                    () = shutdown.stopping() => return,
                    () = tokio::time::sleep(RETRY_AFTER_FAILURE) => {}
                }
            }
        }
    }
    let mut next_due = delayed.next_due.subscribe();
    let mut stream = services.rooms.subscribe();
    loop {
        let pass = async {
            let watching_state = cancel_superseded(&services).await?;
            let due = *next_due.borrow_and_update();
            if due.is_some_and(|at| at <= now_ms()) {
                send_due(&services).await?;
            }
            Ok::<_, Error>(watching_state)
        };
        let watching_state = match pass.await {
            Ok(watching) => watching,
            Err(e) => {
                tracing::warn!(error = %e, "cannot send delayed events");
                tokio::select! {
                    () = shutdown.stopping() => return,
                    () = tokio::time::sleep(RETRY_AFTER_FAILURE) => continue,
                }
            }
        };
        let due = *next_due.borrow_and_update();
        if due.is_some_and(|at| at <= now_ms()) {
            continue;
        }
        let until_due = async {
            match due {
                Some(at) => {
                    let wait = at.saturating_sub(now_ms()).max(0) as u64;
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.stopping() => return,
            () = until_due => {}
            changed = next_due.changed() => if changed.is_err() { return },
            changed = stream.changed(), if watching_state => if changed.is_err() { return },
        }
    }
}

/// Cancels the delayed state events someone else's state has superseded; answers whether any
/// delayed state event still waits (then new events must be looked at).
async fn cancel_superseded(services: &Services) -> Result<bool> {
    let (superseded, waiting) = services
        .db
        .read(|c| Ok::<_, Error>((store::superseded(c)?, store::any_pending_state(c)?)))
        .await?;
    if !superseded.is_empty() {
        let cancelled = services
            .delayed_events
            .change_schedule(|tx| Ok(store::cancel_superseded(tx)?))
            .await?;
        tracing::debug!(cancelled, "delayed state events superseded");
    }
    Ok(waiting)
}

/// Sends every event due now, soonest first. Of several delayed events for the same state
/// falling due together only the first is sent, as in Synapse.
async fn send_due(services: &Services) -> Result<()> {
    let rows = services
        .delayed_events
        .change_schedule(|tx| {
            store::cancel_superseded(tx)?;
            Ok(store::take_due(tx, now_ms())?)
        })
        .await?;
    let mut sent_state = HashSet::new();
    for row in rows {
        let state = row
            .state_key
            .as_ref()
            .map(|key| (row.room_id.clone(), row.event_type.clone(), key.clone()));
        if state.as_ref().is_some_and(|s| sent_state.contains(s)) {
            if let Err(e) = services.delayed_events.delete(&row.delay_id).await {
                tracing::warn!(error = %e, delay_id = row.delay_id, "cannot drop a delayed event");
            }
            continue;
        }
        let outcome = send_row(services, &row).await;
        match &outcome {
            Ok(event_id) => {
                tracing::debug!(delay_id = row.delay_id, %event_id, "delayed event sent");
                sent_state.extend(state);
            }
            Err(e) => tracing::warn!(
                delay_id = row.delay_id,
                user = row.user_id,
                room = row.room_id,
                error = %e,
                "cannot send a delayed event"
            ),
        }
        // A row left taken is sent again at the next start.
        if let Err(e) = services.delayed_events.finish(&row, &outcome).await {
            tracing::warn!(error = %e, delay_id = row.delay_id, "cannot finish a delayed event");
        }
    }
    Ok(())
}
