//! A real third-party client against the real server: the matrix-nio scenario scripts in
//! tests/nio/ run against a freshly started appliance.
//!
//! The Python interpreter is the one `APPLIANCE_TEST_PYTHON` names (tests/run.sh sets it);
//! without it, the test makes or reuses `<target dir>/test-venv` with tests/nio/requirements.txt
//! itself (tests/common/python.rs runs tests/venv.py), so a plain `cargo test` works on a machine
//! with python3 and PyPI access.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
    time::Duration,
};

use common::{OPEN_REGISTRATION, TestServer, python::Venv};

/// A scenario that takes longer than this is stuck (nio retries are bounded in the scripts).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

fn nio_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nio")
}

/// The interpreter that has matrix-nio, made once per test binary.
fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            Venv {
                env_var: "APPLIANCE_TEST_PYTHON",
                dir_name: "test-venv",
                requirements: "tests/nio/requirements.txt",
                module: "nio",
            }
            .python()
        })
        .clone()
        .unwrap_or_else(|e| panic!("no Python with matrix-nio: {e}"))
}

/// Runs tests/nio/<script> against the server and fails the test, with both sides' output,
/// unless it exits 0.
async fn run_nio_script(server: &TestServer, script: &str) {
    let python = tokio::task::spawn_blocking(python).await.expect("venv");
    let run = tokio::process::Command::new(&python)
        .arg(nio_dir().join(script))
        .arg(&server.base_url)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{script} did not finish within {SCRIPT_TIMEOUT:?}; server log:\n{}",
                server.log_text()
            )
        })
        .unwrap_or_else(|e| panic!("cannot run {} {script}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}).\n--- its stdout:\n{stdout}--- its stderr:\n{stderr}--- server log:\n{}",
        output.status,
        server.log_text()
    );
    // Shown with --nocapture: what the client checked.
    print!("{stdout}");
}

#[tokio::test]
async fn nio_accounts() {
    let server = TestServer::start_with_config(OPEN_REGISTRATION).await;
    run_nio_script(&server, "accounts.py").await;
}

#[tokio::test]
async fn nio_rooms() {
    let server = TestServer::start_with_config(OPEN_REGISTRATION).await;
    run_nio_script(&server, "rooms.py").await;
}

#[tokio::test]
async fn nio_e2ee() {
    let server = TestServer::start_with_config(OPEN_REGISTRATION).await;
    run_nio_script(&server, "e2ee.py").await;
}

#[tokio::test]
async fn nio_media() {
    let server = TestServer::start_with_config(OPEN_REGISTRATION).await;
    run_nio_script(&server, "media.py").await;
}
