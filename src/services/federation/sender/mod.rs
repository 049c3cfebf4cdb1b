//! The outbound federation sender: durable per-destination queues of PDUs and EDUs, sent as
//! transactions (`PUT /_matrix/federation/v1/send/{txnId}`).
//!
//! * **Queue**: `enqueue_pdu` runs inside the write transaction that stores a local event
//!   (`rooms/append.rs`'s `append_event`, which every local event passes), so an acknowledged
//!   event is never lost to a crash: a row per destination, every server with a joined member
//!   plus, for a membership event, the member's own server (a kick must reach them).
//! * **Sending**: one worker per destination with work (at most [`MAX_CONCURRENT_DESTINATIONS`]
//!   at once), one transaction in flight per destination, at most 50 PDUs and 100 EDUs each, in
//!   order. The transaction's ID and bounds are stored before it is sent, so a retry (after a
//!   failure or a restart) sends the same ID with the same contents; rows go only after a 200.
//!   Per-PDU errors in the answer are logged, not retried.
//! * **Backoff** (`backoff.rs`, Synapse's constants and keys), stored per destination: it survives
//!   a restart, is cleared by a success or by any request from that server
//!   ([`Sender::destination_is_up`]).
//! * **Catch-up**: a backlog over [`MAX_BACKLOG_PDUS`] PDUs or [`MAX_BACKLOG_AGE_MS`] old is
//!   dropped; only the newest local event of each room is kept and sent when the destination
//!   comes back (it fetches the gap with `get_missing_events`), as Synapse's catch-up does.
//!
//! EDUs: a public read receipt ([`enqueue_read_receipt`]) and a presence change
//! ([`enqueue_presence`]) are queued in the write transaction that stores them; typing
//! ([`Sender::typing`]) after it, and never for a destination that is backing off. An invite of
//! another server's user goes by `/invite` first (`federation/invites.rs`). The queue's SQL is
//! `storage/federation_queue.rs` (migration `0010_federation_queue.sql`); `appliance admin
//! federation status` shows it.

pub mod backoff;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{
    CanonicalJsonObject, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedServerName,
    OwnedTransactionId, RoomId, ServerName, UserId,
    api::federation::transactions::{
        edu::{
            Edu, PresenceContent, PresenceUpdate, ReceiptContent, ReceiptData, ReceiptMap,
            TypingContent,
        },
        send_transaction_message,
    },
    events::{
        receipt::{Receipt, ReceiptThread},
        room::member::MembershipState,
    },
    serde::Raw,
};
use rusqlite::Connection;
use serde_json::value::RawValue;
use tokio::{
    sync::{Notify, watch},
    task::JoinSet,
};

pub use backoff::Backoff;

use crate::{
    config::federation_backoff::FederationConfig,
    shutdown::{BackgroundTasks, Shutdown},
    storage::{
        Database,
        federation_queue::{self as store, QueuedEdu, QueuedPdu, TxnInFlight},
        now_ms,
    },
};

/// The spec's limits per transaction.
pub const MAX_PDUS_PER_TXN: usize = 50;
pub const MAX_EDUS_PER_TXN: usize = 100;
/// A destination with more PDUs than this waiting falls back to catch-up.
pub const MAX_BACKLOG_PDUS: i64 = 1000;
/// ... or with its oldest waiting PDU older than this.
pub const MAX_BACKLOG_AGE_MS: i64 = 24 * 3600 * 1000;
/// Destinations sent to at once; the others wait for a free worker.
pub const MAX_CONCURRENT_DESTINATIONS: usize = 16;
/// How long the sender waits after a database error before looking again.
const DATABASE_RETRY: Duration = Duration::from_secs(5);

/// How a transaction failed to reach a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendFailure {
    /// No answer: refused by the policies, no connection, TLS, timeout.
    Unreachable(String),
    /// The destination answered with an error status.
    Status(u16, String),
    /// The answer was not a transaction response.
    BadResponse(String),
    /// This server may not contact the destination (`federation_domain_whitelist`).
    NotAllowed(String),
}

