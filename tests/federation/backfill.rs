//! History from before a join: the appliance's `/messages` backfills a Synapse room's earlier
//! events from Synapse (`/backfill`, `/state_ids`, `/event`), in order, without showing them in
//! /sync as new, with the room's history visibility applied; jump to date
//! (`/timestamp_to_event`) finds that history by asking Synapse.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::{
    Pair,
    accounts::{Account, encode},
    synapse::Synapse,
};

/// How many `/backfill` requests Synapse has answered (its access log).
fn backfill_requests(synapse: &Synapse) -> usize {
    std::fs::read_to_string(synapse.dir.path().join("synapse.log"))
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("GET /_matrix/federation/v1/backfill/"))
        .count()
}

/// The timeline of `room` in a /sync answer, and its `prev_batch`.
fn timeline(sync: &Value, room: &str) -> (Vec<Value>, Option<String>) {
    let timeline = &sync["rooms"]["join"][room]["timeline"];
    (
        timeline["events"].as_array().cloned().unwrap_or_default(),
        timeline["prev_batch"].as_str().map(str::to_owned),
    )
}

/// Pages `/messages` backwards from `from` (the newest event when `None`), `limit` events at a
/// time, until the end: every event, newest first.
async fn all_before(account: &Account, room: &str, from: Option<&str>, limit: u32) -> Vec<Value> {
    let mut events = Vec::new();
    let mut from = from.map(str::to_owned);
    for _ in 0..60 {
        let page = account
            .messages_backwards(room, from.as_deref(), limit)
            .await;
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        let end = page["end"].as_str().map(str::to_owned);
        events.extend(chunk.iter().cloned());
        match end {
            Some(end) if !chunk.is_empty() => from = Some(end),
            _ => return events,
        }
    }
    panic!("/messages never ended: {} events", events.len());
}

fn body(event: &Value) -> Option<&str> {
    event["content"]["body"].as_str()
}

/// A Synapse room with 60 messages and a name change among them, made before the appliance's
/// user joins (history `shared`): her `/messages` backwards from the join pages through all of
/// it in order (each page reaching the start of what the appliance holds makes it backfill from
/// Synapse), with no duplicates, down to the create event; none of it shows in her incremental
/// /sync; the room's current name is still the newest; once the create event is held, paging
/// again asks Synapse nothing.
#[tokio::test(flavor = "multi_thread")]
async fn messages_backfill_the_history_before_a_join() {
    let Pair {
        ca: _ca,
        roots: _roots,
        ours,
        synapse,
        alice,
        bob,
    } = Pair::start().await;

    let room = bob
        .create_room(json!({"preset": "public_chat", "name": "Before"}))
        .await;
    let mut sent = Vec::new();
    for i in 0..30 {
        sent.push(bob.send_text(&room, &format!("m{i}")).await);
    }
    let rename = bob
        .send_state(&room, "m.room.name", "", json!({"name": "After"}))
        .await;
    for i in 30..60 {
        sent.push(bob.send_text(&room, &format!("m{i}")).await);
    }

    let (status, reply) = alice.join(&room, &[&synapse.server_name]).await;
    assert_eq!(
        status,
        200,
        "{reply}\nthe appliance's log:\n{}",
        ours.appliance.log_text()
    );
    let first = alice.sync(None).await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    let (events, prev_batch) = timeline(&first, &room);
    assert!(
        events.iter().all(|e| body(e).is_none()),
        "no history before backfill: {events:?}"
    );
    let prev_batch = prev_batch.expect("prev_batch");
    assert_eq!(backfill_requests(&synapse), 0);

    let history = all_before(&alice, &room, Some(&prev_batch), 10).await;
    let context = || {
        format!(
            "the appliance's log:\n{}\nSynapse's log:\n{}",
            ours.appliance.log_text(),
            synapse.log_tail()
        )
    };
    let ids: Vec<&str> = history
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "duplicates in {ids:?}");
    // Every message, newest first, with the rename between m30 and m29.
    let messages: Vec<&str> = history.iter().filter_map(body).collect();
    let expected: Vec<String> = (0..60).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(messages, expected, "{}", context());
    let message_ids: Vec<&str> = history
        .iter()
        .filter(|e| body(e).is_some())
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let sent_newest_first: Vec<&str> = sent.iter().rev().map(String::as_str).collect();
    assert_eq!(message_ids, sent_newest_first);
    let position = |id: &str| ids.iter().position(|e| *e == id).unwrap();
    assert!(position(&rename) > position(&sent[30]) && position(&rename) < position(&sent[29]));
    let oldest = history.last().unwrap();
    assert_eq!(oldest["type"], "m.room.create", "{oldest}");
    let asked = backfill_requests(&synapse);
    assert!(
        asked >= 3,
        "10 events a page, 20 a request: {asked} requests"
    );

    // Nothing of it is new to /sync; the current state stayed the newest.
    let later = alice.sync(Some(&since)).await;
    let (events, _) = timeline(&later, &room);
    assert!(events.iter().all(|e| body(e).is_none()), "{events:?}");
    assert_eq!(
        alice.state(&room).await[&("m.room.name".to_owned(), String::new())]["name"],
        "After"
    );

    // Everything is held: paging through again gives the same events and asks Synapse nothing.
    let again = all_before(&alice, &room, Some(&prev_batch), 25).await;
    let again_ids: Vec<&str> = again
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(again_ids, ids);
    assert_eq!(backfill_requests(&synapse), asked, "{}", context());
}

