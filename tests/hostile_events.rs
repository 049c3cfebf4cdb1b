//! Hostile events: content nested deeper than JSON parsers (this server's, ruma's, Rust clients')
//! can read is refused at every door, and one stored event that cannot be shown (written by an
//! older version) never fails a whole response: `/sync`, `/messages`, `/context`, `/event`,
//! `/search`, `/relations`, `/threads`, `/state`, notification counts, and its redaction.
//!
//! The test harness parses every response with serde_json, as Rust clients do: a response
//! nested too deeply for them would read as `null` here.

mod common;
mod room_api;

use common::{Session, TestServer, assert_error};
use reqwest::{Method, StatusCode};
use room_api::*;
use serde_json::{Value, json};

/// The deepest content the server accepts (`MAX_CONTENT_DEPTH`).
const MAX_CONTENT_DEPTH: usize = 100;

/// A value nesting `depth` levels of objects (`{}` is 1).
fn nested(depth: usize) -> Value {
    let mut value = json!({"leaf": true});
    for _ in 1..depth {
        value = json!({ "n": value });
    }
    value
}

/// Message content nesting `depth` levels, with a searchable body at the top.
fn deep_message(body: &str, depth: usize) -> Value {
    json!({"msgtype": "m.text", "body": body, "n": nested(depth - 1)})
}

fn thread_reply(root: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text", "body": body,
        "m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": true,
                         "m.in_reply_to": {"event_id": root}},
    })
}

fn contains_event(events: &[Value], event_id: &str) -> bool {
    events.iter().any(|e| e["event_id"] == event_id)
}

async fn get(server: &TestServer, who: &Session, path: &str) -> (StatusCode, Value) {
    server.get(path, who.token()).await
}

async fn must_get(server: &TestServer, who: &Session, path: &str) -> Value {
    let (status, body) = get(server, who, path).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    assert!(!body.is_null(), "GET {path}: a body serde_json can parse");
    body
}

/// An initial `/sync` with room for every event of these tests in the timeline.
async fn full_sync(server: &TestServer, who: &Session) -> Value {
    let filter = json!({"room": {"timeline": {"limit": 100}}}).to_string();
    sync(server, who, &format!("filter={}", q(&filter))).await
}

async fn search(server: &TestServer, who: &Session, term: &str) -> Value {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/search",
            who.token(),
            json!({"search_categories": {"room_events": {
                "search_term": term,
                "event_context": {"before_limit": 3, "after_limit": 3},
            }}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "search {term}: {body}");
    assert!(!body.is_null(), "search: a body serde_json can parse");
    body["search_categories"]["room_events"].clone()
}

#[tokio::test]
async fn content_nested_too_deep_is_refused_at_every_door() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let room = create_room(&server, &alice, json!({})).await;

    // The depth from the issue (accepted, then unreadable for good) and the first level over.
    for depth in [127, MAX_CONTENT_DEPTH + 1] {
        assert_error(
            &try_send(
                &server,
                &alice,
                &room,
                "m.room.message",
                deep_message("x", depth),
            )
            .await,
            400,
            "M_BAD_JSON",
        );
        assert_error(
            &try_set_state(
                &server,
                &alice,
                &room,
                "m.room.topic",
                "",
                json!({"topic": "t", "n": nested(depth - 1)}),
            )
            .await,
            400,
            "M_BAD_JSON",
        );
    }
    // createRoom's initial state, creation content and power levels override.
    let rooms_before = must_get(&server, &alice, "/_matrix/client/v3/joined_rooms").await;
    for body in [
        json!({"initial_state": [{"type": "m.room.topic", "state_key": "",
                                  "content": {"topic": "t", "n": nested(MAX_CONTENT_DEPTH)}}]}),
        json!({"creation_content": {"n": nested(MAX_CONTENT_DEPTH)}}),
        json!({"power_level_content_override": {"n": nested(MAX_CONTENT_DEPTH)}}),
    ] {
        let reply = server
            .post("/_matrix/client/v3/createRoom", alice.token(), body)
            .await;
        assert_error(&reply, 400, "M_BAD_JSON");
    }
    let rooms_after = must_get(&server, &alice, "/_matrix/client/v3/joined_rooms").await;
    assert_eq!(rooms_before, rooms_after, "no half-made room");

    // The deepest content accepted is readable everywhere, even where responses nest it
    // furthest: as a thread's latest reply bundled into its root, and as the `prev_content` of
    // the state event that replaces it.
    let root = send_text(&server, &alice, &room, "deep root").await;
    let mut reply = deep_message("deep reply", MAX_CONTENT_DEPTH);
    reply["m.relates_to"] = thread_reply(&root, "")["m.relates_to"].clone();
    let (status, body) = try_send(&server, &alice, &room, "m.room.message", reply).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deep_reply = body["event_id"].as_str().unwrap().to_owned();
    set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "deep", "n": nested(MAX_CONTENT_DEPTH - 1)}),
    )
    .await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "flat"}),
    )
    .await;

    let synced = full_sync(&server, &alice).await;
    let events = timeline(&synced, "join", &room);
    let root_event = events
        .iter()
        .find(|e| e["event_id"] == root)
        .expect("root in the timeline");
    assert_eq!(
        root_event["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"],
        deep_reply
    );
    let topic = events
        .iter()
        .rev()
        .find(|e| e["type"] == "m.room.topic")
        .expect("topic in the timeline");
    assert_eq!(topic["unsigned"]["prev_content"]["topic"], "deep");
    let found = search(&server, &alice, "deep").await;
    assert!(
        found["results"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["result"]["event_id"] == root)),
        "{found}"
    );
    must_get(
        &server,
        &alice,
        &room_path(&room, &format!("context/{}", enc(&root))),
    )
    .await;
    must_get(
        &server,
        &alice,
        &room_path(&room, &format!("event/{}", enc(&deep_reply))),
    )
    .await;
}

