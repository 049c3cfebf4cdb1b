//! What the server acknowledged survives a restart, and a crash (SIGKILL) right after, twenty
//! times under load; and one server per data directory.
use crate::common;

use std::{
    collections::HashSet,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{
    BINARY, MessageLoad, TestServer, assert_error, assert_failure, assert_success, path_str,
    room_event_ids,
};
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

/// Runs `appliance serve` on `config` and `data_dir` (`setup wizard` when the config file does not
/// exist yet) and waits (a bounded time) for it to exit; a server that keeps running fails the
/// test.
fn serve_expecting_exit(config: &Path, data_dir: &Path) -> Output {
    let command: &[&str] = if config.exists() {
        &["serve", "--listen", "127.0.0.1:0"]
    } else {
        &["setup", "wizard", "--listen", "127.0.0.1:0"]
    };
    let mut child = Command::new(BINARY)
        .args([
            "--config",
            path_str(config),
            "--data-dir",
            path_str(data_dir),
        ])
        .args(command)
        .env_remove("APPLIANCE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start appliance");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("wait");
            panic!(
                "a second server started on the same data directory; its log:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("wait")
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let stderr = assert_failure(&serve_expecting_exit(&server.config_path, &server.data_dir));
    assert!(
        stderr.contains(&format!("PID {}", server.pid()))
            && stderr.contains(path_str(&server.data_dir)),
        "{stderr}"
    );
    // The first server goes on serving, and the admin CLI still works beside it.
    assert_eq!(server.whoami(&alice.access_token).await.0, 200);
    assert_success(&server.cli(
        &["admin", "add-user", "bob", "--password-stdin"],
        Some("pw\n"),
    ));
    server.login_session("bob", "pw").await;
    // Once it has stopped, the directory is free again.
    assert!(server.stop());
    server.relaunch();
    server.login_session("alice", "pw").await;
}

#[tokio::test]
async fn setup_mode_holds_the_data_directory_too() {
    let server = TestServer::start_setup(None);
    let stderr = assert_failure(&serve_expecting_exit(&server.config_path, &server.data_dir));
    assert!(
        stderr.contains(&format!("PID {}", server.pid())),
        "{stderr}"
    );
    // The second one did not replace the wizard's setup token either.
    let token = assert_success(&server.cli(&["setup", "token"], None));
    assert!(server.log_text().contains(token.trim()));
}

/// The crash-consistency trials in small form: twenty times, the server is killed with SIGKILL
/// while eight clients send messages, and started again: every message it acknowledged is
/// there, in every later trial too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_messages_survive_repeated_sigkill_under_load() {
    const TRIALS: usize = 20;
    let started = Instant::now();
    let mut server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let (status, body) = server
        .post("/_matrix/client/v3/createRoom", alice.token(), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let room = body["room_id"].as_str().expect("room_id").to_owned();
    let mut acknowledged = Vec::new();
    for trial in 0..TRIALS {
        let load = MessageLoad::start(&server, &alice.access_token, &room, 8, &format!("t{trial}"));
        // Different moments in the write cycle: 80 to 370 ms after the load starts.
        tokio::time::sleep(Duration::from_millis(80 + (trial as u64 * 53) % 290)).await;
        server.kill9();
        acknowledged.extend(load.finish().await);
        server.relaunch();
        let present: HashSet<String> = room_event_ids(&server, &alice.access_token, &room)
            .await
            .into_iter()
            .collect();
        let lost: Vec<_> = acknowledged
            .iter()
            .filter(|id| !present.contains(*id))
            .collect();
        assert!(
            lost.is_empty(),
            "trial {trial}: {} of {} acknowledged events lost, e.g. {:?}",
            lost.len(),
            acknowledged.len(),
            lost.first()
        );
    }
    assert!(
        acknowledged.len() >= TRIALS * 8,
        "too little load to mean anything: {} events acknowledged",
        acknowledged.len()
    );
    eprintln!(
        "{TRIALS} kill -9 trials, {} acknowledged events, none lost, in {:?}",
        acknowledged.len(),
        started.elapsed()
    );
}
