//! Pushers and push delivery, end to end: a push gateway written here (an HTTP server on loopback
//! that records what it receives and can fail or reject pushkeys), messages sent by another
//! user, and `/notifications` checked against /sync's counts.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use serde_json::{Value, json};

use super::common::{OPEN_REGISTRATION, Session, TestServer, assert_error};
use super::{create_public_room, send, sync, text};

/// What the test's push gateway received and how it answers.
#[derive(Default)]
struct Gateway {
    /// Every notification received, with whether it was answered `200`.
    received: Mutex<Vec<(Value, bool)>>,
    /// Answer `500` to everything.
    failing: AtomicBool,
    /// Pushkeys answered as `rejected`.
    rejected: Mutex<HashSet<String>>,
}

async fn notify(
    State(gateway): State<Arc<Gateway>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let notification = body["notification"].clone();
    if gateway.failing.load(Ordering::SeqCst) {
        gateway.received.lock().unwrap().push((notification, false));
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({})));
    }
    let rejected: Vec<Value> = {
        let refused = gateway.rejected.lock().unwrap();
        notification["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|device| device["pushkey"].as_str())
            .filter(|pushkey| refused.contains(*pushkey))
            .map(|pushkey| json!(pushkey))
            .collect()
    };
    gateway.received.lock().unwrap().push((notification, true));
    (StatusCode::OK, Json(json!({ "rejected": rejected })))
}

