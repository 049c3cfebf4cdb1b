//! The user's view across servers: matrix-nio clients, one on the appliance and one on Synapse,
//! share a room (tests/nio/federation.py) and an encrypted one (tests/nio/federation_e2ee.py);
//! the scripts do the talking, this starts both servers.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
    time::Duration,
};

use super::{
    FederatingAppliance,
    common::python::Venv,
    support::TestCa,
    synapse::{OPEN_REGISTRATION as SYNAPSE_OPEN_REGISTRATION, Synapse},
};

/// The scenario's own waits are bounded (45 s per federation round trip); this catches a hang.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// The interpreter of the matrix-nio venv (tests/nio/requirements.txt), made once per binary.
fn nio_python() -> PathBuf {
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

/// An appliance user creates a room, a Synapse user joins it by alias; through nio's sync on
/// their own servers each sees the other's messages, an edit, a redaction, state changes under
/// power levels, typing and a read receipt.
#[tokio::test(flavor = "multi_thread")]
async fn nio_clients_on_both_servers_share_a_room() {
    run_script("tests/nio/federation.py").await;
}

/// End-to-end encryption across servers (tests/nio/federation_e2ee.py): an appliance user and a
/// Synapse user in an encrypted room each decrypt the other's messages (keys queried and claimed
/// across servers, Megolm sessions as `m.direct_to_device` EDUs both ways); one-time keys
/// claimed by hand from both sides; a new device of the Synapse user appears to the appliance
/// user (`m.device_list_update`) and decrypts, and disappears once deleted; a new appliance
/// device reaches the Synapse user's client the same way.
#[tokio::test(flavor = "multi_thread")]
async fn nio_e2ee_across_servers() {
    run_script("tests/nio/federation_e2ee.py").await;
}

/// Starts the appliance and a Synapse and runs a nio `script` (relative to the crate) against
/// both; fails with both servers' logs when the script does.
async fn run_script(script: &str) {
    let ca = TestCa::new("federation test CA");
    let ours = FederatingAppliance::start(&ca);
    let synapse = Synapse::start(&ca, SYNAPSE_OPEN_REGISTRATION).await;
    let ca_file = ours.appliance.dir.path().join("ca.pem");

    let python = tokio::task::spawn_blocking(nio_python).await.unwrap();
    let name = script.rsplit('/').next().unwrap_or(script).to_owned();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(format!("https://localhost:{}", ours.port))
        .arg(format!("https://localhost:{}", synapse.port))
        .arg("--ca-file")
        .arg(&ca_file)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{name} did not finish within {SCRIPT_TIMEOUT:?}\nthe appliance's log:\n{}\
                 \nSynapse's log:\n{}",
                ours.appliance.log_text(),
                synapse.log_tail()
            )
        })
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{name} failed ({}).\n--- its stdout:\n{stdout}--- its stderr:\n{stderr}\
         --- the appliance's log:\n{}\n--- Synapse's log:\n{}",
        output.status,
        ours.appliance.log_text(),
        synapse.log_tail()
    );
    print!("{stdout}");
}
