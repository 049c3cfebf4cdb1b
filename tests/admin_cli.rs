//! `appliance admin …` against a running server: its changes are seen over HTTP at once.
mod common;

use common::{TestServer, assert_error, assert_failure, assert_success};

/// The columns of `admin list-users` for `user_id`: user, admin, deactivated, created, last seen.
fn user_row(server: &TestServer, user_id: &str) -> Option<Vec<String>> {
    let listing = assert_success(&server.cli(&["admin", "list-users"], None));
    let mut lines = listing.lines();
    let header = lines.next().expect("a header line");
    assert!(
        header.starts_with("USER") && header.contains("ADMIN"),
        "{listing}"
    );
    lines
        .map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|columns| columns.first().map(String::as_str) == Some(user_id))
}

#[tokio::test]
async fn add_user_then_log_in_over_http() {
    let server = TestServer::start().await;
    let output = server.cli(
        &["admin", "add-user", "bob", "--password-stdin"],
        Some("pw\n"),
    );
    let out = assert_success(&output);
    assert!(out.contains("@bob:test.local"), "{out}");
    let bob = server.login_session("bob", "pw").await;
    assert_eq!(bob.user_id, "@bob:test.local");
    // The newline is not part of the password.
    assert_error(&server.login("bob", "pw\n").await, 403, "M_FORBIDDEN");
    let (status, body) = server
        .get(
            "/_matrix/client/v3/profile/@bob:test.local/displayname",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["displayname"], "bob");

    let row = user_row(&server, "@bob:test.local").expect("bob is listed");
    assert_eq!(row[1], "no", "not an admin: {row:?}");
    assert_eq!(row[2], "no", "not deactivated: {row:?}");
}