impl Gateway {
    /// Starts the gateway on loopback; returns it and its notify URL.
    async fn start() -> (Arc<Self>, String) {
        let gateway = Arc::new(Self::default());
        let router = Router::new()
            .route("/_matrix/push/v1/notify", post(notify))
            .with_state(gateway.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/_matrix/push/v1/notify",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, router).await });
        (gateway, url)
    }

    /// The notifications answered `200` for `pushkey`, in order.
    fn delivered(&self, pushkey: &str) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, ok)| *ok && n["devices"][0]["pushkey"] == pushkey)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn attempts(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Waits until a notification of `event_id` was delivered for `pushkey`, and returns it.
    async fn wait_for(&self, pushkey: &str, event_id: &str) -> Value {
        for _ in 0..600 {
            if let Some(found) = self
                .delivered(pushkey)
                .into_iter()
                .find(|n| n["event_id"] == event_id)
            {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no push of {event_id} for {pushkey}; received: {:?}",
            self.received.lock().unwrap()
        );
    }

    /// The event IDs delivered for `pushkey`, in order.
    fn delivered_ids(&self, pushkey: &str) -> Vec<String> {
        self.delivered(pushkey)
            .iter()
            .map(|n| n["event_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

fn http_pusher(pushkey: &str, url: &str, format: Option<&str>) -> Value {
    let mut data = json!({"url": url, "default_payload": {"aps": {"mutable-content": 1}}});
    if let Some(format) = format {
        data["format"] = json!(format);
    }
    json!({
        "kind": "http",
        "app_id": "org.example.app",
        "pushkey": pushkey,
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "lang": "en",
        "data": data,
    })
}

async fn set_pusher(server: &TestServer, who: &Session, pusher: Value) -> (StatusCode, Value) {
    server
        .post("/_matrix/client/v3/pushers/set", who.token(), pusher)
        .await
}

async fn pushkeys(server: &TestServer, who: &Session) -> Vec<String> {
    let (status, body) = server.get("/_matrix/client/v3/pushers", who.token()).await;
    assert_eq!(status, 200, "{body}");
    body["pushers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pushkey"].as_str().unwrap().to_owned())
        .collect()
}

async fn notifications(server: &TestServer, who: &Session, query: &str) -> Value {
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/notifications{query}"),
            who.token(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn event_ids(page: &Value) -> Vec<String> {
    page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["event"]["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the server's log shows `needle`.
async fn wait_for_log(server: &TestServer, needle: &str) {
    for _ in 0..600 {
        if server.log_text().contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("`{needle}` never logged; log:\n{}", server.log_text());
}

#[tokio::test]
async fn pushes_reach_the_gateway_and_notifications_agree_with_sync() {
    let (gateway, url) = Gateway::start().await;
    // The default address policy first: loopback is refused.
    let mut server = TestServer::start_with_config(OPEN_REGISTRATION).await;
    let alice = server.register("alice", "alice-password").await;
    let bob = server.register("bob", "bob-password").await;
    let carol = server.register("carol", "carol-password").await;
    let (status, body) = server
        .put(
            "/_matrix/client/v3/profile/@bob:test.local/displayname",
            bob.token(),
            json!({"displayname": "Bob B"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let dm = create_public_room(&server, &bob, &[&alice]).await;

    // The pusher API: validation, then a full-format pusher.
    let mut wrong_path = http_pusher("phone", &url, None);
    wrong_path["data"]["url"] = json!(url.replace("/notify", "/other"));
    assert_error(
        &set_pusher(&server, &alice, wrong_path).await,
        400,
        "M_INVALID_PARAM",
    );
    let mut no_url = http_pusher("phone", &url, None);
    no_url["data"].as_object_mut().unwrap().remove("url");
    assert_eq!(set_pusher(&server, &alice, no_url).await.0, 400);
    let email = json!({
        "kind": "email", "app_id": "m.email", "pushkey": "alice@example.org",
        "app_display_name": "Email", "device_display_name": "Email", "lang": "en", "data": {},
    });
    assert_error(
        &set_pusher(&server, &alice, email).await,
        400,
        "M_THREEPID_NOT_FOUND",
    );
    let (status, body) = set_pusher(&server, &alice, http_pusher("phone", &url, None)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .get("/_matrix/client/v3/pushers", alice.token())
        .await;
    assert_eq!(status, 200, "{body}");
    let listed = &body["pushers"][0];
    assert_eq!(listed["kind"], "http", "{body}");
    assert_eq!(listed["data"]["url"], url.as_str());
    assert_eq!(listed["app_display_name"], "Example");
    assert!(
        pushkeys(&server, &bob).await.is_empty(),
        "pushers are per user"
    );

    // Loopback is refused by default (`ip_range_blacklist`): the push waits, backing off.
    let hello = text(&server, &bob, &dm, "hello").await;
    wait_for_log(&server, "a refused address").await;
    assert_eq!(
        gateway.attempts(),
        0,
        "loopback reached with the default policy"
    );

    // kill -9 with the push pending, then allow loopback: it is delivered after the restart.
    server.kill9();
    let mut config = std::fs::read_to_string(&server.config_path).unwrap();
    config.push_str("ip_range_whitelist: ['127.0.0.1']\n");
    std::fs::write(&server.config_path, config).unwrap();
    server.relaunch();
    let pushed = gateway.wait_for("phone", &hello).await;
    // The full format, as Synapse sends it.
    assert_eq!(pushed["room_id"], dm.as_str(), "{pushed}");
    assert_eq!(pushed["type"], "m.room.message");
    assert_eq!(pushed["sender"], bob.user_id.as_str());
    assert_eq!(pushed["sender_display_name"], "Bob B");
    assert_eq!(pushed["content"]["body"], "hello");
    assert_eq!(
        pushed["counts"]["unread"], 1,
        "one room with unread notifications"
    );
    // A one-to-one room: `.m.rule.room_one_to_one` sets a sound, so high priority.
    assert_eq!(pushed["prio"], "high");
    let device = &pushed["devices"][0];
    assert_eq!(device["app_id"], "org.example.app");
    assert_eq!(device["pushkey"], "phone");
    assert!(
        device["pushkey_ts"].as_u64().unwrap() > 1_600_000_000,
        "{device}"
    );
    assert!(
        device["data"].get("url").is_none(),
        "data less url: {device}"
    );
    assert_eq!(
        device["data"]["default_payload"]["aps"]["mutable-content"],
        1
    );
    assert_eq!(device["tweaks"]["sound"], "default", "{device}");
    assert_ne!(device["tweaks"]["highlight"], true);

    // A second device of alice's with an `event_id_only` pusher.
    let alice2 = server.login_session("alice", "alice-password").await;
    let (status, body) = set_pusher(
        &server,
        &alice2,
        http_pusher("tablet", &url, Some("event_id_only")),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Own events are never pushed; a mention highlights.
    let own = text(&server, &alice, &dm, "my own words").await;
    let mention = send(
        &server,
        &bob,
        &dm,
        json!({"msgtype": "m.text", "body": "alice: look",
               "m.mentions": {"user_ids": [alice.user_id]}}),
    )
    .await;
    let pushed = gateway.wait_for("phone", &mention).await;
    assert_eq!(pushed["prio"], "high");
    assert_eq!(
        pushed["devices"][0]["tweaks"]["highlight"], true,
        "{pushed}"
    );
    let short = gateway.wait_for("tablet", &mention).await;
    assert_eq!(short["room_id"], dm.as_str());
    assert_eq!(short["prio"], "high");
    assert!(short["counts"]["unread"].as_u64().is_some(), "{short}");
    for absent in ["type", "sender", "content", "sender_display_name"] {
        assert!(
            short.get(absent).is_none(),
            "event_id_only with {absent}: {short}"
        );
    }
    assert!(short["devices"][0].get("tweaks").is_none(), "{short}");
    assert_eq!(short["devices"][0]["pushkey"], "tablet");

    // A group room: `.m.rule.message` notifies without a sound, low priority. A muted room
    // (a room rule without actions) is not pushed at all.
    let group = create_public_room(&server, &bob, &[&alice, &carol]).await;
    let muted = create_public_room(&server, &bob, &[&alice]).await;
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/pushrules/global/room/{muted}"),
            alice.token(),
            json!({"actions": []}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let silent = text(&server, &bob, &muted, "nobody hears this").await;
    let chatter = text(&server, &bob, &group, "hi all").await;
    let pushed = gateway.wait_for("phone", &chatter).await;
    assert_eq!(pushed["prio"], "low", "{pushed}");
    assert!(
        pushed["devices"][0]["tweaks"].get("sound").is_none(),
        "{pushed}"
    );
    assert_eq!(pushed["counts"]["unread"], 2, "the DM and the group room");
    // In order: had the own or muted events been pushed, they would have come first.
    assert_eq!(
        gateway.delivered_ids("phone"),
        [hello.clone(), mention.clone(), chatter.clone()]
    );
    assert!(!gateway.delivered_ids("tablet").contains(&own));
    assert!(!gateway.delivered_ids("tablet").contains(&silent));

    // A failing gateway: retried with backoff until it answers.
    gateway.failing.store(true, Ordering::SeqCst);
    let attempts = gateway.attempts();
    let retried = text(&server, &bob, &dm, "try again").await;
    for _ in 0..600 {
        if gateway.attempts() >= attempts + 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gateway.attempts() >= attempts + 3,
        "no retries after a failure"
    );
    gateway.failing.store(false, Ordering::SeqCst);
    gateway.wait_for("phone", &retried).await;
    gateway.wait_for("tablet", &retried).await;
    assert_eq!(
        gateway
            .delivered_ids("phone")
            .iter()
            .filter(|id| **id == retried)
            .count(),
        1,
        "delivered once"
    );

    // A pushkey the gateway rejects: its pusher is removed.
    gateway.rejected.lock().unwrap().insert("tablet".to_owned());
    let rejected = text(&server, &bob, &dm, "tablet is gone").await;
    gateway.wait_for("tablet", &rejected).await;
    gateway.wait_for("phone", &rejected).await;
    for _ in 0..600 {
        if !pushkeys(&server, &alice)
            .await
            .contains(&"tablet".to_owned())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pushkeys(&server, &alice).await, ["phone"]);

    // /notifications: bob's notifying events, newest first; not alice's own, not the muted
    // room's.
    let all = notifications(&server, &alice2, "").await;
    assert_eq!(
        event_ids(&all),
        [&rejected, &retried, &chatter, &mention, &hello].map(String::as_str),
        "{all}"
    );
    let first = &all["notifications"][0];
    assert_eq!(first["room_id"], dm.as_str());
    assert_eq!(first["read"], false);
    assert!(first["ts"].as_u64().is_some());
    assert!(
        first["actions"]
            .as_array()
            .unwrap()
            .contains(&json!("notify"))
    );
    let page = notifications(&server, &alice2, "?limit=2").await;
    assert_eq!(event_ids(&page), [&rejected, &retried].map(String::as_str));
    let token = page["next_token"].as_str().expect("next_token").to_owned();
    let next = notifications(&server, &alice2, &format!("?limit=2&from={token}")).await;
    assert_eq!(event_ids(&next), [&chatter, &mention].map(String::as_str));
    let highlights = notifications(&server, &alice2, "?only=highlight").await;
    assert_eq!(event_ids(&highlights), [mention.as_str()]);
    // The same evaluation as /sync's counts: unread notifications per room agree.
    let synced = sync(&server, &alice2, "").await;
    for room in [&dm, &group, &muted] {
        let listed = all["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["room_id"] == room.as_str() && n["read"] == false)
            .count() as u64;
        let unread = &synced["rooms"]["join"][room]["unread_notifications"];
        assert_eq!(
            unread["notification_count"].as_u64(),
            Some(listed),
            "{room}: {unread}"
        );
    }
    // Reading marks them read.
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{group}/receipt/m.read/{chatter}"),
            alice2.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let all = notifications(&server, &alice2, "").await;
    let group_read = all["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["room_id"] == group.as_str())
        .unwrap();
    assert_eq!(group_read["read"], true);

    // An invite notifies the invited user: `user_is_target`, counted in the badge.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            bob.token(),
            json!({"preset": "private_chat", "invite": [alice.user_id]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let invite_room = body["room_id"].as_str().unwrap().to_owned();
    let mut invite = None;
    for _ in 0..600 {
        invite = gateway
            .delivered("phone")
            .into_iter()
            .find(|n| n["room_id"] == invite_room.as_str());
        if invite.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let invite = invite.expect("no push for the invite");
    assert_eq!(invite["type"], "m.room.member", "{invite}");
    assert_eq!(invite["user_is_target"], true);
    assert_eq!(invite["content"]["membership"], "invite");
    assert_eq!(
        invite["prio"], "high",
        "`.m.rule.invite_for_me` sets a sound"
    );

    // `kind: null` deletes a pusher.
    let (status, body) = set_pusher(&server, &alice2, http_pusher("spare", &url, None)).await;
    assert_eq!(status, 200, "{body}");
    let delete = json!({"kind": null, "app_id": "org.example.app", "pushkey": "spare"});
    let (status, body) = set_pusher(&server, &alice2, delete).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(pushkeys(&server, &alice2).await, ["phone"]);

    // Pushers go with their device: logout removes the phone's pusher; a password change that
    // signs the other devices out removes theirs, and keeps the changing device's.
    let (status, body) = server
        .post("/_matrix/client/v3/logout", alice.token(), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(pushkeys(&server, &alice2).await.is_empty());
    let alice3 = server.login_session("alice", "alice-password").await;
    let (status, body) = set_pusher(&server, &alice3, http_pusher("laptop", &url, None)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = set_pusher(&server, &alice2, http_pusher("desk", &url, None)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/password",
            alice2.token(),
            json!({
                "new_password": "alice-new-password",
                "logout_devices": true,
                "auth": {"type": "m.login.password", "password": "alice-password",
                         "identifier": {"type": "m.id.user", "user": "alice"}},
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(pushkeys(&server, &alice2).await, ["desk"]);
    server.stop();
}
