//! Federation against a real Synapse from PyPI. Every federation test lives in this module
//! (`cargo test --test integration federation::`) and its submodules in tests/federation/.
//!
//! How the harness works:
//! - **Synapse** comes from PyPI, pinned in tests/federation/requirements.txt, installed once into
//!   `<target dir>/synapse-venv` by tests/venv.py: tests/run.sh (and CI, in the background while
//!   clippy runs) builds it and sets `APPLIANCE_TEST_SYNAPSE_PYTHON`; without that variable the
//!   test builds or reuses the venv itself (tests/common/python.rs), so a plain `cargo test` works
//!   with python3 and PyPI access. `federation/synapse.rs` starts one Synapse per test in a temp
//!   dir (generated homeserver.yaml, SQLite, its log in `synapse.log`, shown on failure) and kills
//!   its process group when the test ends.
//! - **Names**: both servers are `localhost:<their TLS port>`. An explicit port means no
//!   `.well-known` and no SRV lookup: a server connects straight to localhost on that port, with
//!   SNI `localhost`.
//! - **TLS**: a test CA made with rcgen (tests/front_door_support) issues both servers a
//!   certificate for `localhost`. Synapse trusts that CA alone (`federation_custom_ca_list`) and
//!   may reach loopback (`ip_range_whitelist`, Synapse refuses it by default); the test's own
//!   HTTPS client verifies both servers against the same CA.
//! - **Outbound**: `appliance admin federation check` runs with a config of its own (the test CA in
//!   `federation_custom_ca_list`, loopback in `ip_range_whitelist`).
//! - **Clients**: the test's own HTTPS client (`federation/accounts.rs`), and matrix-nio on both
//!   servers (`federation/nio.rs` runs tests/nio/federation.py from the nio venv of
//!   tests/nio_client.rs) for the user's view, and matrix-js-sdk with its Rust crypto on both
//!   servers (`federation/js_sdk.rs`, the SDK install of tests/js_client.rs).
//! - **The appliance** runs from its config file with one TLS listener (client + federation) on
//!   127.0.0.1, like a box's port 8448.

#[path = "federation/accounts.rs"]
mod accounts;
#[path = "federation/appliances.rs"]
mod appliances;
#[path = "federation/backfill.rs"]
mod backfill;
#[path = "federation/e2ee.rs"]
mod e2ee;
#[path = "federation/fake_server.rs"]
mod fake_server;
#[path = "federation/hostile.rs"]
mod hostile;
#[path = "federation/invites.rs"]
mod invites;
#[path = "federation/joins.rs"]
mod joins;
#[path = "federation/js_sdk.rs"]
mod js_sdk;
#[path = "federation/keys.rs"]
mod keys;
#[path = "federation/media.rs"]
mod media;
#[path = "federation/nio.rs"]
mod nio;
#[path = "federation/outages.rs"]
mod outages;
#[path = "federation/presence.rs"]
mod presence;
#[path = "federation/profiles.rs"]
mod profiles;
#[path = "federation/room_versions.rs"]
mod room_versions;
#[path = "federation/sender.rs"]
mod sender;
#[path = "federation/serve.rs"]
mod serve;
#[path = "federation/synapse.rs"]
mod synapse;

// The shared harness, as `super::common` and `super::support` for the submodules too.
use crate::{common, front_door_support as support};

use std::collections::BTreeMap;

use common::python;

use ruma::{CanonicalJsonObject, serde::Base64, signatures::verify_json};
use rustls::RootCertStore;
use serde_json::{Value, json};
use support::{Appliance, TestCa, cli, free_port, https_get, https_post_json, text};
use synapse::Synapse;

/// The appliance as a federating server: `localhost:<port>`, one TLS listener with a certificate
/// from `ca`.
struct FederatingAppliance {
    appliance: Appliance,
    port: u16,
    server_name: String,
}

impl FederatingAppliance {
    /// With open registration and relaxed rate limits (test accounts), outbound federation
    /// trusting `ca` and allowed to reach loopback.
    fn start(ca: &TestCa) -> Self {
        Self::start_with(ca, Self::TEST_YAML)
    }

    /// The config of `start` (after the server name, certificate and listener).
    const TEST_YAML: &str = "federation_custom_ca_list: ['{dir}/ca.pem']
ip_range_whitelist: ['127.0.0.0/8', '::1/128']
enable_registration: true
enable_registration_without_verification: true
rc_message: {per_second: 1000, burst_count: 1000}
rc_registration: {per_second: 1000, burst_count: 1000}
rc_joins: {local: {per_second: 1000, burst_count: 1000}, remote: {per_second: 1000, burst_count: 1000}}
";

    /// `extra_yaml`: more top-level keys of its config (`{dir}` in it: the directory holding
    /// the config and `ca.pem`, the test CA).
    fn start_with(ca: &TestCa, extra_yaml: &str) -> Self {
        Self::start_named(ca, extra_yaml, None)
    }

