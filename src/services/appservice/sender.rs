//! Pushes events to application services: one task per service with a `url`.
//!
//! The task follows the stream of stored events (and receipts) with a cursor of its own
//! (`appservice_queue`, `storage/appservice.rs`) rather than having each event queued in the
//! transaction that stores it: sending a message then costs nothing more, whichever code path
//! stored the event (clients, federation, room creation), and the cursor is one row per service
//! instead of one per event. The price is a read of the new events per commit, filtered by
//! interest here; positions of no interest are remembered in memory, not written.
//!
//! A transaction (its events and ID) is stored before it is sent and is sent again, same ID, until
//! the service answers `200`; only then does the cursor move past it. Failures back off
//! exponentially (persisted, so a restart does not hammer a service that is down). Requests go
//! through the one outbound client (`http` or `https`, [`super::exchange`]), each bounded by
//! [`REQUEST_TIMEOUT`]; only the answer's status matters.
//!
//! Services that ask for ephemeral events (`receive_ephemeral`, `push_ephemeral` or MSC2409's
//! `de.sorunome.msc2409.push_ephemeral`) get, in `ephemeral`, the public receipts and the typing
//! changes of the rooms they are interested in. Typing lives in memory: a change made while a
//! transaction is pending waits for it, and one made before a restart is not pushed.

use std::{collections::HashMap, sync::Arc, time::Duration};

use ruma::{
    OwnedTransactionId, RoomVersionId, api::appservice::event::push_events::v1 as push_events,
    serde::Raw,
};
use serde_json::value::RawValue;

