//! Pushes events to application services: one task per service with a `url`.
//!
//! The task follows the stream of stored events with a cursor of its own (`appservice_queue`,
//! `storage/appservice.rs`) rather than having each event queued in the transaction that stores
//! it: sending a message then costs nothing more, whichever code path stored the event (clients,
//! federation, room creation), and the cursor is one row per service instead of one per event.
//! The price is a read of the new events per commit, filtered by interest here.
//!
//! A transaction (its events and ID) is stored before it is sent and is sent again, same ID, until
//! the service answers `200`; only then does the cursor move past it. Failures back off
//! exponentially (persisted, so a restart does not hammer a service that is down). Requests are
//! bounded by [`REQUEST_TIMEOUT`]; the answer's body is not read.

use std::{collections::HashMap, sync::Arc, time::Duration};

use ruma::{
    OwnedTransactionId, RoomVersionId,
    api::{OutgoingRequestExt, appservice::event::push_events::v1 as push_events},
    serde::Raw,
};
use serde_json::value::RawValue;

use super::AppService;
use crate::{
    error::{Error, Result},
    services::{Services, rooms::read::render, rooms::stored::Envelope},
    shutdown::{BackgroundTasks, Shutdown},
    storage::{Database, appservice as store, now_ms, rooms::current_stream_position},
};

/// Events examined per read.
const EVENTS_PER_READ: i64 = 100;
/// How long one transaction may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The first wait after a failure; it doubles with each failure in a row, up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Starts the sender of every service that has a `url`.
pub fn spawn(services: &Arc<Services>, tasks: &BackgroundTasks) {
    for service in services.appservices.all() {
        if service.registration.url.is_none() {
            continue;
        }
        let (services, service) = (services.clone(), service.clone());
        tasks.spawn(move |shutdown| run(services, service, shutdown));
    }
}

/// What to do after one step.
enum Next {
    /// Nothing new: wait for the next commit.
    Idle,
    /// Go on at once.
    More,
    /// Wait this long (a backoff) before trying again.
    Wait(Duration),
}

async fn run(services: Arc<Services>, service: Arc<AppService>, shutdown: Shutdown) {
    let mut stream = services.rooms.subscribe();
    let client = match reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(appservice = %service.registration.id, error = %e, "no HTTP client");
            return;
        }
    };
    loop {
        // A transaction in flight is dropped at shutdown: it is stored and is sent again.
        let result = tokio::select! {
            result = step(services.database(), &service, &client) => result,
            () = shutdown.stopping() => return,
        };
        let next = match result {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(appservice = %service.registration.id, error = %e, "sender");
                Next::Wait(MIN_BACKOFF)
            }
        };
        match next {
            Next::More => continue,
            Next::Idle => {
                tokio::select! {
                    _ = stream.changed() => {}
                    () = shutdown.stopping() => return,
                }
            }
            Next::Wait(wait) => {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.stopping() => return,
                }
            }
        }
    }
}

/// Sends the pending transaction, or makes the next one from the new events.
async fn step(db: &Database, service: &Arc<AppService>, client: &reqwest::Client) -> Result<Next> {
    let id = service.registration.id.clone();
    let row = {
        let id = id.clone();
        db.write(move |tx| {
            let position = current_stream_position(tx)?;
            Ok::<_, Error>(store::get_or_create(tx, &id, position)?)
        })
        .await?
    };
    let now = now_ms();
    if let Some(retry_at) = row.retry_at.filter(|at| *at > now) {
        return Ok(Next::Wait(Duration::from_millis((retry_at - now) as u64)));
    }
    if let Some((txn_id, events, _)) = row.pending {
        return match send(service, client, txn_id, &events).await {
            Ok(()) => {
                db.write(move |tx| store::delivered(tx, &id, txn_id, now_ms()))
                    .await?;
                Ok(Next::More)
            }
            Err(why) => {
                let backoff = Duration::from_millis(row.backoff_ms as u64)
                    .saturating_mul(2)
                    .clamp(MIN_BACKOFF, MAX_BACKOFF);
                tracing::warn!(
                    appservice = %id, txn = txn_id, retry_in = ?backoff, "transaction failed: {why}"
                );
                let now = now_ms();
                let retry_at = now + backoff.as_millis() as i64;
                let backoff_ms = backoff.as_millis() as i64;
                db.write(move |tx| store::failed(tx, &id, now, retry_at, backoff_ms))
                    .await?;
                Ok(Next::Wait(backoff))
            }
        };
    }
    let service_for_read = service.clone();
    let position = row.position;
    let (events, last) = db
        .read(move |c| interesting_events(c, &service_for_read, position))
        .await?;
    let Some(last) = last else {
        return Ok(Next::Idle);
    };
    db.write(move |tx| {
        if events.is_empty() {
            store::skip_to(tx, &id, last)
        } else {
            let json = serde_json::to_string(&events)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            store::set_pending(tx, &id, &json, last).map(|_| ())
        }
    })
    .await?;
    Ok(Next::More)
}