    /// `start_with`, named `localhost:<public_port>` when given (a proxy's port that leads to
    /// its listener) instead of `localhost:<its listener's port>`.
    fn start_named(ca: &TestCa, extra_yaml: &str, public_port: Option<u16>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (chain, key) = ca.leaf(&["localhost"]);
        std::fs::write(dir.path().join("chain.pem"), chain).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
        let port = free_port();
        let server_name = format!("localhost:{}", public_port.unwrap_or(port));
        let yaml = format!(
            "server_name: '{server_name}'
tls_certificate_path: {dir}/chain.pem
tls_private_key_path: {dir}/key.pem
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    tls: true
    resources: [{{names: [client, federation]}}]
{extra}",
            dir = dir.path().display(),
            extra = extra_yaml.replace("{dir}", &dir.path().display().to_string()),
        );
        Self {
            appliance: Appliance::start(dir, &yaml, 1),
            port,
            server_name,
        }
    }
}

/// The scene most tests start from: a test CA, the appliance and a Synapse that both trust it,
/// and one account on each (`alice` on the appliance, `bob` on Synapse).
struct Pair {
    ca: TestCa,
    roots: RootCertStore,
    ours: FederatingAppliance,
    synapse: Synapse,
    alice: accounts::Account,
    bob: accounts::Account,
}

impl Pair {
    async fn start() -> Self {
        let ca = TestCa::new("federation test CA");
        let roots = ca.roots();
        let ours = FederatingAppliance::start(&ca);
        let synapse = Synapse::start(&ca, synapse::OPEN_REGISTRATION).await;
        let alice = accounts::Account::register(ours.port, &roots, "alice").await;
        let bob = accounts::Account::register(synapse.port, &roots, "bob").await;
        Self {
            ca,
            roots,
            ours,
            synapse,
            alice,
            bob,
        }
    }
}

/// The one key of a server's own `/_matrix/key/v2/server` answer, fetched over TLS as `localhost`.
async fn own_key(port: u16, roots: &RootCertStore) -> (String, String) {
    let reply = https_get(port, "localhost", roots, "/_matrix/key/v2/server", &[]).await;
    assert_eq!(reply.status, 200);
    only_verify_key(&reply.json())
}

/// The one key of a `/_matrix/key/v2/server` answer: (key ID, unpadded base64 public key).
fn only_verify_key(keys: &Value) -> (String, String) {
    let verify_keys = keys["verify_keys"].as_object().expect("verify_keys");
    assert_eq!(verify_keys.len(), 1, "{keys}");
    let (id, key) = verify_keys.iter().next().unwrap();
    (id.clone(), key["key"].as_str().expect("key").to_owned())
}

/// Verifies every signature `object` carries (ruma checks one per signing server, and refuses a
/// server missing from `keys`): `keys` are (server, key ID, unpadded base64 public key).
#[track_caller]
fn assert_signed_by(object: &Value, keys: &[(&str, &str, &str)]) {
    let mut map = BTreeMap::new();
    for (server, key_id, key) in keys {
        map.entry(server.to_string())
            .or_insert_with(BTreeMap::new)
            .insert(key_id.to_string(), Base64::parse(*key).unwrap());
    }
    let canonical: CanonicalJsonObject = serde_json::from_value(object.clone()).unwrap();
    if let Err(e) = verify_json(&map, &canonical) {
        panic!("signatures of {keys:?} do not verify ({e}): {object}");
    }
}

/// Synapse, acting as a notary, fetches the appliance's keys over TLS by its name with an explicit
/// port, checks them (Synapse refuses keys without the origin's valid signature or with a
/// `valid_until_ts` in the past) and serves them on, signed by both servers.
#[tokio::test(flavor = "multi_thread")]
async fn synapse_fetches_the_appliance_keys_as_a_notary() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let ours = FederatingAppliance::start(&ca);
    let synapse = Synapse::start(&ca, "").await;
    let ours_name = ours.server_name.as_str();

    let (key_id, public_key) = own_key(ours.port, &roots).await;
    let (synapse_key_id, synapse_public_key) = own_key(synapse.port, &roots).await;

    // The key ID is given: Synapse's notary fetches from the origin only for a cache miss on a
    // named key (asking for all keys of a server answers from its cache alone), and it requires
    // `minimum_valid_until_ts`, which the spec makes optional.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let query = json!({"server_keys": {ours_name: {&key_id: {"minimum_valid_until_ts": now_ms}}}});
    let reply = https_post_json(
        synapse.port,
        "localhost",
        &roots,
        "/_matrix/key/v2/query",
        &query,
    )
    .await;
    let body = reply.json();
    assert_eq!(
        reply.status,
        200,
        "{body}\nSynapse's log:\n{}",
        synapse.log_tail()
    );
    let server_keys = body["server_keys"].as_array().expect("server_keys");
    assert_eq!(
        server_keys.len(),
        1,
        "Synapse did not get the appliance's keys: {body}\nSynapse's log:\n{}\n\
         the appliance's log:\n{}",
        synapse.log_tail(),
        ours.appliance.log_text()
    );
    let relayed = &server_keys[0];
    assert_eq!(relayed["server_name"], ours_name);
    assert_eq!(
        only_verify_key(relayed),
        (key_id.clone(), public_key.clone())
    );
    assert!(
        relayed["valid_until_ts"].as_u64().unwrap() > now_ms,
        "{relayed}"
    );
    // Signed by the appliance (the copy Synapse fetched and checked) and by Synapse as notary.
    assert_signed_by(
        relayed,
        &[
            (ours_name, &key_id, &public_key),
            (&synapse.server_name, &synapse_key_id, &synapse_public_key),
        ],
    );
    let signers = relayed["signatures"].as_object().expect("signatures");
    assert!(
        signers.contains_key(ours_name) && signers.contains_key(&synapse.server_name),
        "{relayed}"
    );

    // Now cached: the GET form (all keys of the server) answers with the same key.
    let cached = https_get(
        synapse.port,
        "localhost",
        &roots,
        &format!("/_matrix/key/v2/query/{ours_name}"),
        &[],
    )
    .await;
    assert_eq!(cached.status, 200);
    let cached = cached.json();
    assert_eq!(
        cached["server_keys"].as_array().map(Vec::len),
        Some(1),
        "{cached}"
    );
    assert_eq!(
        only_verify_key(&cached["server_keys"][0]),
        (key_id, public_key)
    );
}

