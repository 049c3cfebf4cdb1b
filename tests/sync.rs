//! `/sync`: initial and incremental syncs, gaps (`limited`, `prev_batch` with `/messages`),
//! long-polling, invites and leaves, `full_state`, filters (stored and inline), lazy-loaded
//! members, typing, receipts and unread counts, account data, transaction IDs; concurrent
//! senders; and rooms surviving a restart and a `kill -9`.

use crate::common;
use crate::room_api;
#[path = "sync/sliding.rs"]
mod sliding;

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use common::{Session, TestServer};
use reqwest::StatusCode;
use room_api::*;
use serde_json::{Value, json};

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().expect("next_batch").to_owned()
}

fn state_events<'a>(sync: &'a Value, room: &str) -> &'a [Value] {
    sync["rooms"]["join"][room]["state"]["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The state a client knows after a sync: `state` plus the timeline's state events.
fn known_state(sync: &Value, room: &str) -> HashMap<(String, String), Value> {
    state_events(sync, room)
        .iter()
        .chain(timeline(sync, "join", room))
        .filter(|e| e.get("state_key").is_some())
        .map(|e| {
            (
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["state_key"].as_str().unwrap().to_owned(),
                ),
                e.clone(),
            )
        })
        .collect()
}

fn inline_filter(filter: Value) -> String {
    format!("filter={}", q(&filter.to_string()))
}

