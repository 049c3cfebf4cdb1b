//! Client-API helpers for the room, message and sync tests: thin wrappers that build the paths,
//! percent-encode IDs and assert success where the caller only wants the result.

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Session, TestServer};

/// Percent-encodes a path segment (room IDs, aliases, event IDs, user IDs, types).
pub fn enc(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Percent-encodes a query value.
pub fn q(value: &str) -> String {
    enc(value)
}

/// A transaction ID never used before in this test process.
pub fn txn() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("txn{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

pub fn room_path(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", enc(room))
}

/// `POST /createRoom`; panics unless it succeeds. Returns the room ID.
pub async fn create_room(server: &TestServer, who: &Session, body: Value) -> String {
    let (status, reply) = server
        .post("/_matrix/client/v3/createRoom", who.token(), body.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "createRoom {body}: {reply}");
    reply["room_id"]
        .as_str()
        .expect("room_id in createRoom reply")
        .to_owned()
}

/// `PUT /send/{type}/{txn}` with a fresh transaction ID.
pub async fn try_send(
    server: &TestServer,
    who: &Session,
    room: &str,
    event_type: &str,
    content: Value,
) -> (StatusCode, Value) {
    send_txn(server, who, room, event_type, &txn(), content).await
}

pub async fn send_txn(
    server: &TestServer,
    who: &Session,
    room: &str,
    event_type: &str,
    txn_id: &str,
    content: Value,
) -> (StatusCode, Value) {
    server
        .put(
            &room_path(room, &format!("send/{}/{}", enc(event_type), enc(txn_id))),
            who.token(),
            content,
        )
        .await
}

/// Sends an `m.room.message` text; panics unless it succeeds. Returns the event ID.
pub async fn send_text(server: &TestServer, who: &Session, room: &str, body: &str) -> String {
    let reply = try_send(
        server,
        who,
        room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": body}),
    )
    .await;
    assert_eq!(reply.0, StatusCode::OK, "send {body:?}: {}", reply.1);
    reply.1["event_id"].as_str().expect("event_id").to_owned()
}

/// `PUT /state/{type}/{state_key}`.
pub async fn try_set_state(
    server: &TestServer,
    who: &Session,
    room: &str,
    event_type: &str,
    state_key: &str,
    content: Value,
) -> (StatusCode, Value) {
    server
        .put(
            &room_path(
                room,
                &format!("state/{}/{}", enc(event_type), enc(state_key)),
            ),
            who.token(),
            content,
        )
        .await
}

pub async fn set_state(
    server: &TestServer,
    who: &Session,
    room: &str,
    event_type: &str,
    state_key: &str,
    content: Value,
) -> String {
    let reply = try_set_state(server, who, room, event_type, state_key, content).await;
    assert_eq!(reply.0, StatusCode::OK, "set {event_type}: {}", reply.1);
    reply.1["event_id"].as_str().expect("event_id").to_owned()
}

/// `GET /state/{type}/{state_key}`: status and content.
pub async fn get_state(
    server: &TestServer,
    who: &Session,
    room: &str,
    event_type: &str,
    state_key: &str,
) -> (StatusCode, Value) {
    server
        .get(
            &room_path(
                room,
                &format!("state/{}/{}", enc(event_type), enc(state_key)),
            ),
            who.token(),
        )
        .await
}

/// A membership action (`join`, `leave`, `forget`, `invite`, `kick`, `ban`, `unban`) on a room.
pub async fn member_action(
    server: &TestServer,
    who: &Session,
    room: &str,
    action: &str,
    body: Value,
) -> (StatusCode, Value) {
    server
        .post(&room_path(room, action), who.token(), body)
        .await
}

pub async fn join(server: &TestServer, who: &Session, room: &str) -> (StatusCode, Value) {
    member_action(server, who, room, "join", json!({})).await
}

pub async fn must_join(server: &TestServer, who: &Session, room: &str) {
    let reply = join(server, who, room).await;
    assert_eq!(
        reply.0,
        StatusCode::OK,
        "{} joins {room}: {}",
        who.user_id,
        reply.1
    );
}

pub async fn invite(
    server: &TestServer,
    who: &Session,
    room: &str,
    user_id: &str,
) -> (StatusCode, Value) {
    member_action(server, who, room, "invite", json!({"user_id": user_id})).await
}

pub async fn must_invite(server: &TestServer, who: &Session, room: &str, user_id: &str) {
    let reply = invite(server, who, room, user_id).await;
    assert_eq!(reply.0, StatusCode::OK, "invite {user_id}: {}", reply.1);
}

pub async fn leave(server: &TestServer, who: &Session, room: &str) -> (StatusCode, Value) {
    member_action(server, who, room, "leave", json!({})).await
}

/// `GET /sync?{query}`; panics unless it succeeds.
pub async fn sync(server: &TestServer, who: &Session, query: &str) -> Value {
    let (status, body) = server
        .get(&format!("/_matrix/client/v3/sync?{query}"), who.token())
        .await;
    assert_eq!(status, StatusCode::OK, "sync ?{query}: {body}");
    body
}

/// `GET /sync?since=…&timeout=0` plus `extra`.
pub async fn sync_since(server: &TestServer, who: &Session, since: &str, extra: &str) -> Value {
    sync(server, who, &format!("since={}&timeout=0{extra}", q(since))).await
}

/// `GET /rooms/{room}/messages?{query}`: status and body.
pub async fn messages(
    server: &TestServer,
    who: &Session,
    room: &str,
    query: &str,
) -> (StatusCode, Value) {
    server
        .get(&room_path(room, &format!("messages?{query}")), who.token())
        .await
}

pub async fn must_messages(server: &TestServer, who: &Session, room: &str, query: &str) -> Value {
    let (status, body) = messages(server, who, room, query).await;
    assert_eq!(status, StatusCode::OK, "messages ?{query}: {body}");
    body
}

/// Every event of a room the user can page through, oldest first, by back-paginating from the
/// end with pages of `page` events.
pub async fn all_messages(
    server: &TestServer,
    who: &Session,
    room: &str,
    page: usize,
) -> Vec<Value> {
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..10_000 {
        let mut query = format!("dir=b&limit={page}");
        if let Some(from) = &from {
            query.push_str(&format!("&from={}", q(from)));
        }
        let body = must_messages(server, who, room, &query).await;
        let chunk = body["chunk"].as_array().expect("chunk");
        events.extend(chunk.iter().cloned());
        match body["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    events.reverse();
    events
}

/// The timeline events of a room in a sync response.
pub fn timeline<'a>(sync: &'a Value, section: &str, room: &str) -> &'a [Value] {
    sync["rooms"][section][room]["timeline"]["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The event IDs in a list of events.
pub fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

/// The `body` of each message event in a list of events.
pub fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// A raw request with a path relative to a room.
pub async fn room_request(
    server: &TestServer,
    who: &Session,
    method: Method,
    room: &str,
    rest: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    server
        .request(method, &room_path(room, rest), who.token(), body)
        .await
}

/// The current state of a room as `/state` returns it.
pub async fn full_state(server: &TestServer, who: &Session, room: &str) -> Vec<Value> {
    let (status, body) = server.get(&room_path(room, "state"), who.token()).await;
    assert_eq!(status, StatusCode::OK, "/state: {body}");
    body.as_array().expect("state array").clone()
}

/// Finds the state event `(type, state_key)` in a list of events.
pub fn find_state<'a>(events: &'a [Value], event_type: &str, state_key: &str) -> Option<&'a Value> {
    events
        .iter()
        .find(|e| e["type"] == event_type && e["state_key"] == state_key)
}

/// Runs futures concurrently on the current task and returns their outputs in order.
pub async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    std::task::Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}
