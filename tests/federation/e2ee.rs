//! Our users' devices and E2EE keys served to other servers (`/user/devices`,
//! `/user/keys/query`, `/user/keys/claim`) and `m.direct_to_device` EDUs received, over HTTP to
//! the real binary, requests signed by the server itself as in serve.rs. The scenario across
//! servers (both clients decrypting, device lists, cross-signing) is
//! `nio::nio_e2ee_across_servers`.

use reqwest::Method;
use ruma::{
    CanonicalJsonObject,
    serde::{Base64, base64::Standard},
    signatures::{Ed25519KeyPair, sign_json},
};
use serde_json::{Value, json};

use super::{
    common::{Session, TestServer},
    serve::signed,
};

/// A device's ed25519 key pair, signing JSON the way clients do.
struct Signer {
    pair: Ed25519KeyPair,
    public: String,
}

impl Signer {
    fn new(device_id: &str) -> Self {
        let pair = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), device_id.to_owned())
            .expect("key pair");
        let public = Base64::<Standard>::new(pair.public_key().to_vec()).encode();
        Self { pair, public }
    }

    fn sign(&self, user: &str, value: Value) -> Value {
        let mut object: CanonicalJsonObject = serde_json::from_value(value).expect("canonical");
        sign_json(user, &self.pair, &mut object).expect("sign");
        serde_json::to_value(object).expect("json")
    }
}

/// Uploads self-signed device keys and `count` one-time keys for `session`'s device.
async fn upload_keys(server: &TestServer, session: &Session, signer: &Signer, count: u8) {
    let device = &session.device_id;
    let device_keys = signer.sign(
        &session.user_id,
        json!({
            "user_id": session.user_id,
            "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{device}"): Base64::<Standard>::new(vec![7u8; 32]).encode(),
                format!("ed25519:{device}"): signer.public,
            },
        }),
    );
    let mut one_time_keys = serde_json::Map::new();
    for n in 0..count {
        let key = json!({"key": Base64::<Standard>::new(vec![n; 32]).encode()});
        one_time_keys.insert(
            format!("signed_curve25519:otk{n}"),
            signer.sign(&session.user_id, key),
        );
    }
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/upload",
            session.token(),
            json!({"device_keys": device_keys, "one_time_keys": one_time_keys}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// `PUT /send/{txnId}` from the server itself with one EDU.
async fn send_edu(server: &TestServer, txn_id: &str, edu: Value) {
    let uri = format!("/_matrix/federation/v1/send/{txn_id}");
    let body = json!({
        "origin": "test.local",
        "origin_server_ts": 1,
        "pdus": [],
        "edus": [edu],
    });
    let (status, answer) = signed(server, Method::PUT, &uri, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
}

/// The to-device events of one sync of `session` from `since` (EDUs are stored before the
/// transaction is answered).
async fn to_device_events(server: &TestServer, session: &Session, since: &str) -> Vec<Value> {
    let path = format!("/_matrix/client/v3/sync?since={since}&timeout=3000");
    let (status, body) = server.get(&path, session.token()).await;
    assert_eq!(status, 200, "{body}");
    body["to_device"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn serves_devices_and_keys_and_takes_to_device_messages_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let signer = Signer::new(&alice.device_id);
    upload_keys(&server, &alice, &signer, 2).await;
    let devices_uri = format!("/_matrix/federation/v1/user/devices/{}", alice.user_id);

    // /user/devices: the device with its keys and a stream_id that moves with each change.
    let (status, list) = signed(&server, Method::GET, &devices_uri, None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["user_id"], alice.user_id.as_str());
    let devices = list["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1, "{list}");
    assert_eq!(devices[0]["device_id"], alice.device_id.as_str());
    let ed25519 = format!("ed25519:{}", alice.device_id);
    assert_eq!(devices[0]["keys"]["keys"][&ed25519], signer.public.as_str());
    let first_stream = list["stream_id"].as_u64().expect("stream_id");
    assert!(first_stream > 0, "{list}");
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/devices/{}", alice.device_id),
            alice.token(),
            json!({"display_name": "alice's phone"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = signed(&server, Method::GET, &devices_uri, None).await;
    assert_eq!(list["devices"][0]["device_display_name"], "alice's phone");
    assert!(list["stream_id"].as_u64().unwrap() > first_stream, "{list}");
    let (status, body) = signed(
        &server,
        Method::GET,
        "/_matrix/federation/v1/user/devices/@bob:other.example",
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // /user/keys/query: our users only.
    let (status, keys) = signed(
        &server,
        Method::POST,
        "/_matrix/federation/v1/user/keys/query",
        Some(json!({"device_keys": {&alice.user_id: [], "@bob:other.example": []}})),
    )
    .await;
    assert_eq!(status, 200, "{keys}");
    let device_keys = &keys["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(device_keys["keys"][&ed25519], signer.public.as_str());
    assert!(
        keys["device_keys"].get("@bob:other.example").is_none(),
        "{keys}"
    );

    // /user/keys/claim: each one-time key once, then none (no fallback key).
    let claim = json!({"one_time_keys": {
        &alice.user_id: {&alice.device_id: "signed_curve25519"},
        "@bob:other.example": {"DEV": "signed_curve25519"},
    }});
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let (status, answer) = signed(
            &server,
            Method::POST,
            "/_matrix/federation/v1/user/keys/claim",
            Some(claim.clone()),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer["one_time_keys"].get("@bob:other.example").is_none());
        if let Some(keys) = answer["one_time_keys"][&alice.user_id][&alice.device_id].as_object() {
            claimed.extend(keys.keys().cloned());
        }
    }
    claimed.sort();
    assert_eq!(
        claimed,
        ["signed_curve25519:otk0", "signed_curve25519:otk1"],
        "each one-time key handed out once"
    );

    // m.direct_to_device: delivered once per message ID, only from the origin's own users.
    let (_, first) = server
        .get("/_matrix/client/v3/sync?timeout=0", alice.token())
        .await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    let edu = |sender: &str, message_id: &str, body: &str| {
        json!({"edu_type": "m.direct_to_device", "content": {
            "sender": sender,
            "type": "m.room_key_request",
            "message_id": message_id,
            "messages": {&alice.user_id: {"*": {"body": body}}},
        }})
    };
    send_edu(
        &server,
        "t1",
        edu("@mallory:elsewhere.example", "m0", "forged"),
    )
    .await;
    send_edu(&server, "t2", edu("@bob:test.local", "m1", "once")).await;
    // Another transaction (a retry whose first answer was lost) with the same message ID.
    send_edu(&server, "t3", edu("@bob:test.local", "m1", "once")).await;
    send_edu(&server, "t4", edu("@bob:test.local", "m2", "twice")).await;
    let events = to_device_events(&server, &alice, &since).await;
    let bodies: Vec<&str> = events
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["once", "twice"], "{events:?}");
    assert_eq!(events[0]["sender"], "@bob:test.local");
    assert_eq!(events[0]["type"], "m.room_key_request");
}
