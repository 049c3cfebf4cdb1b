//! A real third-party client against the real server: the matrix-nio scenario scripts in
//! tests/nio/ run against a freshly started appliance.
//!
//! The Python interpreter is the one `APPLIANCE_TEST_PYTHON` names (tests/run.sh sets it);
//! without it, the test makes or reuses `<target dir>/test-venv` with tests/nio/requirements.txt
//! itself (tests/common/python.rs runs tests/venv.py), so a plain `cargo test` works on a machine
//! with python3 and PyPI access.

use crate::common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, OnceLock},
    time::Duration,
};

use common::{OPEN_REGISTRATION, TestServer, assert_error, python::Venv};

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
    run_script(server, script, &[&server.base_url]).await;
}

/// Runs tests/nio/<script> with these arguments; see [`run_nio_script`].
async fn run_script(server: &TestServer, script: &str, args: &[&str]) {
    let python = tokio::task::spawn_blocking(python).await.expect("venv");
    let run = tokio::process::Command::new(&python)
        .arg(nio_dir().join(script))
        .args(args)
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

/// The registration file of the test's bridge (tests/nio/appservice.py), Synapse's form.
const BRIDGE_REGISTRATION: &str = "\
id: testbridge
url: http://127.0.0.1:{port}
as_token: bridge-as-token
hs_token: bridge-hs-token
sender_localpart: bridgebot
rate_limited: false
protocols:
  - testnet
de.sorunome.msc2409.push_ephemeral: true
namespaces:
  users:
  - exclusive: true
    regex: '@bridge_.*:test\\.local'
  aliases:
  - exclusive: true
    regex: '#bridge_.*:test\\.local'
  rooms: []
";

/// A TLS listener on 127.0.0.1:`port` with this certificate (DER) and PKCS#8 key, which
/// completes handshakes and answers nothing; dropped with the returned task.
fn tls_listener(port: u16, cert: Vec<u8>, key: Vec<u8>) -> tokio::task::JoinHandle<()> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert)],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            // The handshake fails on the client's side: nothing to do with its result.
            let _ = acceptor.accept(tcp).await;
        }
    })
}

