//! Server keys, signed requests both ways and the simple queries: against a real Synapse, and a
//! fake server written here for what Synapse will not send (forged signatures).

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use ruma::{
    ServerName,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
    signatures::Ed25519KeyPair,
};
use rustls::RootCertStore;
use serde_json::{Value, json};

use super::support::{TestCa, tls_connect};
use super::synapse::Synapse;
use super::{FederatingAppliance, assert_signed_by, only_verify_key, own_key};

const REGISTRATION: &str =
    "enable_registration: true\nenable_registration_without_verification: true\n";

/// One HTTPS request to `localhost:port` with optional bearer token, extra headers and JSON
/// body: (status, JSON body or `Null`).
pub async fn https_json(
    port: u16,
    roots: &RootCertStore,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, Value) {
    let stream = tls_connect(port, "localhost", roots, &[b"http/1.1"])
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, format!("localhost:{port}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    if body.is_some() {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
    }
    let response = sender
        .send_request(builder.body(Full::new(Bytes::from(bytes))).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Registers `username` through the client API (dummy auth) on either server: its access token.
pub(crate) async fn register(port: u16, roots: &RootCertStore, username: &str) -> String {
    let (status, body) = https_json(
        port,
        roots,
        "POST",
        "/_matrix/client/v3/register",
        &[],
        Some(&json!({"username": username, "password": "correct horse battery", "auth": {"type": "m.login.dummy"}})),
    )
    .await;
    assert_eq!(status, 200, "register {username}: {body}");
    body["access_token"].as_str().unwrap().to_owned()
}

pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn encode(text: &str) -> String {
    text.replace('#', "%23")
        .replace('@', "%40")
        .replace(':', "%3A")
}

/// The appliance config that reaches Synapse: the test CA, loopback allowed, no notary unless
/// given.
pub(crate) fn outbound_yaml(synapse: &Synapse, extra: &str) -> String {
    let ca = synapse.dir.path().join("ca.pem");
    format!(
        "federation_custom_ca_list: ['{}']\nip_range_whitelist: ['127.0.0.0/8']\n{REGISTRATION}{extra}",
        ca.display()
    )
}

/// Synapse's client API resolves an appliance alias and an appliance user's profile (Synapse
/// signs its queries; the appliance fetches Synapse's keys to check them), and the appliance's
/// client API resolves a Synapse alias and a Synapse user's profile (signed by the appliance,
/// whose keys Synapse fetches).
#[tokio::test(flavor = "multi_thread")]
async fn aliases_and_profiles_resolve_both_ways() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let synapse = Synapse::start(&ca, REGISTRATION).await;
    let ours =
        FederatingAppliance::start_with(&ca, &outbound_yaml(&synapse, "trusted_key_servers: []\n"));
    let (ap, sp) = (ours.port, synapse.port);

    // The appliance's room and user.
    let alice = register(ap, &roots, "alice").await;
    let alice_id = format!("@alice:{}", ours.server_name);
    let (status, body) = https_json(
        ap,
        &roots,
        "PUT",
        &format!(
            "/_matrix/client/v3/profile/{}/displayname",
            encode(&alice_id)
        ),
        &[("authorization", &bearer(&alice))],
        Some(&json!({"displayname": "Alice A."})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = https_json(
        ap,
        &roots,
        "POST",
        "/_matrix/client/v3/createRoom",
        &[("authorization", &bearer(&alice))],
        Some(&json!({"room_alias_name": "lobby"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let our_room = body["room_id"].as_str().unwrap().to_owned();
    let our_alias = format!("#lobby:{}", ours.server_name);

    // Synapse's room and user.
    let bob = register(sp, &roots, "bob").await;
    let bob_id = format!("@bob:{}", synapse.server_name);
    let (status, body) = https_json(
        sp,
        &roots,
        "PUT",
        &format!("/_matrix/client/v3/profile/{}/displayname", encode(&bob_id)),
        &[("authorization", &bearer(&bob))],
        Some(&json!({"displayname": "Bob B."})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = https_json(
        sp,
        &roots,
        "POST",
        "/_matrix/client/v3/createRoom",
        &[("authorization", &bearer(&bob))],
        Some(&json!({"room_alias_name": "hall"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let synapse_room = body["room_id"].as_str().unwrap().to_owned();
    let synapse_alias = format!("#hall:{}", synapse.server_name);

    let logs = || {
        format!(
            "\nSynapse's log:\n{}\nthe appliance's log:\n{}",
            synapse.log_tail(),
            ours.appliance.log_text()
        )
    };

    // Synapse asks the appliance.
    let (status, body) = https_json(
        sp,
        &roots,
        "GET",
        &format!("/_matrix/client/v3/directory/room/{}", encode(&our_alias)),
        &[("authorization", &bearer(&bob))],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}{}", logs());
    assert_eq!(body["room_id"], our_room.as_str());
    assert_eq!(body["servers"], json!([ours.server_name]));
    let (status, body) = https_json(
        sp,
        &roots,
        "GET",
        &format!("/_matrix/client/v3/profile/{}", encode(&alice_id)),
        &[("authorization", &bearer(&bob))],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}{}", logs());
    assert_eq!(body["displayname"], "Alice A.");
    let (status, body) = https_json(
        sp,
        &roots,
        "GET",
        &format!(
            "/_matrix/client/v3/directory/room/{}",
            encode(&format!("#nowhere:{}", ours.server_name))
        ),
        &[("authorization", &bearer(&bob))],
        None,
    )
    .await;
    assert_eq!((status, &body["errcode"]), (404, &json!("M_NOT_FOUND")));

    // The appliance asks Synapse.
    let (status, body) = https_json(
        ap,
        &roots,
        "GET",
        &format!(
            "/_matrix/client/v3/directory/room/{}",
            encode(&synapse_alias)
        ),
        &[("authorization", &bearer(&alice))],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}{}", logs());
    assert_eq!(body["room_id"], synapse_room.as_str());
    assert!(
        body["servers"]
            .as_array()
            .unwrap()
            .contains(&json!(synapse.server_name)),
        "{body}"
    );
    let (status, body) = https_json(
        ap,
        &roots,
        "GET",
        &format!("/_matrix/client/v3/profile/{}", encode(&bob_id)),
        &[("authorization", &bearer(&alice))],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}{}", logs());
    assert_eq!(body["displayname"], "Bob B.");
    let (status, body) = https_json(
        ap,
        &roots,
        "GET",
        &format!("/_matrix/client/v3/profile/{}/displayname", encode(&bob_id)),
        &[("authorization", &bearer(&alice))],
        None,
    )
    .await;
    assert_eq!((status, &body["displayname"]), (200, &json!("Bob B.")));
    let (status, body) = https_json(
        ap,
        &roots,
        "GET",
        &format!(
            "/_matrix/client/v3/profile/{}",
            encode(&format!("@nobody:{}", synapse.server_name))
        ),
        &[("authorization", &bearer(&alice))],
        None,
    )
    .await;
    assert_eq!(
        (status, &body["errcode"]),
        (404, &json!("M_NOT_FOUND")),
        "{body}"
    );
    let (status, body) = https_json(
        ap,
        &roots,
        "GET",
        &format!(
            "/_matrix/client/v3/directory/room/{}",
            encode(&format!("#nowhere:{}", synapse.server_name))
        ),
        &[("authorization", &bearer(&alice))],
        None,
    )
    .await;
    assert_eq!((status, &body["errcode"]), (404, &json!("M_NOT_FOUND")));

    // The version, unsigned.
    let (status, body) = https_json(
        ap,
        &roots,
        "GET",
        "/_matrix/federation/v1/version",
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["server"]["name"], "matrix-appliance");
}

/// The appliance as a notary hands on Synapse's keys signed by Synapse and by itself; and keys
/// of a server it may not contact (a second appliance outside its
/// `federation_domain_whitelist`) come through its notary, Synapse, checked against the
/// notary's configured key.
#[tokio::test(flavor = "multi_thread")]
async fn keys_are_fetched_directly_and_through_a_notary() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let synapse = Synapse::start(&ca, "").await;
    let (synapse_key_id, synapse_key) = own_key(synapse.port, &roots).await;
    let other =
        FederatingAppliance::start_with(&ca, &outbound_yaml(&synapse, "trusted_key_servers: []\n"));
    let (other_key_id, other_key) = own_key(other.port, &roots).await;
    let notary = format!(
        "trusted_key_servers: [{{server_name: '{name}', verify_keys: {{'{synapse_key_id}': '{synapse_key}'}}}}]\n\
         federation_domain_whitelist: ['{name}']\n",
        name = synapse.server_name
    );
    let ours = FederatingAppliance::start_with(&ca, &outbound_yaml(&synapse, &notary));
    let (our_key_id, our_key) = own_key(ours.port, &roots).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let logs = || {
        format!(
            "\nSynapse's log:\n{}\nthe appliance's log:\n{}",
            synapse.log_tail(),
            ours.appliance.log_text()
        )
    };

    // Synapse's keys, fetched directly, handed on signed by both.
    let (status, body) = https_json(
        ours.port,
        &roots,
        "GET",
        &format!(
            "/_matrix/key/v2/query/{}?minimum_valid_until_ts={now_ms}",
            synapse.server_name
        ),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}{}", logs());
    let keys = body["server_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{body}{}", logs());
    assert_eq!(
        only_verify_key(&keys[0]),
        (synapse_key_id.clone(), synapse_key.clone())
    );
    assert_signed_by(
        &keys[0],
        &[
            (&synapse.server_name, &synapse_key_id, &synapse_key),
            (&ours.server_name, &our_key_id, &our_key),
        ],
    );

    // The other appliance may not be contacted: its keys come through Synapse.
    let query = json!({"server_keys": {&other.server_name: {&other_key_id: {"minimum_valid_until_ts": now_ms}}}});
    let (status, body) = https_json(
        ours.port,
        &roots,
        "POST",
        "/_matrix/key/v2/query",
        &[],
        Some(&query),
    )
    .await;
    assert_eq!(status, 200, "{body}{}", logs());
    let keys = body["server_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{body}{}", logs());
    assert_eq!(
        only_verify_key(&keys[0]),
        (other_key_id.clone(), other_key.clone())
    );
    assert_signed_by(
        &keys[0],
        &[
            (&other.server_name, &other_key_id, &other_key),
            (&ours.server_name, &our_key_id, &our_key),
        ],
    );
    assert!(
        ours.appliance
            .log_text()
            .contains("not in federation_domain_whitelist"),
        "the direct fetch was not refused:{}",
        logs()
    );

    // Its own keys, as a notary: signed by itself.
    let query = json!({"server_keys": {&ours.server_name: {}}});
    let (status, body) = https_json(
        ours.port,
        &roots,
        "POST",
        "/_matrix/key/v2/query",
        &[],
        Some(&query),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        only_verify_key(&body["server_keys"][0]),
        (our_key_id.clone(), our_key.clone())
    );
    assert_signed_by(
        &body["server_keys"][0],
        &[(&ours.server_name, &our_key_id, &our_key)],
    );
}

/// Synapse's signing key, read from the config the harness wrote: the fake server signs as
/// Synapse, whose keys the appliance fetches from the real Synapse.
pub(crate) fn synapse_key_pair(synapse: &Synapse) -> Ed25519KeyPair {
    let config = std::fs::read_to_string(synapse.dir.path().join("homeserver.yaml")).unwrap();
    let line = config
        .lines()
        .find(|line| line.starts_with("signing_key:"))
        .unwrap();
    let seed_text = line.trim_end_matches('\'').rsplit(' ').next().unwrap();
    let seed = STANDARD_NO_PAD.decode(seed_text).unwrap();
    // PKCS#8 v1 for an ed25519 seed.
    let mut der = hex_literal_prefix();
    der.extend_from_slice(&seed);
    Ed25519KeyPair::from_der(&der, "a_test".to_owned()).unwrap()
}

fn hex_literal_prefix() -> Vec<u8> {
    vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ]
}

/// The X-Matrix header for `method path` with `body`, signed by `key` as `origin` for
/// `destination`.
pub(crate) fn x_matrix(
    key: &Ed25519KeyPair,
    origin: &str,
    destination: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> String {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .body(bytes.into_bytes())
        .unwrap();
    let input = XMatrixSigningInput::new(
        <&ServerName>::try_from(origin).unwrap().to_owned(),
        <&ServerName>::try_from(destination).unwrap().to_owned(),
        key,
    );
    let header: http::HeaderValue = (&XMatrix::sign_http_request(&request, input).unwrap()).into();
    header.to_str().unwrap().to_owned()
}

/// A fake server (signing as Synapse, with Synapse's real key or a wrong one): a correctly
/// signed query is answered, and a missing header, a wrong signature, a body changed after
/// signing or another destination are `401 M_UNAUTHORIZED`, answered nothing.
#[tokio::test(flavor = "multi_thread")]
async fn forged_requests_are_refused() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let synapse = Synapse::start(&ca, "").await;
    let ours =
        FederatingAppliance::start_with(&ca, &outbound_yaml(&synapse, "trusted_key_servers: []\n"));
    let alice = register(ours.port, &roots, "alice").await;
    let (status, _) = https_json(
        ours.port,
        &roots,
        "PUT",
        &format!(
            "/_matrix/client/v3/profile/{}/displayname",
            encode(&format!("@alice:{}", ours.server_name))
        ),
        &[("authorization", &bearer(&alice))],
        Some(&json!({"displayname": "Alice"})),
    )
    .await;
    assert_eq!(status, 200);
    let key = synapse_key_pair(&synapse);
    let path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        encode(&format!("@alice:{}", ours.server_name))
    );
    let (origin, destination) = (synapse.server_name.as_str(), ours.server_name.as_str());
    let query = |headers: Vec<(&'static str, String)>, body: Option<Value>| {
        let path = path.clone();
        let roots = roots.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            https_json(ours.port, &roots, "GET", &path, &headers, body.as_ref()).await
        }
    };

    // Signed right: answered (the appliance fetched Synapse's key to check it).
    let good = x_matrix(&key, origin, destination, "GET", &path, None);
    let (status, body) = query(vec![("authorization", good)], None).await;
    assert_eq!(
        (status, &body["displayname"]),
        (200, &json!("Alice")),
        "{body}\n{}",
        ours.appliance.log_text()
    );

    let refused = |(status, body): (u16, Value)| {
        assert_eq!(
            (status, &body["errcode"]),
            (401, &json!("M_UNAUTHORIZED")),
            "{body}"
        );
        assert!(body.get("displayname").is_none());
    };
    // No header.
    refused(query(vec![], None).await);
    // Signed by another key under Synapse's key ID.
    let stranger =
        Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "a_test".to_owned()).unwrap();
    refused(
        query(
            vec![(
                "authorization",
                x_matrix(&stranger, origin, destination, "GET", &path, None),
            )],
            None,
        )
        .await,
    );
    // An unknown key ID of Synapse.
    let unknown = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "nope".to_owned()).unwrap();
    refused(
        query(
            vec![(
                "authorization",
                x_matrix(&unknown, origin, destination, "GET", &path, None),
            )],
            None,
        )
        .await,
    );
    // The body changed after signing.
    let signed_body = json!({"a": 1});
    let header = x_matrix(&key, origin, destination, "GET", &path, Some(&signed_body));
    refused(
        query(
            vec![("authorization", header.clone())],
            Some(json!({"a": 2})),
        )
        .await,
    );
    // The same, unchanged, passes: the body is part of what is signed.
    let (status, _) = query(vec![("authorization", header)], Some(signed_body)).await;
    assert_eq!(status, 200);
    // For another destination.
    refused(
        query(
            vec![(
                "authorization",
                x_matrix(&key, origin, "localhost:1", "GET", &path, None),
            )],
            None,
        )
        .await,
    );
    // An origin outside `federation_domain_whitelist`: 403.
    let closed = FederatingAppliance::start_with(
        &ca,
        &outbound_yaml(
            &synapse,
            "trusted_key_servers: []\nfederation_domain_whitelist: ['example.org']\n",
        ),
    );
    let header = x_matrix(&key, origin, &closed.server_name, "GET", &path, None);
    let (status, body) = https_json(
        closed.port,
        &roots,
        "GET",
        &path,
        &[("authorization", header.as_str())],
        None,
    )
    .await;
    assert_eq!(
        (status, &body["errcode"]),
        (403, &json!("M_FORBIDDEN")),
        "{body}"
    );
    // The path changed after signing.
    let other_path = format!("{path}&field=avatar_url");
    refused(
        query(
            vec![(
                "authorization",
                x_matrix(&key, origin, destination, "GET", &other_path, None),
            )],
            None,
        )
        .await,
    );
}
