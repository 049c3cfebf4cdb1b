//! `rc_login` and `rc_registration`: Synapse's rate limits, with `M_LIMIT_EXCEEDED` and a retry
//! time once a bucket is full.
use crate::common;

use common::{Session, TestServer, assert_error, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A config with the given rate limits and everything else open.
fn config(address: &str, failed_attempts: &str, registration: &str, x_forwarded: bool) -> String {
    let mut yaml = format!(
        "server_name: test.local
enable_registration: true
enable_registration_without_verification: true
rc_login:
  address: {address}
  account: {{per_second: 1000, burst_count: 1000}}
  failed_attempts: {failed_attempts}
rc_registration: {registration}
"
    );
    if x_forwarded {
        yaml.push_str(
            "listeners:\n  - port: 0\n    x_forwarded: true\n    resources: [{names: [client]}]\n",
        );
    }
    yaml
}

const GENEROUS: &str = "{per_second: 1000, burst_count: 1000}";
const TWO_THEN_SLOW: &str = "{per_second: 0.1, burst_count: 2}";

#[track_caller]
fn assert_limited(response: &(StatusCode, Value)) {
    assert_error(response, 429, "M_LIMIT_EXCEEDED");
    let retry = response.1["retry_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no retry_after_ms in {}", response.1));
    // 0.1 per second: the next slot is at most ten seconds away.
    assert!(retry > 0 && retry <= 10_001, "retry_after_ms {retry}");
}

#[tokio::test]
async fn logins_per_address_are_limited() {
    let server =
        TestServer::start_with_config(&config(TWO_THEN_SLOW, GENEROUS, GENEROUS, false)).await;
    let alice = server.register("alice", "pw").await;
    server.register("bob", "pw").await;
    server.login_session("alice", "pw").await;
    server.login_session("bob", "pw").await;
    assert_limited(&server.login("alice", "pw").await);
    // Refused before the password is looked at: a wrong one is limited the same way.
    assert_limited(&server.login("bob", "wrong").await);
    // Existing sessions are unaffected.
    assert_eq!(server.whoami(&alice.access_token).await.0, 200);
}

#[tokio::test]
async fn failed_logins_are_limited_per_account() {
    let server =
        TestServer::start_with_config(&config(GENEROUS, TWO_THEN_SLOW, GENEROUS, false)).await;
    server.register("alice", "pw").await;
    server.register("bob", "pw").await;
    assert_error(&server.login("alice", "wrong").await, 403, "M_FORBIDDEN");
    assert_error(&server.login("alice", "wrong").await, 403, "M_FORBIDDEN");
    // Now even the right password is refused until the bucket drains.
    assert_limited(&server.login("alice", "pw").await);
    assert_limited(&server.login("@alice:test.local", "pw").await);
    // Another account is not affected.
    server.login_session("bob", "pw").await;
    server.login_session("bob", "pw").await;
    server.login_session("bob", "pw").await;
}

#[tokio::test]
async fn successful_logins_are_not_failed_attempts() {
    let server =
        TestServer::start_with_config(&config(GENEROUS, TWO_THEN_SLOW, GENEROUS, false)).await;
    server.register("alice", "pw").await;
    for _ in 0..4 {
        server.login_session("alice", "pw").await;
    }
}

async fn register_raw(server: &TestServer, username: &str, auth: bool) -> (StatusCode, Value) {
    let mut body = json!({"username": username, "password": "pw"});
    if auth {
        body["auth"] = json!({"type": "m.login.dummy"});
    }
    server.post("/_matrix/client/v3/register", None, body).await
}

#[tokio::test]
async fn registrations_per_address_are_limited() {
    let server =
        TestServer::start_with_config(&config(GENEROUS, GENEROUS, TWO_THEN_SLOW, false)).await;
    // Asking for the auth flows costs nothing.
    for _ in 0..3 {
        let (status, body) = register_raw(&server, "alice", false).await;
        assert_eq!(status, 401, "{body}");
    }
    assert_eq!(register_raw(&server, "alice", true).await.0, 200);
    assert_eq!(register_raw(&server, "bob", true).await.0, 200);
    assert_limited(&register_raw(&server, "carol", true).await);
    assert_limited(&register_raw(&server, "carol", false).await);
    assert_error(&server.login("carol", "pw").await, 403, "M_FORBIDDEN");
}

