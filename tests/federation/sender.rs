//! The outbound sender against a receiving server written here: HTTPS with a certificate from the
//! test CA, named `localhost:<port>`, recording every transaction it gets; it can answer `500` or
//! be down. A real server would need a join to have a remote member, which the appliance cannot
//! do yet: the remote member's row is written into the SQLite file with the appliance stopped.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, service::service_fn};
use hyper_util::rt::TokioIo;
use ruma::{
    CanonicalJsonObject,
    serde::{Base64, base64::Standard},
    signatures::{Ed25519KeyPair, sign_json},
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};

use super::{
    common::{OPEN_REGISTRATION, TestServer},
    support::{TestCa, free_port},
};

/// One `PUT /send/{txnId}` the receiver got.
#[derive(Debug, Clone)]
struct Received {
    txn_id: String,
    /// The `body` of each PDU's content, in order.
    bodies: Vec<String>,
    edus: Vec<Value>,
    origin: String,
    authorized: bool,
    answered: u16,
}

#[derive(Default)]
struct ReceiverState {
    failing: bool,
    received: Vec<Received>,
    /// Its `/_matrix/key/v2/server` answer.
    keys: Value,
}

const KEY_ID: &str = "ed25519:k1";

/// The receiving server.
struct Receiver {
    port: u16,
    server_name: String,
    tls: tokio_rustls::TlsAcceptor,
    state: Arc<Mutex<ReceiverState>>,
    task: Option<JoinHandle<()>>,
    key: Ed25519KeyPair,
}

