//! Outages between the appliance and a real Synapse: a cut link during which both sides change
//! one room (a fork), Synapse down and back, the appliance killed with events queued, and a gap
//! larger than one `/get_missing_events` answer.
//!
//! Each server is named `localhost:<port of a Link>`: a TCP proxy written here that forwards to
//! the server's listener and can be cut (open connections closed, new ones closed at once), so
//! that each server's requests to the other fail while the test still reaches both client APIs
//! directly. Both servers retry after a second or two (their `federation:` backoff keys), and
//! each ends its backoff for the other when a signed request comes from it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU16, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

use super::{
    FederatingAppliance,
    accounts::{Account, FEDERATION_DELAY},
    support::TestCa,
    synapse::{OPEN_REGISTRATION as SYNAPSE_OPEN_REGISTRATION, Synapse},
};

/// The appliance retries a failing destination after 1 s, then every 2 s.
const APPLIANCE_BACKOFF: &str = "federation:
  destination_min_retry_interval: 1s
  destination_retry_multiplier: 1
  destination_max_retry_interval: 2s
";

/// Synapse's keys (1.163, `synapse/config/federation.py`): the same backoff, and one quick retry
/// within a request instead of ten over minutes.
const SYNAPSE_BACKOFF: &str = "federation:
  destination_min_retry_interval: 1s
  destination_retry_multiplier: 1
  destination_max_retry_interval: 2s
  max_long_retries: 1
  max_long_retry_delay: 1s
  max_short_retries: 1
  max_short_retry_delay: 1s
";

/// Synapse backing off for two hours after one failure. While a server is backed off for more
/// than an hour Synapse queues no new event for it, only records that it has some
/// (`federation/sender/__init__.py`, `filter_destinations_by_retry_limiter`): once the server is
/// up again (a request from it ends the backoff) Synapse sends the events of the transaction
/// that failed, and the ones after them only as the ancestors of its next event (Synapse 1.163
/// did not send them by itself: its queue is not in catch-up mode after a failed transaction).
/// That makes the gap the gap test needs. With a shorter backoff Synapse queues them all and
/// sends them later.
const SYNAPSE_CATCH_UP: &str = "federation:
  destination_min_retry_interval: 2h
  max_long_retries: 1
  max_long_retry_delay: 1s
  max_short_retries: 1
  max_short_retry_delay: 1s
";

/// A TCP proxy on 127.0.0.1 to one server's listener, which can be cut.
struct Link {
    port: u16,
    target: Arc<AtomicU16>,
    cut: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Link {
    /// Listens at once (its port names a server before that server starts); forwards once
    /// `forward_to` names the target, closing connections until then.
    async fn open() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(AtomicU16::new(0));
        let (cut, cut_rx) = watch::channel(false);
        let task = tokio::spawn(forward(listener, target.clone(), cut_rx));
        Self {
            port,
            target,
            cut,
            task,
        }
    }

    fn forward_to(&self, port: u16) {
        self.target.store(port, Ordering::SeqCst);
    }

    /// Closes every open connection; new ones are closed as soon as they are accepted.
    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn forward(listener: TcpListener, target: Arc<AtomicU16>, cut: watch::Receiver<bool>) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let port = target.load(Ordering::SeqCst);
        if *cut.borrow() || port == 0 {
            continue; // dropped: the connection is closed
        }
        let mut cut = cut.clone();
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = cut.wait_for(|cut| *cut) => {}
            }
        });
    }
}

/// The appliance and Synapse, each reached by the other through its own `Link`.
struct Pair {
    ca: TestCa,
    ours: FederatingAppliance,
    synapse: Synapse,
    to_ours: Link,
    to_synapse: Link,
}

impl Pair {
    /// `synapse_backoff`: `SYNAPSE_BACKOFF` or `SYNAPSE_CATCH_UP`.
    async fn start(synapse_backoff: &str) -> Self {
        let ca = TestCa::new("federation outages test CA");
        let to_ours = Link::open().await;
        let to_synapse = Link::open().await;
        let ours = FederatingAppliance::start_named(
            &ca,
            &format!("{}{APPLIANCE_BACKOFF}", FederatingAppliance::TEST_YAML),
            Some(to_ours.port),
        );
        to_ours.forward_to(ours.port);
        let synapse = Synapse::start_named(
            &ca,
            &format!("{SYNAPSE_OPEN_REGISTRATION}{synapse_backoff}"),
            Some(to_synapse.port),
        )
        .await;
        to_synapse.forward_to(synapse.port);
        Self {
            ca,
            ours,
            synapse,
            to_ours,
            to_synapse,
        }
    }

