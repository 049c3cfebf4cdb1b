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
//! changes of the rooms they are interested in and the presence of the users they are interested
//! in (in their namespace or joined to a room of interest), and in
//! `de.sorunome.msc2409.to_device` the to-device messages sent to their users' devices (with
//! `to_user_id` and `to_device_id`). Typing lives in memory: a change made while a transaction
//! is pending waits for it, and one made before a restart is not pushed.
//!
//! Services with `org.matrix.msc3202: true` (bridges that encrypt) also get the users whose
//! device lists changed (`org.matrix.msc3202.device_lists`, `changed`; like Synapse, `left` is
//! never filled), and, in each transaction, the one-time key counts and unused fallback key types
//! of every device of the service's sender, of its users joined to the rooms the transaction
//! is about and of the recipients of its to-device messages (what Synapse sends). Everything
//! but those counts lives in the stream, so the one cursor covers it: it is delivered in order,
//! at least once, across restarts. To-device messages stay in the inbox (as with Synapse): the
//! device may sync them too.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedTransactionId, OwnedUserId, RoomVersionId, UInt,
    api::appservice::event::push_events::v1::{self as push_events, DeviceLists},
    events::room::member::MembershipState,
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
    storage::{appservice as store, now_ms, presence::PresenceRow, rooms::current_stream_position},
};

/// Events examined per read.
const EVENTS_PER_READ: i64 = 100;
/// To-device messages (of any device) and presence changes examined per read.
const MESSAGES_PER_READ: i64 = 100;
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

/// `{user: {device: {algorithm: count}}}` (MSC3202).
type KeyCounts =
    BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, BTreeMap<OneTimeKeyAlgorithm, UInt>>>;
/// `{user: {device: [algorithm]}}` (MSC3202).
type FallbackTypes = BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Vec<OneTimeKeyAlgorithm>>>;

/// The body of a stored transaction (the fields added later default, so that a transaction
/// stored by an older version is still sent).
#[derive(serde::Serialize, serde::Deserialize)]
struct Body {
    events: Vec<Box<RawValue>>,
    #[serde(default)]
    ephemeral: Vec<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    to_device: Vec<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "DeviceLists::is_empty")]
    device_lists: DeviceLists,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    one_time_keys_count: KeyCounts,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    unused_fallback_key_types: FallbackTypes,
}

/// Sends the pending transaction, or makes the next one from what is new.
async fn step(
    services: &Services,
    service: &Arc<AppService>,
    client: &FederationClient,
    examined: &mut Examined,
) -> Result<Next> {
    let db = &services.db;
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
    if found.events.is_empty()
        && found.ephemeral.is_empty()
        && found.presence.is_empty()
        && found.to_device.is_empty()
        && found.device_lists.is_empty()
    {
        let moved = found.upper > examined.position;
        examined.position = examined.position.max(found.upper);
        return Ok(if moved { Next::More } else { Next::Idle });
    }
    examined.position = found.upper;
    let mut ephemeral = found.ephemeral;
    for row in &found.presence {
        ephemeral.push(to_raw(&services.presence.event(row))?);
    }
    let body = Body {
        events: found.events,
        ephemeral,
        to_device: found.to_device,
        device_lists: found.device_lists,
        one_time_keys_count: found.key_counts,
        unused_fallback_key_types: found.fallback_types,
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
    /// Made into `m.presence` events by the caller (the presence service knows of activity
    /// not written yet).
    presence: Vec<PresenceRow>,
    to_device: Vec<Box<RawValue>>,
    device_lists: DeviceLists,
    key_counts: KeyCounts,
    fallback_types: FallbackTypes,
    /// The stream position up to which everything was examined.
    upper: i64,
}

/// A to-device message as pushed to application services (MSC2409 / MSC4203).
#[derive(serde::Serialize)]
struct ToDevice<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    sender: &'a str,
    content: &'a RawValue,
    to_user_id: &'a str,
    to_device_id: &'a str,
}