impl std::fmt::Display for SendFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(reason) => write!(f, "unreachable: {reason}"),
            Self::Status(status, reason) => write!(f, "HTTP {status}: {reason}"),
            Self::BadResponse(reason) => write!(f, "bad answer: {reason}"),
            Self::NotAllowed(reason) => write!(f, "not allowed: {reason}"),
        }
    }
}

impl SendFailure {
    /// Whether the destination refused this transaction for good (a 4xx other than those that
    /// say "not now"): it is dropped instead of blocking the queue forever, without backoff
    /// (Synapse's `retryutils` does not back off on these either).
    /// A destination outside `federation_domain_whitelist` is never tried, so what is queued
    /// for it (the whitelist was set after it joined a room) does not pile up either.
    fn is_permanent(&self) -> bool {
        match self {
            Self::Status(status, _) => {
                (400..500).contains(status) && !matches!(status, 401 | 404 | 408 | 429)
            }
            Self::NotAllowed(_) => true,
            Self::Unreachable(_) | Self::BadResponse(_) => false,
        }
    }
}

/// The per-PDU results of a transaction the destination accepted.
pub type PduResults = BTreeMap<OwnedEventId, Result<(), String>>;

pub type TransportFuture<'a> =
    Pin<Box<dyn Future<Output = Result<PduResults, SendFailure>> + Send + 'a>>;

/// Sends one transaction (signed as this server) and reads its answer.
pub trait TransactionTransport: Send + Sync + 'static {
    fn send_transaction<'a>(
        &'a self,
        destination: &'a ServerName,
        request: send_transaction_message::v1::Request,
    ) -> TransportFuture<'a>;
}

/// Records, in the write transaction `tx` that stored the local event `event_id`, that it must
/// go to every other server with a joined member of the room and to `extra_destinations` (the
/// member's server of a membership event). A destination too far behind is moved to catch-up.
pub fn enqueue_pdu(
    tx: &Connection,
    our_server: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
    stream_ordering: i64,
    extra_destinations: &[&ServerName],
) -> rusqlite::Result<()> {
    enqueue_pdu_except(
        tx,
        our_server,
        room_id,
        event_id,
        stream_ordering,
        extra_destinations,
        None,
    )
}

/// [`enqueue_pdu`] for an event another server sent us that we hand on to the room's other
/// servers (a join accepted through `send_join`): never back to `origin`.
pub fn enqueue_pdu_except(
    tx: &Connection,
    our_server: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
    stream_ordering: i64,
    extra_destinations: &[&ServerName],
    origin: Option<&ServerName>,
) -> rusqlite::Result<()> {
    let mut destinations: BTreeSet<String> =
        store::servers_in_room(tx, room_id.as_str(), MembershipState::Join.as_str())?
            .into_iter()
            .filter(|name| <&ServerName>::try_from(name.as_str()).is_ok())
            .collect();
    destinations.extend(extra_destinations.iter().map(|s| s.to_string()));
    destinations.remove(our_server.as_str());
    if let Some(origin) = origin {
        destinations.remove(origin.as_str());
    }
    if destinations.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let pdu = QueuedPdu {
        stream_ordering,
        room_id: room_id.to_string(),
        event_id: event_id.to_string(),
    };
    for destination in destinations {
        if store::is_catching_up(tx, &destination)? {
            store::set_catch_up(tx, &destination, &pdu)?;
            continue;
        }
        store::enqueue_pdu(tx, &destination, &pdu)?;
        let backlog = store::queued_pdus_capped(tx, &destination, MAX_BACKLOG_PDUS)?;
        let too_old = store::oldest_queued_pdu_ts(tx, &destination)?
            .is_some_and(|ts| now - ts > MAX_BACKLOG_AGE_MS);
        if backlog > MAX_BACKLOG_PDUS || too_old {
            tracing::warn!(
                %destination,
                "federation backlog too long; \
                 sending only the newest event of each room when it is back"
            );
            store::drop_backlog_to_catch_up(tx, &destination)?;
        }
    }
    Ok(())
}

