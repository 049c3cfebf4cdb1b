//! Push delivery: a background task that follows the stream and POSTs the Push Gateway API's
//! `/_matrix/push/v1/notify` for each event that the user's push rules say notifies, off the
//! send path (a slow or unreachable gateway never slows anyone's messages).
//!
//! Like the federation sender, one supervisor wakes after every commit, reads the pushers and
//! starts a worker for each one that is behind the stream and not backing off. A worker goes
//! through the events after its pusher's position (`storage::pushers::candidates_after`: the
//! user's rooms since they joined, their invites, never their own events), runs each through the
//! same evaluation as /sync's counts (`push::notifying_actions`), and sends those that notify,
//! one at a time and in order. After each delivered notification the position is stored, so a
//! restart (even `kill -9`) starts after the last delivered event: at least once, nothing lost.
//! Positions passed over with nothing to push are kept in memory and stored now and then.
//!
//! Synapse's rules: the notification carries the badge (`counts.unread`: rooms with unread
//! notifications plus invites), `prio` high for encrypted events and those with a `sound` or
//! `highlight` tweak, the tweaks of the actions, and the pusher's `data` less its `url`; the
//! `event_id_only` format sends only the IDs, the counts and the device. A failed delivery waits
//! 1 s, doubling up to an hour, kept in the pusher's row (`retry_at`) so that it survives a
//! restart; after a day of failures that event is given up. A gateway answering the pushkey in
//! `rejected` removes the pusher. Requests go through the federation client's
//! `post_json_to_url`, under the outbound IP policy (`ip_range_blacklist` /
//! `ip_range_whitelist`, checked after DNS), its timeout and a cap on the answer's size, and at
//! most [`PER_GATEWAY`] at a time to one gateway.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use ruma::{
    OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, SecondsSinceUnixEpoch, UInt,
    api::{
        IncomingResponseExt,
        client::push::{Pusher, PusherKind},
        push_gateway::send_event_notification::v1::{
            Device, Notification, NotificationCounts, NotificationPriority, PusherData,
            Response as NotifyResponse,
        },
    },
    events::TimelineEventType,
    push::{Action, PushFormat, Tweak},
};
use serde_json::value::RawValue;
use tokio::{
    sync::{Semaphore, watch},
    task::JoinSet,
};

use crate::{
    error::Result,
    services::{Services, push, rooms::stored},
    shutdown::{BackgroundTasks, Shutdown},
    storage::{
        now_ms, push as push_store,
        pushers::{self as store, Candidate, PusherRow},
    },
};

/// The most requests in flight to one gateway (host and port).
pub const PER_GATEWAY: usize = 4;
/// The most pushers delivering at once.
const MAX_WORKERS: usize = 64;
/// The most a gateway's answer may be (it is `{"rejected": [...]}`).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Events read and evaluated per database read.
const BATCH: usize = 50;
/// Synapse's backoff of a failing pusher (`HttpPusher`): 1 s, doubling, at most an hour; an
/// event is given up after a day of failures.
const INITIAL_BACKOFF_MS: i64 = 1_000;
const MAX_BACKOFF_MS: i64 = 3_600_000;
const GIVE_UP_AFTER_MS: i64 = 24 * 3_600_000;
/// How often positions passed over without a push are stored.
const FLUSH_EVERY: Duration = Duration::from_secs(30);

/// A pusher's key: user, app ID, pushkey.
type Key = (String, String, String);

fn key_of(pusher: &PusherRow) -> Key {
    (
        pusher.user_id.clone(),
        pusher.app_id.clone(),
        pusher.pushkey.clone(),
    )
}

/// Starts the delivery task; it follows `commits` (the published stream position).
pub fn spawn(services: &Arc<Services>, tasks: &BackgroundTasks) {
    let services = Arc::downgrade(services);
    let commits = match services.upgrade() {
        Some(services) => services.rooms.subscribe(),
        None => return,
    };
    tasks.spawn(move |shutdown| run(services, shutdown, commits));
}

/// Per-gateway limits on requests in flight.
#[derive(Default)]
struct Gateways(Mutex<HashMap<String, Arc<Semaphore>>>);

impl Gateways {
    fn of(&self, url: &url::Url) -> Arc<Semaphore> {
        let name = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        );
        let mut gateways = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Forget idle gateways now and then, so the map stays as small as the pushers.
        if gateways.len() > 1_000 {
            gateways.retain(|_, semaphore| semaphore.available_permits() < PER_GATEWAY);
        }
        gateways
            .entry(name)
            .or_insert_with(|| Arc::new(Semaphore::new(PER_GATEWAY)))
            .clone()
    }
}

