//! Delayed events (MSC4140) as Synapse serves them: off unless `max_event_delay_duration` is
//! set; scheduled messages and state arrive when due (not before), survive a restart, and can be
//! listed, cancelled, restarted and sent at once; someone else's state cancels a delayed state
//! event; Synapse's errors for unknown IDs, bad actions and too long delays.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{OPEN_REGISTRATION, Session, TestServer, assert_error};
use crate::room_api::*;

const DELAYED: &str = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events";

/// How long a test waits for a delayed event before it gives up.
const PATIENCE: Duration = Duration::from_secs(30);

async fn start() -> TestServer {
    TestServer::start_with_config(&format!(
        "{OPEN_REGISTRATION}max_event_delay_duration: 1h
rc_delayed_event_mgmt: {{per_second: 1000, burst_count: 1000}}
"
    ))
    .await
}

/// `PUT /send/m.room.message/{txn}?org.matrix.msc4140.delay=…`
async fn send_later(
    server: &TestServer,
    who: &Session,
    room: &str,
    txn_id: &str,
    body: &str,
    delay_ms: u64,
) -> (StatusCode, Value) {
    server
        .put(
            &room_path(
                room,
                &format!("send/m.room.message/{txn_id}?org.matrix.msc4140.delay={delay_ms}"),
            ),
            who.token(),
            json!({"msgtype": "m.text", "body": body}),
        )
        .await
}

async fn must_send_later(
    server: &TestServer,
    who: &Session,
    room: &str,
    body: &str,
    delay_ms: u64,
) -> String {
    let reply = send_later(server, who, room, &txn(), body, delay_ms).await;
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.1);
    reply.1["delay_id"].as_str().expect("delay_id").to_owned()
}

async fn set_state_later(
    server: &TestServer,
    who: &Session,
    room: &str,
    event_type: &str,
    state_key: &str,
    content: Value,
    delay_ms: u64,
) -> (StatusCode, Value) {
    server
        .put(
            &room_path(
                room,
                &format!(
                    "state/{}/{}?org.matrix.msc4140.delay={delay_ms}",
                    enc(event_type),
                    enc(state_key)
                ),
            ),
            who.token(),
            content,
        )
        .await
}

async fn list(server: &TestServer, who: &Session) -> Vec<Value> {
    let (status, body) = server.get(DELAYED, who.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["delayed_events"].as_array().expect("list").clone()
}

async fn act(
    server: &TestServer,
    who: Option<&Session>,
    delay_id: &str,
    action: &str,
) -> (StatusCode, Value) {
    server
        .post(
            &format!("{DELAYED}/{}", enc(delay_id)),
            who.and_then(Session::token),
            json!({"action": action}),
        )
        .await
}

/// Long-polls /sync from `since` until a message with `body` arrives in `room`; returns it.
async fn wait_for_message(
    server: &TestServer,
    who: &Session,
    room: &str,
    since: &str,
    body: &str,
) -> Value {
    let deadline = Instant::now() + PATIENCE;
    let mut since = since.to_owned();
    loop {
        assert!(Instant::now() < deadline, "{body:?} never arrived");
        let reply = sync(server, who, &format!("since={}&timeout=5000", q(&since))).await;
        if let Some(event) = timeline(&reply, "join", room)
            .iter()
            .find(|e| e["type"] == "m.room.message" && e["content"]["body"] == body)
        {
            return event.clone();
        }
        since = reply["next_batch"].as_str().expect("next_batch").to_owned();
    }
}

/// Every message body of the room so far.
async fn room_bodies(server: &TestServer, who: &Session, room: &str) -> Vec<String> {
    bodies(&all_messages(server, who, room, 100).await)
}

async fn next_batch(server: &TestServer, who: &Session) -> String {
    sync(server, who, "timeout=0").await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned()
}

#[tokio::test]
async fn off_unless_max_event_delay_duration_is_set() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let room = create_room(&server, &alice, json!({})).await;
    let (_, versions) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(versions["unstable_features"]["org.matrix.msc4140"], false);
    let (_, capabilities) = server
        .get("/_matrix/client/v3/capabilities", alice.token())
        .await;
    assert_eq!(
        capabilities["capabilities"]["org.matrix.msc4140.delayed_events"],
        json!({"max_delay_ms": 0, "max_scheduled": 100})
    );
    // Synapse's answer while the feature is off.
    let reply = send_later(&server, &alice, &room, &txn(), "later", 1000).await;
    assert_error(&reply, 403, "M_FORBIDDEN");
    let reply = set_state_later(&server, &alice, &room, "m.room.topic", "", json!({}), 1000).await;
    assert_error(&reply, 403, "M_FORBIDDEN");
    // A send without the parameter is an ordinary send.
    send_text(&server, &alice, &room, "now").await;
    assert!(list(&server, &alice).await.is_empty());
}

