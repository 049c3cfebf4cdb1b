//! Helpers for the tests of `/context`, `/relations`, `/threads`, `/search` and room upgrades,
//! on top of the room helpers of `room_api`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Session, TestServer};
pub use crate::room_api::{
    create_room, enc, get_state as state_content, must_join as join, room_path, send_text,
    set_state as send_state, try_send, txn,
};

pub fn v1_room_path(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v1/rooms/{}/{rest}", enc(room))
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
    crate::room_api::ids(
        events
            .as_array()
            .unwrap_or_else(|| panic!("not a list: {events}")),
    )
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
