//! Element's own client library against the real server: tests/js/element_flow.mjs drives two
//! matrix-js-sdk clients (the SDK Element Web is built on, pinned in tests/js/package.json)
//! through what Element does, from the sync loop with lazy-loaded members to back-pagination.
//!
//! Needs Node.js 20 or later and the npm registry: the SDK is installed with `npm ci` into
//! `<target dir>/test-js` once, and again when tests/js/package-lock.json changes.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::{OPEN_REGISTRATION, TestServer};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

fn js_sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// `<target dir>/test-js` with the SDK installed and the scripts copied beside it (ES modules
/// find packages from their own location, so they run from there).
fn prepared_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("test-js");
    std::fs::create_dir_all(&dir).expect("test-js dir");
    let lock = std::fs::read(js_sources().join("package-lock.json")).expect("package-lock.json");
    let installed_lock = std::fs::read(dir.join("package-lock.json")).ok();
    if installed_lock.as_deref() != Some(&lock[..]) || !dir.join("node_modules").exists() {
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(js_sources().join(file), dir.join(file)).expect("copy package files");
        }
        let output = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run npm (is Node.js installed?)");
        assert!(
            output.status.success(),
            "npm ci failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::copy(
        js_sources().join("element_flow.mjs"),
        dir.join("element_flow.mjs"),
    )
    .expect("copy script");
    dir
}

#[tokio::test]
async fn matrix_js_sdk_does_what_element_does() {
    let dir = tokio::task::spawn_blocking(prepared_dir)
        .await
        .expect("npm");
    let server = TestServer::start_with_config(OPEN_REGISTRATION).await;
    for user in ["alice", "bob"] {
        server.register(user, "js-sdk-password").await;
    }
    let run = tokio::process::Command::new("node")
        .arg(dir.join("element_flow.mjs"))
        .args([server.base_url.as_str(), "alice", "bob", "js-sdk-password"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the js-sdk flow did not finish; server log:\n{}",
                server.log_text()
            )
        })
        .expect("cannot run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("OK: the js-sdk flow passed"),
        "the js-sdk flow failed ({}).\n--- stdout:\n{stdout}--- stderr (last 60 lines):\n{}\n--- server log:\n{}",
        output.status,
        stderr
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n"),
        server.log_text()
    );
}