async fn run(services: Weak<Services>, shutdown: Shutdown, mut commits: watch::Receiver<i64>) {
    let gateways = Arc::new(Gateways::default());
    let mut workers: JoinSet<(Key, i64)> = JoinSet::new();
    let mut active: HashMap<tokio::task::Id, Key> = HashMap::new();
    // How far each pusher has been looked at beyond its stored position.
    let mut scanned: HashMap<Key, i64> = HashMap::new();
    let mut last_flush = tokio::time::Instant::now();
    let mut commits_open = true;
    loop {
        let Some(services) = services.upgrade() else {
            break;
        };
        let upto = *commits.borrow_and_update();
        let now = now_ms();
        let mut next_retry: Option<i64> = None;
        match services.db.read(store::all).await {
            Ok(pushers) => {
                scanned.retain(|key, _| pushers.iter().any(|p| key_of(p) == *key));
                for pusher in pushers {
                    let key = key_of(&pusher);
                    if active.values().any(|k| *k == key) {
                        continue;
                    }
                    if let Some(at) = pusher.retry_at.filter(|at| *at > now) {
                        next_retry = Some(next_retry.map_or(at, |t| t.min(at)));
                        continue;
                    }
                    let from = scanned
                        .get(&key)
                        .copied()
                        .unwrap_or(i64::MIN)
                        .max(pusher.last_stream_ordering);
                    if from >= upto || active.len() >= MAX_WORKERS {
                        continue; // looked at again after the next commit or worker's end
                    }
                    let (services, gateways, shutdown) =
                        (services.clone(), gateways.clone(), shutdown.clone());
                    let handle = workers.spawn(async move {
                        let key = key_of(&pusher);
                        let reached = work(&services, pusher, from, upto, &gateways, &shutdown)
                            .await
                            .unwrap_or_else(|e| {
                                tracing::error!("push delivery failed: {e}");
                                from
                            });
                        (key, reached)
                    });
                    active.insert(handle.id(), key);
                }
            }
            Err(e) => {
                tracing::error!("push delivery cannot read the pushers: {e}");
                next_retry = Some(now + 5_000);
            }
        }
        if last_flush.elapsed() >= FLUSH_EVERY && !scanned.is_empty() {
            flush(&services, &mut scanned).await;
            last_flush = tokio::time::Instant::now();
        }
        drop(services);
        let sleep = match next_retry {
            Some(at) => Duration::from_millis(u64::try_from(at - now).unwrap_or(0).max(10)),
            None => FLUSH_EVERY,
        };
        tokio::select! {
            () = shutdown.stopping() => break,
            changed = commits.changed(), if commits_open => {
                commits_open = changed.is_ok();
            }
            Some(done) = workers.join_next_with_id() => {
                match done {
                    Ok((id, (key, reached))) => {
                        active.remove(&id);
                        let known = scanned.entry(key).or_insert(reached);
                        *known = (*known).max(reached);
                    }
                    Err(e) => {
                        tracing::error!("a push delivery worker failed: {e}");
                        active.remove(&e.id());
                    }
                }
            }
            () = tokio::time::sleep(sleep) => {}
        }
    }
    // Workers notice the shutdown themselves; what they were sending is sent after a restart.
    while let Some(done) = workers.join_next().await {
        if let Ok((key, reached)) = done {
            let known = scanned.entry(key).or_insert(reached);
            *known = (*known).max(reached);
        }
    }
    if let Some(services) = services.upgrade() {
        flush(&services, &mut scanned).await;
    }
}

/// Stores the positions passed over without a push (a restart then need not look again).
async fn flush(services: &Services, scanned: &mut HashMap<Key, i64>) {
    let positions: Vec<(Key, i64)> = scanned.drain().collect();
    let result = services
        .db
        .write(move |tx| {
            for ((user, app_id, pushkey), position) in &positions {
                store::skip_to(tx, user, app_id, pushkey, *position)?;
            }
            Ok::<_, rusqlite::Error>(())
        })
        .await;
    if let Err(e) = result {
        tracing::warn!("cannot store push positions (looked at again after a restart): {e}");
    }
}

/// What a pusher sends, read from its stored form.
struct Target {
    user: OwnedUserId,
    url: url::Url,
    event_id_only: bool,
    device: Device,
}

fn target_of(pusher: &PusherRow) -> Option<Target> {
    let user = OwnedUserId::try_from(pusher.user_id.as_str()).ok()?;
    let url = url::Url::parse(&pusher.url).ok()?;
    let stored: Pusher = serde_json::from_str(&pusher.pusher).ok()?;
    let PusherKind::Http(data) = stored.kind else {
        return None;
    };
    let event_id_only = data.format == Some(PushFormat::EventIdOnly);
    let mut device = Device::new(pusher.app_id.clone(), pusher.pushkey.clone());
    device.pushkey_ts = Some(SecondsSinceUnixEpoch(
        UInt::try_from(pusher.pushkey_ts.max(0) / 1000).unwrap_or_default(),
    ));
    // `url` is left out (ruma's conversion), as Synapse's `data_minus_url`.
    device.data = PusherData::from(data);
    Some(Target {
        user,
        url,
        event_id_only,
        device,
    })
}