#[tokio::test]
async fn initial_and_incremental_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "name": "Sync room", "topic": "testing"}),
    )
    .await;
    must_join(&server, &bob, &room).await;
    let hello = send_text(&server, &alice, &room, "hello").await;

    // Initial sync: the room with its state and timeline.
    let initial = sync(&server, &bob, "").await;
    let joined = &initial["rooms"]["join"][&room];
    assert!(joined.is_object(), "{initial}");
    let state = known_state(&initial, &room);
    for key in [
        ("m.room.create", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.member", alice.user_id.as_str()),
        ("m.room.member", bob.user_id.as_str()),
    ] {
        assert!(
            state.contains_key(&(key.0.to_owned(), key.1.to_owned())),
            "{key:?} missing from the initial sync: {initial}"
        );
    }
    let events = timeline(&initial, "join", &room);
    assert_eq!(events.last().unwrap()["event_id"], hello.as_str());
    for event in events {
        assert!(
            event.get("room_id").is_none(),
            "room_id in a sync event: {event}"
        );
        assert!(
            event.get("hashes").is_none(),
            "federation field in: {event}"
        );
        assert!(event["unsigned"]["age"].is_u64(), "{event}");
    }
    // No event shows twice, in state and timeline.
    let timeline_ids: HashSet<String> = ids(events).into_iter().collect();
    assert!(
        ids(state_events(&initial, &room))
            .iter()
            .all(|id| !timeline_ids.contains(id)),
        "{initial}"
    );
    assert_eq!(joined["summary"]["m.joined_member_count"], 2, "{initial}");
    let since = next_batch(&initial);

    // Nothing new: no rooms.
    let quiet = sync_since(&server, &bob, &since, "").await;
    assert!(
        quiet["rooms"]["join"]
            .as_object()
            .is_none_or(|j| j.is_empty()),
        "{quiet}"
    );
    let since = next_batch(&quiet);

    // Incremental: only what is new.
    let one = send_text(&server, &alice, &room, "one").await;
    let two = send_text(&server, &bob, &room, "two").await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "changed"}),
    )
    .await;
    let news = sync_since(&server, &bob, &since, "").await;
    let events = timeline(&news, "join", &room);
    assert_eq!(ids(&events[..2]), vec![one, two], "{news}");
    assert_eq!(events[2]["type"], "m.room.topic");
    assert_eq!(events.len(), 3, "{news}");
    // `limited` false may be omitted.
    assert_ne!(news["rooms"]["join"][&room]["timeline"]["limited"], true);
    assert!(state_events(&news, &room).is_empty(), "{news}");
    // The same token again gives the same answer (tokens are positions, not cursors).
    let again = sync_since(&server, &bob, &since, "").await;
    assert_eq!(ids(timeline(&again, "join", &room)), ids(events));
    let since = next_batch(&news);
    let quiet = sync_since(&server, &bob, &since, "").await;
    assert!(timeline(&quiet, "join", &room).is_empty(), "{quiet}");

    // A join while joined (a profile change) is not a new join: just the event, no state. (It
    // carries a reason: the same content again would be no event at all.)
    let (status, body) =
        member_action(&server, &bob, &room, "join", json!({"reason": "again"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rejoin = sync_since(&server, &bob, &since, "").await;
    let events = timeline(&rejoin, "join", &room);
    assert_eq!(events.len(), 1, "{rejoin}");
    assert_eq!(events[0]["type"], "m.room.member");
    assert!(state_events(&rejoin, &room).is_empty(), "{rejoin}");
    let since = next_batch(&rejoin);

    // full_state: the whole state again, with the new topic.
    let full = sync(
        &server,
        &bob,
        &format!("since={}&full_state=true&timeout=0", q(&since)),
    )
    .await;
    let state = known_state(&full, &room);
    assert!(state.len() >= 7, "{full}");
    assert_eq!(
        state[&("m.room.topic".to_owned(), String::new())]["content"]["topic"],
        "changed"
    );

    // Bad tokens.
    let (status, body) = server
        .get("/_matrix/client/v3/sync?since=nonsense", bob.token())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn gaps_are_limited_and_prev_batch_paginates() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let room = create_room(&server, &alice, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..25 {
        sent.push(send_text(&server, &alice, &room, &format!("m{i}")).await);
    }
    let filter = inline_filter(json!({"room": {"timeline": {"limit": 5}}}));
    let initial = sync(&server, &alice, &filter).await;
    let joined = &initial["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true, "{initial}");
    assert_eq!(ids(timeline(&initial, "join", &room)), sent[20..].to_vec());
    // The state before the timeline comes in `state` when the timeline does not reach back.
    let state = known_state(&initial, &room);
    assert!(
        state.contains_key(&("m.room.create".to_owned(), String::new())),
        "{initial}"
    );

    // prev_batch continues exactly where the timeline starts.
    let prev_batch = joined["timeline"]["prev_batch"]
        .as_str()
        .expect("prev_batch");
    let page = must_messages(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=10&from={}", q(prev_batch)),
    )
    .await;
    let mut expected = sent[10..20].to_vec();
    expected.reverse();
    assert_eq!(ids(page["chunk"].as_array().unwrap()), expected);

    // An incremental sync with a gap larger than the limit: limited, prev_batch fills the gap,
    // and state changed in the gap comes in `state`.
    let since = next_batch(&initial);
    let mut gap = Vec::new();
    for i in 0..4 {
        gap.push(send_text(&server, &alice, &room, &format!("gap{i}")).await);
    }
    set_state(
        &server,
        &alice,
        &room,
        "m.room.name",
        "",
        json!({"name": "Renamed in gap"}),
    )
    .await;
    for i in 0..6 {
        gap.push(send_text(&server, &alice, &room, &format!("late{i}")).await);
    }
    let news = sync(
        &server,
        &alice,
        &format!("since={}&timeout=0&{filter}", q(&since)),
    )
    .await;
    let joined = &news["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true, "{news}");
    assert_eq!(ids(timeline(&news, "join", &room)), gap[5..].to_vec());
    let renamed = state_events(&news, &room)
        .iter()
        .find(|e| e["type"] == "m.room.name")
        .unwrap_or_else(|| panic!("name change in the gap missing from state: {news}"));
    assert_eq!(renamed["content"]["name"], "Renamed in gap");
    // State that did not change is not repeated.
    assert!(
        state_events(&news, &room)
            .iter()
            .all(|e| e["type"] != "m.room.create"),
        "{news}"
    );
    let prev_batch = joined["timeline"]["prev_batch"].as_str().unwrap();
    let page = must_messages(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=100&from={}&to={}", q(prev_batch), q(&since)),
    )
    .await;
    let mut filled: Vec<String> = ids(page["chunk"].as_array().unwrap());
    filled.reverse();
    // Between the previous sync and the new timeline: gap0..gap3, the rename, late0.
    assert_eq!(filled.len(), 6, "{page}");
    assert_eq!(filled[..4].to_vec(), gap[..4].to_vec());
    assert_eq!(filled[5], gap[4]);
}

#[tokio::test]
async fn long_poll_wakes_promptly_and_times_out() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    must_join(&server, &bob, &room).await;
    let since = next_batch(&sync(&server, &bob, "").await);

    // Nothing happens: the long-poll returns after about its timeout, empty.
    let started = Instant::now();
    let idle = sync(&server, &bob, &format!("since={}&timeout=1000", q(&since))).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "returned early: {waited:?}: {idle}"
    );
    assert!(waited < Duration::from_secs(4), "returned late: {waited:?}");
    assert!(timeline(&idle, "join", &room).is_empty(), "{idle}");

    // Another user sends: the long-poll wakes well before its timeout.
    let since = next_batch(&idle);
    let poll = {
        let server = &server;
        let bob = bob.clone();
        let since = since.clone();
        async move {
            let started = Instant::now();
            let body = sync(server, &bob, &format!("since={}&timeout=20000", q(&since))).await;
            (started.elapsed(), body)
        }
    };
    let send = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        send_text(&server, &alice, &room, "wake up").await
    };
    let ((elapsed, body), event_id) = tokio::join!(poll, send);
    assert!(
        elapsed < Duration::from_secs(5),
        "woke only after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(250),
        "did not wait: {elapsed:?}"
    );
    assert_eq!(ids(timeline(&body, "join", &room)), vec![event_id]);

    // Several waiters wake on one event.
    let since = next_batch(&body);
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let server = &server;
            let bob = bob.clone();
            let since = since.clone();
            async move {
                let started = Instant::now();
                let body = sync(server, &bob, &format!("since={}&timeout=20000", q(&since))).await;
                (started.elapsed(), body)
            }
        })
        .collect();
    let send = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        send_text(&server, &alice, &room, "everyone").await
    };
    let (results, event_id) = tokio::join!(join_all(waiters), send);
    for (elapsed, body) in results {
        assert!(
            elapsed < Duration::from_secs(5),
            "woke only after {elapsed:?}"
        );
        assert_eq!(ids(timeline(&body, "join", &room)), vec![event_id.clone()]);
    }

    // An invite wakes the invitee; a change in a room not joined does not wake anyone.
    let carol = server.register("carol", "password").await;
    let carol_since = next_batch(&sync(&server, &carol, "").await);
    let other = create_room(&server, &alice, json!({})).await;
    let started = Instant::now();
    let quiet = sync(
        &server,
        &carol,
        &format!("since={}&timeout=800", q(&carol_since)),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(700), "{quiet}");
    let carol_since = next_batch(&quiet);
    let poll = async {
        let started = Instant::now();
        let body = sync(
            &server,
            &carol,
            &format!("since={}&timeout=20000", q(&carol_since)),
        )
        .await;
        (started.elapsed(), body)
    };
    let invite = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        must_invite(&server, &alice, &other, &carol.user_id).await;
    };
    let ((elapsed, body), ()) = tokio::join!(poll, invite);
    assert!(
        elapsed < Duration::from_secs(5),
        "woke only after {elapsed:?}"
    );
    assert!(body["rooms"]["invite"].get(&other).is_some(), "{body}");
}