#[tokio::test]
async fn adding_an_existing_user_fails_clearly() {
    let server = TestServer::start().await;
    server.register("bob", "original").await;
    let output = server.cli(
        &["admin", "add-user", "bob", "--password-stdin"],
        Some("other\n"),
    );
    let stderr = assert_failure(&output);
    assert!(
        stderr.contains("@bob:test.local") && stderr.contains("already exists"),
        "{stderr}"
    );
    server.login_session("bob", "original").await;
    assert_error(&server.login("bob", "other").await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn invalid_user_names_are_refused() {
    let server = TestServer::start().await;
    for bad in ["bad name", "_bridge", "1234", "Bob!", "@bob:other.server"] {
        let output = server.cli(
            &["admin", "add-user", bad, "--password-stdin"],
            Some("pw\n"),
        );
        let stderr = assert_failure(&output);
        assert!(stderr.starts_with("error:"), "{bad}: {stderr}");
        assert!(!stderr.contains("panicked"), "{bad}: {stderr}");
    }
    let listing = assert_success(&server.cli(&["admin", "list-users"], None));
    assert_eq!(listing.lines().count(), 1, "nobody was created: {listing}");
}

#[tokio::test]
async fn add_user_needs_a_password() {
    let server = TestServer::start().await;
    let stderr =
        assert_failure(&server.cli(&["admin", "add-user", "bob", "--password-stdin"], Some("")));
    assert!(stderr.contains("password"), "{stderr}");
    // Without --password-stdin and without a terminal, it refuses rather than hangs.
    let stderr = assert_failure(&server.cli(&["admin", "add-user", "bob"], Some("pw\n")));
    assert!(stderr.contains("--password-stdin"), "{stderr}");
    assert!(user_row(&server, "@bob:test.local").is_none());
}

#[tokio::test]
async fn add_user_accepts_a_full_user_id() {
    let server = TestServer::start().await;
    assert_success(&server.cli(
        &["admin", "add-user", "@carol:test.local", "--password-stdin"],
        Some("pw\n"),
    ));
    let carol = server.login_session("carol", "pw").await;
    assert_eq!(carol.user_id, "@carol:test.local");
}

#[tokio::test]
async fn add_user_can_make_an_admin() {
    let server = TestServer::start().await;
    let out = assert_success(&server.cli(
        &["admin", "add-user", "root", "--admin", "--password-stdin"],
        Some("pw\n"),
    ));
    assert!(out.contains("admin"), "{out}");
    assert_eq!(user_row(&server, "@root:test.local").unwrap()[1], "yes");
}

#[tokio::test]
async fn reset_password_signs_out_at_once() {
    let server = TestServer::start().await;
    assert_success(&server.cli(
        &["admin", "add-user", "bob", "--password-stdin"],
        Some("old-pw\n"),
    ));
    let bob = server.login_session("bob", "old-pw").await;
    assert_eq!(server.whoami(&bob.access_token).await.0, 200);

    let out = assert_success(&server.cli(
        &["admin", "reset-password", "bob", "--password-stdin"],
        Some("new-pw\n"),
    ));
    assert!(out.contains("@bob:test.local"), "{out}");
    assert_error(
        &server.whoami(&bob.access_token).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(&server.login("bob", "old-pw").await, 403, "M_FORBIDDEN");
    let bob = server.login_session("bob", "new-pw").await;

    // A full user ID works the same.
    assert_success(&server.cli(
        &[
            "admin",
            "reset-password",
            "@bob:test.local",
            "--password-stdin",
        ],
        Some("newer-pw\n"),
    ));
    assert_error(
        &server.whoami(&bob.access_token).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    server.login_session("bob", "newer-pw").await;
    assert_error(&server.login("bob", "new-pw").await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn commands_on_unknown_users_fail() {
    let server = TestServer::start().await;
    for args in [
        &["admin", "reset-password", "nobody", "--password-stdin"][..],
        &["admin", "set-admin", "nobody", "true"],
        &["admin", "deactivate", "@nobody:test.local"],
        &["admin", "set-admin", "@bob:other.server", "true"],
    ] {
        let stderr = assert_failure(&server.cli(args, Some("pw\n")));
        assert!(
            stderr.contains("nobody") || stderr.contains("other.server"),
            "{args:?}: {stderr}"
        );
    }
    let listing = assert_success(&server.cli(&["admin", "list-users"], None));
    assert_eq!(listing.lines().count(), 1, "nobody was created: {listing}");
}

#[tokio::test]
async fn list_users_shows_admins_and_set_admin_changes_it() {
    let server = TestServer::start().await;
    server.register("alice", "pw").await;
    assert_success(&server.cli(
        &["admin", "add-user", "bob", "--password-stdin"],
        Some("pw\n"),
    ));
    let alice = user_row(&server, "@alice:test.local").expect("alice listed");
    let bob = user_row(&server, "@bob:test.local").expect("bob listed");
    assert_eq!((alice[1].as_str(), bob[1].as_str()), ("no", "no"));
    assert_ne!(alice[4], "-", "alice has been seen: {alice:?}");

    let out = assert_success(&server.cli(&["admin", "set-admin", "bob", "true"], None));
    assert!(out.contains("@bob:test.local"), "{out}");
    assert_eq!(user_row(&server, "@bob:test.local").unwrap()[1], "yes");
    assert_eq!(user_row(&server, "@alice:test.local").unwrap()[1], "no");

    assert_success(&server.cli(&["admin", "set-admin", "@alice:test.local", "true"], None));
    assert_success(&server.cli(&["admin", "set-admin", "bob", "false"], None));
    assert_eq!(user_row(&server, "@alice:test.local").unwrap()[1], "yes");
    assert_eq!(user_row(&server, "@bob:test.local").unwrap()[1], "no");

    assert_failure(&server.cli(&["admin", "set-admin", "bob", "maybe"], None));
}

#[tokio::test]
async fn deactivate_ends_the_account() {
    let server = TestServer::start().await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let out = assert_success(&server.cli(&["admin", "deactivate", "bob"], None));
    assert!(out.contains("@bob:test.local"), "{out}");
    assert_error(
        &server.whoami(&bob.access_token).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(&server.login("bob", "pw").await, 403, "M_FORBIDDEN");
    assert_eq!(user_row(&server, "@bob:test.local").unwrap()[2], "yes");

    assert_success(&server.cli(&["admin", "deactivate", "@carol:test.local"], None));
    assert_error(&server.login("carol", "pw").await, 403, "M_FORBIDDEN");
    assert_error(
        &server.whoami(&carol.access_token).await,
        401,
        "M_UNKNOWN_TOKEN",
    );

    // The name stays taken, for the API and the CLI.
    assert_error(
        &server
            .get("/_matrix/client/v3/register/available?username=bob", None)
            .await,
        400,
        "M_USER_IN_USE",
    );
    let stderr = assert_failure(&server.cli(
        &["admin", "add-user", "bob", "--password-stdin"],
        Some("pw\n"),
    ));
    assert!(stderr.contains("already exists"), "{stderr}");
}

#[tokio::test]
async fn admin_commands_work_with_the_server_stopped() {
    let mut server = TestServer::start().await;
    server.stop();
    assert_success(&server.cli(
        &["admin", "add-user", "bob", "--password-stdin"],
        Some("pw\n"),
    ));
    server.relaunch();
    server.login_session("bob", "pw").await;
}
