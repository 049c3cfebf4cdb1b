//! Element's own client library against the real server: tests/js/element_flow.mjs drives two
//! matrix-js-sdk clients (the SDK Element Web is built on, pinned in tests/js/package.json)
//! through what Element does, from the sync loop with lazy-loaded members to back-pagination;
//! tests/js/element_e2ee.mjs does Element's encryption set-up (cross-signing, secret storage, key
//! backup) with the SDK's Rust crypto, an encrypted DM, and a restore from backup;
//! tests/js/delayed_events.mjs uses the SDK's delayed-event calls (MSC4140) as Element Call does.
//!
//! Needs Node.js 20 or later and the npm registry: the SDK is installed with `npm ci` into
//! `<target dir>/test-js` once, and again when tests/js/package-lock.json changes
//! (tests/common/js.rs).

use crate::common;

use std::{process::Stdio, time::Duration};

use common::{OPEN_REGISTRATION, TestServer};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs one script with two fresh users and fails, with both sides' output, unless it exits 0
/// and prints its `OK:` line.
async fn run_script(script: &str) {
    run_script_with_config(script, OPEN_REGISTRATION).await;
}

/// [`run_script`] against a server with the config `yaml`.
async fn run_script_with_config(script: &str, yaml: &str) {
    // Both tests share one install, made once per test binary.
    let dir = tokio::task::spawn_blocking(common::js::sdk_dir)
        .await
        .expect("npm");
    let server = TestServer::start_with_config(yaml).await;
    for user in ["alice", "bob"] {
        server.register(user, "js-sdk-password").await;
    }
    let run = tokio::process::Command::new("node")
        .arg(dir.join(script))
        .args([server.base_url.as_str(), "alice", "bob", "js-sdk-password"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{script} did not finish; server log:\n{}",
                server.log_text()
            )
        })
        .expect("cannot run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail = |text: &str| {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    };
    assert!(
        output.status.success() && stdout.lines().any(|l| l.starts_with("OK: ")),
        "{script} failed ({}).\n--- stdout (last 60 lines):\n{}\n--- stderr (last 60 lines):\n{}\n--- server log:\n{}",
        output.status,
        tail(&stdout),
        tail(&stderr),
        server.log_text()
    );
}

#[tokio::test]
async fn matrix_js_sdk_does_what_element_does() {
    run_script("element_flow.mjs").await;
}

#[tokio::test]
async fn elements_crypto_sets_up_backup_and_decrypts_a_dm() {
    run_script("element_e2ee.mjs").await;
}

#[tokio::test]
async fn matrix_js_sdk_schedules_restarts_and_sends_delayed_events() {
    let config = format!("{OPEN_REGISTRATION}max_event_delay_duration: 1h\n");
    run_script_with_config("delayed_events.mjs", &config).await;
}
