//! `/messages`: pagination in both directions with `from`/`to`/`limit`, event filters, lazy-loaded
//! members, and the history-visibility rules deciding what a reader may see.

mod delayed_events;
mod timestamp_to_event;

use crate::common;
use crate::room_api;

use common::{TestServer, assert_error};
use reqwest::StatusCode;
use room_api::*;
use serde_json::{Value, json};

fn chunk(page: &Value) -> &[Value] {
    page["chunk"].as_array().expect("chunk").as_slice()
}

#[tokio::test]
async fn paginates_both_directions() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let room = create_room(&server, &alice, json!({"name": "History"})).await;
    let mut sent = Vec::new();
    for i in 0..30 {
        sent.push(send_text(&server, &alice, &room, &format!("m{i}")).await);
    }

    // Backwards from the end, newest first.
    let page = must_messages(&server, &alice, &room, "dir=b&limit=10").await;
    let got = ids(chunk(&page));
    let mut newest: Vec<String> = sent[20..].to_vec();
    newest.reverse();
    assert_eq!(got, newest);
    assert!(page["start"].is_string(), "{page}");
    let end = page["end"]
        .as_str()
        .expect("end while more history")
        .to_owned();
    // The next page continues without gap or overlap.
    let page2 = must_messages(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=10&from={}", q(&end)),
    )
    .await;
    assert_eq!(page2["start"], end.as_str());
    let mut middle: Vec<String> = sent[10..20].to_vec();
    middle.reverse();
    assert_eq!(ids(chunk(&page2)), middle);
    // All the way back: the room's creation first, every message once, in order.
    let everything = all_messages(&server, &alice, &room, 7).await;
    assert_eq!(everything[0]["type"], "m.room.create");
    let message_ids: Vec<String> = everything
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(message_ids, sent);
    assert!(everything.iter().any(|e| e["type"] == "m.room.name"));
    // The last page has no `end`.
    let first_page = must_messages(&server, &alice, &room, "dir=b&limit=1000").await;
    assert_eq!(chunk(&first_page).len(), everything.len());
    assert!(first_page.get("end").is_none(), "{first_page}");

    // Forwards from the beginning, page by page: the same events in the same order, until a
    // page without `end`.
    let mut forward = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..100 {
        let mut query = "dir=f&limit=7".to_owned();
        if let Some(from) = &from {
            query.push_str(&format!("&from={}", q(from)));
        }
        let page = must_messages(&server, &alice, &room, &query).await;
        forward.extend(chunk(&page).iter().cloned());
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    assert_eq!(ids(&forward), ids(&everything));

    // Forwards from the beginning (no `from`).
    let start = must_messages(&server, &alice, &room, "dir=f&limit=3").await;
    assert_eq!(ids(chunk(&start)), ids(&everything[..3]));

    // `to` stops pagination, exclusive like `from`: backwards from the end to the second page's
    // end (which names m10, the last event that page returned) gives m29..m11.
    let to = page2["end"].as_str().unwrap();
    let bounded = must_messages(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=100&to={}", q(to)),
    )
    .await;
    let mut expected: Vec<String> = sent[11..].to_vec();
    expected.reverse();
    assert_eq!(ids(chunk(&bounded)), expected);
    // and forwards from the start of history to the first page's end (m20): up to m19.
    let bounded = must_messages(
        &server,
        &alice,
        &room,
        &format!("dir=f&limit=100&to={}", q(&end)),
    )
    .await;
    let forward_ids = ids(chunk(&bounded));
    assert_eq!(forward_ids.last(), sent.get(19), "{bounded}");
    assert_eq!(
        forward_ids.first().map(String::as_str),
        everything[0]["event_id"].as_str()
    );

    // A sync token works as `from` too (what prev_batch of an empty timeline is).
    let next_batch = sync(&server, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let latest = must_messages(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=2&from={}", q(&next_batch)),
    )
    .await;
    assert_eq!(
        ids(chunk(&latest)),
        vec![sent[29].clone(), sent[28].clone()]
    );

    // Bad input.
    let (status, body) = messages(&server, &alice, &room, "dir=b&from=garbage").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = messages(&server, &alice, &room, "dir=sideways").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn filters_types_and_senders() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    must_join(&server, &bob, &room).await;
    for i in 0..4 {
        send_text(&server, &alice, &room, &format!("alice {i}")).await;
        send_text(&server, &bob, &room, &format!("bob {i}")).await;
        let (status, body) =
            try_send(&server, &bob, &room, "org.example.ping", json!({"n": i})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let with_filter = |filter: Value| format!("dir=b&limit=100&filter={}", q(&filter.to_string()));

    let page = must_messages(
        &server,
        &alice,
        &room,
        &with_filter(json!({"types": ["m.room.message"]})),
    )
    .await;
    assert_eq!(chunk(&page).len(), 8, "{page}");
    assert!(chunk(&page).iter().all(|e| e["type"] == "m.room.message"));

    let page = must_messages(
        &server,
        &alice,
        &room,
        &with_filter(json!({"types": ["org.example.*"]})),
    )
    .await;
    assert_eq!(chunk(&page).len(), 4, "{page}");

    let page = must_messages(
        &server,
        &alice,
        &room,
        &with_filter(json!({"not_types": ["org.example.ping", "m.room.member", "m.room.*"]})),
    )
    .await;
    assert!(chunk(&page).is_empty(), "{page}");

    let page = must_messages(
        &server,
        &alice,
        &room,
        &with_filter(json!({"senders": [bob.user_id], "types": ["m.room.message"]})),
    )
    .await;
    assert_eq!(
        bodies(chunk(&page)),
        vec!["bob 3", "bob 2", "bob 1", "bob 0"],
        "{page}"
    );
    let page = must_messages(
        &server,
        &alice,
        &room,
        &with_filter(json!({"not_senders": [bob.user_id]})),
    )
    .await;
    assert!(
        chunk(&page)
            .iter()
            .all(|e| e["sender"] == alice.user_id.as_str()),
        "{page}"
    );

    // A filter with a limit smaller than the page still pages through everything.
    let mut from: Option<String> = None;
    let mut seen = Vec::new();
    for _ in 0..20 {
        let mut query =
            with_filter(json!({"types": ["m.room.message"], "senders": [alice.user_id]}))
                .replace("limit=100", "limit=3");
        if let Some(from) = &from {
            query.push_str(&format!("&from={}", q(from)));
        }
        let page = must_messages(&server, &alice, &room, &query).await;
        seen.extend(bodies(chunk(&page)));
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, vec!["alice 3", "alice 2", "alice 1", "alice 0"]);

    // lazy_load_members: the member events of the chunk's senders come in `state`.
    let page = must_messages(
        &server,
        &alice,
        &room,
        &format!(
            "dir=b&limit=2&filter={}",
            q(&json!({"lazy_load_members": true, "types": ["org.example.ping"]}).to_string())
        ),
    )
    .await;
    let state = page["state"]
        .as_array()
        .expect("state with lazy_load_members");
    assert_eq!(state.len(), 1, "{page}");
    assert_eq!(state[0]["type"], "m.room.member");
    assert_eq!(state[0]["state_key"], bob.user_id.as_str());

    // Non-members of a room that is not world-readable see nothing.
    let carol = server.register("carol", "password").await;
    assert_error(
        &messages(&server, &carol, &room, "dir=b").await,
        403,
        "M_FORBIDDEN",
    );
}

/// Sets up a room with the given history visibility, a message before Bob joins and one after.
async fn visibility_room(
    server: &TestServer,
    alice: &common::Session,
    bob: &common::Session,
    visibility: &str,
) -> String {
    let room = create_room(
        server,
        alice,
        json!({
            "preset": "public_chat",
            "initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": visibility}}],
        }),
    )
    .await;
    send_text(server, alice, &room, &format!("{visibility}: before")).await;
    must_invite(server, alice, &room, &bob.user_id).await;
    send_text(
        server,
        alice,
        &room,
        &format!("{visibility}: while invited"),
    )
    .await;
    must_join(server, bob, &room).await;
    send_text(server, alice, &room, &format!("{visibility}: after")).await;
    room
}

