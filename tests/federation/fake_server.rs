//! A remote server written in the test, for what a real one will not send: forged signatures,
//! bad content hashes, events its users may not send, replays, oversized events, endless gaps.
//! It is `localhost:<port>` with a certificate from the test CA, serves its signing key at
//! `/_matrix/key/v2/server` (so the appliance verifies it exactly as it would any server),
//! answers `/send` (recording what it is sent) and `/get_missing_events` / `/event_auth` with
//! whatever a test puts in `Behaviour`, and signs its requests with X-Matrix.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post, put},
};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, RoomVersionId,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
    signatures::Ed25519KeyPair,
};
use rustls::RootCertStore;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{
    accounts::{encode, send},
    support::{TestCa, free_port},
};

/// What the fake server answers to the appliance's requests.
#[derive(Default)]
pub struct Behaviour {
    /// The answer to `POST /get_missing_events` (`events`).
    pub missing_events: Vec<Value>,
    /// The answer to `GET /event_auth` (`auth_chain`).
    pub auth_chain: Vec<Value>,
    /// Every request the appliance made, answered or not: (method, path).
    pub requests: Vec<(String, String)>,
    /// The PDUs the appliance sent in transactions.
    pub received_pdus: Vec<Value>,
}

pub struct FakeServer {
    pub port: u16,
    pub server_name: String,
    pub key: Arc<Ed25519KeyPair>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    pub roots: RootCertStore,
}

/// A fresh ed25519 key with version `version`.
pub fn new_key(version: &str) -> Ed25519KeyPair {
    let der = Ed25519KeyPair::generate();
    Ed25519KeyPair::from_der(&der, version.to_owned()).unwrap()
}

fn public_key_base64(key: &Ed25519KeyPair) -> String {
    ruma::serde::Base64::<ruma::serde::base64::Standard, _>::new(key.public_key().to_vec()).encode()
}

struct Shared {
    server_name: String,
    key: Arc<Ed25519KeyPair>,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl FakeServer {
    pub async fn start(ca: &TestCa) -> Self {
        Self::start_with_routes(ca, free_port(), Router::new()).await
    }

    /// `start` on `port`, also answering `extra` routes (a test's own endpoints).
    pub async fn start_with_routes(ca: &TestCa, port: u16, extra: Router) -> Self {
        let server_name = format!("localhost:{port}");
        let key = Arc::new(new_key("fake"));
        let behaviour = Arc::new(Mutex::new(Behaviour::default()));
        let shared = Arc::new(Shared {
            server_name: server_name.clone(),
            key: key.clone(),
            behaviour: behaviour.clone(),
        });
        let router = Router::new()
            .route("/_matrix/key/v2/server", get(keys))
            .route(
                "/_matrix/federation/v1/send/{txn}",
                put(received_transaction),
            )
            .route(
                "/_matrix/federation/v1/get_missing_events/{room}",
                post(missing_events),
            )
            .route(
                "/_matrix/federation/v1/event_auth/{room}/{event}",
                get(event_auth),
            )
            .fallback(not_found)
            .with_state(shared)
            .merge(extra);

        let (chain, key_pem) = ca.leaf(&["localhost"]);
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
            .map(|c| c.unwrap())
            .collect::<Vec<_>>();
        let private = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, router) = (acceptor.clone(), router.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            router.clone().oneshot(request.map(axum::body::Body::new))
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            port,
            server_name,
            key,
            behaviour,
            roots: ca.roots(),
        }
    }

    pub fn roots_clone(&self) -> RootCertStore {
        self.roots.clone()
    }

    pub fn name(&self) -> OwnedServerName {
        OwnedServerName::try_from(self.server_name.as_str()).unwrap()
    }