/// The client address behind a trusted reverse proxy is the nearest `X-Forwarded-For` hop that
/// is not itself a trusted proxy (here the test's own 127.0.0.1); the far end, which the client
/// wrote itself, is not believed.
async fn login_from(server: &TestServer, ip: &str) -> StatusCode {
    login_with(
        server,
        "x-forwarded-for",
        &format!("6.6.6.6, {ip}, 127.0.0.2"),
    )
    .await
}

/// Alice's login with one extra header (`X-Forwarded-For` or `Forwarded`).
async fn login_with(server: &TestServer, header: &str, value: &str) -> StatusCode {
    send(
        server
            .builder(Method::POST, "/_matrix/client/v3/login")
            .header(header, value)
            .json(&json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw"})),
    )
    .await
    .status
}

#[tokio::test]
async fn limits_follow_x_forwarded_for_behind_a_trusted_proxy() {
    let server =
        TestServer::start_with_config(&config(TWO_THEN_SLOW, GENEROUS, GENEROUS, true)).await;
    server.register("alice", "pw").await;
    assert_eq!(login_from(&server, "192.0.2.1").await, 200);
    assert_eq!(login_from(&server, "192.0.2.1").await, 200);
    assert_eq!(login_from(&server, "192.0.2.1").await, 429);
    assert_eq!(login_from(&server, "192.0.2.2").await, 200);
    assert_eq!(login_from(&server, "2001:db8::1").await, 200);
}

#[tokio::test]
async fn x_forwarded_for_is_ignored_from_a_peer_that_is_not_a_trusted_proxy() {
    // `x_forwarded` is on, but the connection (from 127.0.0.1) is not from the listed proxy.
    let yaml = config(TWO_THEN_SLOW, GENEROUS, GENEROUS, true).replace(
        "x_forwarded: true\n",
        "x_forwarded: true\n    trusted_proxies: ['192.0.2.99', '10.0.0.0/8']\n",
    );
    assert!(yaml.contains("trusted_proxies"));
    let server = TestServer::start_with_config(&yaml).await;
    server.register("alice", "pw").await;
    assert_eq!(login_from(&server, "192.0.2.1").await, 200);
    assert_eq!(login_from(&server, "192.0.2.2").await, 200);
    assert_eq!(
        login_from(&server, "192.0.2.3").await,
        429,
        "a spoofed header from an untrusted peer must not dodge the limit"
    );
    // The same check through RFC 7239's header.
    assert_eq!(login_with(&server, "forwarded", "for=192.0.2.4").await, 429);
}

#[tokio::test]
async fn forwarded_header_is_honoured_from_a_trusted_proxy() {
    let server =
        TestServer::start_with_config(&config(TWO_THEN_SLOW, GENEROUS, GENEROUS, true)).await;
    server.register("alice", "pw").await;
    let login = |forwarded| login_with(&server, "forwarded", forwarded);
    assert_eq!(login("for=192.0.2.1;proto=https").await, 200);
    assert_eq!(login("for=192.0.2.1").await, 200);
    assert_eq!(login("for=192.0.2.1").await, 429);
    assert_eq!(login("for=\"[2001:db8::7]:4711\"").await, 200);
}

#[tokio::test]
async fn x_forwarded_for_is_ignored_without_a_trusted_proxy() {
    let server =
        TestServer::start_with_config(&config(TWO_THEN_SLOW, GENEROUS, GENEROUS, false)).await;
    server.register("alice", "pw").await;
    assert_eq!(login_from(&server, "192.0.2.1").await, 200);
    assert_eq!(login_from(&server, "192.0.2.2").await, 200);
    assert_eq!(
        login_from(&server, "192.0.2.3").await,
        429,
        "a client must not dodge the limit with a forged header"
    );
}

// ---- what accounts do: rc_message, rc_admin_redaction, rc_joins, rc_invites, rc_media_create ----

/// Everything generous (as `config`), with `overrides` (key, YAML value) for the limits under
/// test.
fn account_config(overrides: &[(&str, &str)]) -> String {
    let mut keys = vec![
        ("rc_message", GENEROUS.to_owned()),
        ("rc_joins", format!("{{local: {GENEROUS}}}")),
        (
            "rc_invites",
            format!("{{per_room: {GENEROUS}, per_user: {GENEROUS}, per_issuer: {GENEROUS}}}"),
        ),
        ("rc_media_create", GENEROUS.to_owned()),
        ("rc_room_creation", GENEROUS.to_owned()),
    ];
    for (key, value) in overrides {
        keys.retain(|(k, _)| k != key);
        keys.push((key, (*value).to_owned()));
    }
    let mut yaml = config(GENEROUS, GENEROUS, GENEROUS, false);
    yaml.push_str("registration_shared_secret: test-shared-secret\n");
    for (key, value) in keys {
        yaml.push_str(&format!("{key}: {value}\n"));
    }
    yaml
}

/// `{per_second: 0.01, burst_count: N}`: N actions, then one per 100 s (no refill during a test).
fn burst(n: u32) -> String {
    format!("{{per_second: 0.01, burst_count: {n}}}")
}

async fn create_room(server: &TestServer, who: &Session, body: Value) -> (StatusCode, Value) {
    server
        .post("/_matrix/client/v3/createRoom", who.token(), body)
        .await
}

async fn new_room(server: &TestServer, who: &Session) -> String {
    let (status, body) = create_room(server, who, json!({"preset": "public_chat"})).await;
    assert_eq!(status, 200, "{body}");
    body["room_id"].as_str().unwrap().to_owned()
}

async fn say(server: &TestServer, who: &Session, room: &str, text: &str) -> (StatusCode, Value) {
    let txn = rand_txn();
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            who.token(),
            json!({"msgtype": "m.text", "body": text}),
        )
        .await
}

