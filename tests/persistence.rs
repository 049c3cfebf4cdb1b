//! What the server acknowledged survives a restart, and a crash (SIGKILL) right after.
mod common;

use common::{TestServer, assert_error};
use serde_json::json;

#[tokio::test]
async fn accounts_and_sessions_survive_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/devices/{}", alice.device_id),
            alice.token(),
            json!({"display_name": "Kept"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.restart();

    let (status, body) = server.whoami(&alice.access_token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:test.local");
    server.login_session("alice", "pw").await;
    assert_error(&server.login("alice", "nope").await, 403, "M_FORBIDDEN");
    let (_, body) = server
        .get(
            &format!("/_matrix/client/v3/devices/{}", alice.device_id),
            alice.token(),
        )
        .await;
    assert_eq!(body["display_name"], "Kept");
    // And the name stays taken.
    assert_error(
        &server
            .get("/_matrix/client/v3/register/available?username=alice", None)
            .await,
        400,
        "M_USER_IN_USE",
    );
}

#[tokio::test]
async fn a_clean_stop_exits_successfully() {
    let mut server = TestServer::start().await;
    server.register("alice", "pw").await;
    assert!(server.stop(), "SIGTERM ends the server with exit status 0");
    server.relaunch();
    server.login_session("alice", "pw").await;
}

#[tokio::test]
async fn an_acknowledged_registration_survives_sigkill() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    server.kill9();
    server.relaunch();
    let (status, body) = server.whoami(&alice.access_token).await;
    assert_eq!(status, 200, "{body}");
    server.login_session("alice", "pw").await;
}

#[tokio::test]
async fn acknowledged_changes_survive_sigkill() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice", "old-pw").await;
    let other = server.login_session("alice", "old-pw").await;
    let (status, body) = server
        .with_password_auth(
            reqwest::Method::POST,
            "/_matrix/client/v3/account/password",
            &alice,
            "old-pw",
            json!({"new_password": "new-pw"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .put(
            "/_matrix/client/v3/profile/@alice:test.local/displayname",
            alice.token(),
            json!({"displayname": "Alice"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.kill9();
    server.relaunch();
    server.login_session("alice", "new-pw").await;
    assert_error(&server.login("alice", "old-pw").await, 403, "M_FORBIDDEN");
    assert_error(
        &server.whoami(&other.access_token).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let (_, body) = server
        .get(
            "/_matrix/client/v3/profile/@alice:test.local/displayname",
            None,
        )
        .await;
    assert_eq!(body["displayname"], "Alice");
}