#[tokio::test]
async fn invites_joins_and_leaves() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(
        &server,
        &alice,
        json!({"name": "Invitation", "topic": "come in", "room_version": "10"}),
    )
    .await;
    let since = next_batch(&sync(&server, &bob, "").await);
    must_invite(&server, &alice, &room, &bob.user_id).await;

    // The invite, with stripped state.
    let news = sync_since(&server, &bob, &since, "").await;
    let invite_state = news["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no invite for {room}: {news}"));
    let find = |t: &str| invite_state.iter().find(|e| e["type"] == t);
    assert_eq!(
        find("m.room.name").expect("name")["content"]["name"],
        "Invitation"
    );
    assert_eq!(
        find("m.room.join_rules").expect("join rules")["content"]["join_rule"],
        "invite"
    );
    assert!(find("m.room.create").is_some(), "{news}");
    let member = invite_state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .expect("own invite event");
    assert_eq!(member["content"]["membership"], "invite");
    assert_eq!(member["sender"], alice.user_id.as_str());
    // The inviter's member event, as Synapse (and over federation, `invite_room_state`).
    let inviter = invite_state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str())
        .expect("the inviter's member event");
    assert_eq!(inviter["content"]["membership"], "join");
    for event in invite_state {
        assert!(
            event.get("event_id").is_none() && event.get("content").is_some(),
            "{event}"
        );
    }
    assert!(news["rooms"]["join"].get(&room).is_none());
    // An initial sync lists the pending invite too.
    let initial = sync(&server, &bob, "").await;
    assert!(initial["rooms"]["invite"].get(&room).is_some(), "{initial}");
    // Not repeated in the next incremental sync.
    let since = next_batch(&news);
    let quiet = sync_since(&server, &bob, &since, "").await;
    assert!(quiet["rooms"]["invite"].get(&room).is_none(), "{quiet}");

    // Joining moves the room to `join`, with its full state.
    must_join(&server, &bob, &room).await;
    let joined = sync_since(&server, &bob, &since, "").await;
    assert!(joined["rooms"]["invite"].get(&room).is_none(), "{joined}");
    let state = known_state(&joined, &room);
    assert!(
        state.contains_key(&("m.room.create".to_owned(), String::new())),
        "{joined}"
    );
    assert_eq!(
        state[&("m.room.member".to_owned(), bob.user_id.clone())]["content"]["membership"],
        "join"
    );
    let since = next_batch(&joined);

    // Alice sees Bob's join.
    let alice_sync = sync(&server, &alice, "").await;
    assert!(
        timeline(&alice_sync, "join", &room)
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()),
        "{alice_sync}"
    );

    // Kicked: the room moves to `leave`, with the kick in its timeline.
    send_text(&server, &alice, &room, "before the kick").await;
    let (status, body) = member_action(
        &server,
        &alice,
        &room,
        "kick",
        json!({"user_id": bob.user_id, "reason": "bye"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    send_text(&server, &alice, &room, "after the kick").await;
    let left = sync_since(&server, &bob, &since, "").await;
    assert!(left["rooms"]["join"].get(&room).is_none(), "{left}");
    let events = timeline(&left, "leave", &room);
    assert_eq!(bodies(events), vec!["before the kick"], "{left}");
    // `state.events` is always there (matrix-nio requires it).
    assert!(
        left["rooms"]["leave"][&room]["state"]["events"].is_array(),
        "{left}"
    );
    let kick = events.last().expect("leave timeline");
    assert_eq!(kick["type"], "m.room.member", "{left}");
    assert_eq!(kick["content"]["membership"], "leave");
    assert_eq!(kick["content"]["reason"], "bye");
    let since = next_batch(&left);
    // Nothing more from the room once left.
    let quiet = sync_since(&server, &bob, &since, "").await;
    assert!(quiet["rooms"]["leave"].get(&room).is_none(), "{quiet}");
    assert!(quiet["rooms"]["join"].get(&room).is_none(), "{quiet}");

    // Rejecting an invite: it appears in `leave`.
    let other = create_room(&server, &alice, json!({"invite": [bob.user_id]})).await;
    let invited = sync_since(&server, &bob, &since, "").await;
    assert!(
        invited["rooms"]["invite"].get(&other).is_some(),
        "{invited}"
    );
    let since = next_batch(&invited);
    let (status, body) = leave(&server, &bob, &other).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rejected = sync_since(&server, &bob, &since, "").await;
    assert!(
        rejected["rooms"]["leave"].get(&other).is_some(),
        "{rejected}"
    );

    // A plain leave of a joined room: Alice's own leave in her `leave` section.
    let alice_since = next_batch(&alice_sync);
    let (status, body) = leave(&server, &alice, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alice_left = sync_since(&server, &alice, &alice_since, "").await;
    let events = timeline(&alice_left, "leave", &room);
    assert!(
        events.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == alice.user_id.as_str()
            && e["content"]["membership"] == "leave"),
        "{alice_left}"
    );
}

#[tokio::test]
async fn filters_stored_and_inline() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let other = create_room(&server, &alice, json!({})).await;
    must_join(&server, &bob, &room).await;
    for i in 0..6 {
        send_text(&server, &alice, &room, &format!("a{i}")).await;
        send_text(&server, &bob, &room, &format!("b{i}")).await;
        let (status, body) = try_send(&server, &alice, &room, "org.example.noise", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    send_text(&server, &alice, &other, "elsewhere").await;

    // Upload a filter and read it back.
    let definition = json!({
        "room": {
            "rooms": [room],
            "timeline": {"limit": 3, "types": ["m.room.message"], "senders": [bob.user_id]},
            "state": {"types": ["m.room.name", "m.room.create"]},
        },
    });
    let path = format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id));
    let (status, body) = server.post(&path, alice.token(), definition.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let filter_id = body["filter_id"].as_str().expect("filter_id").to_owned();
    let (status, stored) = server
        .get(&format!("{path}/{}", enc(&filter_id)), alice.token())
        .await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["room"]["timeline"]["limit"], 3, "{stored}");
    // Other users cannot read or write it.
    let (status, _) = server
        .get(&format!("{path}/{}", enc(&filter_id)), bob.token())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server.post(&path, bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    for query in [
        format!("filter={}", q(&filter_id)),
        inline_filter(definition),
    ] {
        let synced = sync(&server, &alice, &query).await;
        let rooms = synced["rooms"]["join"].as_object().expect("join");
        assert_eq!(rooms.len(), 1, "only the filtered room: {synced}");
        let events = timeline(&synced, "join", &room);
        assert_eq!(bodies(events), vec!["b3", "b4", "b5"], "{synced}");
        assert!(events.iter().all(|e| e["sender"] == bob.user_id.as_str()));
        let state_types: HashSet<&str> = state_events(&synced, &room)
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert!(
            state_types.is_subset(&HashSet::from(["m.room.name", "m.room.create"])),
            "{synced}"
        );
        assert!(state_types.contains("m.room.create"), "{synced}");
    }
    // An unknown filter ID.
    let (status, body) = server
        .get("/_matrix/client/v3/sync?filter=12345", alice.token())
        .await;
    assert!(status.is_client_error(), "{body}");

    // A timeline limit alone.
    let synced = sync(
        &server,
        &alice,
        &inline_filter(json!({"room": {"timeline": {"limit": 2}}})),
    )
    .await;
    assert_eq!(timeline(&synced, "join", &room).len(), 2, "{synced}");
    assert_eq!(synced["rooms"]["join"][&room]["timeline"]["limited"], true);
    assert_eq!(bodies(timeline(&synced, "join", &other)), vec!["elsewhere"]);

    // lazy_load_members: only the members who sent something in the timeline (and oneself).
    let carol = server.register("carol", "password").await;
    must_join(&server, &carol, &room).await;
    send_text(&server, &bob, &room, "bob last").await;
    let lazy = json!({"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": true}}});
    let synced = sync(&server, &carol, &inline_filter(lazy.clone())).await;
    let members: HashSet<&str> = state_events(&synced, &room)
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert_eq!(
        members,
        HashSet::from([bob.user_id.as_str(), carol.user_id.as_str()]),
        "{synced}"
    );
    // On a later sync, a sender whose member event the lazy client was never sent gets it in
    // `state`, though it did not change since the token; the other members stay out.
    let since = next_batch(&synced);
    send_text(&server, &alice, &room, "alice speaks").await;
    let later = sync(
        &server,
        &carol,
        &format!("since={}&{}", q(&since), inline_filter(lazy.clone())),
    )
    .await;
    assert_eq!(
        bodies(timeline(&later, "join", &room)),
        vec!["alice speaks"]
    );
    let members: HashSet<&str> = state_events(&later, &room)
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert_eq!(members, HashSet::from([alice.user_id.as_str()]), "{later}");
    // `include_redundant_members` is false by default: a member event this device was sent
    // stays out of its later syncs...
    let since = next_batch(&later);
    send_text(&server, &alice, &room, "alice once more").await;
    let since_lazy =
        |filter: &Value| format!("since={}&{}", q(&since), inline_filter(filter.clone()));
    let again = sync(&server, &carol, &since_lazy(&lazy)).await;
    assert_eq!(
        bodies(timeline(&again, "join", &room)),
        vec!["alice once more"]
    );
    assert!(state_events(&again, &room).is_empty(), "{again}");
    // ...unless the filter asks for redundant members...
    let redundant = json!({"room": {"timeline": {"limit": 1},
        "state": {"lazy_load_members": true, "include_redundant_members": true}}});
    let state_keys = |sync: &Value| -> Vec<String> {
        state_events(sync, &room)
            .iter()
            .map(|e| e["state_key"].as_str().unwrap().to_owned())
            .collect()
    };
    let again = sync(&server, &carol, &since_lazy(&redundant)).await;
    assert_eq!(state_keys(&again), [alice.user_id.as_str()], "{again}");
    // ...and another device of the same user, never sent it, gets it.
    let carol_laptop = server.login_session("carol", "password").await;
    let again = sync(&server, &carol_laptop, &since_lazy(&lazy)).await;
    assert_eq!(state_keys(&again), [alice.user_id.as_str()], "{again}");
    // Without lazy loading the client has every member already: no state on a gapless sync.
    let plain = json!({"room": {"timeline": {"limit": 1}}});
    let since = next_batch(&sync(&server, &carol, &inline_filter(plain.clone())).await);
    send_text(&server, &alice, &room, "alice again").await;
    let later = sync(
        &server,
        &carol,
        &format!("since={}&{}", q(&since), inline_filter(plain)),
    )
    .await;
    assert!(state_events(&later, &room).is_empty(), "{later}");
    // Without lazy loading, everyone.
    let synced = sync(
        &server,
        &carol,
        &inline_filter(json!({"room": {"timeline": {"limit": 1}}})),
    )
    .await;
    let members = state_events(&synced, &room)
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .count();
    assert_eq!(members, 3, "{synced}");
}