impl Receiver {
    fn new(ca: &TestCa) -> Self {
        let (chain, key) = ca.leaf(&["localhost"]);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let port = free_port();
        let server_name = format!("localhost:{port}");
        let key = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "k1".to_owned()).unwrap();
        let valid_until = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            + 24 * 3600 * 1000;
        let mut keys: CanonicalJsonObject = serde_json::from_value(json!({
            "server_name": server_name,
            "valid_until_ts": valid_until,
            "verify_keys": {KEY_ID: {"key": Base64::<Standard>::new(key.public_key().to_vec()).encode()}},
            "old_verify_keys": {},
        }))
        .unwrap();
        sign_json(&server_name, &key, &mut keys).unwrap();
        let state = ReceiverState {
            keys: serde_json::to_value(&keys).unwrap(),
            ..ReceiverState::default()
        };
        Self {
            port,
            server_name,
            tls: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            state: Arc::new(Mutex::new(state)),
            task: None,
            key,
        }
    }

    /// A GET to the appliance signed by this server (X-Matrix): the answer's status.
    async fn signed_get(&self, server: &TestServer, uri: &str) -> (u16, Value) {
        let mut object: CanonicalJsonObject = serde_json::from_value(json!({
            "method": "GET",
            "uri": uri,
            "origin": self.server_name,
            "destination": "test.local",
        }))
        .unwrap();
        sign_json(&self.server_name, &self.key, &mut object).unwrap();
        let signature = serde_json::to_value(&object).unwrap()["signatures"][&self.server_name]
            [KEY_ID]
            .as_str()
            .unwrap()
            .to_owned();
        let header = format!(
            "X-Matrix origin=\"{}\",destination=\"test.local\",key=\"{KEY_ID}\",sig=\"{signature}\"",
            self.server_name
        );
        let response = server
            .builder(reqwest::Method::GET, uri)
            .header("Authorization", header)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Starts listening (again).
    async fn up(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let (tls, state) = (self.tls.clone(), self.state.clone());
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (tls, state) = (tls.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request| answer(state.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }

    /// Stops listening: connections are refused.
    fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    fn set_failing(&self, failing: bool) {
        self.state.lock().unwrap().failing = failing;
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// The message bodies the receiver accepted (`200`), each transaction ID counted once.
    fn accepted_bodies(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.received()
            .into_iter()
            .filter(|r| r.answered == 200 && seen.insert(r.txn_id.clone()))
            .flat_map(|r| r.bodies)
            .collect()
    }

    /// Waits until `count` message bodies were accepted.
    async fn wait_for_bodies(&self, count: usize, server: &TestServer) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let bodies = self.accepted_bodies();
            if bodies.len() >= count {
                return bodies;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {count} events arrived: {:?}\nthe appliance's log:\n{}",
                bodies.len(),
                self.received(),
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

async fn answer(
    state: Arc<Mutex<ReceiverState>>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = request.uri().path().to_owned();
    let authorization = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let put = request.method() == http::Method::PUT;
    let body = request.into_body().collect().await?.to_bytes();
    if path == "/_matrix/key/v2/server" {
        let keys = state.lock().unwrap().keys.clone();
        return Ok(json_response(200, keys));
    }
    let Some(txn_id) = path
        .strip_prefix("/_matrix/federation/v1/send/")
        .filter(|_| put)
    else {
        return Ok(json_response(404, json!({"errcode": "M_UNRECOGNIZED"})));
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let pdus = body["pdus"].as_array().cloned().unwrap_or_default();
    let mut state = state.lock().unwrap();
    let status = if state.failing { 500 } else { 200 };
    state.received.push(Received {
        txn_id: txn_id.to_owned(),
        bodies: pdus
            .iter()
            .map(|pdu| pdu["content"]["body"].as_str().unwrap_or("").to_owned())
            .collect(),
        edus: body["edus"].as_array().cloned().unwrap_or_default(),
        origin: body["origin"].as_str().unwrap_or("").to_owned(),
        authorized: authorization.starts_with("X-Matrix ")
            && authorization.contains("destination="),
        answered: status,
    });
    Ok(if status == 200 {
        json_response(200, json!({"pdus": {}}))
    } else {
        json_response(
            500,
            json!({"errcode": "M_UNKNOWN", "error": "down for the test"}),
        )
    })
}

fn json_response(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// The appliance with a room whose other member is on the receiver: (server, token, room ID).
async fn appliance_with_remote_member(
    ca: &TestCa,
    receiver: &Receiver,
    min_retry_interval: &str,
) -> (TestServer, String, String) {
    let mut server = TestServer::prepare(OPEN_REGISTRATION);
    let ca_path = server.dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    let yaml = format!(
        "{OPEN_REGISTRATION}federation_custom_ca_list: ['{}']
ip_range_whitelist: ['127.0.0.0/8']
federation:
  destination_min_retry_interval: {min_retry_interval}
  destination_retry_multiplier: 2
  destination_max_retry_interval: 3h
",
        ca_path.display()
    );
    std::fs::write(&server.config_path, yaml).unwrap();
    server.relaunch();
    let alice = server.register("alice", "password-alice-1").await;
    let (status, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            json!({"preset": "public_chat"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let room_id = body["room_id"].as_str().unwrap().to_owned();
    assert!(server.stop());
    let db = rusqlite::Connection::open(server.data_dir.join("appliance.db")).unwrap();
    db.execute(
        "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_ordering)
         VALUES (?1, ?2, 'join', '$remote-join', 0)",
        [&room_id, &format!("@bob:{}", receiver.server_name)],
    )
    .unwrap();
    drop(db);
    server.relaunch();
    (server, alice.access_token, room_id)
}

async fn send_messages(
    server: &TestServer,
    token: &str,
    room_id: &str,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    let mut event_ids = Vec::new();
    for i in range {
        let (status, body) = server
            .put(
                &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t{i}"),
                Some(token),
                json!({"msgtype": "m.text", "body": format!("m{i}")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        event_ids.push(body["event_id"].as_str().unwrap().to_owned());
    }
    event_ids
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

fn federation_status(server: &TestServer) -> String {
    let output = server.cli(&["admin", "federation", "status"], None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    text
}

/// Events go out in order, signed (X-Matrix with `destination`), in transactions of at most 50
/// PDUs; a transaction answered `500` is retried after the backoff with the same ID and the same
/// contents; the backoff shows in `admin federation status`; one success clears it.
#[tokio::test(flavor = "multi_thread")]
async fn events_go_out_in_order_in_batches_and_a_failed_transaction_is_retried_with_its_id() {
    let ca = TestCa::new("federation sender test CA");
    let mut receiver = Receiver::new(&ca);
    receiver.up().await;
    receiver.set_failing(true);
    let (server, token, room_id) = appliance_with_remote_member(&ca, &receiver, "1s").await;

    let event_ids = send_messages(&server, &token, &room_id, 0..120).await;
    // The first attempt failed; the others wait behind it in the backoff.
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.received().is_empty() {
        assert!(Instant::now() < deadline, "{}", server.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = receiver.received()[0].clone();
    assert_eq!(first.answered, 500);
    server_waits_for(&server, "backing off");
    let status = federation_status(&server);
    assert!(status.contains(&receiver.server_name), "{status}");
    assert!(status.contains("backing off until"), "{status}");
    assert!(status.contains("transaction in flight: "), "{status}");

    receiver.set_failing(false);
    let bodies = receiver.wait_for_bodies(120, &server).await;
    assert_eq!(bodies, names(0..120), "every event once, in order");

    let received = receiver.received();
    for txn in &received {
        assert!(
            txn.bodies.len() <= 50,
            "{} PDUs in one transaction",
            txn.bodies.len()
        );
        assert_eq!(txn.origin, "test.local");
        assert!(txn.authorized, "signed with X-Matrix and a destination");
    }
    assert!(
        received.iter().any(|txn| txn.bodies.len() == 50),
        "the backlog went in full transactions: {received:?}"
    );
    // The failed transaction came again with its ID and its contents, and was then accepted.
    let retries: Vec<&Received> = received
        .iter()
        .filter(|r| r.txn_id == first.txn_id)
        .collect();
    assert!(retries.len() >= 2, "{received:?}");
    assert!(retries.iter().all(|r| r.bodies == first.bodies));
    assert_eq!(retries.last().unwrap().answered, 200);
    // A transaction ID is never reused for other contents.
    for txn in &received {
        for other in &received {
            if txn.txn_id == other.txn_id {
                assert_eq!(txn.bodies, other.bodies);
            }
        }
    }

    let status = federation_status(&server);
    assert!(status.contains("  up\n"), "{status}");
    assert!(status.contains("queued: 0 PDUs, 0 EDUs"), "{status}");
    assert!(!status.contains("last success: -"), "{status}");

    // EDUs: a public read receipt and typing go to the room's other server; a private receipt
    // does not.
    let last = event_ids.last().unwrap();
    for receipt_type in ["m.read.private", "m.read"] {
        let (status, body) = server
            .post(
                &format!("/_matrix/client/v3/rooms/{room_id}/receipt/{receipt_type}/{last}"),
                Some(&token),
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/typing/@alice:test.local"),
            Some(&token),
            json!({"typing": true, "timeout": 30000}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let edus = loop {
        let edus: Vec<Value> = receiver
            .received()
            .into_iter()
            .flat_map(|r| r.edus)
            .collect();
        if edus.len() >= 2 {
            break edus;
        }
        assert!(Instant::now() < deadline, "{edus:?}\n{}", server.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(edus.len(), 2, "{edus:?}");
    assert_eq!(edus[0]["edu_type"], "m.receipt", "{edus:?}");
    let read = &edus[0]["content"][&room_id]["m.read"]["@alice:test.local"];
    assert_eq!(read["event_ids"], json!([last]), "{edus:?}");
    assert_eq!(edus[1]["edu_type"], "m.typing", "{edus:?}");
    assert_eq!(
        edus[1]["content"],
        json!({"room_id": room_id, "user_id": "@alice:test.local", "typing": true})
    );
}

/// `kill -9` with events queued and the destination down: after the restart the backoff is
/// still there (in `admin federation status` too), and once the destination is back everything
/// arrives exactly once per transaction ID, in order.
#[tokio::test(flavor = "multi_thread")]
async fn queued_events_survive_kill_9_and_arrive_in_order_when_the_destination_is_back() {
    let ca = TestCa::new("federation sender test CA");
    let mut receiver = Receiver::new(&ca);
    let (mut server, token, room_id) = appliance_with_remote_member(&ca, &receiver, "1s").await;

    send_messages(&server, &token, &room_id, 0..30).await;
    server_waits_for(&server, "backing off");
    server.kill9();
    let status = federation_status(&server);
    assert!(status.contains("backing off until"), "{status}");
    assert!(status.contains("queued: 30 PDUs"), "{status}");

    server.relaunch();
    let status = federation_status(&server);
    assert!(status.contains("backing off until"), "{status}");
    send_messages(&server, &token, &room_id, 30..35).await;

    receiver.up().await;
    let bodies = receiver.wait_for_bodies(35, &server).await;
    assert_eq!(bodies, names(0..35));
    let received = receiver.received();
    assert!(received.iter().all(|r| r.answered == 200));
    let mut seen = std::collections::HashMap::new();
    for txn in &received {
        let earlier = seen.insert(txn.txn_id.clone(), txn.bodies.clone());
        assert!(
            earlier.is_none_or(|bodies| bodies == txn.bodies),
            "duplicates only with the same transaction ID: {received:?}"
        );
    }
    let status = federation_status(&server);
    assert!(status.contains("queued: 0 PDUs"), "{status}");
}

fn server_waits_for(server: &TestServer, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log_text().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no `{text}` in the log:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A destination backing off for an hour sends us a signed request: it is up, so its backoff
/// ends and its queue goes out at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_signed_request_from_a_failing_server_ends_its_backoff() {
    let ca = TestCa::new("federation sender test CA");
    let mut receiver = Receiver::new(&ca);
    let (server, token, room_id) = appliance_with_remote_member(&ca, &receiver, "1h").await;
    send_messages(&server, &token, &room_id, 0..3).await;
    server_waits_for(&server, "backing off");
    let status = federation_status(&server);
    assert!(status.contains("backing off until"), "{status}");

    receiver.up().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.accepted_bodies().is_empty(), "still backing off");
    let (status, body) = receiver
        .signed_get(
            &server,
            "/_matrix/federation/v1/query/profile?user_id=%40alice%3Atest.local",
        )
        .await;
    assert_eq!(status, 200, "{body}\n{}", server.log_text());
    assert_eq!(receiver.wait_for_bodies(3, &server).await, names(0..3));
    let status = federation_status(&server);
    assert!(status.contains("  up\n"), "{status}");
}