/// What one transaction holds, read from the queue (`prepare_batch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub txn_id: String,
    /// Whether the transaction was already tried (same ID, same contents).
    pub retry: bool,
    /// Event IDs in order.
    pub event_ids: Vec<String>,
    pub edus: Vec<QueuedEdu>,
}

/// The transaction to send to `destination`: the one in flight if there is one (its contents
/// are still queued: rows go only after a 200), else a new one of the oldest PDUs and EDUs,
/// recorded before it is sent. `None` when nothing is waiting.
pub fn prepare_batch(
    tx: &Connection,
    destination: &str,
    now: i64,
) -> rusqlite::Result<Option<Batch>> {
    let state = store::destination_state(tx, destination)?.unwrap_or_default();
    let pdu_limit = MAX_PDUS_PER_TXN as i64;
    let edu_limit = MAX_EDUS_PER_TXN as i64;
    if let Some(txn) = state.txn {
        let event_ids = match &txn.catch_up {
            Some(list) => serde_json::from_str(list).unwrap_or_default(),
            None => match txn.max_pdu {
                Some(max) => store::queued_pdus(tx, destination, Some(max), pdu_limit)?
                    .into_iter()
                    .map(|pdu| pdu.event_id)
                    .collect(),
                None => Vec::new(),
            },
        };
        let edus = match txn.max_edu {
            Some(max) => store::queued_edus(tx, destination, Some(max), edu_limit)?,
            None => Vec::new(),
        };
        return Ok(Some(Batch {
            txn_id: txn.txn_id,
            retry: true,
            event_ids,
            edus,
        }));
    }
    let (event_ids, max_pdu, catch_up) = if state.catching_up {
        let rows = store::catch_up_rows(tx, destination, pdu_limit)?;
        let ids: Vec<String> = rows.into_iter().map(|row| row.event_id).collect();
        let list = (!ids.is_empty())
            .then(|| serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_owned()));
        (ids, None, list)
    } else {
        let pdus = store::queued_pdus(tx, destination, None, pdu_limit)?;
        let max = pdus.last().map(|pdu| pdu.stream_ordering);
        (
            pdus.into_iter().map(|pdu| pdu.event_id).collect(),
            max,
            None,
        )
    };
    let edus = store::queued_edus(tx, destination, None, edu_limit)?;
    if event_ids.is_empty() && edus.is_empty() {
        return Ok(None);
    }
    let txn = TxnInFlight {
        txn_id: format!("{now}_{}", state.txn_counter + 1),
        max_pdu,
        max_edu: edus.last().map(|edu| edu.id),
        catch_up,
    };
    store::start_txn(tx, destination, &txn)?;
    Ok(Some(Batch {
        txn_id: txn.txn_id,
        retry: false,
        event_ids,
        edus,
    }))
}

/// A stored PDU as it goes over federation: without the `unsigned` this server adds for its
/// clients (`prev_content`, `replaces_state`).
fn federation_pdu(json: &str) -> Option<Box<RawValue>> {
    let mut object: CanonicalJsonObject = serde_json::from_str(json).ok()?;
    object.remove("unsigned");
    serde_json::value::to_raw_value(&object).ok()
}

pub struct Sender {
    db: Database,
    server_name: OwnedServerName,
    backoff: Backoff,
    transport: Arc<dyn TransactionTransport>,
    wake: Notify,
    /// The destinations backing off now (kept in memory so that an inbound request only writes
    /// to the database when its origin was failing).
    failing: Mutex<HashSet<String>>,
}