    fn cut(&self) {
        self.to_ours.cut();
        self.to_synapse.cut();
    }

    fn restore(&self) {
        self.to_ours.restore();
        self.to_synapse.restore();
    }

    /// Both servers' logs, for failure messages.
    fn logs(&self) -> String {
        format!(
            "the appliance's log:\n{}\nSynapse's log:\n{}",
            self.ours.appliance.log_text(),
            self.synapse.log_tail()
        )
    }

    /// alice of the appliance creates a public room, bob of Synapse joins it and gets power 50
    /// (enough to change the name, not the power levels): (alice, bob, room ID).
    async fn shared_room(&self) -> (Account, Account, String) {
        let roots = self.ca.roots();
        let alice = Account::register(self.ours.port, &roots, "alice").await;
        let bob = Account::register(self.synapse.port, &roots, "bob").await;
        let room = alice
            .create_room(json!({"preset": "public_chat", "name": "Before"}))
            .await;
        let (status, reply) = bob.join(&room, &[&self.ours.server_name]).await;
        assert_eq!(status, 200, "{reply}\n{}", self.logs());
        alice
            .wait_for_event(&room, "bob's join", |e| {
                e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()
            })
            .await;
        let mut levels = power_levels(&alice, &room).await;
        levels["users"][&bob.user_id] = json!(50);
        let levels_id = alice
            .send_state(&room, "m.room.power_levels", "", levels)
            .await;
        bob.wait_for_event(&room, "bob's power", |e| {
            e["event_id"] == levels_id.as_str()
        })
        .await;
        (alice, bob, room)
    }

    /// `appliance admin federation status`.
    fn federation_status(&self) -> String {
        let output = self.ours.appliance.cli(&["admin", "federation", "status"]);
        let text = super::support::text(&output);
        assert!(output.status.success(), "{text}");
        text
    }