/// Rewrites a stored event, as an older version of the server could have written it.
fn rewrite_stored_event(server: &TestServer, event_id: &str, change: impl FnOnce(&mut Value)) {
    let db = rusqlite::Connection::open(server.data_dir.join("appliance.db")).unwrap();
    let json: String = db
        .query_row(
            "SELECT json FROM events WHERE event_id = ?1",
            [event_id],
            |r| r.get(0),
        )
        .unwrap();
    let mut event: Value = serde_json::from_str(&json).unwrap();
    change(&mut event);
    let json = serde_json::to_string(&event).unwrap();
    assert!(
        serde_json::from_str::<Value>(&json).is_err(),
        "the rewritten event is too deep for serde_json"
    );
    db.execute(
        "UPDATE events SET json = ?2 WHERE event_id = ?1",
        rusqlite::params![event_id, json],
    )
    .unwrap();
}

#[tokio::test]
async fn one_unreadable_stored_event_never_fails_a_response() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    must_join(&server, &bob, &room).await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.name",
        "",
        json!({"name": "first"}),
    )
    .await;
    let renamed = set_state(
        &server,
        &alice,
        &room,
        "m.room.name",
        "",
        json!({"name": "second"}),
    )
    .await;
    let topic = set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "t"}),
    )
    .await;
    let before = send_text(&server, &alice, &room, "before").await;
    let victim = send_text(&server, &alice, &room, "needle victim").await;
    let after = send_text(&server, &alice, &room, "after").await;
    let root = send_text(&server, &alice, &room, "needle root").await;
    let reply1 = try_send(
        &server,
        &bob,
        &room,
        "m.room.message",
        thread_reply(&root, "one"),
    )
    .await;
    let reply1 = reply1.1["event_id"]
        .as_str()
        .expect("reply sent")
        .to_owned();
    let reply2 = try_send(
        &server,
        &bob,
        &room,
        "m.room.message",
        thread_reply(&root, "two"),
    )
    .await;
    let reply2 = reply2.1["event_id"]
        .as_str()
        .expect("reply sent")
        .to_owned();
    let bob_join = get_state(&server, &alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(bob_join.0, StatusCode::OK);

    // What an older version stored: content 127 levels deep (the event is 128), and the
    // `prev_content` of a state change that replaced such content.
    server.stop();
    for id in [&victim, &reply2, &topic] {
        rewrite_stored_event(&server, id, |e| e["content"]["n"] = nested(127));
    }
    rewrite_stored_event(&server, &renamed, |e| {
        e["unsigned"]["prev_content"]["n"] = nested(127)
    });
    let db = rusqlite::Connection::open(server.data_dir.join("appliance.db")).unwrap();
    let bob_join_id: String = db
        .query_row(
            "SELECT event_id FROM memberships WHERE room_id = ?1 AND user_id = ?2",
            [&room, &bob.user_id],
            |r| r.get(0),
        )
        .unwrap();
    drop(db);
    rewrite_stored_event(&server, &bob_join_id, |e| e["content"]["n"] = nested(127));
    server.relaunch();

    // /sync, for the sender and for a member whose own join event is unreadable (history
    // visibility and notification counts read it and the victim).
    let synced = full_sync(&server, &alice).await;
    let events = timeline(&synced, "join", &room);
    assert!(contains_event(events, &after), "{synced}");
    assert!(!contains_event(events, &victim));
    let root_event = events.iter().find(|e| e["event_id"] == root).expect("root");
    let thread = &root_event["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(thread["latest_event"]["event_id"], reply1, "{root_event}");
    assert_eq!(thread["count"], 2);
    let bob_sync = full_sync(&server, &bob).await;
    let bob_room = &bob_sync["rooms"]["join"][&room];
    assert!(
        contains_event(timeline(&bob_sync, "join", &room), &after),
        "{bob_sync}"
    );
    // before, after and the root notify (a one-to-one room); the victim is not counted.
    assert_eq!(
        bob_room["unread_notifications"]["notification_count"], 3,
        "{bob_room}"
    );
    let since = bob_sync["next_batch"].as_str().unwrap().to_owned();
    send_text(&server, &alice, &room, "news").await;
    let news = sync_since(&server, &bob, &since, "").await;
    assert_eq!(bodies(timeline(&news, "join", &room)), ["news"]);

    // /messages, /context, /event.
    let chunk = must_messages(&server, &alice, &room, "dir=b&limit=50").await;
    let chunk = chunk["chunk"].as_array().unwrap().clone();
    assert!(contains_event(&chunk, &before) && contains_event(&chunk, &after));
    assert!(!contains_event(&chunk, &victim) && !contains_event(&chunk, &reply2));
    let context = must_get(
        &server,
        &alice,
        &room_path(&room, &format!("context/{}?limit=10", enc(&before))),
    )
    .await;
    assert!(
        contains_event(context["events_after"].as_array().unwrap(), &after),
        "{context}"
    );
    assert!(!contains_event(
        context["events_after"].as_array().unwrap(),
        &victim
    ));
    let state = context["state"].as_array().unwrap();
    assert!(
        find_state(state, "m.room.topic", "").is_none(),
        "unreadable state left out"
    );
    assert!(find_state(state, "m.room.create", "").is_some());
    for path in [
        format!("context/{}", enc(&victim)),
        format!("event/{}", enc(&victim)),
    ] {
        let reply = get(&server, &alice, &room_path(&room, &path)).await;
        assert_error(&reply, 404, "M_NOT_FOUND");
        assert!(
            reply.1["error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot be shown")),
            "a clear error: {}",
            reply.1
        );
    }

    // /search, /relations, /threads.
    let found = search(&server, &alice, "needle").await;
    let results: Vec<&Value> = found["results"].as_array().unwrap().iter().collect();
    assert!(
        results.iter().any(|r| r["result"]["event_id"] == root),
        "{found}"
    );
    assert!(!results.iter().any(|r| r["result"]["event_id"] == victim));
    let relations = must_get(
        &server,
        &alice,
        &format!(
            "/_matrix/client/v1/rooms/{}/relations/{}",
            enc(&room),
            enc(&root)
        ),
    )
    .await;
    assert_eq!(ids(relations["chunk"].as_array().unwrap()), [reply1]);
    let threads = must_get(
        &server,
        &alice,
        &format!("/_matrix/client/v1/rooms/{}/threads", enc(&room)),
    )
    .await;
    assert_eq!(threads["chunk"][0]["event_id"], root, "{threads}");

    // State: the unreadable topic is left out; the name is shown without what it replaced.
    let current = full_state(&server, &alice, &room).await;
    assert!(find_state(&current, "m.room.topic", "").is_none());
    let name = find_state(&current, "m.room.name", "").expect("name");
    assert_eq!(name["content"]["name"], "second");
    assert!(name["unsigned"].get("prev_content").is_none(), "{name}");
    assert_error(
        &get_state(&server, &alice, &room, "m.room.topic", "").await,
        404,
        "M_NOT_FOUND",
    );
    // Bob's membership is still read (he sees the room), only his join event is not shown.
    assert_eq!(
        get_state(&server, &bob, &room, "m.room.name", "").await.0,
        StatusCode::OK
    );
    // An upgrade copies the state it can read and leaves the rest.
    let (status, body) = room_request(
        &server,
        &alice,
        Method::POST,
        &room,
        "upgrade",
        Some(json!({"new_version": "11"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_room = body["replacement_room"].as_str().unwrap().to_owned();
    let copied = full_state(&server, &alice, &new_room).await;
    assert_eq!(
        find_state(&copied, "m.room.name", "").unwrap()["content"]["name"],
        "second"
    );
    assert!(
        find_state(&copied, "m.room.topic", "").is_none(),
        "{copied:?}"
    );
    // A new topic replaces the unreadable one.
    set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "fresh"}),
    )
    .await;
    let (status, content) = get_state(&server, &alice, &room, "m.room.topic", "").await;
    assert_eq!(
        (status, content),
        (StatusCode::OK, json!({"topic": "fresh"}))
    );

    // Redacting the unreadable message shows it again, redacted.
    let (status, body) = room_request(
        &server,
        &alice,
        Method::PUT,
        &room,
        &format!("redact/{}/{}", enc(&victim), txn()),
        Some(json!({"reason": "unreadable"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let shown = must_get(
        &server,
        &alice,
        &room_path(&room, &format!("event/{}", enc(&victim))),
    )
    .await;
    assert_eq!(shown["content"], json!({}), "{shown}");
    assert_eq!(
        shown["unsigned"]["redacted_because"]["content"]["reason"],
        "unreadable"
    );
    let chunk = must_messages(&server, &alice, &room, "dir=b&limit=50").await;
    assert!(contains_event(chunk["chunk"].as_array().unwrap(), &victim));

    // One warning names the event, however many responses left it out.
    let log = server.log_text();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(&reply2) && l.contains("left out"))
        .count();
    assert_eq!(warnings, 1, "{log}");
}
