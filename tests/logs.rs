//! Passwords, access tokens and shared secrets never reach the server log.
use crate::common;

use common::{TestServer, password_auth};
use reqwest::Method;
use serde_json::json;

const PASSWORD: &str = "Tr0ub4dor-never-logged";
const NEW_PASSWORD: &str = "C0rrect-horse-never-logged";

#[tokio::test]
async fn no_secret_reaches_the_log() {
    let server = TestServer::start().await;
    let alice = server.register("alice", PASSWORD).await;
    let login = server.login_session("alice", PASSWORD).await;
    // A wrong password is logged no more than a right one.
    let (status, _) = server.login("alice", "Wr0ng-never-logged").await;
    assert_eq!(status, 403);

    // Tokens in the query string, the way some clients and every curl user send them.
    for (token, expected) in [
        (login.access_token.as_str(), 200),
        ("mat_bogus-token-never-logged", 401),
    ] {
        let (status, body) = server
            .get(
                &format!("/_matrix/client/v3/account/whoami?access_token={token}"),
                None,
            )
            .await;
        assert_eq!(status, expected, "{body}");
    }
    let (status, body) = server
        .get(
            &format!(
                "/_matrix/client/v3/no/such/endpoint?access_token={}",
                login.access_token
            ),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");

    // Passwords inside user-interactive auth.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/password",
            alice.token(),
            json!({"new_password": NEW_PASSWORD, "auth": password_auth("alice", "Wr0ng-uia-never-logged", None)}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = server
        .with_password_auth(
            Method::POST,
            "/_matrix/client/v3/account/password",
            &alice,
            PASSWORD,
            json!({"new_password": NEW_PASSWORD, "logout_devices": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The admin CLI and shared-secret registration.
    let output = server.cli(
        &["admin", "add-user", "bob", "--password-stdin"],
        Some("Cli-password-never-logged\n"),
    );
    assert!(output.status.success());
    let output = server.cli(&["admin", "list-users"], None);
    assert!(output.status.success());
    let cli_output = format!("{}{}", common::stdout(&output), common::stderr(&output));
    let (_, body) = server.get("/_synapse/admin/v1/register", None).await;
    assert!(body["nonce"].is_string(), "{body}");

    // Make sure the log has caught up with the requests above.
    let (status, _) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = server.log_text();
    assert!(
        log.contains("served") || log.contains("status"),
        "the log records requests: {log}"
    );
    assert!(
        log.contains("@alice:test.local"),
        "the log is useful: {log}"
    );
    for secret in [
        PASSWORD,
        NEW_PASSWORD,
        "Wr0ng-never-logged",
        "Wr0ng-uia-never-logged",
        "Cli-password-never-logged",
        "mat_bogus-token-never-logged",
        &alice.access_token,
        &login.access_token,
        "test-shared-secret",
    ] {
        assert!(!log.contains(secret), "`{secret}` is in the log:\n{log}");
        assert!(
            !cli_output.contains(secret),
            "`{secret}` printed by the CLI"
        );
    }
    // Nor a recognisable piece of a token.
    for token in [&alice.access_token, &login.access_token] {
        let tail = &token[token.len() - 16..];
        assert!(!log.contains(tail), "part of a token is in the log:\n{log}");
    }
}