    /// Waits until `admin federation status` says the appliance backs off from Synapse.
    async fn wait_for_backoff(&self) -> String {
        let deadline = Instant::now() + FEDERATION_DELAY;
        loop {
            let status = self.federation_status();
            if status.contains(&self.synapse.server_name) && status.contains("backing off until") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the appliance never backed off from Synapse: {status}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until both servers answer the same current state for `room` (a set of `(type,
    /// state_key, event_id)`), and returns it.
    async fn wait_for_same_state(&self, alice: &Account, bob: &Account, room: &str) {
        let deadline = Instant::now() + FEDERATION_DELAY;
        loop {
            let (ours, theirs) = (
                alice.state_event_ids(room).await,
                bob.state_event_ids(room).await,
            );
            if ours == theirs {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the servers disagree on the state of {room}:\nonly the appliance: {:?}\n\
                 only Synapse: {:?}\n{}",
                ours.difference(&theirs).collect::<Vec<_>>(),
                theirs.difference(&ours).collect::<Vec<_>>(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn power_levels(account: &Account, room: &str) -> Value {
    account.state(room).await[&("m.room.power_levels".to_owned(), String::new())].clone()
}

/// Sends `texts` in order.
async fn send_all(account: &Account, room: &str, texts: &[String]) {
    for text in texts {
        account.send_text(room, text).await;
    }
}

fn texts(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix} {i}")).collect()
}

/// Waits until `account` sees the messages of `sender` end with `texts` (all of them, in this
/// order, oldest first, read with `/messages` page by page).
async fn wait_for_texts_in_order(
    pair: &Pair,
    account: &Account,
    room: &str,
    sender: &str,
    texts: &[String],
) {
    let deadline = Instant::now() + FEDERATION_DELAY;
    loop {
        let events = account.all_events(room, 1000).await;
        let bodies = Account::bodies_from(&events, sender);
        if bodies.ends_with(texts) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never saw {sender}'s {texts:?} in order; it has {bodies:?}\n{}",
            account.user_id,
            pair.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A fork: with the link cut, both servers change the same room (the topic and the power levels
/// on the appliance, the name on Synapse) and send messages; once it is back, both see every
/// message and end with the same resolved state, which holds every change.
#[tokio::test(flavor = "multi_thread")]
async fn a_fork_during_a_cut_link_merges_to_the_same_state_on_both_sides() {
    let pair = Pair::start(SYNAPSE_BACKOFF).await;
    let (alice, bob, room) = pair.shared_room().await;

    pair.cut();
    let topic = alice
        .send_state(&room, "m.room.topic", "", json!({"topic": "set while cut"}))
        .await;
    let ours = texts("alice while cut", 3);
    send_all(&alice, &room, &ours).await;
    let mut levels = power_levels(&alice, &room).await;
    let carol = format!("@carol:{}", pair.ours.server_name);
    levels["users"][&carol] = json!(10);
    let levels_id = alice
        .send_state(&room, "m.room.power_levels", "", levels)
        .await;
    let name = bob
        .send_state(&room, "m.room.name", "", json!({"name": "Named while cut"}))
        .await;
    let theirs = texts("bob while cut", 3);
    send_all(&bob, &room, &theirs).await;
    pair.wait_for_backoff().await;

    pair.restore();
    // One more each once the link is back: it names both branches as its parents.
    alice.send_text(&room, "alice after").await;
    bob.send_text(&room, "bob after").await;
    let ours = [ours, vec!["alice after".to_owned()]].concat();
    let theirs = [theirs, vec!["bob after".to_owned()]].concat();
    for account in [&alice, &bob] {
        wait_for_texts_in_order(&pair, account, &room, &alice.user_id, &ours).await;
        wait_for_texts_in_order(&pair, account, &room, &bob.user_id, &theirs).await;
    }
    pair.wait_for_same_state(&alice, &bob, &room).await;
    let state = alice.state_event_ids(&room).await;
    for (kind, id) in [
        ("m.room.topic", &topic),
        ("m.room.name", &name),
        ("m.room.power_levels", &levels_id),
    ] {
        assert!(
            state.contains(&[kind.to_owned(), String::new(), id.clone()]),
            "{kind} {id} is not in the merged state {state:?}\n{}",
            pair.logs()
        );
    }
}

/// Synapse is down (killed) while the appliance's user sends: the appliance backs off with the
/// events queued (`admin federation status`); once Synapse is started again they all arrive, in
/// order.
#[tokio::test(flavor = "multi_thread")]
async fn events_sent_while_synapse_is_down_arrive_in_order_once_it_is_back() {
    let mut pair = Pair::start(SYNAPSE_BACKOFF).await;
    let (alice, bob, room) = pair.shared_room().await;

    pair.synapse.stop();
    let sent = texts("while synapse is down", 8);
    send_all(&alice, &room, &sent).await;
    let status = pair.wait_for_backoff().await;
    assert!(!status.contains("queued: 0 PDUs"), "{status}");

    pair.synapse.restart(&pair.ca).await;
    wait_for_texts_in_order(&pair, &bob, &room, &alice.user_id, &sent).await;
    let deadline = Instant::now() + FEDERATION_DELAY;
    while !pair.federation_status().contains("queued: 0 PDUs") {
        assert!(Instant::now() < deadline, "{}", pair.federation_status());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The appliance is killed (`kill -9`) with events queued for Synapse behind a cut link, then
/// started again; once the link is back the events arrive on Synapse, in order.
#[tokio::test(flavor = "multi_thread")]
async fn events_queued_across_an_appliance_crash_arrive_on_synapse() {
    let mut pair = Pair::start(SYNAPSE_BACKOFF).await;
    let (alice, bob, room) = pair.shared_room().await;

    pair.cut();
    let sent = texts("before the crash", 5);
    send_all(&alice, &room, &sent).await;
    pair.wait_for_backoff().await;
    pair.ours.appliance.kill9_and_restart();
    let status = pair.federation_status();
    assert!(status.contains(&pair.synapse.server_name), "{status}");
    assert!(!status.contains("queued: 0 PDUs"), "{status}");

    pair.restore();
    wait_for_texts_in_order(&pair, &bob, &room, &alice.user_id, &sent).await;
}

/// With the link cut, Synapse's user sends more than one `/get_missing_events` answer holds
/// (Synapse answers at most 20). Once the link is back, Synapse's next event names only the
/// newest of them as its parent, and the appliance fetches the rest: its user sees every message
/// and the name changed at the start of the gap. Then a gap larger than the appliance fetches
/// that way (50 events): the state before the oldest fetched event comes from Synapse's
/// `/state_ids`, and the topic changed at the start of that gap, which is in no fetched event,
/// is the room's topic on both sides.
#[tokio::test(flavor = "multi_thread")]
async fn a_gap_larger_than_get_missing_events_is_filled() {
    let pair = Pair::start(SYNAPSE_CATCH_UP).await;
    let (alice, bob, room) = pair.shared_room().await;

    pair.cut();
    let name = bob
        .send_state(
            &room,
            "m.room.name",
            "",
            json!({"name": "Named in the gap"}),
        )
        .await;
    // Its first failure: from now on Synapse queues nothing for the appliance.
    wait_for_synapse_log(&pair, "Failed to send transaction", 1).await;
    let gap = texts("in the gap", 25);
    send_all(&bob, &room, &gap).await;
    let ups = synapse_log_count(&pair, MARKED_UP);
    pair.restore();
    // A request from the appliance tells Synapse the appliance is back (its backoff ends); bob
    // sends once it has, or his event too would only be recorded for a catch-up.
    alice.send_text(&room, "alice after the gap").await;
    wait_for_synapse_log(&pair, MARKED_UP, ups + 1).await;
    bob.send_text(&room, "bob after the gap").await;
    let expected = [gap.clone(), vec!["bob after the gap".to_owned()]].concat();
    wait_for_texts_in_order(&pair, &alice, &room, &bob.user_id, &expected).await;
    // They came by the gap path.
    assert!(
        pair.ours
            .appliance
            .log_text()
            .contains("missing events fetched"),
        "{}",
        pair.logs()
    );
    let state = alice.state_event_ids(&room).await;
    assert!(
        state.contains(&["m.room.name".to_owned(), String::new(), name.clone()]),
        "{state:?}"
    );
    pair.wait_for_same_state(&alice, &bob, &room).await;

    // Larger than the appliance's 50 fetched events.
    let failures = synapse_log_count(&pair, "Failed to send transaction");
    pair.cut();
    let topic = bob
        .send_state(&room, "m.room.topic", "", json!({"topic": "far back"}))
        .await;
    wait_for_synapse_log(&pair, "Failed to send transaction", failures + 1).await;
    let far = texts("far gap", 60);
    send_all(&bob, &room, &far).await;
    let ups = synapse_log_count(&pair, MARKED_UP);
    pair.restore();
    alice.send_text(&room, "alice after the far gap").await;
    wait_for_synapse_log(&pair, MARKED_UP, ups + 1).await;
    bob.send_text(&room, "bob after the far gap").await;
    let expected = [far[10..].to_vec(), vec!["bob after the far gap".to_owned()]].concat();
    wait_for_texts_in_order(&pair, &alice, &room, &bob.user_id, &expected).await;
    assert!(
        pair.ours
            .appliance
            .log_text()
            .contains("state before the event taken from its origin"),
        "{}",
        pair.logs()
    );
    pair.wait_for_same_state(&alice, &bob, &room).await;
    let state = alice.state_event_ids(&room).await;
    assert!(
        state.contains(&["m.room.topic".to_owned(), String::new(), topic.clone()]),
        "{state:?}\n{}",
        pair.logs()
    );
    // Both sides' users can still talk.
    alice.send_text(&room, "alice at the end").await;
    bob.wait_for_text(&room, &alice.user_id, "alice at the end")
        .await;
}

/// What Synapse logs when a signed request ends its backoff for the server that sent it.
const MARKED_UP: &str = "Marking origin";

fn synapse_log_count(pair: &Pair, text: &str) -> usize {
    std::fs::read_to_string(pair.synapse.dir.path().join("synapse.log"))
        .unwrap_or_default()
        .matches(text)
        .count()
}

/// Waits until Synapse's log holds `text` at least `count` times (how Synapse says what it is
/// doing).
async fn wait_for_synapse_log(pair: &Pair, text: &str, count: usize) {
    let deadline = Instant::now() + FEDERATION_DELAY;
    while synapse_log_count(pair, text) < count {
        assert!(
            Instant::now() < deadline,
            "Synapse never logged {text:?} {count} times:\n{}",
            pair.synapse.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