/// Delivers what `pusher` has to deliver in `(from, upto]`, until done, a failure (stored as
/// its backoff) or the server stops. Returns how far it got.
async fn work(
    services: &Arc<Services>,
    pusher: PusherRow,
    from: i64,
    upto: i64,
    gateways: &Gateways,
    shutdown: &Shutdown,
) -> Result<i64> {
    let Some(target) = target_of(&pusher) else {
        tracing::warn!(user = %pusher.user_id, app_id = %pusher.app_id, "unreadable pusher");
        return Ok(upto);
    };
    let mut position = from;
    loop {
        let (user, evaluated) = (target.user.clone(), services.evaluated_actions.clone());
        let batch = services
            .db
            .read(move |conn| prepare(conn, &user, position, upto, &evaluated))
            .await?;
        if batch.is_empty() {
            return Ok(upto);
        }
        for (candidate, prepared) in batch {
            let Some(prepared) = prepared else {
                position = candidate.stream_ordering;
                continue;
            };
            let notification = notification_of(&target, prepared);
            let permit = gateways.of(&target.url);
            let outcome = tokio::select! {
                () = shutdown.stopping() => return Ok(position),
                outcome = async {
                    let _permit = permit.acquire().await;
                    send(services, &target.url, &notification).await
                } => outcome,
            };
            let (user, app_id, pushkey) = key_of(&pusher);
            match outcome {
                Ok(rejected) if rejected.contains(&pusher.pushkey) => {
                    tracing::info!(%user, %app_id, "pushkey rejected by its gateway; removed");
                    services
                        .db
                        .write(move |tx| store::delete(tx, &user, &app_id, &pushkey))
                        .await?;
                    return Ok(upto);
                }
                Ok(_) => {
                    let at = candidate.stream_ordering;
                    let exists = services
                        .db
                        .write(move |tx| store::advance(tx, &user, &app_id, &pushkey, at))
                        .await?;
                    if !exists {
                        return Ok(upto);
                    }
                    position = at;
                }
                Err(e) => {
                    let now = now_ms();
                    let failing_since = pusher.failing_since.unwrap_or(now);
                    if now - failing_since > GIVE_UP_AFTER_MS {
                        tracing::warn!(%user, %app_id, event = %candidate.event_id,
                            "push failing for a day; this notification is given up: {e}");
                        let at = candidate.stream_ordering;
                        services
                            .db
                            .write(move |tx| store::advance(tx, &user, &app_id, &pushkey, at))
                            .await?;
                        return Ok(at);
                    }
                    let backoff = if pusher.backoff_ms <= 0 {
                        INITIAL_BACKOFF_MS
                    } else {
                        (pusher.backoff_ms * 2).min(MAX_BACKOFF_MS)
                    };
                    tracing::info!(%user, %app_id, "push failed, next try in {backoff} ms: {e}");
                    services
                        .db
                        .write(move |tx| {
                            store::set_failing(
                                tx,
                                &user,
                                &app_id,
                                &pushkey,
                                failing_since,
                                now + backoff,
                                backoff,
                            )
                        })
                        .await?;
                    return Ok(position);
                }
            }
        }
    }
}

/// What one notifying event needs for its notification.
struct Prepared {
    event_id: OwnedEventId,
    room_id: OwnedRoomId,
    actions: Vec<Action>,
    badge: u64,
    event_type: Option<String>,
    sender: Option<String>,
    state_key: Option<String>,
    content: Option<Box<RawValue>>,
    sender_display_name: Option<String>,
    room_name: Option<String>,
    room_alias: Option<String>,
}