    /// A request to the appliance at `port` (`localhost:<port>`), X-Matrix-signed with `key`
    /// (the server's own unless a test forges one): status and JSON.
    pub async fn request_signed_with(
        &self,
        key: &Ed25519KeyPair,
        port: u16,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let destination = OwnedServerName::try_from(format!("localhost:{port}")).unwrap();
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, format!("localhost:{port}"));
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let mut request = request.body(bytes).unwrap();
        let x_matrix = XMatrix::sign_http_request(
            &request,
            XMatrixSigningInput::new(self.name(), destination, key),
        )
        .unwrap();
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from(&x_matrix),
        );
        send(
            port,
            &self.roots,
            request.map(|b| Full::new(Bytes::from(b))),
        )
        .await
    }

    pub async fn request(
        &self,
        port: u16,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        self.request_signed_with(&self.key.clone(), port, method, path, body)
            .await
    }

    /// Hashes and signs `event` as this server (room version `version`): its event ID.
    pub fn sign_event(&self, event: &mut CanonicalJsonObject, version: &RoomVersionId) -> String {
        let rules = version.rules().unwrap();
        ruma::signatures::hash_and_sign_event(
            &self.server_name,
            &*self.key,
            event,
            &rules.redaction,
        )
        .unwrap();
        format!(
            "${}",
            ruma::signatures::reference_hash(event, &rules).unwrap()
        )
    }

    /// Joins `user` (a localpart of this server) to `room_id` on the appliance at `port` with
    /// `make_join` / `send_join`; the room as the fake server now knows it.
    pub async fn join(&self, port: u16, room_id: &str, localpart: &str) -> JoinedRoom {
        let user_id = format!("@{localpart}:{}", self.server_name);
        let (status, template) = self
            .request(
                port,
                http::Method::GET,
                &format!(
                    "/_matrix/federation/v1/make_join/{}/{}?ver=10&ver=11&ver=12",
                    encode(room_id),
                    encode(&user_id)
                ),
                None,
            )
            .await;
        assert_eq!(status, 200, "make_join: {template}");
        let version = RoomVersionId::try_from(template["room_version"].as_str().unwrap()).unwrap();
        let mut event: CanonicalJsonObject =
            serde_json::from_value(template["event"].clone()).unwrap();
        event.insert(
            "origin_server_ts".into(),
            CanonicalJsonValue::Integer(ruma::Int::new(now_ms()).unwrap()),
        );
        let event_id = self.sign_event(&mut event, &version);
        let (status, answer) = self
            .request(
                port,
                http::Method::PUT,
                &format!(
                    "/_matrix/federation/v2/send_join/{}/{}",
                    encode(room_id),
                    encode(&event_id)
                ),
                Some(&serde_json::to_value(&event).unwrap()),
            )
            .await;
        assert_eq!(status, 200, "send_join: {answer}");
        let mut state = BTreeMap::new();
        for pdu in answer["state"].as_array().unwrap() {
            let object: CanonicalJsonObject = serde_json::from_value(pdu.clone()).unwrap();
            let id = format!(
                "${}",
                ruma::signatures::reference_hash(&object, &version.rules().unwrap()).unwrap()
            );
            state.insert(
                (
                    pdu["type"].as_str().unwrap().to_owned(),
                    pdu["state_key"].as_str().unwrap().to_owned(),
                ),
                id,
            );
        }
        state.insert(
            ("m.room.member".to_owned(), user_id.clone()),
            event_id.clone(),
        );
        JoinedRoom {
            room_id: room_id.to_owned(),
            version,
            user_id,
            state,
            latest: event_id,
            depth: event["depth"].as_integer().map(i64::from).unwrap_or(1),
        }
    }

    /// Sends one transaction of `pdus` (already signed) to the appliance: status and answer.
    pub async fn send_transaction(
        &self,
        port: u16,
        txn_id: &str,
        pdus: Vec<Value>,
    ) -> (u16, Value) {
        let body = json!({
            "origin": self.server_name,
            "origin_server_ts": now_ms(),
            "pdus": pdus,
            "edus": [],
        });
        self.request(
            port,
            http::Method::PUT,
            &format!("/_matrix/federation/v1/send/{txn_id}"),
            Some(&body),
        )
        .await
    }
}

