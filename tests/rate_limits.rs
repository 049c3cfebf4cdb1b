//! `rc_login` and `rc_registration`: Synapse's rate limits, with `M_LIMIT_EXCEEDED` and a retry
//! time once a bucket is full.
mod common;

use common::{TestServer, assert_error, send};
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
