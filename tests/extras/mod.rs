//! Helpers for the tests of `/context`, `/relations`, `/threads`, `/search` and room upgrades.
#![allow(dead_code)] // each test binary uses a different part of these helpers

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Session, TestServer};

/// Percent-encodes a path segment or query value.
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

pub fn room_path(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", enc(room))
}

pub fn v1_room_path(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v1/rooms/{}/{rest}", enc(room))
}

fn txn() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("extras{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

pub async fn create_room(server: &TestServer, who: &Session, body: Value) -> String {
    let (status, reply) = server
        .post("/_matrix/client/v3/createRoom", who.token(), body.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "createRoom {body}: {reply}");
    reply["room_id"].as_str().expect("room_id").to_owned()
}

pub async fn join(server: &TestServer, who: &Session, room: &str) {
    let (status, reply) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(room)),
            who.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "join {room}: {reply}");
}

pub async fn try_send(
    server: &TestServer,
    who: &Session,
    room: &str,
    event_type: &str,
    content: Value,
) -> (StatusCode, Value) {
    server
        .put(
            &room_path(room, &format!("send/{}/{}", enc(event_type), txn())),
            who.token(),
            content,
        )
        .await
}

/// Sends a message-like event; returns its ID.
pub async fn send(
    server: &TestServer,
    who: &Session,
    room: &str,
    event_type: &str,
    content: Value,
) -> String {
    let (status, reply) = try_send(server, who, room, event_type, content.clone()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "send {event_type} {content}: {reply}"
    );
    reply["event_id"].as_str().expect("event_id").to_owned()
}

pub async fn send_text(server: &TestServer, who: &Session, room: &str, body: &str) -> String {
    send(
        server,
        who,
        room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": body}),
    )
    .await
}

pub async fn send_state(
    server: &TestServer,
    who: &Session,
    room: &str,
    event_type: &str,
    state_key: &str,
    content: Value,
) -> String {
    let (status, reply) = server
        .put(
            &room_path(
                room,
                &format!("state/{}/{}", enc(event_type), enc(state_key)),
            ),
            who.token(),
            content.clone(),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "state {event_type} {content}: {reply}"
    );
    reply["event_id"].as_str().expect("event_id").to_owned()
}

pub async fn state_content(
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

pub async fn redact(server: &TestServer, who: &Session, room: &str, event_id: &str) -> String {
    let (status, reply) = server
        .put(
            &room_path(room, &format!("redact/{}/{}", enc(event_id), txn())),
            who.token(),
            json!({"reason": "test"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "redact {event_id}: {reply}");
    reply["event_id"].as_str().expect("event_id").to_owned()
}

/// The `event_id`s of a list of events.
pub fn ids(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {events}"))
        .iter()
        .map(|e| e["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

/// A reply in a thread.
pub fn thread_reply(root: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": body,
        "m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": true,
                         "m.in_reply_to": {"event_id": root}},
    })
}

/// An edit of a message.
pub fn edit(original: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": format!("* {body}"),
        "m.new_content": {"msgtype": "m.text", "body": body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": original},
    })
}