/// An application service built with mautrix-python: the registration file read at start,
/// authentication as the service and its users (and the refusals around it), events, ephemeral
/// events and to-device messages pushed in transactions, and events queued while the bridge is
/// down delivered after a restart of the appliance, to the bridge now on an `https` URL (its
/// certificate from a test CA the appliance trusts through `SSL_CERT_FILE`, as Synapse's service
/// client does); with `org.matrix.msc3202` added at that restart, device list changes and key
/// counts too (and not before); then its third-party network through `/thirdparty/*` and its
/// network's room directory (tests/nio/appservice.py).
#[tokio::test]
async fn appservice_bridge() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut server = TestServer::prepare(OPEN_REGISTRATION);
    let registration = server.dir.path().join("bridge.yaml");
    std::fs::write(
        &registration,
        BRIDGE_REGISTRATION.replace("{port}", &port.to_string()),
    )
    .unwrap();
    std::fs::write(
        &server.config_path,
        format!(
            "{OPEN_REGISTRATION}app_service_config_files:\n  - {}\n",
            registration.display()
        ),
    )
    .unwrap();
    server.relaunch();

    // Authentication as the service.
    const AS: Option<&str> = Some("bridge-as-token");
    let whoami = server.get("/_matrix/client/v3/account/whoami", AS).await;
    assert_eq!(whoami.1["user_id"], "@bridgebot:test.local", "{whoami:?}");
    let wrong = server
        .get("/_matrix/client/v3/account/whoami", Some("bridge-hs-token"))
        .await;
    assert_error(&wrong, 401, "M_UNKNOWN_TOKEN");
    let outside = "/_matrix/client/v3/account/whoami?user_id=%40alice%3Atest.local";
    assert_error(&server.get(outside, AS).await, 403, "M_FORBIDDEN");
    let unregistered = "/_matrix/client/v3/account/whoami?user_id=%40bridge_nobody%3Atest.local";
    assert_error(&server.get(unregistered, AS).await, 403, "M_FORBIDDEN");

    // Registration inside the exclusive namespace: the service only.
    let ghost_registration =
        |name: &str| serde_json::json!({"type": "m.login.application_service", "username": name});
    let register = "/_matrix/client/v3/register";
    let no_token = server
        .post(register, None, ghost_registration("bridge_x"))
        .await;
    assert_error(&no_token, 401, "M_MISSING_TOKEN");
    let alice = server.register("alice", "alice-password-1").await;
    let user_token = server
        .post(register, alice.token(), ghost_registration("bridge_x"))
        .await;
    assert_error(&user_token, 401, "M_UNKNOWN_TOKEN");
    let not_its_user = server.post(register, AS, ghost_registration("carol")).await;
    assert_error(&not_its_user, 400, "M_EXCLUSIVE");
    let by_a_user = server
        .post(
            register,
            None,
            serde_json::json!({"username": "bridge_evil", "password": "evil-password-1"}),
        )
        .await;
    assert_error(&by_a_user, 400, "M_EXCLUSIVE");
    let available = "/_matrix/client/v3/register/available?username=bridge_evil";
    assert_error(&server.get(available, None).await, 400, "M_EXCLUSIVE");

    // Aliases inside the exclusive namespace: not for users.
    let (status, created) = server
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            serde_json::json!({"name": "bridged"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let alias = server
        .put(
            "/_matrix/client/v3/directory/room/%23bridge_room%3Atest.local",
            alice.token(),
            serde_json::json!({"room_id": room}),
        )
        .await;
    assert_error(&alias, 400, "M_EXCLUSIVE");
    let with_alias = server
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            serde_json::json!({"room_alias_name": "bridge_other"}),
        )
        .await;
    assert_error(&with_alias, 400, "M_EXCLUSIVE");

    // The bridge live: ghosts, joins, messages both ways.
    let state_file = server.dir.path().join("bridge-state.json");
    let store = server.dir.path().join("mx-state.json");
    let write_state = |expect: &[&str]| {
        let state = serde_json::json!({
            "port": port,
            "as_token": "bridge-as-token",
            "hs_token": "bridge-hs-token",
            "store": store,
            "room": room,
            "alice": alice.user_id,
            "alice_token": alice.access_token,
            "alice_password": "alice-password-1",
            "expect": expect,
        });
        std::fs::write(&state_file, state.to_string()).unwrap();
    };
    write_state(&[]);
    let state_path = state_file.to_str().unwrap().to_owned();
    run_script(
        &server,
        "appservice.py",
        &["live", &server.base_url, &state_path],
    )
    .await;

    // The ghost logs in with the service's token.
    let login = server
        .post(
            "/_matrix/client/v3/login",
            AS,
            serde_json::json!({
                "type": "m.login.application_service",
                "identifier": {"type": "m.id.user", "user": "bridge_bob"},
            }),
        )
        .await;
    assert_eq!(login.0, 200, "{login:?}");
    assert_eq!(login.1["user_id"], "@bridge_bob:test.local");

    // A ping of the bridge while it is down, and one of another service.
    let ping = "/_matrix/client/v1/appservice/testbridge/ping";
    let down = server.post(ping, AS, serde_json::json!({})).await;
    assert_error(&down, 502, "M_CONNECTION_FAILED");
    let other = "/_matrix/client/v1/appservice/otherbridge/ping";
    assert_error(
        &server.post(other, AS, serde_json::json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    let by_a_user = server
        .post(ping, alice.token(), serde_json::json!({}))
        .await;
    assert_error(&by_a_user, 403, "M_FORBIDDEN");

    // The bridge is down: alice's messages wait for it, across a restart of the appliance.
    let queued = ["queued 1", "queued 2", "queued 3"];
    for (i, body) in queued.iter().enumerate() {
        let (status, sent) = server
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/q{i}"),
                alice.token(),
                serde_json::json!({"msgtype": "m.text", "body": body}),
            )
            .await;
        assert_eq!(status, 200, "{sent}");
    }
    // And a to-device message to the ghost's device (made in `live`): in the stream too.
    let (status, sent) = server
        .put(
            "/_matrix/client/v3/sendToDevice/org.example.bridge.test/down",
            alice.token(),
            serde_json::json!({"messages": {"@bridge_bob:test.local": {"GHOSTDEV": {
                "hello": "while down"
            }}}}),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !server.log_text().contains("transaction failed") {
        assert!(
            std::time::Instant::now() < deadline,
            "no failed transaction logged:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = common::assert_success(&server.cli(&["admin", "appservice", "list"], None));
    assert!(
        list.contains("testbridge") && list.contains("failing since"),
        "{list}"
    );
    // The bridge comes back on https: a certificate for 127.0.0.1 from a CA the appliance
    // trusts only through SSL_CERT_FILE (the system's roots, as for Synapse's service client).
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let (ca_file, cert_file, key_file) = (
        server.dir.path().join("test-ca.pem"),
        server.dir.path().join("bridge.crt"),
        server.dir.path().join("bridge.key"),
    );
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    std::fs::write(&cert_file, leaf.pem()).unwrap();
    std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
    std::fs::write(
        &registration,
        BRIDGE_REGISTRATION
            .replace("http://", "https://")
            .replace("{port}", &port.to_string()),
    )
    .unwrap();
    // Certificates are checked: without the CA in SSL_CERT_FILE the bridge's is refused.
    server.restart();
    let untrusted = tls_listener(port, leaf.der().to_vec(), leaf_key.serialize_der());
    let refused = server.post(ping, AS, serde_json::json!({})).await;
    untrusted.abort();
    // Gone (and its port free for the bridge) once the aborted task is dropped.
    let _ = untrusted.await;
    assert_error(&refused, 502, "M_CONNECTION_FAILED");
    assert!(
        refused.1["error"]
            .as_str()
            .is_some_and(|e| e.contains("certificate")),
        "{refused:?}"
    );
    server.env.push((
        "SSL_CERT_FILE".to_owned(),
        ca_file.to_str().unwrap().to_owned(),
    ));
    // The bridge now encrypts: MSC3202's data from the restart on (checked by `catchup`).
    std::fs::write(
        &registration,
        format!(
            "{}org.matrix.msc3202: true\n",
            BRIDGE_REGISTRATION
                .replace("http://", "https://")
                .replace("{port}", &port.to_string())
        ),
    )
    .unwrap();
    server.restart();
    write_state(&queued);
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    state["tls_cert"] = cert_file.to_str().unwrap().into();
    state["tls_key"] = key_file.to_str().unwrap().into();
    std::fs::write(&state_file, state.to_string()).unwrap();
    run_script(
        &server,
        "appservice.py",
        &["catchup", &server.base_url, &state_path],
    )
    .await;
    let list = common::assert_success(&server.cli(&["admin", "appservice", "list"], None));
    assert!(list.contains("  up"), "{list}");
}

/// The interpreter of the venv with a real bridge, mautrix-telegram (tests/bridges), made once.
fn bridge_python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            Venv {
                env_var: "APPLIANCE_TEST_BRIDGE_PYTHON",
                dir_name: "bridge-venv",
                requirements: "tests/bridges/requirements.txt",
                module: "mautrix_telegram",
            }
            .python()
        })
        .clone()
        .unwrap_or_else(|e| panic!("no Python with mautrix-telegram: {e}"))
}

/// Polls `check` every 100 ms for up to 60 s; the failure names `what` and shows `context()`.
async fn eventually<F, C>(what: &str, mut check: F, context: C)
where
    F: AsyncFnMut() -> bool,
    C: Fn() -> String,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 60 s\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An existing bridge, as a self-hoster installs it: mautrix-telegram from PyPI, its
/// registration generated by the bridge itself (`-g`) and named in `app_service_config_files`.
/// It starts against the appliance (its start-up ping goes through), joins a direct chat it is
/// invited to, and answers `help` there as its management room. (Logging in to Telegram is not
/// tried: no Telegram servers from a test.)
#[tokio::test]
async fn mautrix_telegram_bridge() {
    let python = tokio::task::spawn_blocking(bridge_python)
        .await
        .expect("venv");
    let bridge_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut server = TestServer::prepare(OPEN_REGISTRATION);
    let dir = server.dir.path().to_owned();
    // The bridge's own example config, edited as its docs say (homeserver, domain, database,
    // permissions; Telegram's api_id/api_hash must only be set).
    let example = std::process::Command::new(&python)
        .args([
            "-c",
            "import mautrix_telegram, os; \
             print(os.path.join(os.path.dirname(mautrix_telegram.__file__), \
             'example-config.yaml'))",
        ])
        .output()
        .expect("python");
    let example = String::from_utf8_lossy(&example.stdout).trim().to_owned();
    let placeholder = "http://homeserver.invalid";
    let config = std::fs::read_to_string(&example)
        .expect("example config")
        .replace(
            "    address: https://example.com",
            &format!("    address: {placeholder}"),
        )
        .replace("    domain: example.com", "    domain: test.local")
        .replace(
            "    address: http://localhost:29317",
            &format!("    address: http://127.0.0.1:{bridge_port}"),
        )
        .replace("    hostname: 0.0.0.0", "    hostname: 127.0.0.1")
        .replace("    port: 29317", &format!("    port: {bridge_port}"))
        .replace(
            "    database: postgres://username:password@hostname/dbname",
            &format!("    database: sqlite:{}", dir.join("bridge.db").display()),
        )
        .replace("\"example.com\": \"full\"", "\"test.local\": \"full\"")
        .replace("    api_id: 12345", "    api_id: 123456")
        .replace(
            "    api_hash: tjyd5yge35lbodk1xwzw2jstp90k55qz",
            "    api_hash: 0123456789abcdef0123456789abcdef",
        );
    let (config_file, registration) = (dir.join("bridge-config.yaml"), dir.join("telegram.yaml"));
    std::fs::write(&config_file, config).unwrap();
    let generated = std::process::Command::new(&python)
        .args(["-m", "mautrix_telegram", "-g", "-c"])
        .arg(&config_file)
        .arg("-r")
        .arg(&registration)
        .current_dir(&dir)
        .output()
        .expect("mautrix_telegram -g");
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    std::fs::write(
        &server.config_path,
        format!(
            "{OPEN_REGISTRATION}app_service_config_files:\n  - {}\n",
            registration.display()
        ),
    )
    .unwrap();
    server.relaunch();
    let config = std::fs::read_to_string(&config_file).unwrap();
    assert!(config.contains(placeholder), "{config}");
    std::fs::write(&config_file, config.replace(placeholder, &server.base_url)).unwrap();

    let bridge_log = dir.join("bridge.log");
    let _bridge = tokio::process::Command::new(&python)
        .args(["-m", "mautrix_telegram", "-c"])
        .arg(&config_file)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&bridge_log).unwrap())
        .stderr(Stdio::from(
            std::fs::File::options()
                .append(true)
                .open(&bridge_log)
                .unwrap(),
        ))
        .kill_on_drop(true)
        .spawn()
        .expect("start mautrix-telegram");
    let logs = || {
        format!(
            "--- bridge log:\n{}--- server log:\n{}",
            std::fs::read_to_string(&bridge_log).unwrap_or_default(),
            server.log_text()
        )
    };
    let started = async || {
        std::fs::read_to_string(&bridge_log)
            .unwrap_or_default()
            .contains("Startup actions complete")
    };
    eventually("the bridge starts", started, logs).await;
    let log = std::fs::read_to_string(&bridge_log).unwrap();
    // Its start-up check: the appliance pings it through the client API's ping endpoint.
    assert!(log.contains("Received ping from homeserver"), "{}", logs());

    let alice = server.register("alice", "alice-password-1").await;
    let bot = "@telegrambot:test.local";
    let (status, created) = server
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            serde_json::json!({"is_direct": true, "invite": [bot], "preset": "private_chat"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let members = format!("/_matrix/client/v3/rooms/{room}/joined_members");
    let joined = async || {
        let (_, body) = server.get(&members, alice.token()).await;
        body["joined"].get(bot).is_some()
    };
    eventually("the bridge bot joins the direct chat", joined, logs).await;
    let (status, sent) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/help"),
            alice.token(),
            serde_json::json!({"msgtype": "m.text", "body": "help"}),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let messages = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50");
    let answered = async || {
        let (_, body) = server.get(&messages, alice.token()).await;
        body["chunk"].as_array().is_some_and(|chunk| {
            chunk.iter().any(|event| {
                event["sender"] == bot
                    && event["content"]["body"]
                        .as_str()
                        .is_some_and(|text| text.contains("Show this help message"))
            })
        })
    };
    eventually("the bot answers `help`", answered, logs).await;
}