/// A room the fake server's user joined, enough to build further events in it.
pub struct JoinedRoom {
    pub room_id: String,
    pub version: RoomVersionId,
    pub user_id: String,
    /// (type, state_key) -> event ID, as of the join.
    pub state: BTreeMap<(String, String), String>,
    /// The fake server's newest event in the room: the next one's prev event.
    pub latest: String,
    pub depth: i64,
}

impl JoinedRoom {
    /// An unsigned event by the fake server's user after its latest one, with the auth events
    /// the authorization rules ask for.
    pub fn event(
        &self,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> CanonicalJsonObject {
        let mut auth = Vec::new();
        for key in [
            ("m.room.create", ""),
            ("m.room.power_levels", ""),
            ("m.room.member", self.user_id.as_str()),
        ] {
            if key.0 == "m.room.create" && self.version == RoomVersionId::V12 {
                continue; // since v12 the create event is implied by the room ID
            }
            if let Some(id) = self.state.get(&(key.0.to_owned(), key.1.to_owned())) {
                auth.push(json!(id));
            }
        }
        let mut event = json!({
            "room_id": self.room_id,
            "sender": self.user_id,
            "type": kind,
            "content": content,
            "origin_server_ts": now_ms(),
            "depth": self.depth + 1,
            "prev_events": [self.latest],
            "auth_events": auth,
        });
        if let Some(state_key) = state_key {
            event["state_key"] = json!(state_key);
        }
        serde_json::from_value(event).unwrap()
    }

    /// Records a sent event as the newest.
    pub fn advance(&mut self, event_id: &str) {
        self.latest = event_id.to_owned();
        self.depth += 1;
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn keys(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let mut keys: CanonicalJsonObject = serde_json::from_value(json!({
        "server_name": shared.server_name,
        "valid_until_ts": now_ms() + 3_600_000,
        "verify_keys": {"ed25519:fake": {"key": public_key_base64(&shared.key)}},
        "old_verify_keys": {},
    }))
    .unwrap();
    ruma::signatures::sign_json(&shared.server_name, &*shared.key, &mut keys).unwrap();
    Json(serde_json::to_value(keys).unwrap())
}

fn record(shared: &Shared, method: &str, path: String) {
    shared
        .behaviour
        .lock()
        .unwrap()
        .requests
        .push((method.to_owned(), path));
}

async fn received_transaction(
    State(shared): State<Arc<Shared>>,
    uri: http::Uri,
    Json(body): Json<Value>,
) -> Json<Value> {
    record(&shared, "PUT", uri.path().to_owned());
    let mut behaviour = shared.behaviour.lock().unwrap();
    for pdu in body["pdus"].as_array().cloned().unwrap_or_default() {
        behaviour.received_pdus.push(pdu);
    }
    Json(json!({"pdus": {}}))
}

async fn missing_events(State(shared): State<Arc<Shared>>, uri: http::Uri) -> Json<Value> {
    record(&shared, "POST", uri.path().to_owned());
    let events = shared.behaviour.lock().unwrap().missing_events.clone();
    Json(json!({"events": events}))
}

async fn event_auth(State(shared): State<Arc<Shared>>, uri: http::Uri) -> Json<Value> {
    record(&shared, "GET", uri.path().to_owned());
    let chain = shared.behaviour.lock().unwrap().auth_chain.clone();
    Json(json!({"auth_chain": chain}))
}

async fn not_found(
    State(shared): State<Arc<Shared>>,
    method: http::Method,
    uri: http::Uri,
) -> (http::StatusCode, Json<Value>) {
    // Recorded too: a test counts what the appliance asked for, faked or not.
    record(&shared, method.as_str(), uri.path().to_owned());
    (
        http::StatusCode::NOT_FOUND,
        Json(json!({"errcode": "M_UNRECOGNIZED", "error": format!("{uri} is not faked")})),
    )
}
