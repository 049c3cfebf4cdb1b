//! Element's own encryption stack across servers: tests/js/federation_e2ee.mjs runs two
//! matrix-js-sdk clients with the SDK's Rust crypto (what Element Web runs), one on the appliance
//! and one on Synapse. The SDK is installed the way tests/js_client.rs gets it
//! (tests/common/js.rs); Node trusts the test CA through `NODE_EXTRA_CA_CERTS`.

use std::{process::Stdio, time::Duration};

use super::{
    FederatingAppliance,
    accounts::Account,
    common::js,
    support::TestCa,
    synapse::{OPEN_REGISTRATION as SYNAPSE_OPEN_REGISTRATION, Synapse},
};

/// The script's own waits are bounded (60 s per federation round trip); this catches a hang.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// The password `Account::register` gives both users.
const PASSWORD: &str = "correct horse battery";

/// An appliance user on matrix-js-sdk and a Synapse user on matrix-js-sdk share an encrypted
/// room and then an encrypted DM (`is_direct` invite across servers), each created by the
/// appliance user; in both, each decrypts the other's message and the plaintext is checked, so
/// keys queried and claimed across servers and Megolm sessions sent as `m.direct_to_device`
/// EDUs both ways must all work for Element's crypto, not only for nio's.
#[tokio::test(flavor = "multi_thread")]
async fn element_crypto_on_both_servers_decrypts_across_servers() {
    let dir = tokio::task::spawn_blocking(js::sdk_dir).await.expect("npm");
    let ca = TestCa::new("federation test CA");
    let ours = FederatingAppliance::start(&ca);
    let synapse = Synapse::start(&ca, SYNAPSE_OPEN_REGISTRATION).await;
    let roots = ca.roots();
    let alice = Account::register(ours.port, &roots, "js-alice").await;
    let bob = Account::register(synapse.port, &roots, "js-bob").await;

    let run = tokio::process::Command::new("node")
        .arg(dir.join("federation_e2ee.mjs"))
        .arg(format!("https://localhost:{}", ours.port))
        .arg(&alice.user_id)
        .arg(format!("https://localhost:{}", synapse.port))
        .arg(&bob.user_id)
        .arg(PASSWORD)
        .env(
            "NODE_EXTRA_CA_CERTS",
            ours.appliance.dir.path().join("ca.pem"),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "federation_e2ee.mjs did not finish within {SCRIPT_TIMEOUT:?}\nthe appliance's \
                 log:\n{}\nSynapse's log:\n{}",
                ours.appliance.log_text(),
                synapse.log_tail()
            )
        })
        .expect("cannot run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The SDK logs every request and crypto step to stdout; the script's own steps start with
    // `ok:` (and its last line with `OK:`).
    let steps: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("ok: ") || l.starts_with("OK: "))
        .collect();
    let tail = |text: &str| {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    };
    assert!(
        output.status.success() && steps.iter().any(|l| l.starts_with("OK: ")),
        "federation_e2ee.mjs failed ({}).\n--- its steps:\n{}\n--- its stdout (last 80 \
         lines):\n{}\n--- its stderr (last 80 lines):\n{}\n--- the appliance's log:\n{}\
         \n--- Synapse's log:\n{}",
        output.status,
        steps.join("\n"),
        tail(&stdout),
        tail(&stderr),
        ours.appliance.log_text(),
        synapse.log_tail()
    );
    println!("{}", steps.join("\n"));
}