impl Sender {
    /// Queues an event of `origin` that this server accepted for the room's other servers (a
    /// join through `send_join`: the resident server tells the rest of the room).
    pub async fn forward_remote_event(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        stream_ordering: i64,
        origin: &ServerName,
    ) -> crate::error::Result<()> {
        let (ours, room, event, origin) = (
            self.server_name.clone(),
            room_id.to_owned(),
            event_id.to_owned(),
            origin.to_owned(),
        );
        self.db
            .write(move |tx| {
                enqueue_pdu_except(
                    tx,
                    &ours,
                    &room,
                    &event,
                    stream_ordering,
                    &[],
                    Some(&origin),
                )
                .map_err(crate::error::Error::from)
            })
            .await?;
        self.wake();
        Ok(())
    }

    pub fn new(
        db: Database,
        server_name: OwnedServerName,
        config: &FederationConfig,
        transport: Arc<dyn TransactionTransport>,
    ) -> rusqlite::Result<Arc<Self>> {
        let failing = db.read_now(store::failing_destinations)?;
        Ok(Arc::new(Self {
            db,
            server_name,
            backoff: Backoff::from_config(config),
            transport,
            wake: Notify::new(),
            failing: Mutex::new(failing.into_iter().collect()),
        }))
    }

    /// Makes the sender look for work now (after a commit that queued something).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// `origin` sent us a request: it is up, so its backoff is cleared and its queue is sent.
    pub async fn destination_is_up(&self, origin: &ServerName) {
        let was_failing = self
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(origin.as_str());
        if !was_failing {
            return;
        }
        let destination = origin.to_string();
        match self
            .db
            .write(move |tx| store::clear_backoff(tx, &destination))
            .await
        {
            Ok(_) => {
                tracing::info!(
                    %origin,
                    "heard from a server that was failing; sending to it again"
                );
                self.wake();
            }
            Err(e) => tracing::warn!(%origin, "cannot clear the federation backoff: {e}"),
        }
    }

    /// Queues `edu` for each of `destinations` (not this server; typing notifications not for a
    /// destination that is backing off: they would be stale when it comes back).
    pub async fn enqueue_edu(&self, destinations: Vec<OwnedServerName>, edu: Edu) {
        let ephemeral = matches!(edu, Edu::Typing(_));
        let destinations: Vec<String> = {
            let failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
            destinations
                .into_iter()
                .filter(|d| *d != self.server_name)
                .map(|d| d.to_string())
                .filter(|d| !(ephemeral && failing.contains(d)))
                .collect()
        };
        if destinations.is_empty() {
            return;
        }
        let result = self
            .db
            .write(move |tx| enqueue_edu_for(tx, &destinations, &edu))
            .await;
        match result {
            Ok(()) => self.wake(),
            Err(e) => tracing::warn!("cannot queue an EDU for federation: {e}"),
        }
    }

    /// The other servers with a joined member in `room_id` (for EDUs about the room).
    pub async fn servers_in_room(&self, room_id: &RoomId) -> Vec<OwnedServerName> {
        let room = room_id.to_string();
        let servers = self
            .db
            .read(move |c| store::servers_in_room(c, &room, MembershipState::Join.as_str()))
            .await
            .unwrap_or_default();
        servers
            .into_iter()
            .filter_map(|s| OwnedServerName::try_from(s).ok())
            .filter(|s| *s != self.server_name)
            .collect()
    }

    /// Starts the sender as a background task; `commits` is the rooms' stream position, bumped
    /// after every commit that stored events (which may have queued PDUs).
    pub fn spawn(self: &Arc<Self>, tasks: &BackgroundTasks, commits: watch::Receiver<i64>) {
        let sender = self.clone();
        tasks.spawn(move |shutdown| sender.run(shutdown, commits));
    }