/// `appliance admin federation check`, run with its own config (`extra_yaml` after a server
/// name): (success, stdout + stderr).
fn federation_check(server_name: &str, extra_yaml: &str, args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("server_name: '{server_name}'\n{extra_yaml}"),
    )
    .unwrap();
    let mut all = vec!["admin", "federation", "check"];
    all.extend_from_slice(args);
    let output = cli(&config, &dir.path().join("data"), &all);
    (output.status.success(), text(&output))
}

/// The outbound client finds Synapse by `localhost:<port>` (explicit port: straight there, SNI
/// `localhost`), verifies its certificate against `federation_custom_ca_list`, may reach loopback
/// only through `ip_range_whitelist`, and checks the keys' self-signature; with no name it checks
/// the config's own server through its public name, as another server would.
#[tokio::test(flavor = "multi_thread")]
async fn admin_federation_check_fetches_keys_as_a_server_would() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let ours = FederatingAppliance::start(&ca);
    let synapse = Synapse::start(&ca, "").await;
    let ca_path = synapse.dir.path().join("ca.pem");
    let trust_ca = format!("federation_custom_ca_list: ['{}']\n", ca_path.display());
    let loopback = "ip_range_whitelist: ['127.0.0.0/8']\n";

    let (synapse_key_id, synapse_key) = own_key(synapse.port, &roots).await;
    let (ok, output) = federation_check(
        "localhost",
        &format!("{trust_ca}{loopback}"),
        &[&synapse.server_name],
    );
    assert!(ok, "{output}\nSynapse's log:\n{}", synapse.log_tail());
    assert!(output.contains("explicit port"), "{output}");
    assert!(
        output.contains(&format!("{synapse_key_id} {synapse_key}")),
        "{output}"
    );

    // Without the test CA the certificate is unknown.
    let (ok, output) = federation_check("localhost", loopback, &[&synapse.server_name]);
    assert!(!ok, "{output}");
    assert!(output.contains("TLS with 127.0.0.1"), "{output}");
    assert!(output.contains("UnknownIssuer"), "{output}");

    // Unless certificates are not checked at all (test setups).
    let (ok, output) = federation_check(
        "localhost",
        &format!("{loopback}federation_verify_certificates: false\n"),
        &[&synapse.server_name],
    );
    assert!(ok, "{output}");
    assert!(output.contains(&synapse_key_id), "{output}");

    // Without the whitelist loopback is refused before any connection.
    let (ok, output) = federation_check("localhost", &trust_ca, &[&synapse.server_name]);
    assert!(!ok, "{output}");
    assert!(output.contains("refused address"), "{output}");

    // A domain whitelist without Synapse: not contacted.
    let (ok, output) = federation_check(
        "localhost",
        &format!("{trust_ca}{loopback}federation_domain_whitelist: ['example.org']\n"),
        &[&synapse.server_name],
    );
    assert!(!ok, "{output}");
    assert!(
        output.contains("not in federation_domain_whitelist"),
        "{output}"
    );

    // No name: the config's own server_name, here the running appliance.
    let (key_id, key) = own_key(ours.port, &roots).await;
    let (ok, output) = federation_check(&ours.server_name, &format!("{trust_ca}{loopback}"), &[]);
    assert!(
        ok,
        "{output}\nthe appliance's log:\n{}",
        ours.appliance.log_text()
    );
    assert!(
        output.starts_with(&format!("{}:", ours.server_name)),
        "{output}"
    );
    assert!(output.contains(&format!("{key_id} {key}")), "{output}");
}