#[tokio::test]
async fn a_delayed_message_arrives_when_due_and_not_before() {
    let server = start().await;
    let (_, versions) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(versions["unstable_features"]["org.matrix.msc4140"], true);
    let alice = server.register("alice", "password").await;
    let room = create_room(&server, &alice, json!({})).await;
    let since = next_batch(&server, &alice).await;

    let txn_id = txn();
    let reply = send_later(&server, &alice, &room, &txn_id, "later", 1500).await;
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.1);
    let delay_id = reply.1["delay_id"].as_str().expect("delay_id").to_owned();
    // A retry of the same transaction is the same delayed event.
    let retry = send_later(&server, &alice, &room, &txn_id, "later", 1500).await;
    assert_eq!(retry.1["delay_id"], delay_id.as_str());

    // Listed with Synapse's fields, and not in the room yet.
    let listed = list(&server, &alice).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let entry = &listed[0];
    assert_eq!(entry["delay_id"], delay_id.as_str());
    assert_eq!(entry["room_id"], room.as_str());
    assert_eq!(entry["type"], "m.room.message");
    assert!(entry.get("state_key").is_none(), "{entry}");
    assert_eq!(
        entry["content"],
        json!({"msgtype": "m.text", "body": "later"})
    );
    assert_eq!(entry["delay_ms"], 1500);
    assert_eq!(entry["delay"], 1500);
    let since_ts = entry["delayed_since_ts"]
        .as_u64()
        .expect("delayed_since_ts");
    assert_eq!(entry["running_since"], since_ts);
    let (status, one) = server
        .get(&format!("{DELAYED}/{delay_id}"), alice.token())
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["delay_ms"], 1500);
    let early = sync_since(&server, &alice, &since, "").await;
    assert!(
        bodies(timeline(&early, "join", &room)).is_empty(),
        "{early}"
    );

    let event = wait_for_message(&server, &alice, &room, &since, "later").await;
    assert_eq!(event["sender"], alice.user_id.as_str());
    let sent_at = event["origin_server_ts"]
        .as_u64()
        .expect("origin_server_ts");
    assert!(
        sent_at >= since_ts + 1500,
        "sent at {sent_at}, due {}",
        since_ts + 1500
    );
    assert!(list(&server, &alice).await.is_empty());
    // Sent once, and gone from management.
    assert_eq!(room_bodies(&server, &alice, &room).await, ["later"]);
    assert_error(
        &act(&server, Some(&alice), &delay_id, "send").await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn cancel_restart_and_send_now() {
    let server = start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    must_join(&server, &bob, &room).await;
    let since = next_batch(&server, &alice).await;

    // Cancelled: never sent. The control, due later, proves the cancelled one's time passed.
    let cancelled = must_send_later(&server, &alice, &room, "cancelled", 1000).await;
    let restarted = must_send_later(&server, &alice, &room, "restarted", 2000).await;
    let now = must_send_later(&server, &alice, &room, "now", 3_600_000).await;
    let by_path = must_send_later(&server, &alice, &room, "by path", 3_600_000).await;
    assert_eq!(
        act(&server, Some(&alice), &cancelled, "cancel").await.0,
        StatusCode::OK
    );
    assert_error(
        &act(&server, Some(&alice), &cancelled, "cancel").await,
        404,
        "M_NOT_FOUND",
    );

    // Restarted: due `delay` after the restart.
    let before = list(&server, &alice).await;
    let first_since = before
        .iter()
        .find(|e| e["delay_id"] == restarted.as_str())
        .expect("listed")["delayed_since_ts"]
        .as_u64()
        .unwrap();
    // Half its delay later (waiting within the delay itself), restarted: the `delay_id` is the
    // capability, as in Synapse, so another user may restart it.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        act(&server, Some(&bob), &restarted, "restart").await.0,
        StatusCode::OK
    );
    let after = list(&server, &alice).await;
    let restarted_since = after
        .iter()
        .find(|e| e["delay_id"] == restarted.as_str())
        .expect("listed")["delayed_since_ts"]
        .as_u64()
        .unwrap();
    assert!(
        restarted_since >= first_since + 1000,
        "{first_since} -> {restarted_since}"
    );

    // Sent now, an hour early.
    assert_eq!(
        act(&server, Some(&alice), &now, "send").await.0,
        StatusCode::OK
    );
    wait_for_message(&server, &alice, &room, &since, "now").await;
    // The per-action paths, without a token.
    let (status, body) = server
        .post(&format!("{DELAYED}/{by_path}/send"), None, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_message(&server, &alice, &room, &since, "by path").await;

    let event = wait_for_message(&server, &alice, &room, &since, "restarted").await;
    let sent_at = event["origin_server_ts"].as_u64().unwrap();
    assert!(
        sent_at >= restarted_since + 2000,
        "{sent_at} < {restarted_since} + 2000"
    );
    let all = room_bodies(&server, &alice, &room).await;
    assert!(!all.contains(&"cancelled".to_owned()), "{all:?}");
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(list(&server, &alice).await.is_empty());

    // A deactivated account's delayed events are cancelled, as in Synapse.
    let bobs = must_send_later(&server, &bob, &room, "from beyond", 3_600_000).await;
    let (status, body) = server
        .with_password_auth(
            Method::POST,
            "/_matrix/client/v3/account/deactivate",
            &bob,
            "password",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(
        &act(&server, Some(&alice), &bobs, "send").await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn synapses_errors() {
    let server = start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(&server, &alice, json!({})).await;

    // Longer than `max_event_delay_duration`.
    let reply = send_later(&server, &alice, &room, &txn(), "too late", 3_600_001).await;
    assert_error(&reply, 400, "ORG.MATRIX.MSC4140_DELAY_TOO_LARGE");
    let reply = set_state_later(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({}),
        3_600_001,
    )
    .await;
    assert_error(&reply, 400, "ORG.MATRIX.MSC4140_DELAY_TOO_LARGE");
    // Not a number of milliseconds.
    let (status, body) = server
        .put(
            &room_path(
                &room,
                &format!(
                    "send/m.room.message/{}?org.matrix.msc4140.delay=soon",
                    txn()
                ),
            ),
            alice.token(),
            json!({"body": "x", "msgtype": "m.text"}),
        )
        .await;
    assert_error(&(status, body), 400, "M_INVALID_PARAM");
    // An unknown room.
    let reply = send_later(&server, &alice, "!nowhere:test.local", &txn(), "x", 1000).await;
    assert_error(&reply, 404, "M_NOT_FOUND");

    // Unknown delay IDs, for every action and path.
    for action in ["cancel", "restart", "send"] {
        assert_error(
            &act(&server, Some(&alice), "syd_unknown", action).await,
            404,
            "M_NOT_FOUND",
        );
        let (status, body) = server
            .post(&format!("{DELAYED}/syd_unknown/{action}"), None, json!({}))
            .await;
        assert_error(&(status, body), 404, "M_NOT_FOUND");
    }
    let (status, body) = server
        .get(&format!("{DELAYED}/syd_unknown"), alice.token())
        .await;
    assert_error(&(status, body), 404, "M_NOT_FOUND");

    // A bad action.
    let delay_id = must_send_later(&server, &alice, &room, "pending", 3_600_000).await;
    assert_error(
        &act(&server, Some(&alice), &delay_id, "postpone").await,
        400,
        "M_INVALID_PARAM",
    );

    // Another user's delayed event is neither listed nor shown to them.
    assert!(list(&server, &bob).await.is_empty());
    let (status, body) = server
        .get(&format!("{DELAYED}/{delay_id}"), bob.token())
        .await;
    assert_error(&(status, body), 404, "M_NOT_FOUND");
    assert_eq!(list(&server, &alice).await.len(), 1);
    // Listing needs a token.
    let (status, body) = server.get(DELAYED, None).await;
    assert_error(&(status, body), 401, "M_MISSING_TOKEN");

    // At most 100 pending per user (Synapse's default), then 429 until one is sent.
    for i in 1..100 {
        must_send_later(&server, &alice, &room, &format!("pending {i}"), 3_600_000).await;
    }
    let reply = send_later(&server, &alice, &room, &txn(), "one too many", 1000).await;
    assert_error(&reply, 429, "M_LIMIT_EXCEEDED");
    assert!(reply.1["retry_after_ms"].as_u64().is_some(), "{}", reply.1);
    assert_eq!(list(&server, &alice).await.len(), 100);
    must_send_later(&server, &bob, &room, "bob's own", 3_600_000).await;
}

#[tokio::test]
async fn someone_elses_state_cancels_a_delayed_state_event() {
    let server = start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "power_level_content_override": {"state_default": 0}}),
    )
    .await;
    must_join(&server, &bob, &room).await;
    let call = "org.example.call.member";
    let left = json!({});

    let reply = set_state_later(
        &server,
        &alice,
        &room,
        call,
        "shared",
        left.clone(),
        3_600_000,
    )
    .await;
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.1);
    let kept = reply.1["delay_id"].as_str().unwrap().to_owned();
    let listed = list(&server, &alice).await;
    assert_eq!(listed[0]["state_key"], "shared");
    // The user's own state change keeps it.
    set_state(
        &server,
        &alice,
        &room,
        call,
        "shared",
        json!({"joined": true}),
    )
    .await;
    let reply = set_state_later(&server, &alice, &room, call, "mine", left.clone(), 1500).await;
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.1);

    // The other one (another state key) is sent when due, as alice. Its send comes after the
    // task looked at alice's own change: that one is still pending.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let state = full_state(&server, &alice, &room).await;
        if let Some(event) = find_state(&state, call, "mine") {
            assert_eq!(event["sender"], alice.user_id.as_str());
            assert_eq!(event["content"], left);
            break;
        }
        assert!(Instant::now() < deadline, "the delayed state never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pending = list(&server, &alice).await;
    assert!(
        pending.iter().any(|e| e["delay_id"] == kept.as_str()),
        "cancelled by its own user's change: {pending:?}"
    );

    // Bob's change of the same state cancels it.
    set_state(
        &server,
        &bob,
        &room,
        call,
        "shared",
        json!({"joined": true}),
    )
    .await;
    let deadline = Instant::now() + PATIENCE;
    while list(&server, &alice)
        .await
        .iter()
        .any(|e| e["delay_id"] == kept.as_str())
    {
        assert!(Instant::now() < deadline, "never cancelled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_error(
        &act(&server, Some(&alice), &kept, "send").await,
        404,
        "M_NOT_FOUND",
    );
    let shared = find_state(&full_state(&server, &alice, &room).await, call, "shared")
        .cloned()
        .unwrap();
    assert_eq!(shared["sender"], bob.user_id.as_str());
}

#[tokio::test]
async fn scheduled_events_survive_a_restart_and_overdue_ones_are_sent_at_start() {
    let mut server = start().await;
    let alice = server.register("alice", "password").await;
    let room = create_room(&server, &alice, json!({})).await;
    let since = next_batch(&server, &alice).await;

    // Due while the server is down: sent when it starts again.
    must_send_later(&server, &alice, &room, "overdue", 1000).await;
    // Due after the restart.
    must_send_later(&server, &alice, &room, "after", 2500).await;
    let (_, listed) = server.get(DELAYED, alice.token()).await;
    let overdue_due = listed["delayed_events"][0]["delayed_since_ts"]
        .as_u64()
        .unwrap()
        + 1000;
    assert!(server.stop(), "clean stop");
    // The delay itself, while nothing runs.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    server.relaunch();

    let overdue = wait_for_message(&server, &alice, &room, &since, "overdue").await;
    assert!(overdue["origin_server_ts"].as_u64().unwrap() >= overdue_due);
    wait_for_message(&server, &alice, &room, &since, "after").await;
    assert_eq!(
        room_bodies(&server, &alice, &room).await,
        ["overdue", "after"]
    );
    assert!(list(&server, &alice).await.is_empty());
}