    async fn run(self: Arc<Self>, shutdown: Shutdown, mut commits: watch::Receiver<i64>) {
        let mut workers: JoinSet<()> = JoinSet::new();
        let mut active: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut commits_open = true;
        loop {
            // Our users' device-list changes become EDUs here, whichever code path made them.
            if let Err(e) = crate::services::e2ee::remote_lists::queue_local_changes(
                &self.db,
                &self.server_name,
            )
            .await
            {
                tracing::error!("cannot queue device-list updates for federation: {e}");
            }
            let now = now_ms();
            let mut next_retry: Option<i64> = None;
            match self.db.read(store::pending_destinations).await {
                Ok(pending) => {
                    for destination in pending {
                        if active.values().any(|d| *d == destination.destination) {
                            continue;
                        }
                        if destination.retry_at > now {
                            next_retry = Some(
                                next_retry
                                    .map_or(destination.retry_at, |t| t.min(destination.retry_at)),
                            );
                            continue;
                        }
                        if active.len() >= MAX_CONCURRENT_DESTINATIONS {
                            continue; // looked at again when a worker ends
                        }
                        let (sender, shutdown) = (self.clone(), shutdown.clone());
                        let name = destination.destination.clone();
                        let handle = workers.spawn(async move {
                            sender.work(&name, &shutdown).await;
                        });
                        active.insert(handle.id(), destination.destination);
                    }
                }
                Err(e) => {
                    tracing::error!("federation sender cannot read its queue: {e}");
                    next_retry = Some(now + DATABASE_RETRY.as_millis() as i64);
                }
            }
            let sleep = match next_retry {
                Some(at) => Duration::from_millis(u64::try_from(at - now).unwrap_or(0).max(10)),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                () = shutdown.stopping() => break,
                () = self.wake.notified() => {}
                changed = commits.changed(), if commits_open => {
                    commits_open = changed.is_ok();
                }
                Some(done) = workers.join_next_with_id() => {
                    let id = match done {
                        Ok((id, ())) => id,
                        Err(e) => {
                            tracing::error!("a federation sender worker failed: {e}");
                            e.id()
                        }
                    };
                    active.remove(&id);
                }
                () = tokio::time::sleep(sleep) => {}
            }
        }
        // Workers notice the shutdown themselves; what they were sending stays queued.
        while workers.join_next().await.is_some() {}
    }