async fn redact(
    server: &TestServer,
    who: &Session,
    room: &str,
    event: &str,
) -> (StatusCode, Value) {
    let txn = rand_txn();
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/redact/{event}/{txn}"),
            who.token(),
            json!({"reason": "spam"}),
        )
        .await
}

async fn set_topic(server: &TestServer, who: &Session, room: &str) -> (StatusCode, Value) {
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
            who.token(),
            json!({"topic": "limits"}),
        )
        .await
}

async fn join(server: &TestServer, who: &Session, room: &str) -> (StatusCode, Value) {
    server
        .post(
            &format!("/_matrix/client/v3/join/{room}"),
            who.token(),
            json!({}),
        )
        .await
}

async fn invite(
    server: &TestServer,
    who: &Session,
    room: &str,
    user: &Session,
) -> (StatusCode, Value) {
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            who.token(),
            json!({"user_id": user.user_id}),
        )
        .await
}

fn rand_txn() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("txn{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[track_caller]
fn assert_ok(response: &(StatusCode, Value)) {
    assert_eq!(response.0, 200, "{}", response.1);
}

/// A refusal whose retry time is at most `max_ms` away.
#[track_caller]
fn assert_limited_within(response: &(StatusCode, Value), max_ms: u64) -> u64 {
    assert_error(response, 429, "M_LIMIT_EXCEEDED");
    let retry = response.1["retry_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no retry_after_ms in {}", response.1));
    assert!(retry > 0 && retry <= max_ms, "retry_after_ms {retry}");
    retry
}

#[tokio::test]
async fn every_event_a_client_sends_counts_against_rc_message() {
    let server = TestServer::start_with_config(&account_config(&[("rc_message", &burst(6))])).await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    // 1: a room's creation counts once, however many events it writes.
    let room = new_room(&server, &alice).await;
    // 2: a profile change counts once, though it re-sends alice's member event to the room.
    assert_ok(
        &server
            .put(
                &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
                alice.token(),
                json!({"displayname": "Alice"}),
            )
            .await,
    );
    // 3 to 6: a message, a state event, a redaction, an invite.
    let (status, sent) = say(&server, &alice, &room, "one").await;
    assert_eq!(status, 200, "{sent}");
    let event = sent["event_id"].as_str().unwrap().to_owned();
    assert_ok(&set_topic(&server, &alice, &room).await);
    assert_ok(&redact(&server, &alice, &room, &event).await);
    assert_ok(&invite(&server, &alice, &room, &bob).await);
    // The bucket is full: every kind of event is refused, nothing is written.
    let retry = assert_limited_within(&say(&server, &alice, &room, "two").await, 100_001);
    assert!(retry > 50_000, "one action per 100 s: {retry}");
    assert_limited_within(&set_topic(&server, &alice, &room).await, 100_001);
    assert_limited_within(&redact(&server, &alice, &room, &event).await, 100_001);
    assert_limited_within(&create_room(&server, &alice, json!({})).await, 100_001);
    assert_limited_within(
        &server
            .post(
                &format!("/_matrix/client/v3/rooms/{room}/leave"),
                alice.token(),
                json!({}),
            )
            .await,
        100_001,
    );
    let (status, messages) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"),
            alice.token(),
        )
        .await;
    assert_eq!(status, 200, "{messages}");
    let texts: Vec<_> = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .collect();
    assert_eq!(
        texts.len(),
        1,
        "only the first message was stored: {texts:?}"
    );
    // Another account has its own bucket.
    assert_ok(&join(&server, &bob, &room).await);
    assert_ok(&say(&server, &bob, &room, "hi").await);
}