#[tokio::test]
async fn typing_receipts_and_unread_counts() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    must_join(&server, &bob, &room).await;
    let bob_since = next_batch(&sync(&server, &bob, "").await);

    // Typing shows in the other user's sync, and wakes a long-poll.
    let typing_path = room_path(&room, &format!("typing/{}", enc(&alice.user_id)));
    let poll = async {
        let started = Instant::now();
        let body = sync(
            &server,
            &bob,
            &format!("since={}&timeout=20000", q(&bob_since)),
        )
        .await;
        (started.elapsed(), body)
    };
    let typing = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, body) = server
            .put(
                &typing_path,
                alice.token(),
                json!({"typing": true, "timeout": 30000}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    };
    let ((elapsed, body), ()) = tokio::join!(poll, typing);
    assert!(
        elapsed < Duration::from_secs(5),
        "typing woke the poll after {elapsed:?}"
    );
    let ephemeral = body["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no ephemeral events: {body}"));
    let typing_event = ephemeral
        .iter()
        .find(|e| e["type"] == "m.typing")
        .expect("m.typing");
    assert_eq!(typing_event["content"]["user_ids"], json!([alice.user_id]));
    let bob_since = next_batch(&body);
    // Not repeated while nothing changes.
    let quiet = sync_since(&server, &bob, &bob_since, "").await;
    assert!(quiet["rooms"]["join"].get(&room).is_none(), "{quiet}");
    // Stopping typing: an empty list.
    let (status, _) = server
        .put(&typing_path, alice.token(), json!({"typing": false}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let stopped = sync_since(&server, &bob, &bob_since, "").await;
    let ephemeral = stopped["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap();
    let typing_event = ephemeral
        .iter()
        .find(|e| e["type"] == "m.typing")
        .expect("m.typing");
    assert_eq!(typing_event["content"]["user_ids"], json!([]));
    // Nobody types for someone else, nor in a room they are not in.
    let (status, _) = server
        .put(
            &room_path(&room, &format!("typing/{}", enc(&bob.user_id))),
            alice.token(),
            json!({"typing": true, "timeout": 1000}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let carol = server.register("carol", "password").await;
    let (status, _) = server
        .put(
            &room_path(&room, &format!("typing/{}", enc(&carol.user_id))),
            carol.token(),
            json!({"typing": true, "timeout": 1000}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A typing notification expires after its timeout.
    let (status, _) = server
        .put(
            &typing_path,
            alice.token(),
            json!({"typing": true, "timeout": 500}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let bob_since = next_batch(&sync_since(&server, &bob, &bob_since, "").await);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let expired = sync_since(&server, &bob, &bob_since, "").await;
    let ephemeral = expired["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap();
    let typing_event = ephemeral
        .iter()
        .find(|e| e["type"] == "m.typing")
        .expect("m.typing");
    assert_eq!(typing_event["content"]["user_ids"], json!([]), "{expired}");
    let bob_since = next_batch(&expired);

    // Unread counts: Alice's messages count for Bob until he sends a read receipt.
    let alice_since = next_batch(&sync(&server, &alice, "").await);
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(send_text(&server, &alice, &room, &format!("unread {i}")).await);
    }
    let counts = sync_since(&server, &bob, &bob_since, "").await;
    assert_eq!(
        counts["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 3,
        "{counts}"
    );
    // Own messages do not count for oneself.
    let own = sync(&server, &alice, "").await;
    assert_eq!(
        own["rooms"]["join"][&room]["unread_notifications"]["notification_count"],
        0
    );
    let bob_since = next_batch(&counts);
    // A receipt on the second message: one left.
    let receipt = |event_id: &str| room_path(&room, &format!("receipt/m.read/{}", enc(event_id)));
    let (status, body) = server
        .post(&receipt(&sent[1]), bob.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = sync_since(&server, &bob, &bob_since, "").await;
    assert_eq!(
        after["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 1,
        "{after}"
    );
    let (status, body) = server
        .post(&receipt(&sent[2]), bob.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = sync_since(&server, &bob, &next_batch(&after), "").await;
    assert_eq!(
        after["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 0,
        "{after}"
    );

    // Alice sees Bob's receipt in her ephemeral events.
    let alice_sync = sync_since(&server, &alice, &alice_since, "").await;
    let ephemeral = alice_sync["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{alice_sync}"));
    let receipts = ephemeral
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .expect("m.receipt");
    assert!(
        receipts["content"][&sent[2]]["m.read"][&bob.user_id]["ts"].is_u64(),
        "{receipts}"
    );
    // The read marker endpoint too, and private receipts stay private.
    let alice_since = next_batch(&alice_sync);
    let (status, body) = server
        .post(
            &room_path(&room, "read_markers"),
            bob.token(),
            json!({"m.fully_read": sent[2], "m.read.private": sent[2]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alice_sync = sync_since(&server, &alice, &alice_since, "").await;
    assert!(
        !alice_sync.to_string().contains("m.read.private"),
        "a private receipt leaked: {alice_sync}"
    );
    // A receipt for an unknown event.
    let (status, _) = server.post(&receipt("$nope"), bob.token(), json!({})).await;
    assert!(status.is_client_error());
}

#[tokio::test]
async fn account_data_in_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let room = create_room(&server, &alice, json!({})).await;
    let since = next_batch(&sync(&server, &alice, "").await);
    let user = enc(&alice.user_id);

    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/user/{user}/account_data/org.example.global"),
            alice.token(),
            json!({"theme": "dark"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/user/{user}/rooms/{}/account_data/m.tag",
                enc(&room)
            ),
            alice.token(),
            json!({"tags": {"u.work": {"order": 0.5}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let news = sync_since(&server, &alice, &since, "").await;
    let global = news["account_data"]["events"]
        .as_array()
        .expect("account_data");
    assert_eq!(global.len(), 1, "{news}");
    assert_eq!(global[0]["type"], "org.example.global");
    assert_eq!(global[0]["content"]["theme"], "dark");
    let per_room = news["rooms"]["join"][&room]["account_data"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{news}"));
    assert_eq!(per_room.len(), 1, "{news}");
    assert_eq!(per_room[0]["type"], "m.tag");
    assert_eq!(per_room[0]["content"]["tags"]["u.work"]["order"], 0.5);

    // Initial sync has all of it; an incremental sync without changes has none.
    let initial = sync(&server, &alice, "").await;
    assert!(
        initial["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "org.example.global"),
        "{initial}"
    );
    assert!(
        initial["rooms"]["join"][&room]["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.tag"),
        "{initial}"
    );
    let quiet = sync_since(&server, &alice, &next_batch(&news), "").await;
    assert!(
        quiet["account_data"]["events"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{quiet}"
    );
    // Overwriting shows the new content once.
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/user/{user}/account_data/org.example.global"),
            alice.token(),
            json!({"theme": "light"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let changed = sync_since(&server, &alice, &next_batch(&news), "").await;
    assert_eq!(
        changed["account_data"]["events"][0]["content"]["theme"],
        "light"
    );
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/user/{user}/account_data/org.example.global"),
            alice.token(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["theme"], "light");

    // Filters' `account_data` (global) and `room.account_data`, inline and by ID.
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/user/{user}/account_data/org.example.other"),
            alice.token(),
            json!({"n": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .put(
            &format!(
                "/_matrix/client/v3/user/{user}/rooms/{}/account_data/org.example.pinned",
                enc(&room)
            ),
            alice.token(),
            json!({"pinned": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let data_filter = json!({
        "account_data": {"types": ["org.example.*"], "not_types": ["org.example.other"]},
        "room": {"account_data": {"not_types": ["m.tag"]}},
    });
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/user/{user}/filter"),
            alice.token(),
            data_filter.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let filter_id = body["filter_id"].as_str().unwrap().to_owned();
    let types = |events: &Value| -> Vec<String> {
        let mut types: Vec<String> = events
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect();
        types.sort();
        types
    };
    for query in [inline_filter(data_filter), format!("filter={filter_id}")] {
        let filtered = sync(&server, &alice, &query).await;
        // No push rules either: `m.push_rules` is not of the asked types.
        assert_eq!(
            types(&filtered["account_data"]["events"]),
            ["org.example.global"],
            "{filtered}"
        );
        assert_eq!(
            types(&filtered["rooms"]["join"][&room]["account_data"]["events"]),
            ["org.example.pinned"],
            "{filtered}"
        );
    }
    let unfiltered = sync(&server, &alice, "").await;
    assert_eq!(
        types(&unfiltered["account_data"]["events"]),
        ["m.push_rules", "org.example.global", "org.example.other"],
        "{unfiltered}"
    );
    assert_eq!(
        types(&unfiltered["rooms"]["join"][&room]["account_data"]["events"]),
        ["m.tag", "org.example.pinned"],
        "{unfiltered}"
    );

    // `timeline.limit: 0`: no events, `limited`, and the room's state in `state`.
    let zero = inline_filter(json!({"room": {"timeline": {"limit": 0}}}));
    let first = sync(&server, &alice, &zero).await;
    let joined = &first["rooms"]["join"][&room];
    assert_eq!(timeline(&first, "join", &room).len(), 0, "{first}");
    assert_eq!(joined["timeline"]["limited"], true, "{first}");
    assert!(joined["timeline"]["prev_batch"].is_string(), "{first}");
    let state = known_state(&first, &room);
    assert!(state.contains_key(&("m.room.create".to_owned(), String::new())));
    assert!(state.contains_key(&("m.room.member".to_owned(), alice.user_id.clone())));
    send_text(&server, &alice, &room, "unseen").await;
    let later = sync_since(&server, &alice, &next_batch(&first), &format!("&{zero}")).await;
    assert_eq!(timeline(&later, "join", &room).len(), 0, "{later}");
    assert_eq!(later["rooms"]["join"][&room]["timeline"]["limited"], true);
    // `limited` is there when false too.
    let since = next_batch(&later);
    send_text(&server, &alice, &room, "seen").await;
    let plain = sync_since(&server, &alice, &since, "").await;
    assert_eq!(bodies(timeline(&plain, "join", &room)), ["seen"], "{plain}");
    assert_eq!(
        plain["rooms"]["join"][&room]["timeline"]["limited"], false,
        "{plain}"
    );
    // Sections without rooms stay out rather than `null` (clients such as matrix-nio refuse it).
    for section in ["leave", "invite", "knock"] {
        assert!(
            plain["rooms"].get(section).is_none_or(Value::is_object),
            "{plain}"
        );
    }
}

fn member_keys(events: &[Value]) -> HashSet<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap().to_owned())
        .collect()
}

/// A room joined and left within one batch (under `leave`, with its state); a gappy sync's state
/// (the gap's changes, lazy members who came and went, summary counts); state hidden by history
/// visibility after leaving, and the current state on rejoining; an ignored user's typing and
/// receipts.
#[tokio::test]
async fn joins_leaves_gaps_and_visibility() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let carol = server.register("carol", "password").await;
    let dave = server.register("dave", "password").await;
    let eve = server.register("eve", "password").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "name": "before"}),
    )
    .await;
    must_join(&server, &carol, &room).await;

    // Bob joins and leaves within one batch: the room is under `leave` with its state.
    let bob_since = next_batch(&sync(&server, &bob, "").await);
    must_join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "while bob is here").await;
    let (status, body) = leave(&server, &bob, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let left = sync_since(&server, &bob, &bob_since, "").await;
    assert!(left["rooms"]["join"].get(&room).is_none(), "{left}");
    let left_room = &left["rooms"]["leave"][&room];
    let left_timeline = timeline(&left, "leave", &room);
    assert_eq!(
        bodies(left_timeline),
        ["while bob is here"],
        "the timeline from the join: {left}"
    );
    let last = left_timeline.last().unwrap();
    assert_eq!(last["type"], "m.room.member", "{left}");
    assert_eq!(last["content"]["membership"], "leave", "{left}");
    assert_eq!(left_room["timeline"]["limited"], false, "{left}");
    let left_state = left_room["state"]["events"].as_array().expect("state");
    assert!(
        find_state(left_state, "m.room.create", "").is_some(),
        "{left}"
    );
    assert_eq!(
        find_state(left_state, "m.room.name", "").unwrap()["content"]["name"],
        "before"
    );
    assert!(
        find_state(left_state, "m.room.member", &alice.user_id).is_some(),
        "{left}"
    );

    // A gap: the name changes, Dave joins, speaks and leaves, Eve joins, Alice talks.
    let initial = sync(&server, &carol, "").await;
    let summary = &initial["rooms"]["join"][&room]["summary"];
    assert_eq!(summary["m.joined_member_count"], 2, "{initial}");
    assert_eq!(summary["m.invited_member_count"], 0, "{initial}");
    assert_eq!(summary["m.heroes"], json!([alice.user_id]), "{initial}");
    let carol_since = next_batch(&initial);
    set_state(
        &server,
        &alice,
        &room,
        "m.room.name",
        "",
        json!({"name": "after"}),
    )
    .await;
    must_join(&server, &dave, &room).await;
    must_join(&server, &eve, &room).await;
    send_text(&server, &alice, &room, "m1").await;
    send_text(&server, &dave, &room, "dave here").await;
    let (status, body) = leave(&server, &dave, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    send_text(&server, &alice, &room, "m2").await;
    let limit3 = json!({"room": {"timeline": {"limit": 3}}});
    let gappy = sync_since(
        &server,
        &carol,
        &carol_since,
        &format!("&{}", inline_filter(limit3)),
    )
    .await;
    let joined = &gappy["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true, "{gappy}");
    let events = timeline(&gappy, "join", &room);
    assert_eq!(bodies(events), ["dave here", "m2"], "{gappy}");
    let state = state_events(&gappy, &room);
    assert_eq!(
        find_state(state, "m.room.name", "").unwrap()["content"]["name"],
        "after",
        "{gappy}"
    );
    assert_eq!(
        member_keys(state),
        HashSet::from([dave.user_id.clone(), eve.user_id.clone()]),
        "the members who changed in the gap: {gappy}"
    );
    assert_eq!(
        find_state(state, "m.room.member", &dave.user_id).unwrap()["content"]["membership"],
        "join",
        "state at the timeline's start: {gappy}"
    );
    let summary = &joined["summary"];
    assert_eq!(summary["m.joined_member_count"], 3, "{gappy}");
    assert_eq!(summary["m.invited_member_count"], 0, "{gappy}");
    // Lazy-loaded members: of those who came and went, the timeline's senders only.
    let lazy = json!({"room": {"timeline": {"limit": 3}, "state": {"lazy_load_members": true}}});
    let gappy = sync_since(
        &server,
        &carol,
        &carol_since,
        &format!("&{}", inline_filter(lazy)),
    )
    .await;
    let state = state_events(&gappy, &room);
    assert!(find_state(state, "m.room.name", "").is_some(), "{gappy}");
    let members = member_keys(state);
    assert!(members.contains(&dave.user_id), "{gappy}");
    assert!(!members.contains(&eve.user_id), "{gappy}");

    // Carol ignores Eve: Eve's typing and receipts are not delivered to her; Alice's are.
    let since = next_batch(&gappy);
    let (status, _) = server
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.ignored_user_list",
                enc(&carol.user_id)
            ),
            carol.token(),
            json!({"ignored_users": {eve.user_id.clone(): {}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let since = next_batch(&sync_since(&server, &carol, &since, "").await);
    let last_id = send_text(&server, &alice, &room, "read me").await;
    for who in [&alice, &eve] {
        let (status, body) = server
            .put(
                &room_path(&room, &format!("typing/{}", enc(&who.user_id))),
                who.token(),
                json!({"typing": true, "timeout": 30000}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = server
            .post(
                &room_path(&room, &format!("receipt/m.read/{}", enc(&last_id))),
                who.token(),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let news = sync_since(&server, &carol, &since, "").await;
    let ephemeral = news["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{news}"));
    let typing = ephemeral.iter().find(|e| e["type"] == "m.typing").unwrap();
    assert_eq!(
        typing["content"]["user_ids"],
        json!([alice.user_id]),
        "{news}"
    );
    let receipt = ephemeral.iter().find(|e| e["type"] == "m.receipt").unwrap();
    let readers = receipt["content"][&last_id]["m.read"].as_object().unwrap();
    assert!(readers.contains_key(&alice.user_id), "{news}");
    assert!(!readers.contains_key(&eve.user_id), "{news}");

    // History visibility `joined`: what changes after Carol leaves stays hidden from her; on
    // rejoining she gets the current state.
    set_state(
        &server,
        &alice,
        &room,
        "m.room.history_visibility",
        "",
        json!({"history_visibility": "joined"}),
    )
    .await;
    let since = next_batch(&sync_since(&server, &carol, &next_batch(&news), "").await);
    let (status, body) = leave(&server, &carol, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "secret"}),
    )
    .await;
    send_text(&server, &alice, &room, "secret message").await;
    let after_leave = sync_since(&server, &carol, &since, "").await;
    let text = after_leave.to_string();
    assert!(!text.contains("secret"), "{after_leave}");
    let left = timeline(&after_leave, "leave", &room);
    assert_eq!(left.last().unwrap()["content"]["membership"], "leave");
    let since = next_batch(&after_leave);
    set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "more secret"}),
    )
    .await;
    let quiet = sync_since(&server, &carol, &since, "").await;
    assert!(!quiet.to_string().contains("secret"), "{quiet}");
    must_join(&server, &carol, &room).await;
    let back = sync_since(&server, &carol, &next_batch(&quiet), "").await;
    let state = known_state(&back, &room);
    assert_eq!(
        state[&("m.room.topic".to_owned(), String::new())]["content"]["topic"],
        "more secret",
        "{back}"
    );
    assert!(
        !bodies(timeline(&back, "join", &room)).contains(&"secret message".to_owned()),
        "{back}"
    );
}

/// Eight senders with 25 messages each into one room: every acknowledged event exactly once, in
/// the live sync stream and in /messages, in the same order, without gaps.
#[tokio::test]
async fn concurrent_senders() {
    const SENDERS: usize = 8;
    const EACH: usize = 25;
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let sender = server.register(&format!("sender{i}"), "password").await;
        must_join(&server, &sender, &room).await;
        senders.push(sender);
    }
    let mut since = next_batch(&sync(&server, &alice, "").await);

    let send_all = async {
        let tasks: Vec<_> = senders
            .iter()
            .enumerate()
            .map(|(i, sender)| {
                let server = &server;
                let room = &room;
                async move {
                    let mut acked = Vec::new();
                    for n in 0..EACH {
                        acked.push(send_text(server, sender, room, &format!("s{i} n{n}")).await);
                    }
                    acked
                }
            })
            .collect();
        join_all(tasks).await
    };
    // Alice long-polls while they send, with a small timeline limit so that gaps are likely, and
    // fills any gap through /messages (prev_batch → previous since).
    let receive = async {
        let mut received: Vec<String> = Vec::new();
        let filter = inline_filter(json!({"room": {"timeline": {"limit": 10}}}));
        let deadline = Instant::now() + Duration::from_secs(60);
        while received.len() < SENDERS * EACH && Instant::now() < deadline {
            let body = sync(
                &server,
                &alice,
                &format!("since={}&timeout=5000&{filter}", q(&since)),
            )
            .await;
            let joined = &body["rooms"]["join"][&room];
            let events = timeline(&body, "join", &room);
            let mut batch = Vec::new();
            if joined["timeline"]["limited"] == true {
                let prev = joined["timeline"]["prev_batch"].as_str().unwrap();
                let page = must_messages(
                    &server,
                    &alice,
                    &room,
                    &format!("dir=b&limit=1000&from={}&to={}", q(prev), q(&since)),
                )
                .await;
                let mut gap = ids(page["chunk"].as_array().unwrap());
                gap.reverse();
                batch.extend(gap);
            }
            batch.extend(ids(events));
            received.extend(batch);
            since = next_batch(&body);
        }
        received
    };
    let (acked, received) = tokio::join!(send_all, receive);

    let all_acked: Vec<&String> = acked.iter().flatten().collect();
    assert_eq!(all_acked.len(), SENDERS * EACH);
    let unique: HashSet<&String> = all_acked.iter().copied().collect();
    assert_eq!(
        unique.len(),
        SENDERS * EACH,
        "duplicate event IDs acknowledged"
    );
    // Exactly once in the sync stream.
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for id in &received {
        *counts.entry(id).or_default() += 1;
    }
    for id in &all_acked {
        assert_eq!(
            counts.get(id),
            Some(&1),
            "{id} seen {:?} times in sync",
            counts.get(id)
        );
    }
    assert_eq!(
        received.len(),
        SENDERS * EACH,
        "unexpected extra events in sync"
    );
    // Each sender's messages in the order they were sent.
    let position: HashMap<&String, usize> =
        received.iter().enumerate().map(|(i, id)| (id, i)).collect();
    for sender_acks in &acked {
        let positions: Vec<usize> = sender_acks.iter().map(|id| position[id]).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "out of order: {positions:?}"
        );
    }
    // /messages: the same events, once each, in the same order.
    let history = all_messages(&server, &alice, &room, 37).await;
    let history_ids: Vec<String> = history
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(history_ids, received);
    // And the initial sync agrees on the newest events.
    let initial = sync(
        &server,
        &alice,
        &inline_filter(json!({"room": {"timeline": {"limit": 20}}})),
    )
    .await;
    assert_eq!(
        ids(timeline(&initial, "join", &room)),
        received[received.len() - 20..].to_vec()
    );
}

async fn snapshot(server: &TestServer, who: &Session, room: &str) -> (Vec<String>, Vec<Value>) {
    let history = all_messages(server, who, room, 50).await;
    let mut state = full_state(server, who, room).await;
    for event in &mut state {
        event["unsigned"].as_object_mut().map(|u| u.remove("age"));
    }
    state.sort_by_key(|e| e["event_id"].as_str().unwrap().to_owned());
    (ids(&history), state)
}

#[tokio::test]
async fn rooms_survive_restart_and_kill9() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "name": "Durable", "room_alias_name": "durable"}),
    )
    .await;
    must_join(&server, &bob, &room).await;
    let mut sent = Vec::new();
    for i in 0..10 {
        sent.push(send_text(&server, &alice, &room, &format!("before restart {i}")).await);
    }
    let before = snapshot(&server, &alice, &room).await;
    // Typing moves the typing part of the token along.
    let typing_path = room_path(&room, &format!("typing/{}", enc(&alice.user_id)));
    for typing in [true, false, true, false] {
        let (status, _) = server
            .put(
                &typing_path,
                alice.token(),
                json!({"typing": typing, "timeout": 30000}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let since = next_batch(&sync(&server, &bob, "").await);

    // Clean restart.
    assert!(server.stop(), "clean shutdown");
    server.relaunch();
    assert_eq!(snapshot(&server, &alice, &room).await, before);
    // Typing after the restart reaches a client holding a token from before it.
    let (status, _) = server
        .put(
            &typing_path,
            alice.token(),
            json!({"typing": true, "timeout": 30000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let typing = sync_since(&server, &bob, &since, "").await;
    assert!(timeline(&typing, "join", &room).is_empty(), "{typing}");
    let ephemeral = typing["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("typing lost after a restart: {typing}"));
    assert_eq!(ephemeral[0]["content"]["user_ids"], json!([alice.user_id]));
    // Idempotency survives too.
    let first = send_txn(
        &server,
        &alice,
        &room,
        "m.room.message",
        "persist",
        json!({"body": "x"}),
    )
    .await;
    assert_eq!(first.0, StatusCode::OK);
    server.stop();
    server.relaunch();
    let again = send_txn(
        &server,
        &alice,
        &room,
        "m.room.message",
        "persist",
        json!({"body": "x"}),
    )
    .await;
    assert_eq!(first.1["event_id"], again.1["event_id"]);

    // kill -9 right after acknowledged writes: all of them are there.
    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push(send_text(&server, &bob, &room, &format!("before kill {i}")).await);
    }
    set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "survives"}),
    )
    .await;
    server.kill9();
    server.relaunch();
    let history = all_messages(&server, &alice, &room, 50).await;
    let history_ids = ids(&history);
    for id in sent.iter().chain(&acked) {
        assert_eq!(
            history_ids.iter().filter(|h| *h == id).count(),
            1,
            "{id} lost or doubled"
        );
    }
    let (_, topic) = get_state(&server, &alice, &room, "m.room.topic", "").await;
    assert_eq!(topic["topic"], "survives");
    // The old token still works and the new events come through it.
    let news = sync(
        &server,
        &bob,
        &format!(
            "since={}&timeout=0&{}",
            q(&since),
            inline_filter(json!({"room": {"timeline": {"limit": 100}}}))
        ),
    )
    .await;
    let new_ids = ids(timeline(&news, "join", &room));
    for id in &acked {
        assert!(new_ids.contains(id), "{id} missing from sync after kill -9");
    }
    // Sending, joining by alias and creating rooms keep working.
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc("#durable:test.local")),
            bob.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    send_text(&server, &alice, &room, "after kill").await;
    let fresh = create_room(&server, &bob, json!({"name": "New"})).await;
    send_text(&server, &bob, &fresh, "new room after kill").await;
    // Sync after the relaunch sees new events since the old token, in order.
    let later = sync_since(&server, &bob, &next_batch(&news), "").await;
    assert_eq!(
        bodies(timeline(&later, "join", &room)),
        vec!["after kill"],
        "{later}"
    );
}