    /// Sends everything waiting for `destination`, one transaction at a time, until the queue is
    /// empty, a send fails (backoff) or the server stops.
    async fn work(&self, destination: &str, shutdown: &Shutdown) {
        let Ok(server) = OwnedServerName::try_from(destination) else {
            tracing::warn!(
                destination,
                "not a server name; its federation queue is not sent"
            );
            return;
        };
        loop {
            let name = destination.to_owned();
            let prepared = self
                .db
                .write(move |tx| {
                    let Some(batch) = prepare_batch(tx, &name, now_ms())? else {
                        return Ok::<_, rusqlite::Error>(None);
                    };
                    let mut pdus = Vec::with_capacity(batch.event_ids.len());
                    for event_id in &batch.event_ids {
                        match store::event_json(tx, event_id)?
                            .as_deref()
                            .and_then(federation_pdu)
                        {
                            Some(pdu) => pdus.push(pdu),
                            None => tracing::warn!(event_id, "queued event missing; not sent"),
                        }
                    }
                    Ok(Some((batch, pdus)))
                })
                .await;
            let (batch, pdus) = match prepared {
                Ok(Some(prepared)) => prepared,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(destination, "cannot read the federation queue: {e}");
                    return;
                }
            };
            let txn_id = OwnedTransactionId::from(batch.txn_id.clone());
            let mut request = send_transaction_message::v1::Request::new(
                txn_id,
                self.server_name.clone(),
                MilliSecondsSinceUnixEpoch::now(),
            );
            request.pdus = pdus;
            request.edus = batch
                .edus
                .iter()
                .filter_map(|edu| RawValue::from_string(edu.json.clone()).ok())
                .map(Raw::<Edu>::from_json)
                .collect();
            tracing::debug!(
                destination,
                txn_id = batch.txn_id,
                retry = batch.retry,
                pdus = request.pdus.len(),
                edus = request.edus.len(),
                "sending a federation transaction"
            );
            let outcome = tokio::select! {
                outcome = self.transport.send_transaction(&server, request) => outcome,
                () = shutdown.stopping() => return,
            };
            match outcome {
                Ok(results) => {
                    for (event_id, result) in &results {
                        if let Err(reason) = result {
                            tracing::warn!(
                                destination,
                                %event_id,
                                reason,
                                "the destination refused a PDU"
                            );
                        }
                    }
                    self.finish(destination, &batch.txn_id, true).await;
                }
                Err(failure @ SendFailure::NotAllowed(_)) => {
                    tracing::info!(destination, txn_id = batch.txn_id, %failure,
                        "a transaction for a server this one may not contact; dropped");
                    self.finish(destination, &batch.txn_id, false).await;
                }
                Err(failure) if failure.is_permanent() => {
                    tracing::error!(destination, txn_id = batch.txn_id, %failure,
                        "the destination refused a transaction; dropped");
                    self.finish(destination, &batch.txn_id, false).await;
                }
                Err(failure) => {
                    self.failed(destination, &failure).await;
                    return;
                }
            }
        }
    }

    async fn finish(&self, destination: &str, txn_id: &str, success: bool) {
        let (name, txn) = (destination.to_owned(), txn_id.to_owned());
        if let Err(e) = self
            .db
            .write(move |tx| store::finish_txn(tx, &name, &txn, now_ms(), success))
            .await
        {
            tracing::error!(destination, "cannot record a sent transaction: {e}");
        }
        if success {
            self.failing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(destination);
        }
    }

    async fn failed(&self, destination: &str, failure: &SendFailure) {
        let (name, backoff) = (destination.to_owned(), self.backoff);
        let random = rand::random::<f64>();
        let result = self
            .db
            .write(move |tx| {
                let previous =
                    store::destination_state(tx, &name)?.map_or(0, |state| state.retry_interval);
                let interval = backoff.next_interval(previous, random);
                store::record_failure(tx, &name, now_ms(), interval)?;
                Ok::<_, rusqlite::Error>(interval)
            })
            .await;
        match result {
            Ok(interval) => tracing::info!(
                destination,
                %failure,
                retry_in_ms = interval,
                "federation transaction failed; backing off"
            ),
            Err(e) => tracing::error!(destination, "cannot record a federation failure: {e}"),
        }
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(destination.to_owned());
    }
}

#[cfg(test)]
mod tests;

/// The real transport: the federation client, signed as this server. A transaction answer is
/// small (one result per PDU): 1 MiB at most.
pub struct ClientTransport(pub Arc<super::client::FederationClient>);

const TXN_RESPONSE_MAX_BYTES: usize = 1024 * 1024;

impl TransactionTransport for ClientTransport {
    fn send_transaction<'a>(
        &'a self,
        destination: &'a ServerName,
        request: send_transaction_message::v1::Request,
    ) -> TransportFuture<'a> {
        Box::pin(async move {
            use super::client::FederationError;
            if !self.0.may_contact(destination) {
                return Err(SendFailure::NotAllowed(format!(
                    "{destination} is not in federation_domain_whitelist"
                )));
            }
            match self
                .0
                .send_with_limit(destination, request, TXN_RESPONSE_MAX_BYTES)
                .await
            {
                Ok(response) => Ok(response.pdus),
                Err(FederationError::Matrix(error)) => Err(SendFailure::Status(
                    error.status_code.as_u16(),
                    FederationError::Matrix(error).to_string(),
                )),
                Err(e @ FederationError::BadResponse(_)) => {
                    Err(SendFailure::BadResponse(e.to_string()))
                }
                Err(e) => Err(SendFailure::Unreachable(e.to_string())),
            }
        })
    }
}