#[tokio::test]
async fn the_message_limit_recovers_after_retry_after_ms() {
    let server = TestServer::start_with_config(&account_config(&[(
        "rc_message",
        "{per_second: 2, burst_count: 3}",
    )]))
    .await;
    let alice = server.register("alice", "pw").await;
    let room = new_room(&server, &alice).await;
    let mut refused = None;
    for n in 0..40 {
        let response = say(&server, &alice, &room, &format!("{n}")).await;
        if response.0 != 200 {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("a burst of messages is refused at some point");
    // Two per second: the next slot is at most half a second away.
    let retry = assert_limited_within(&refused, 501);
    // A retried send that was stored (the client lost the answer) is answered with its event,
    // not refused, while the limit holds.
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/kept-txn");
    let content = json!({"msgtype": "m.text", "body": "kept"});
    tokio::time::sleep(std::time::Duration::from_millis(retry)).await;
    let (status, first) = server.put(&path, alice.token(), content.clone()).await;
    assert_eq!(status, 200, "{first}");
    let mut retried = 0;
    while say(&server, &alice, &room, "filler").await.0 == 200 {
        retried += 1;
        assert!(retried < 40, "the limit is reached again");
    }
    let (status, again) = server.put(&path, alice.token(), content).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["event_id"], first["event_id"]);
    let refused = say(&server, &alice, &room, "still limited").await;
    let retry = assert_limited_within(&refused, 501);
    tokio::time::sleep(std::time::Duration::from_millis(retry)).await;
    assert_ok(&say(&server, &alice, &room, "after the wait").await);
}

#[tokio::test]
async fn server_admins_are_exempt() {
    let server = TestServer::start_with_config(&account_config(&[
        ("rc_message", &burst(2)),
        ("rc_joins", &format!("{{local: {}}}", burst(1))),
        ("rc_media_create", &burst(1)),
    ]))
    .await;
    let root = server.register("root", "pw").await;
    let bob = server.register("bob", "pw").await;
    let rooms = [new_room(&server, &bob).await, new_room(&server, &bob).await];
    assert_limited_within(&say(&server, &bob, &rooms[0], "one").await, 100_001);
    // Made an admin while the server runs (as `appliance admin` does on a box).
    common::assert_success(&server.cli(&["admin", "set-admin", "root", "true"], None));
    let own_room = new_room(&server, &root).await;
    for n in 0..12 {
        assert_ok(&say(&server, &root, &own_room, &format!("{n}")).await);
    }
    // Two joins of rooms root is not in, past rc_joins.local's one.
    assert_ok(&join(&server, &root, &rooms[0]).await);
    assert_ok(&join(&server, &root, &rooms[1]).await);
    for _ in 0..3 {
        assert_ok(
            &server
                .post("/_matrix/media/v1/create", root.token(), json!({}))
                .await,
        );
    }
}

#[tokio::test]
async fn redactions_by_moderators_use_rc_admin_redaction_when_set() {
    let server = TestServer::start_with_config(&account_config(&[
        ("rc_message", &burst(3)),
        ("rc_admin_redaction", &burst(10)),
    ]))
    .await;
    let moderator = server.register("moderator", "pw").await;
    let spammer = server.register("spammer", "pw").await;
    // The spammer is an admin here only so that it can send more than three messages.
    common::assert_success(&server.cli(&["admin", "set-admin", "spammer", "true"], None));
    let room = new_room(&server, &moderator).await; // the moderator's first action
    assert_ok(&join(&server, &spammer, &room).await);
    let mut spam = Vec::new();
    for n in 0..6 {
        let (status, body) = say(&server, &spammer, &room, &format!("spam {n}")).await;
        assert_eq!(status, 200, "{body}");
        spam.push(body["event_id"].as_str().unwrap().to_owned());
    }
    // Six redactions of someone else's events: far past rc_message's three.
    for event in &spam {
        assert_ok(&redact(&server, &moderator, &room, event).await);
    }
    // They did not touch rc_message: two more events go through, then the limit.
    let (status, own) = say(&server, &moderator, &room, "cleaned up").await;
    assert_eq!(status, 200, "{own}");
    // Redacting one's own event is an ordinary event.
    assert_ok(
        &redact(
            &server,
            &moderator,
            &room,
            own["event_id"].as_str().unwrap(),
        )
        .await,
    );
    assert_limited_within(&say(&server, &moderator, &room, "more").await, 100_001);
}

#[tokio::test]
async fn without_rc_admin_redaction_moderators_redact_within_rc_message() {
    let server = TestServer::start_with_config(&account_config(&[("rc_message", &burst(3))])).await;
    let moderator = server.register("moderator", "pw").await;
    let spammer = server.register("spammer", "pw").await;
    let room = new_room(&server, &moderator).await;
    assert_ok(&join(&server, &spammer, &room).await);
    let mut spam = Vec::new();
    for n in 0..2 {
        let (status, body) = say(&server, &spammer, &room, &format!("spam {n}")).await;
        assert_eq!(status, 200, "{body}");
        spam.push(body["event_id"].as_str().unwrap().to_owned());
    }
    assert_ok(&redact(&server, &moderator, &room, &spam[0]).await);
    assert_ok(&redact(&server, &moderator, &room, &spam[1]).await);
    assert_limited_within(&say(&server, &moderator, &room, "more").await, 100_001);
}

#[tokio::test]
async fn joins_are_limited_per_account_and_rejoining_is_free() {
    let server = TestServer::start_with_config(&account_config(&[(
        "rc_joins",
        &format!("{{local: {}}}", burst(2)),
    )]))
    .await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    // Creating rooms is not joining them.
    let rooms = [
        new_room(&server, &alice).await,
        new_room(&server, &alice).await,
        new_room(&server, &alice).await,
    ];
    assert_ok(&join(&server, &bob, &rooms[0]).await);
    assert_ok(&join(&server, &bob, &rooms[1]).await);
    assert_limited_within(&join(&server, &bob, &rooms[2]).await, 100_001);
    // Joining a room one is in already (a profile update) does not count.
    assert_ok(&join(&server, &bob, &rooms[0]).await);
    // Leaving and joining again does.
    assert_ok(
        &server
            .post(
                &format!("/_matrix/client/v3/rooms/{}/leave", rooms[1]),
                bob.token(),
                json!({}),
            )
            .await,
    );
    assert_limited_within(&join(&server, &bob, &rooms[1]).await, 100_001);
    // By ID too, and not for others.
    assert_limited_within(
        &server
            .post(
                &format!("/_matrix/client/v3/rooms/{}/join", rooms[2]),
                bob.token(),
                json!({}),
            )
            .await,
        100_001,
    );
    assert_ok(&join(&server, &carol, &rooms[2]).await);
}

/// Invite limits, one at a time: `limit` is the `rc_invites` value.
async fn invite_server(limit: &str) -> TestServer {
    TestServer::start_with_config(&account_config(&[("rc_invites", limit)])).await
}

#[tokio::test]
async fn invites_are_limited_per_room() {
    let server = invite_server(&format!("{{per_room: {}}}", burst(2))).await;
    let alice = server.register("alice", "pw").await;
    let mut users = Vec::new();
    for name in ["u1", "u2", "u3"] {
        users.push(server.register(name, "pw").await);
    }
    let room = new_room(&server, &alice).await;
    assert_ok(&invite(&server, &alice, &room, &users[0]).await);
    assert_ok(&invite(&server, &alice, &room, &users[1]).await);
    assert_limited_within(&invite(&server, &alice, &room, &users[2]).await, 100_001);
    // Another room has its own bucket.
    let other = new_room(&server, &alice).await;
    assert_ok(&invite(&server, &alice, &other, &users[2]).await);
    // createRoom with more invites than per_room's burst is refused, as Synapse does.
    let ids: Vec<_> = users.iter().map(|u| u.user_id.clone()).collect();
    let refused = create_room(&server, &alice, json!({"invite": ids})).await;
    assert_error(&refused, 400, "M_UNKNOWN");
    let (status, body) = create_room(&server, &alice, json!({"invite": ids[..2]})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn invites_are_limited_per_invited_user() {
    let server = invite_server(&format!("{{per_user: {}}}", burst(2))).await;
    let inviters = [
        server.register("alice", "pw").await,
        server.register("bob", "pw").await,
        server.register("dave", "pw").await,
    ];
    let carol = server.register("carol", "pw").await;
    let erin = server.register("erin", "pw").await;
    let mut rooms = Vec::new();
    for inviter in &inviters {
        rooms.push(new_room(&server, inviter).await);
    }
    // Carol receives two invites from different people into different rooms, then no more.
    assert_ok(&invite(&server, &inviters[0], &rooms[0], &carol).await);
    assert_ok(&invite(&server, &inviters[1], &rooms[1], &carol).await);
    assert_limited_within(
        &invite(&server, &inviters[2], &rooms[2], &carol).await,
        100_001,
    );
    assert_ok(&invite(&server, &inviters[2], &rooms[2], &erin).await);
}

#[tokio::test]
async fn invites_are_limited_per_inviter() {
    let server = invite_server(&format!("{{per_issuer: {}}}", burst(2))).await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let mut users = Vec::new();
    for name in ["u1", "u2", "u3"] {
        users.push(server.register(name, "pw").await);
    }
    let rooms = [
        new_room(&server, &alice).await,
        new_room(&server, &alice).await,
        new_room(&server, &alice).await,
    ];
    assert_ok(&invite(&server, &alice, &rooms[0], &users[0]).await);
    assert_ok(&invite(&server, &alice, &rooms[1], &users[1]).await);
    assert_limited_within(
        &invite(&server, &alice, &rooms[2], &users[2]).await,
        100_001,
    );
    let bobs = new_room(&server, &bob).await;
    assert_ok(&invite(&server, &bob, &bobs, &users[2]).await);
}

#[tokio::test]
async fn media_create_is_limited_per_account() {
    let server =
        TestServer::start_with_config(&account_config(&[("rc_media_create", &burst(2))])).await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let create = |who: &Session| {
        let token = who.access_token.clone();
        let server = &server;
        async move {
            server
                .post("/_matrix/media/v1/create", Some(&token), json!({}))
                .await
        }
    };
    assert_ok(&create(&alice).await);
    assert_ok(&create(&alice).await);
    assert_limited_within(&create(&alice).await, 100_001);
    assert_ok(&create(&bob).await);
}

#[tokio::test]
async fn shared_secret_nonces_are_limited_per_address() {
    let mut yaml = account_config(&[]);
    yaml = yaml.replace(
        &format!("rc_registration: {GENEROUS}"),
        &format!("rc_registration: {TWO_THEN_SLOW}"),
    );
    assert!(yaml.contains(TWO_THEN_SLOW));
    let server = TestServer::start_with_config(&yaml).await;
    const NONCE: &str = "/_synapse/admin/v1/register";
    for _ in 0..2 {
        let (status, body) = server.get(NONCE, None).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["nonce"].is_string(), "{body}");
    }
    let refused = server.get(NONCE, None).await;
    assert_limited(&refused);
    assert!(refused.1.get("nonce").is_none());
    // Registration through the client API has a bucket of its own.
    assert_eq!(register_raw(&server, "alice", true).await.0, 200);
}

#[tokio::test]
async fn room_creations_and_upgrades_are_limited_per_account() {
    let server = TestServer::start_with_config(&account_config(&[
        ("rc_room_creation", &burst(2)),
        ("rc_message", &burst(4)),
    ]))
    .await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = new_room(&server, &alice).await;
    new_room(&server, &alice).await;
    assert_limited_within(&create_room(&server, &alice, json!({})).await, 100_001);
    let upgrade = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/upgrade"),
            alice.token(),
            json!({"new_version": "11"}),
        )
        .await;
    assert_limited_within(&upgrade, 100_001);
    // The refused creations spent no event: two of rc_message's four are left.
    assert_ok(&say(&server, &alice, &room, "one").await);
    assert_ok(&say(&server, &alice, &room, "two").await);
    assert_limited_within(&say(&server, &alice, &room, "three").await, 100_001);
    new_room(&server, &bob).await;
}