/// What is new after `position` that the service is interested in: events (rendered for
/// clients), and as the service asked for them receipts, typing changes, presence, to-device
/// messages, device list changes and key counts.
fn new_for_service(
    c: &rusqlite::Connection,
    service: &AppService,
    position: i64,
    typing: Vec<(ruma::OwnedRoomId, Vec<ruma::OwnedUserId>)>,
) -> Result<Found> {
    let mut rows = store::events_after(c, position, EVENTS_PER_READ)?;
    // A full batch ends at its last event; otherwise everything up to now was seen (receipts
    // and the rest share the stream's positions).
    let mut upper = match rows.last() {
        Some(last) if rows.len() as i64 == EVENTS_PER_READ => last.stream_ordering,
        _ => current_stream_position(c)?.max(position),
    };
    // Full reads of to-device messages or presence end the batch where they end.
    let inbox = if service.push_ephemeral {
        let inbox = store::to_device_between(c, position, upper, MESSAGES_PER_READ)?;
        if let Some(last) = inbox
            .last()
            .filter(|_| inbox.len() as i64 == MESSAGES_PER_READ)
        {
            upper = last.stream_position;
        }
        let presence = crate::storage::presence::changed_between(
            c,
            position,
            upper,
            MESSAGES_PER_READ as usize,
        )?;
        if let Some(last) = presence
            .last()
            .filter(|_| presence.len() as i64 == MESSAGES_PER_READ)
        {
            upper = last.stream_position;
        }
        Some((inbox, presence))
    } else {
        None
    };
    rows.retain(|row| row.stream_ordering <= upper);
    let mut interest = Interest {
        c,
        service,
        rooms: HashMap::new(),
    };
    // The rooms the transaction is about, for the key counts of the service's users there.
    let mut rooms_of_transaction = BTreeSet::new();
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
            || interest.room(&row.room_id)?;
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
            rooms_of_transaction.insert(row.room_id.clone());
        }
    }
    let mut ephemeral = Vec::new();
    let mut presence = Vec::new();
    let mut to_device = Vec::new();
    let mut recipients = BTreeSet::new();
    if let Some((inbox, changed_presence)) = inbox {
        for receipt in store::receipts_between(c, position, upper)? {
            if !interest.room(&receipt.room_id)? {
                continue;
            }
            rooms_of_transaction.insert(receipt.room_id.clone());
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
            if interest.room(room.as_str())? {
                rooms_of_transaction.insert(room.to_string());
                ephemeral.push(to_raw(&serde_json::json!({
                    "type": "m.typing",
                    "room_id": room,
                    "content": { "user_ids": users },
                }))?);
            }
        }
        for change in changed_presence {
            if change.stream_position <= upper && interest.user(&change.presence.user_id)? {
                presence.push(change.presence);
            }
        }
        for message in inbox {
            if message.stream_position > upper || !service.is_interested_in_user(&message.user_id) {
                continue;
            }
            let content: Box<RawValue> =
                serde_json::from_str(&message.content).map_err(Error::internal)?;
            to_device.push(
                serde_json::value::to_raw_value(&ToDevice {
                    kind: &message.event_type,
                    sender: &message.sender,
                    content: &content,
                    to_user_id: &message.user_id,
                    to_device_id: &message.device_id,
                })
                .map_err(Error::internal)?,
            );
            recipients.insert(message.user_id);
        }
    }
    let mut device_lists = DeviceLists::new();
    let (mut key_counts, mut fallback_types) = (KeyCounts::new(), FallbackTypes::new());
    if service.msc3202 {
        for user in store::device_list_changes_between(c, position, upper)? {
            if interest.user(&user)?
                && let Ok(user) = OwnedUserId::try_from(user)
            {
                device_lists.changed.push(user);
            }
        }
        // Counts go with a transaction that is sent anyway, as with Synapse: they are not in
        // the stream, so they cannot make one.
        let something = !events.is_empty()
            || !ephemeral.is_empty()
            || !presence.is_empty()
            || !to_device.is_empty()
            || !device_lists.is_empty();
        if something {
            let mut users = recipients;
            users.insert(service.sender.to_string());
            for room in &rooms_of_transaction {
                for user in
                    crate::storage::rooms::members_with(c, room, MembershipState::Join.as_str())?
                {
                    if service.is_interested_in_user(&user) {
                        users.insert(user);
                    }
                }
            }
            (key_counts, fallback_types) = key_counts_of(c, users)?;
        }
    }
    Ok(Found {
        events,
        ephemeral,
        presence,
        to_device,
        device_lists,
        key_counts,
        fallback_types,
        upper,
    })
}

/// The one-time key counts and unused fallback key types of every device of the users (with
/// empty ones for devices without keys, as Synapse sends them).
fn key_counts_of(
    c: &rusqlite::Connection,
    users: BTreeSet<String>,
) -> Result<(KeyCounts, FallbackTypes)> {
    let mut key_counts = KeyCounts::new();
    let mut fallback_types = FallbackTypes::new();
    for user in users {
        let Ok(user_id) = OwnedUserId::try_from(user.as_str()) else {
            continue;
        };
        for store::DeviceKeyCount {
            device_id: device,
            algorithm,
            count,
        } in store::one_time_key_counts(c, &user)?
        {
            let counts = key_counts
                .entry(user_id.clone())
                .or_default()
                .entry(device.into())
                .or_default();
            if let Some(algorithm) = algorithm {
                counts.insert(algorithm.into(), UInt::try_from(count).unwrap_or_default());
            }
        }
        for store::DeviceFallbackKey {
            device_id: device,
            algorithm,
        } in store::unused_fallback_key_types(c, &user)?
        {
            fallback_types
                .entry(user_id.clone())
                .or_default()
                .entry(device.into())
                .or_default()
                .extend(algorithm.map(OneTimeKeyAlgorithm::from));
        }
    }
    Ok((key_counts, fallback_types))
}

/// Whether the service is interested in rooms and users, rooms remembered for one read.
struct Interest<'a> {
    c: &'a rusqlite::Connection,
    service: &'a AppService,
    rooms: HashMap<String, bool>,
}

impl Interest<'_> {
    /// A room as a whole: its ID, an alias or a joined member in the service's namespaces.
    fn room(&mut self, room: &str) -> Result<bool> {
        if let Some(known) = self.rooms.get(room) {
            return Ok(*known);
        }
        let (c, service) = (self.c, self.service);
        let interested = service.is_interested_in_room(room)
            || crate::storage::rooms::members_with(c, room, MembershipState::Join.as_str())?
                .iter()
                .any(|user| service.is_interested_in_user(user))
            || store::room_aliases(c, room)?
                .iter()
                .any(|alias| service.is_interested_in_alias(alias));
        self.rooms.insert(room.to_owned(), interested);
        Ok(interested)
    }

    /// A user's presence and device list: in the namespace or joined to a room of interest
    /// (Synapse's rule for both).
    fn user(&mut self, user: &str) -> Result<bool> {
        if self.service.is_interested_in_user(user) {
            return Ok(true);
        }
        for row in crate::storage::rooms::memberships_of_user(self.c, user)? {
            if row.membership == MembershipState::Join.as_str() && self.room(&row.room_id)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
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
    request.to_device = body.to_device.into_iter().map(Raw::from_json).collect();
    request.device_lists = body.device_lists;
    request.device_one_time_keys_count = body.one_time_keys_count;
    request.device_unused_fallback_key_types = body.unused_fallback_key_types;
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