/// With history visibility `joined`, what was said before the appliance's user joined stays
/// hidden from her: `/messages` backfills down to the create event, but shows none of the
/// earlier messages; those after her join are shown.
#[tokio::test(flavor = "multi_thread")]
async fn joined_history_stays_hidden_after_backfill() {
    let Pair {
        ca: _ca,
        roots: _roots,
        ours,
        synapse,
        alice,
        bob,
    } = Pair::start().await;

    let room = bob.create_room(json!({"preset": "public_chat"})).await;
    bob.send_state(
        &room,
        "m.room.history_visibility",
        "",
        json!({"history_visibility": "joined"}),
    )
    .await;
    let mut secrets = HashSet::new();
    for i in 0..5 {
        secrets.insert(bob.send_text(&room, &format!("secret {i}")).await);
    }
    let (status, reply) = alice.join(&room, &[&synapse.server_name]).await;
    assert_eq!(status, 200, "{reply}");
    bob.send_text(&room, "after the join").await;
    alice
        .wait_for_text(&room, &bob.user_id, "after the join")
        .await;

    let history = all_before(&alice, &room, None, 50).await;
    let context = || {
        format!(
            "{history:#?}\nthe appliance's log:\n{}",
            ours.appliance.log_text()
        )
    };
    assert!(
        history.iter().any(|e| e["type"] == "m.room.create"),
        "backfilled down to the create event: {}",
        context()
    );
    assert!(backfill_requests(&synapse) >= 1);
    assert!(
        history.iter().any(|e| body(e) == Some("after the join")),
        "{}",
        context()
    );
    for event in &history {
        let id = event["event_id"].as_str().unwrap();
        assert!(!secrets.contains(id), "shown: {event}");
        assert!(
            event["type"] != "m.room.message" || body(event) == Some("after the join"),
            "{event}"
        );
    }
}

/// `origin_server_ts` of an event, as `account` reads it.
async fn event_ts(account: &Account, room: &str, id: &str) -> u64 {
    let (status, event) = account
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            encode(room),
            encode(id)
        ))
        .await;
    assert_eq!(status, 200, "{event}");
    event["origin_server_ts"]
        .as_u64()
        .expect("origin_server_ts")
}

/// Jump to date in a Synapse room joined after its messages were sent: nothing held before the
/// join (backward), or the join held next to the gap before it (forward), makes the appliance
/// ask Synapse's `/timestamp_to_event`, fetch the event it names and answer it; the event is
/// then in the appliance's copy of the room. After the join, what the appliance holds answers.
#[tokio::test(flavor = "multi_thread")]
async fn timestamp_to_event_asks_synapse_for_history_before_the_join() {
    let Pair {
        ca: _ca,
        roots: _roots,
        ours,
        synapse,
        alice,
        bob,
    } = Pair::start().await;
    let room = bob.create_room(json!({"preset": "public_chat"})).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        // The servers stamp events to the millisecond: give each its own.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        sent.push(bob.send_text(&room, &format!("m{i}")).await);
    }
    let mut stamps = Vec::new();
    for id in &sent {
        stamps.push(event_ts(&bob, &room, id).await);
    }
    assert!(stamps[0] < stamps[1] && stamps[1] < stamps[2], "{stamps:?}");
    let (status, reply) = alice.join(&room, &[&synapse.server_name]).await;
    assert_eq!(status, 200, "{reply}");

    let lookup = |ts: u64, dir: &'static str| {
        let alice = &alice;
        let path = format!(
            "/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={ts}&dir={dir}",
            encode(&room)
        );
        async move { alice.get(&path).await }
    };
    let context = || {
        format!(
            "the appliance's log:\n{}\nSynapse's log:\n{}",
            ours.appliance.log_text(),
            synapse.log_tail()
        )
    };
    // Backward from m1: the appliance holds nothing that old.
    let (status, found) = lookup(stamps[1], "b").await;
    assert_eq!(status, 200, "{found}\n{}", context());
    assert_eq!(
        found["event_id"],
        sent[1].as_str(),
        "{found}\n{}",
        context()
    );
    assert_eq!(found["origin_server_ts"], stamps[1], "{found}");
    // Forward from just after m1: the appliance's oldest timeline event is its join, next to
    // the gap before it, and Synapse's m2 is closer.
    let (status, found) = lookup(stamps[1] + 1, "f").await;
    assert_eq!(status, 200, "{found}\n{}", context());
    assert_eq!(
        found["event_id"],
        sent[2].as_str(),
        "{found}\n{}",
        context()
    );
    // Both are in the appliance's copy of the room now, readable as any event.
    for (id, text) in [(&sent[1], "m1"), (&sent[2], "m2")] {
        let (status, event) = alice
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/event/{}",
                encode(&room),
                encode(id)
            ))
            .await;
        assert_eq!(status, 200, "{event}\n{}", context());
        assert_eq!(event["content"]["body"], text, "{event}");
    }

    // After the join, with no gap next to it, the appliance's own message answers.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let own = alice.send_text(&room, "mine").await;
    let own_ts = event_ts(&alice, &room, &own).await;
    let (status, found) = lookup(own_ts, "b").await;
    assert_eq!(status, 200, "{found}\n{}", context());
    assert_eq!(found["event_id"], own.as_str(), "{found}");
    // Before the room existed: neither server has anything.
    let (status, found) = lookup(1, "b").await;
    assert_eq!(
        (status, &found["errcode"]),
        (404, &json!("M_NOT_FOUND")),
        "{found}"
    );
}