/// The next candidates after `after` with, for those that notify, what their push needs.
fn prepare(
    conn: &rusqlite::Connection,
    user: &OwnedUserId,
    after: i64,
    upto: i64,
    evaluated: &push::EvaluatedActions,
) -> Result<Vec<(Candidate, Option<Prepared>)>> {
    let candidates = store::candidates_after(conn, user.as_str(), after, upto, BATCH)?;
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let rules = push::load_for_counting(conn, user)?;
    let mut contexts = HashMap::new();
    let mut badge = None;
    let mut prepared = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let (Ok(room_id), Ok(event_id)) = (
            OwnedRoomId::try_from(candidate.room_id.as_str()),
            OwnedEventId::try_from(candidate.event_id.as_str()),
        ) else {
            prepared.push((candidate, None));
            continue;
        };
        let Some(actions) = push::notifying_actions(
            conn,
            &room_id,
            user,
            candidate.stream_ordering,
            &rules,
            evaluated,
            &mut contexts,
        )?
        else {
            prepared.push((candidate, None));
            continue;
        };
        let Some(json) = push_store::event_json(conn, candidate.stream_ordering)? else {
            prepared.push((candidate, None));
            continue;
        };
        let envelope = stored::Envelope::parse(&json);
        let content = envelope
            .as_ref()
            .and_then(stored::Envelope::content)
            .and_then(|content| serde_json::value::to_raw_value(&content).ok());
        let sender = envelope.as_ref().and_then(|e| e.sender.clone());
        let sender_display_name = match &sender {
            Some(sender) => state_str(conn, &room_id, "m.room.member", sender, "displayname")?,
            None => None,
        };
        let badge = match badge {
            Some(badge) => badge,
            None => *badge.insert(push::badge(conn, user, upto, &rules, evaluated)?),
        };
        prepared.push((
            candidate,
            Some(Prepared {
                event_id,
                actions,
                badge,
                event_type: envelope.as_ref().and_then(|e| e.kind.clone()),
                state_key: envelope.as_ref().and_then(|e| e.state_key.clone()),
                sender,
                content,
                sender_display_name,
                room_name: state_str(conn, &room_id, "m.room.name", "", "name")?,
                room_alias: state_str(conn, &room_id, "m.room.canonical_alias", "", "alias")?,
                room_id,
            }),
        ));
    }
    Ok(prepared)
}

/// A non-empty string field of a current state event's content.
fn state_str(
    conn: &rusqlite::Connection,
    room_id: &OwnedRoomId,
    event_type: &str,
    state_key: &str,
    field: &str,
) -> Result<Option<String>> {
    Ok(
        push_store::current_state_json(conn, room_id.as_str(), event_type, state_key)?
            .and_then(|json| stored::Envelope::parse(&json)?.content_str(field))
            .filter(|value| !value.is_empty()),
    )
}

/// The Push Gateway API notification of one event for one pusher (Synapse's
/// `dispatch_push_event`).
fn notification_of(target: &Target, prepared: Prepared) -> Notification {
    let tweaks: Vec<Tweak> = prepared
        .actions
        .iter()
        .filter_map(|action| match action {
            Action::SetTweak(tweak) => Some(tweak.clone()),
            _ => None,
        })
        .collect();
    let high = prepared.event_type.as_deref() == Some("m.room.encrypted")
        || prepared.actions.iter().any(Action::is_highlight)
        || tweaks.iter().any(|tweak| matches!(tweak, Tweak::Sound(_)));
    let mut device = target.device.clone();
    let mut notification = Notification::new(Vec::new());
    notification.event_id = Some(prepared.event_id);
    notification.room_id = Some(prepared.room_id);
    notification.prio = if high {
        NotificationPriority::High
    } else {
        NotificationPriority::Low
    };
    notification.counts = NotificationCounts::new(
        UInt::try_from(prepared.badge).unwrap_or(UInt::MAX),
        UInt::MIN,
    );
    if !target.event_id_only {
        device.tweaks = tweaks;
        notification.user_is_target = prepared.event_type.as_deref() == Some("m.room.member")
            && prepared.state_key.as_deref() == Some(target.user.as_str());
        notification.event_type = prepared.event_type.map(TimelineEventType::from);
        notification.sender = prepared
            .sender
            .and_then(|sender| OwnedUserId::try_from(sender).ok());
        notification.sender_display_name = prepared.sender_display_name;
        notification.room_name = prepared.room_name;
        notification.room_alias = prepared
            .room_alias
            .and_then(|alias| OwnedRoomAliasId::try_from(alias).ok());
        notification.content = prepared.content;
    }
    notification.devices = vec![device];
    notification
}

/// POSTs one notification; the pushkeys the gateway rejected, or why it failed.
async fn send(
    services: &Services,
    url: &url::Url,
    notification: &Notification,
) -> Result<Vec<String>, String> {
    let notification_prio = notification.prio.clone();
    let unread = notification.counts.unread;
    let mut notification = serde_json::to_value(notification).map_err(|e| e.to_string())?;
    // ruma leaves out the defaults (`prio` high, an unread count of 0); Synapse always sends
    // both, and gateways written against it may expect them.
    notification["prio"] = serde_json::json!(notification_prio.as_str());
    notification["counts"]["unread"] = serde_json::json!(unread);
    let body = serde_json::to_vec(&serde_json::json!({ "notification": notification }))
        .map_err(|e| e.to_string())?;
    let answer = services
        .federation
        .post_json_to_url(url, body, MAX_ANSWER_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    if !answer.status.is_success() {
        return Err(format!("the gateway answered {}", answer.status));
    }
    let mut response = http::Response::new(answer.body.as_slice());
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    NotifyResponse::try_from_http_response(response)
        .map(|answer| answer.rejected)
        .map_err(|e| format!("the gateway's answer is not the API's: {e}"))
}