/// The events after `position` the service is interested in, rendered for clients, and the
/// position of the last event examined (`None`: nothing new).
fn interesting_events(
    c: &rusqlite::Connection,
    service: &AppService,
    position: i64,
) -> Result<(Vec<serde_json::Value>, Option<i64>)> {
    let rows = store::events_after(c, position, EVENTS_PER_READ)?;
    let last = rows.last().map(|row| row.stream_ordering);
    // Per room: whether the service is interested in it as a whole (room ID, an alias, a
    // joined member in its namespace), and its version.
    let mut rooms: HashMap<String, (bool, Option<RoomVersionId>)> = HashMap::new();
    let mut events = Vec::new();
    for row in rows {
        if !rooms.contains_key(&row.room_id) {
            let interested = service.is_interested_in_room(&row.room_id)
                || crate::storage::rooms::members_with(c, &row.room_id, "join")?
                    .iter()
                    .any(|user| service.is_interested_in_user(user))
                || store::room_aliases(c, &row.room_id)?
                    .iter()
                    .any(|alias| service.is_interested_in_alias(alias));
            let version = crate::storage::rooms::room_version(c, &row.room_id)?
                .and_then(|v| RoomVersionId::try_from(v).ok());
            rooms.insert(row.room_id.clone(), (interested, version));
        }
        let (room_interest, version) = &rooms[&row.room_id];
        // The invite (or join) of a ghost comes before the ghost is a member.
        let about_a_user = Envelope::parse(&row.json)
            .and_then(|e| {
                e.state_key
                    .filter(|_| e.kind.as_deref() == Some("m.room.member"))
            })
            .is_some_and(|user| service.is_interested_in_user(&user));
        if !(*room_interest || about_a_user || service.is_interested_in_user(&row.sender)) {
            continue;
        }
        let Some(version) = version else { continue };
        if let Some(event) = render(c, &row, version, None, true)? {
            events.push(event);
        }
    }
    Ok((events, last))
}

/// One `PUT {url}/_matrix/app/v1/transactions/{txnId}` with the `hs_token`; the reason when it
/// was not answered `200`.
async fn send(
    service: &AppService,
    client: &reqwest::Client,
    txn_id: i64,
    events: &str,
) -> Result<(), String> {
    let url = service.registration.url.as_deref().ok_or("no url")?;
    let events: Vec<Raw<ruma::events::AnyTimelineEvent>> =
        serde_json::from_str::<Vec<Box<RawValue>>>(events)
            .map_err(|e| format!("stored transaction unreadable: {e}"))?
            .into_iter()
            .map(Raw::from_json)
            .collect();
    let txn: OwnedTransactionId = txn_id.to_string().into();
    let request = push_events::Request::new(txn, events)
        .try_into_http_request::<Vec<u8>>(
            url.trim_end_matches('/'),
            &service.registration.hs_token,
            (),
        )
        .map_err(|e| e.to_string())?;
    let request = reqwest::Request::try_from(request).map_err(|e| e.to_string())?;
    let response = client.execute(request).await.map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the service answered {}", response.status()))
    }
}