#[tokio::test]
async fn history_visibility() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let carol = server.register("carol", "password").await;

    for (visibility, expected) in [
        ("joined", vec!["after"]),
        ("invited", vec!["while invited", "after"]),
        ("shared", vec!["before", "while invited", "after"]),
        ("world_readable", vec!["before", "while invited", "after"]),
    ] {
        let room = visibility_room(&server, &alice, &bob, visibility).await;
        let expected: Vec<String> = expected
            .iter()
            .map(|e| format!("{visibility}: {e}"))
            .collect();
        let history = all_messages(&server, &bob, &room, 100).await;
        assert_eq!(bodies(&history), expected, "{visibility} via /messages");
        // The same in a first sync.
        let filter = q(&json!({"room": {"rooms": [room], "timeline": {"limit": 50}}}).to_string());
        let initial = sync(&server, &bob, &format!("filter={filter}")).await;
        assert_eq!(
            bodies(timeline(&initial, "join", &room)),
            expected,
            "{visibility} via sync"
        );
        // Alice, there from the start, sees everything.
        let all = all_messages(&server, &alice, &room, 100).await;
        assert_eq!(bodies(&all).len(), 3, "{visibility}");
        // Hidden events cannot be fetched one by one either.
        if visibility == "joined" {
            let before = &all
                .iter()
                .find(|e| e["content"]["body"] == "joined: before")
                .unwrap()["event_id"];
            let (status, body) = server
                .get(
                    &room_path(&room, &format!("event/{}", enc(before.as_str().unwrap()))),
                    bob.token(),
                )
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        }
        // Non-members can read world-readable rooms only.
        let (status, page) = messages(&server, &carol, &room, "dir=b&limit=100").await;
        if visibility == "world_readable" {
            assert_eq!(status, StatusCode::OK, "{page}");
            assert_eq!(bodies(chunk(&page)).len(), 3, "{page}");
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "{visibility}: {page}");
        }
    }

    // After leaving, a member keeps what they could see up to their leave, and nothing later.
    let room = visibility_room(&server, &alice, &bob, "shared").await;
    let (status, body) = leave(&server, &bob, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    send_text(&server, &alice, &room, "shared: after bob left").await;
    let history = all_messages(&server, &bob, &room, 100).await;
    let seen = bodies(&history);
    assert!(seen.contains(&"shared: after".to_owned()), "{seen:?}");
    assert!(
        !seen.contains(&"shared: after bob left".to_owned()),
        "{seen:?}"
    );
    // Their own leave event stays visible to them.
    assert!(
        history.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob.user_id.as_str()
            && e["content"]["membership"] == "leave"),
        "own leave event missing: {history:?}"
    );
}