/// Queues the `m.receipt` EDU of a public read receipt (`m.read`; private ones never leave this
/// server) for every other server in the room, in the write transaction that stores it.
pub fn enqueue_read_receipt(
    tx: &Connection,
    room_id: &RoomId,
    user_id: &UserId,
    thread: &str,
    event_id: &EventId,
    ts: MilliSecondsSinceUnixEpoch,
) -> rusqlite::Result<()> {
    let destinations: Vec<String> =
        store::servers_in_room(tx, room_id.as_str(), MembershipState::Join.as_str())?
            .into_iter()
            .filter(|server| server != user_id.server_name().as_str())
            .collect();
    if destinations.is_empty() {
        return Ok(());
    }
    let thread = ReceiptThread::try_from((!thread.is_empty()).then_some(thread))
        .unwrap_or(ReceiptThread::Unthreaded);
    let mut receipt = Receipt::new(ts);
    receipt.thread = thread;
    let data = ReceiptData::new(receipt, vec![event_id.to_owned()]);
    let map = ReceiptMap::new(BTreeMap::from([(user_id.to_owned(), data)]));
    let edu = Edu::Receipt(ReceiptContent::new(BTreeMap::from([(
        room_id.to_owned(),
        map,
    )])));
    enqueue_edu_for(tx, &destinations, &edu)
}

/// Queues the `m.presence` EDU of a local user's changed presence for every other server that
/// shares a room with the user, in the write transaction that stores it.
pub fn enqueue_presence(
    tx: &Connection,
    user_id: &UserId,
    update: PresenceUpdate,
) -> rusqlite::Result<()> {
    let destinations: Vec<String> = store::servers_sharing_a_room(tx, user_id.as_str())?
        .into_iter()
        .filter(|server| server != user_id.server_name().as_str())
        .collect();
    enqueue_presence_for(tx, &destinations, vec![update])
}

/// Queues `edu` for each of `destinations` in the write transaction `tx` (device lists,
/// to-device messages: durable like PDUs). The caller wakes the sender after the commit.
pub fn enqueue_edu_for(
    tx: &Connection,
    destinations: &[String],
    edu: &Edu,
) -> rusqlite::Result<()> {
    let value =
        serde_json::to_value(edu).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
    let edu_type = value["edu_type"].as_str().unwrap_or_default().to_owned();
    let json = value.to_string();
    for destination in destinations {
        store::enqueue_edu(tx, destination, &edu_type, &json)?;
    }
    Ok(())
}

/// Queues `m.presence` EDUs holding `updates` (50 to an EDU) for each of `destinations`.
pub fn enqueue_presence_for(
    tx: &Connection,
    destinations: &[String],
    updates: Vec<PresenceUpdate>,
) -> rusqlite::Result<()> {
    if destinations.is_empty() {
        return Ok(());
    }
    for chunk in updates.chunks(50) {
        let edu = Edu::Presence(PresenceContent::new(chunk.to_vec()));
        enqueue_edu_for(tx, destinations, &edu)?;
    }
    Ok(())
}

/// The other servers with a joined member in `room_id`.
pub fn other_servers_in_room(
    tx: &Connection,
    own: &ServerName,
    room_id: &RoomId,
) -> rusqlite::Result<Vec<String>> {
    Ok(
        store::servers_in_room(tx, room_id.as_str(), MembershipState::Join.as_str())?
            .into_iter()
            .filter(|server| server != own.as_str())
            .collect(),
    )
}

impl Sender {
    /// A local user started or stopped typing: the `m.typing` EDU for the room's other servers.
    pub async fn typing(&self, room_id: &RoomId, user_id: &UserId, typing: bool) {
        let destinations = self.servers_in_room(room_id).await;
        if destinations.is_empty() {
            return;
        }
        let edu = Edu::Typing(TypingContent::new(
            room_id.to_owned(),
            user_id.to_owned(),
            typing,
        ));
        self.enqueue_edu(destinations, edu).await;
    }
}
