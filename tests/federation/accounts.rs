//! A user of either server, driven through the client-server API over TLS (the test CA), so that
//! every scenario is checked from both sides the way clients see it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::RootCertStore;
use serde_json::{Value, json};

use super::support::tls_connect;

/// How long a federated event may take to show up on the other side.
pub const FEDERATION_DELAY: Duration = Duration::from_secs(30);

pub struct Account {
    pub port: u16,
    pub user_id: String,
    pub token: String,
    roots: RootCertStore,
}

/// One request to a server's client API on 127.0.0.1:`port` (as `localhost`): status and JSON.
pub async fn call(
    port: u16,
    roots: &RootCertStore,
    method: http::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "localhost");
    if let Some(token) = token {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some(body) => {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    send(port, roots, builder.body(Full::new(body)).unwrap()).await
}

/// Sends `request` over a fresh TLS connection to 127.0.0.1:`port` (as `localhost`, verified
/// against `roots`): status and JSON (`Null` when the answer is not JSON).
pub async fn send(
    port: u16,
    roots: &RootCertStore,
    request: http::Request<Full<Bytes>>,
) -> (u16, Value) {
    let stream = tls_connect(port, "localhost", roots, &[b"http/1.1"])
        .await
        .expect("TLS connection");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Percent-encodes a room ID, alias or event ID for a path segment.
pub fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

impl Account {
    /// Registers `username` (open registration with `m.login.dummy`, as both test servers allow).
    pub async fn register(port: u16, roots: &RootCertStore, username: &str) -> Self {
        let body = json!({"username": username, "password": "correct horse battery",
            "auth": {"type": "m.login.dummy"}, "inhibit_login": false});
        let (status, reply) = call(
            port,
            roots,
            http::Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(&body),
        )
        .await;
        assert_eq!(status, 200, "register {username} on port {port}: {reply}");
        Self {
            port,
            user_id: reply["user_id"].as_str().unwrap().to_owned(),
            token: reply["access_token"].as_str().unwrap().to_owned(),
            roots: roots.clone(),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        call(
            self.port,
            &self.roots,
            http::Method::GET,
            path,
            Some(&self.token),
            None,
        )
        .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        call(
            self.port,
            &self.roots,
            http::Method::POST,
            path,
            Some(&self.token),
            Some(&body),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        call(
            self.port,
            &self.roots,
            http::Method::PUT,
            path,
            Some(&self.token),
            Some(&body),
        )
        .await
    }

    /// `createRoom` with `body`; the room ID.
    pub async fn create_room(&self, body: Value) -> String {
        let (status, reply) = self.post("/_matrix/client/v3/createRoom", body).await;
        assert_eq!(status, 200, "createRoom by {}: {reply}", self.user_id);
        reply["room_id"].as_str().unwrap().to_owned()
    }

    /// `POST /join/{roomIdOrAlias}?server_name=…`: status and body.
    pub async fn join(&self, room: &str, via: &[&str]) -> (u16, Value) {
        let query: String = via
            .iter()
            .map(|server| format!("server_name={}", encode(server)))
            .collect::<Vec<_>>()
            .join("&");
        self.post(
            &format!("/_matrix/client/v3/join/{}?{query}", encode(room)),
            json!({}),
        )
        .await
    }

    /// Sends an `m.text` message; its event ID.
    pub async fn send_text(&self, room: &str, text: &str) -> String {
        let txn = format!("t{}", rand::random::<u64>());
        let (status, reply) = self
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                    encode(room)
                ),
                json!({"msgtype": "m.text", "body": text}),
            )
            .await;
        assert_eq!(status, 200, "send by {}: {reply}", self.user_id);
        reply["event_id"].as_str().unwrap().to_owned()
    }

    /// Sets a state event; its event ID.
    pub async fn send_state(
        &self,
        room: &str,
        kind: &str,
        state_key: &str,
        content: Value,
    ) -> String {
        let (status, reply) = self
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/state/{kind}/{}",
                    encode(room),
                    encode(state_key)
                ),
                content,
            )
            .await;
        assert_eq!(status, 200, "state {kind} by {}: {reply}", self.user_id);
        reply["event_id"].as_str().unwrap().to_owned()
    }

    /// The newest events of a room this account can read (`/messages` backwards, up to 100).
    pub async fn recent_events(&self, room: &str) -> Vec<Value> {
        let (status, reply) = self
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
                encode(room)
            ))
            .await;
        if status != 200 {
            return Vec::new();
        }
        reply["chunk"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until an event matching `wanted` is in the room's recent events; panics after
    /// `FEDERATION_DELAY` with what was there.
    pub async fn wait_for_event(
        &self,
        room: &str,
        what: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + FEDERATION_DELAY;
        loop {
            let events = self.recent_events(room).await;
            if let Some(found) = events.iter().find(|e| wanted(e)) {
                return found.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{} never saw {what} in {room}; it has: {}",
                self.user_id,
                serde_json::to_string_pretty(&events).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits for a message with body `text` from `sender`.
    pub async fn wait_for_text(&self, room: &str, sender: &str, text: &str) -> Value {
        self.wait_for_event(room, &format!("{sender}'s message {text:?}"), |e| {
            e["type"] == "m.room.message" && e["sender"] == sender && e["content"]["body"] == text
        })
        .await
    }

    /// The room's current state as `(type, state_key) -> content`.
    pub async fn state(&self, room: &str) -> std::collections::BTreeMap<(String, String), Value> {
        let (status, reply) = self
            .get(&format!("/_matrix/client/v3/rooms/{}/state", encode(room)))
            .await;
        assert_eq!(status, 200, "state of {room} for {}: {reply}", self.user_id);
        reply
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    (
                        e["type"].as_str().unwrap().to_owned(),
                        e["state_key"].as_str().unwrap().to_owned(),
                    ),
                    e["content"].clone(),
                )
            })
            .collect()
    }

    /// `POST /rooms/{roomId}/invite` of `user_id`: status and body.
    pub async fn invite(&self, room: &str, user_id: &str) -> (u16, Value) {
        self.post(
            &format!("/_matrix/client/v3/rooms/{}/invite", encode(room)),
            json!({"user_id": user_id}),
        )
        .await
    }

    /// `POST /rooms/{roomId}/leave`: status and body.
    pub async fn leave(&self, room: &str) -> (u16, Value) {
        self.post(
            &format!("/_matrix/client/v3/rooms/{}/leave", encode(room)),
            json!({}),
        )
        .await
    }

    /// Polls a full /sync (left rooms included) until `found` picks something out of it;
    /// panics after `FEDERATION_DELAY` with the last response.
    pub async fn wait_for_sync<T>(&self, what: &str, found: impl Fn(&Value) -> Option<T>) -> T {
        let filter = encode(r#"{"room":{"include_leave":true}}"#);
        let deadline = Instant::now() + FEDERATION_DELAY;
        loop {
            let (status, reply) = self
                .get(&format!(
                    "/_matrix/client/v3/sync?timeout=0&filter={filter}"
                ))
                .await;
            assert_eq!(status, 200, "sync of {}: {reply}", self.user_id);
            if let Some(found) = found(&reply) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{} never saw {what} in /sync: {}",
                self.user_id,
                serde_json::to_string_pretty(&reply["rooms"]).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// One `/sync` (no long-poll), from `since` when given; panics unless `200`.
    pub async fn sync(&self, since: Option<&str>) -> Value {
        let path = match since {
            Some(since) => format!("/_matrix/client/v3/sync?timeout=0&since={}", encode(since)),
            None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
        };
        let (status, reply) = self.get(&path).await;
        assert_eq!(status, 200, "sync of {}: {reply}", self.user_id);
        reply
    }

    /// One backwards `/messages` page of `limit` events from `from` (the newest when `None`);
    /// panics unless `200`.
    pub async fn messages_backwards(&self, room: &str, from: Option<&str>, limit: u32) -> Value {
        let mut path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit={limit}",
            encode(room)
        );
        if let Some(from) = from {
            path.push_str(&format!("&from={}", encode(from)));
        }
        let (status, reply) = self.get(&path).await;
        assert_eq!(
            status, 200,
            "messages of {room} for {}: {reply}",
            self.user_id
        );
        reply
    }

    /// The room's current state as the set of `(type, state_key, event_id)`: what two servers
    /// that agree on a room's resolved state both answer.
    pub async fn state_event_ids(&self, room: &str) -> std::collections::BTreeSet<[String; 3]> {
        let (status, reply) = self
            .get(&format!("/_matrix/client/v3/rooms/{}/state", encode(room)))
            .await;
        assert_eq!(status, 200, "state of {room} for {}: {reply}", self.user_id);
        reply
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                ["type", "state_key", "event_id"].map(|field| e[field].as_str().unwrap().to_owned())
            })
            .collect()
    }

    /// Every event of the room this account can read, oldest first: `/messages` backwards,
    /// page after page, until the server has no more (at most `max` events).
    pub async fn all_events(&self, room: &str, max: usize) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from = String::new();
        while events.len() < max {
            let (status, reply) = self
                .get(&format!(
                    "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100{from}",
                    encode(room)
                ))
                .await;
            assert_eq!(
                status, 200,
                "messages of {room} for {}: {reply}",
                self.user_id
            );
            let chunk = reply["chunk"].as_array().cloned().unwrap_or_default();
            events.extend(chunk.iter().cloned());
            match reply["end"].as_str() {
                Some(end) if !chunk.is_empty() => from = format!("&from={}", encode(end)),
                _ => break,
            }
        }
        events.reverse();
        events
    }

    /// The bodies of the `m.room.message` events of `sender` in `events`, in their order.
    pub fn bodies_from(events: &[Value], sender: &str) -> Vec<String> {
        events
            .iter()
            .filter(|e| e["type"] == "m.room.message" && e["sender"] == sender)
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    }

    /// Whether a /sync shows the room among the joined ones.
    pub async fn sees_joined(&self, room: &str) -> bool {
        let (status, reply) = self.get("/_matrix/client/v3/sync?timeout=0").await;
        status == 200 && reply["rooms"]["join"].get(room).is_some()
    }
}