/// The deprecated reads older bots use, as the spec defines them: `GET /initialSync` (rooms
/// with state and latest messages, left rooms with `archived`), `GET /rooms/{id}/initialSync`,
/// `GET /events` from the `end` token (now, and waiting for the next event) and
/// `GET /events/{eventId}`, each only for who may see the room.
#[tokio::test]
async fn deprecated_initial_sync_and_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(&server, &alice, json!({"name": "Old tools"})).await;
    let left = create_room(&server, &alice, json!({"name": "Gone"})).await;
    let first = send_text(&server, &alice, &room, "one").await;
    assert_eq!(leave(&server, &alice, &left).await.0, StatusCode::OK);
    const V3: &str = "/_matrix/client/v3";

    let (status, body) = server
        .get(&format!("{V3}/initialSync?limit=5"), alice.token())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rooms = body["rooms"].as_array().expect("rooms");
    assert_eq!(rooms.len(), 1, "the left room only with archived: {body}");
    let entry = &rooms[0];
    assert_eq!(
        (entry["room_id"].as_str(), entry["membership"].as_str()),
        (Some(&*room), Some("join"))
    );
    assert_eq!(entry["visibility"], "private");
    let messages = chunk(&entry["messages"]);
    assert!(messages.len() <= 5, "{body}");
    assert_eq!(bodies(messages), ["one"], "{body}");
    assert!(
        messages.iter().all(|e| e["room_id"] == room.as_str()),
        "{body}"
    );
    let state = entry["state"].as_array().expect("state");
    assert!(find_state(state, "m.room.name", "").is_some(), "{body}");
    let end = body["end"].as_str().expect("end").to_owned();
    let (_, archived) = server
        .get(&format!("{V3}/initialSync?archived=true"), alice.token())
        .await;
    let gone = archived["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_id"] == left.as_str());
    assert_eq!(
        gone.map(|r| &r["membership"]),
        Some(&json!("leave")),
        "{archived}"
    );

    let path = room_path(&room, "initialSync");
    let (status, body) = server.get(&path, alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["room_id"].as_str(), body["membership"].as_str()),
        (Some(&*room), Some("join"))
    );
    assert_eq!(
        bodies(chunk(&body["messages"])),
        ["one"],
        "oldest first: {body}"
    );
    // Ten events reach back to the room's creation: no token for anything earlier.
    assert_eq!(
        chunk(&body["messages"])[0]["type"],
        "m.room.create",
        "{body}"
    );
    assert!(body["messages"]["start"].is_null(), "{body}");
    assert!(body["messages"]["end"].is_string(), "{body}");
    assert!(find_state(body["state"].as_array().unwrap(), "m.room.create", "").is_some());
    assert_error(&server.get(&path, bob.token()).await, 403, "M_FORBIDDEN");

    // `/events` from `end`: what came since, then waiting for the next event.
    let second = send_text(&server, &alice, &room, "two").await;
    let events =
        |from: &str, extra: &str| format!("{V3}/events?from={}&timeout=30000{extra}", q(from));
    let (status, body) = server.get(&events(&end, ""), alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(chunk(&body)), [second], "{body}");
    assert_eq!(chunk(&body)[0]["room_id"], room.as_str());
    assert_eq!(body["start"], end.as_str());
    let next = body["end"].as_str().expect("end").to_owned();
    let waiting = {
        let (server_url, token, path) = (
            server.base_url.clone(),
            alice.access_token.clone(),
            events(&next, &format!("&room_id={}", q(&room))),
        );
        tokio::spawn(async move {
            let reply = reqwest::Client::new()
                .get(format!("{server_url}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            reply.json::<Value>().await.unwrap()
        })
    };
    let third = send_text(&server, &alice, &room, "three").await;
    let body = waiting.await.unwrap();
    assert_eq!(ids(chunk(&body)), [third], "{body}");
    let answer = server
        .get(
            &events(&next, &format!("&room_id={}", q(&room))),
            bob.token(),
        )
        .await;
    assert_error(&answer, 403, "M_FORBIDDEN");
    assert_error(
        &server.get(&events("nonsense", ""), alice.token()).await,
        400,
        "M_INVALID_PARAM",
    );

    let event_path = |id: &str| format!("{V3}/events/{}", enc(id));
    let (status, body) = server.get(&event_path(&first), alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["content"]["body"].as_str(), body["room_id"].as_str()),
        (Some("one"), Some(&*room))
    );
    assert_error(
        &server.get(&event_path(&first), bob.token()).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server.get(&event_path("$nope"), alice.token()).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server.get(&event_path(&first), None).await,
        401,
        "M_MISSING_TOKEN",
    );
}
