//! `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event` (MSC3030, Element's jump to date)
//! in a room held whole by this server: the closest event in either direction, ties and the
//! room's edges, `404 M_NOT_FOUND` past them, the spec's `400`s for bad parameters, and who may
//! ask (members, and anyone when the history is world-readable, as Synapse).

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Session, TestServer, assert_error};
use crate::room_api::*;

fn path(room: &str, query: &str) -> String {
    format!(
        "/_matrix/client/v1/rooms/{}/timestamp_to_event?{query}",
        enc(room)
    )
}

async fn lookup(server: &TestServer, who: &Session, room: &str, ts: u64, dir: &str) -> Value {
    let (status, body) = server
        .get(&path(room, &format!("ts={ts}&dir={dir}")), who.token())
        .await;
    assert_eq!(status, 200, "ts={ts} dir={dir}: {body}");
    body
}

async fn event(server: &TestServer, who: &Session, room: &str, id: &str) -> Value {
    let (status, body) = server
        .get(&room_path(room, &format!("event/{}", enc(id))), who.token())
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Sends a message and returns its ID and `origin_server_ts`. A few milliseconds pass first, so
/// that the messages of a test have timestamps of their own (the server stamps them).
async fn stamped(server: &TestServer, who: &Session, room: &str, text: &str) -> (String, u64) {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let id = send_text(server, who, room, text).await;
    let ts = event(server, who, room, &id).await["origin_server_ts"]
        .as_u64()
        .expect("origin_server_ts");
    (id, ts)
}

#[tokio::test]
async fn finds_the_closest_event_in_both_directions() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let room = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    let (a, ts_a) = stamped(&server, &alice, &room, "a").await;
    let (b, ts_b) = stamped(&server, &alice, &room, "b").await;
    let (c, ts_c) = stamped(&server, &alice, &room, "c").await;
    assert!(ts_a < ts_b && ts_b < ts_c, "{ts_a} {ts_b} {ts_c}");

    // At an event's own timestamp both directions find it.
    for dir in ["f", "b"] {
        let found = lookup(&server, &alice, &room, ts_b, dir).await;
        assert_eq!(found["event_id"], b.as_str(), "{dir}: {found}");
        assert_eq!(found["origin_server_ts"], ts_b, "{found}");
    }
    // Between events: the next one forward, the previous one backward.
    let found = lookup(&server, &alice, &room, ts_b + 1, "f").await;
    assert_eq!(found["event_id"], c.as_str(), "{found}");
    let found = lookup(&server, &alice, &room, ts_b - 1, "b").await;
    assert_eq!(found["event_id"], a.as_str(), "{found}");
    let found = lookup(&server, &alice, &room, ts_c - 1, "b").await;
    assert_eq!(found["event_id"], b.as_str(), "{found}");

    // The room's edges: forward from the beginning of time is its create event, backward from
    // far in the future its newest event.
    let first = lookup(&server, &alice, &room, 0, "f").await;
    let first = event(&server, &alice, &room, first["event_id"].as_str().unwrap()).await;
    assert_eq!(first["type"], "m.room.create", "{first}");
    let far_future = ts_c + 365 * 24 * 3600 * 1000;
    let found = lookup(&server, &alice, &room, far_future, "b").await;
    assert_eq!(found["event_id"], c.as_str(), "{found}");
    // Past them nothing: 404 M_NOT_FOUND.
    for (ts, dir) in [(0, "b"), (far_future, "f"), (ts_c + 1, "f")] {
        let query = format!("ts={ts}&dir={dir}");
        assert_error(
            &server.get(&path(&room, &query), alice.token()).await,
            404,
            "M_NOT_FOUND",
        );
    }
}

#[tokio::test]
async fn bad_parameters_and_strangers_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let (_, ts) = stamped(&server, &alice, &room, "hello").await;

    for query in [
        format!("ts={ts}&dir=x"),
        format!("ts={ts}"),
        "dir=f".to_owned(),
        "ts=yesterday&dir=f".to_owned(),
        "ts=-1&dir=b".to_owned(),
        "ts=1.5&dir=b".to_owned(),
    ] {
        let reply = server.get(&path(&room, &query), alice.token()).await;
        assert_eq!(reply.0, 400, "{query}: {}", reply.1);
        assert_eq!(
            reply.1["errcode"], "M_INVALID_PARAM",
            "{query}: {}",
            reply.1
        );
    }
    assert_error(
        &server
            .get(&path(&room, &format!("ts={ts}&dir=f")), None)
            .await,
        401,
        "M_MISSING_TOKEN",
    );

    // Not a member of a room whose history is shared with members only: 403, as Synapse.
    let query = format!("ts={ts}&dir=b");
    assert_error(
        &server.get(&path(&room, &query), bob.token()).await,
        403,
        "M_FORBIDDEN",
    );
    // An unknown room the same, so that nobody learns which rooms exist.
    assert_error(
        &server
            .get(&path("!nope:test.local", &query), bob.token())
            .await,
        403,
        "M_FORBIDDEN",
    );
    // A member may ask; after leaving, no longer (Synapse asks for a joined member).
    must_join(&server, &bob, &room).await;
    let found = lookup(&server, &bob, &room, ts, "b").await;
    assert!(found["event_id"].is_string(), "{found}");
    assert_eq!(leave(&server, &bob, &room).await.0, 200);
    assert_error(
        &server.get(&path(&room, &query), bob.token()).await,
        403,
        "M_FORBIDDEN",
    );

    // World-readable history: anyone with an account may ask.
    let open = create_room(
        &server,
        &alice,
        json!({
            "preset": "public_chat",
            "initial_state": [{"type": "m.room.history_visibility",
                               "content": {"history_visibility": "world_readable"}}],
        }),
    )
    .await;
    let (id, ts) = stamped(&server, &alice, &open, "for everyone").await;
    let found = lookup(&server, &bob, &open, ts, "b").await;
    assert_eq!(found["event_id"], id.as_str(), "{found}");
}