use super::AppService;
use crate::{
    error::{Error, Result},
    services::{
        Services, federation::client::FederationClient, rooms::read::render,
        rooms::stored::Envelope,
    },
    shutdown::{BackgroundTasks, Shutdown},
    storage::{appservice as store, now_ms, rooms::current_stream_position},
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
    let client = services.federation.clone();
    let mut examined = Examined {
        position: 0,
        typing: services.typing.serial(),
    };
    loop {
        // A transaction in flight is dropped at shutdown: it is stored and is sent again.
        let result = tokio::select! {
            result = step(&services, &service, &client, &mut examined) => result,
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
                    changed = stream.changed() => {
                        // The stream's sender lives as long as the server.
                        if changed.is_err() {
                            return;
                        }
                    }
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

/// What the task has looked at without storing it: positions whose events were of no interest
/// (not written, to spare a write per commit; after a restart they are examined again) and the
/// typing serial last pushed.
struct Examined {
    position: i64,
    typing: u64,
}

/// The body of a stored transaction.
#[derive(serde::Serialize, serde::Deserialize)]
struct Body {
    events: Vec<Box<RawValue>>,
    #[serde(default)]
    ephemeral: Vec<Box<RawValue>>,
}

/// Sends the pending transaction, or makes the next one from what is new.
async fn step(
    services: &Services,
    service: &Arc<AppService>,
    client: &FederationClient,
    examined: &mut Examined,
) -> Result<Next> {
    let db = services.database();
    let id = service.registration.id.clone();
    let row = {
        let id = id.clone();
        db.read(move |c| store::get(c, &id).map_err(Error::from))
            .await?
    };
    // Written once, when the service is new: a read per step otherwise.
    let row = match row {
        Some(row) => row,
        None => {
            let id = id.clone();
            db.write(move |tx| {
                let position = current_stream_position(tx)?;
                Ok::<_, Error>(store::get_or_create(tx, &id, position)?)
            })
            .await?
        }
    };
    let now = now_ms();
    if let Some(retry_at) = row.retry_at.filter(|at| *at > now) {
        return Ok(Next::Wait(Duration::from_millis((retry_at - now) as u64)));
    }
    if let Some((txn_id, body, _)) = row.pending {
        return match send(service, client, txn_id, &body).await {
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
    // Typing is in memory only: what changed since the last push, if the service wants it.
    let serial = services.typing.serial();
    let typing = if service.push_ephemeral && serial > examined.typing {
        services.typing.rooms_changed_since(examined.typing)
    } else {
        Vec::new()
    };
    let from = row.position.max(examined.position);
    let service_for_read = service.clone();
    let found = db
        .read(move |c| new_for_service(c, &service_for_read, from, typing))
        .await?;
    examined.typing = serial;
    if found.events.is_empty() && found.ephemeral.is_empty() {
        let moved = found.upper > examined.position;
        examined.position = examined.position.max(found.upper);
        return Ok(if moved { Next::More } else { Next::Idle });
    }
    examined.position = found.upper;
    let body = Body {
        events: found.events,
        ephemeral: found.ephemeral,
    };
    let json = serde_json::to_string(&body).map_err(Error::internal)?;
    let upper = found.upper;
    db.write(move |tx| store::set_pending(tx, &id, &json, upper))
        .await?;
    Ok(Next::More)
}

/// What is new for a service after a position.
struct Found {
    events: Vec<Box<RawValue>>,
    ephemeral: Vec<Box<RawValue>>,
    /// The stream position up to which everything was examined.
    upper: i64,
}

/// The events and receipts after `position` the service is interested in (events rendered for
/// clients), and the typing changes of rooms it is interested in.
fn new_for_service(
    c: &rusqlite::Connection,
    service: &AppService,
    position: i64,
    typing: Vec<(ruma::OwnedRoomId, Vec<ruma::OwnedUserId>)>,
) -> Result<Found> {
    let rows = store::events_after(c, position, EVENTS_PER_READ)?;
    // A full batch ends at its last event; otherwise everything up to now was seen (receipts
    // share the stream's positions).
    let upper = match rows.last() {
        Some(last) if rows.len() as i64 == EVENTS_PER_READ => last.stream_ordering,
        _ => current_stream_position(c)?.max(position),
    };
    // Per room: whether the service is interested in it as a whole (room ID, an alias, a
    // joined member in its namespace).
    let mut rooms: HashMap<String, bool> = HashMap::new();
    let mut room_interest = |room: &str| -> Result<bool> {
        if let Some(known) = rooms.get(room) {
            return Ok(*known);
        }
        let interested = service.is_interested_in_room(room)
            || crate::storage::rooms::members_with(c, room, "join")?
                .iter()
                .any(|user| service.is_interested_in_user(user))
            || store::room_aliases(c, room)?
                .iter()
                .any(|alias| service.is_interested_in_alias(alias));
        rooms.insert(room.to_owned(), interested);
        Ok(interested)
    };
    let mut events = Vec::new();
    for row in rows {
        // The invite (or join) of a ghost comes before the ghost is a member.
        let about_a_user = Envelope::parse(&row.json)
            .and_then(|e| {
                e.state_key
                    .filter(|_| e.kind.as_deref() == Some("m.room.member"))
            })
            .is_some_and(|user| service.is_interested_in_user(&user));
        let interested = about_a_user
            || service.is_interested_in_user(&row.sender)
            || room_interest(&row.room_id)?;
        if !interested {
            continue;
        }
        let Some(version) = crate::storage::rooms::room_version(c, &row.room_id)?
            .and_then(|v| RoomVersionId::try_from(v).ok())
        else {
            continue;
        };
        if let Some(event) = render(c, &row, &version, None, true)? {
            events.push(to_raw(&event)?);
        }
    }
    let mut ephemeral = Vec::new();
    if service.push_ephemeral {
        for receipt in store::receipts_between(c, position, upper)? {
            if !room_interest(&receipt.room_id)? {
                continue;
            }
            let mut data = serde_json::json!({ "ts": receipt.ts });
            if !receipt.thread_id.is_empty() {
                data["thread_id"] = receipt.thread_id.into();
            }
            ephemeral.push(to_raw(&serde_json::json!({
                "type": "m.receipt",
                "room_id": receipt.room_id,
                "content": {
                    receipt.event_id: { receipt.receipt_type: { receipt.user_id: data } }
                },
            }))?);
        }
        for (room, users) in typing {
            if room_interest(room.as_str())? {
                ephemeral.push(to_raw(&serde_json::json!({
                    "type": "m.typing",
                    "room_id": room,
                    "content": { "user_ids": users },
                }))?);
            }
        }
    }
    Ok(Found {
        events,
        ephemeral,
        upper,
    })
}

fn to_raw(value: &serde_json::Value) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(value).map_err(Error::internal)
}

/// One `PUT {url}/_matrix/app/v1/transactions/{txnId}` with the `hs_token`; the reason when it
/// was not answered `200`.
async fn send(
    service: &AppService,
    client: &FederationClient,
    txn_id: i64,
    body: &str,
) -> Result<(), String> {
    let body: Body =
        serde_json::from_str(body).map_err(|e| format!("stored transaction unreadable: {e}"))?;
    let events = body.events.into_iter().map(Raw::from_json).collect();
    let txn: OwnedTransactionId = txn_id.to_string().into();
    let mut request = push_events::Request::new(txn, events);
    request.ephemeral = body.ephemeral.into_iter().map(Raw::from_json).collect();
    let request = super::service_request(service, request).map_err(|e| e.to_string())?;
    let response = super::exchange(client, request, REQUEST_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if response.status.is_success() {
        Ok(())
    } else {
        Err(format!("the service answered {}", response.status))
    }
}
