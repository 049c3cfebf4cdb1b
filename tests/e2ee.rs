//! End-to-end encryption over HTTP: device and one-time keys (`/keys/upload|query|claim`),
//! device-list changes (/sync's `device_lists`, `/keys/changes`), to-device messages,
//! cross-signing (`/keys/device_signing/upload`, `/keys/signatures/upload`) and server-side key
//! backups (`/room_keys/...`). Keys are real ed25519 keys signed here with ruma.

use crate::common;

use std::time::{Duration, Instant};

use common::{Session, TestServer, assert_error};
use reqwest::Method;
use ruma::{
    CanonicalJsonObject,
    serde::{Base64, base64::Standard},
    signatures::{Ed25519KeyPair, sign_json},
};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse";

/// An ed25519 key pair that signs JSON the way clients do.
struct Signer {
    pair: Ed25519KeyPair,
    public: String,
}

impl Signer {
    fn new(name: &str) -> Self {
        let pair = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), name.to_owned())
            .expect("key pair");
        let public = Base64::<Standard>::new(pair.public_key().to_vec()).encode();
        Self { pair, public }
    }

    /// A cross-signing key pair: its key ID is `ed25519:<its public key>`.
    fn cross_signing() -> Self {
        let der = Ed25519KeyPair::generate();
        let probe = Ed25519KeyPair::from_der(&der, String::new()).expect("key pair");
        let public = Base64::<Standard>::new(probe.public_key().to_vec()).encode();
        let pair = Ed25519KeyPair::from_der(&der, public.clone()).expect("key pair");
        Self { pair, public }
    }

    fn sign(&self, user: &str, value: Value) -> Value {
        let mut object: CanonicalJsonObject = serde_json::from_value(value).expect("canonical");
        sign_json(user, &self.pair, &mut object).expect("sign");
        serde_json::to_value(object).expect("json")
    }
}

/// Device keys of `session`'s device, self-signed with `signer` (the device's ed25519 key).
fn device_keys(session: &Session, signer: &Signer) -> Value {
    let device = &session.device_id;
    signer.sign(
        &session.user_id,
        json!({
            "user_id": session.user_id,
            "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{device}"): Base64::<Standard>::new(rand_bytes()).encode(),
                format!("ed25519:{device}"): signer.public,
            },
        }),
    )
}

fn rand_bytes() -> Vec<u8> {
    (0..32).map(|_| rand_byte()).collect()
}

fn rand_byte() -> u8 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let x = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    (x.wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 56) as u8
}

/// A signed one-time (or fallback) key.
fn one_time_key(session: &Session, signer: &Signer, fallback: bool) -> Value {
    let mut key = json!({"key": Base64::<Standard>::new(rand_bytes()).encode()});
    if fallback {
        key["fallback"] = json!(true);
    }
    signer.sign(&session.user_id, key)
}

async fn upload(server: &TestServer, who: &Session, body: Value) -> (reqwest::StatusCode, Value) {
    server
        .post("/_matrix/client/v3/keys/upload", who.token(), body)
        .await
}

async fn query(server: &TestServer, who: &Session, users: Value) -> Value {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/query",
            who.token(),
            json!({"device_keys": users}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn claim(server: &TestServer, who: &Session, target: &Session) -> Value {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/claim",
            who.token(),
            json!({"one_time_keys": {&target.user_id: {&target.device_id: "signed_curve25519"}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["one_time_keys"][&target.user_id][&target.device_id].clone()
}

async fn sync(server: &TestServer, who: &Session, since: Option<&str>) -> Value {
    let path = match since {
        Some(since) => format!("/_matrix/client/v3/sync?since={since}&timeout=0"),
        None => "/_matrix/client/v3/sync".to_owned(),
    };
    let (status, body) = server.get(&path, who.token()).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().expect("next_batch").to_owned()
}

fn user_list(value: &Value) -> Vec<String> {
    let mut users: Vec<String> = value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    users.sort();
    users
}

async fn create_room(server: &TestServer, owner: &Session) -> String {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            owner.token(),
            json!({"preset": "public_chat"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["room_id"].as_str().unwrap().to_owned()
}

async fn join(server: &TestServer, who: &Session, room: &str) {
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{room}"),
            who.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn device_keys_one_time_keys_and_fallback_keys() {
    let server = TestServer::start().await;
    let alice = server.register("alice", PASSWORD).await;
    let bob = server.register("bob", PASSWORD).await;
    let signer = Signer::new(&alice.device_id);
    let keys = device_keys(&alice, &signer);

    // A device may upload only its own keys, self-signed.
    let mut tampered = keys.clone();
    tampered["algorithms"] = json!(["m.megolm.v1.aes-sha2"]);
    assert_error(
        &upload(&server, &alice, json!({"device_keys": tampered})).await,
        400,
        "M_INVALID_SIGNATURE",
    );
    let other_device = device_keys(
        &Session {
            device_id: "OTHER".into(),
            ..alice.clone()
        },
        &signer,
    );
    assert_error(
        &upload(&server, &alice, json!({"device_keys": other_device})).await,
        400,
        "M_INVALID_PARAM",
    );
    let nothing = query(&server, &bob, json!({&alice.user_id: []})).await;
    assert_eq!(
        nothing["device_keys"][&alice.user_id],
        json!({}),
        "{nothing}"
    );

    let otks: serde_json::Map<String, Value> = (1..=3)
        .map(|i| {
            (
                format!("signed_curve25519:AAAAA{i}"),
                one_time_key(&alice, &signer, false),
            )
        })
        .collect();
    let fallback = one_time_key(&alice, &signer, true);
    let (status, body) = upload(
        &server,
        &alice,
        json!({
            "device_keys": keys,
            "one_time_keys": otks,
            "fallback_keys": {"signed_curve25519:FALLBACK1": fallback},
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["one_time_key_counts"]["signed_curve25519"], 3,
        "{body}"
    );

    // The same key ID again: the same key is fine, another one is refused and changes nothing.
    let (status, body) = upload(&server, &alice, json!({"one_time_keys": otks})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["one_time_key_counts"]["signed_curve25519"], 3,
        "{body}"
    );
    assert_error(
        &upload(
            &server,
            &alice,
            json!({"one_time_keys": {
                "signed_curve25519:AAAAA1": one_time_key(&alice, &signer, false),
                "signed_curve25519:AAAAA9": one_time_key(&alice, &signer, false),
            }}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );

    // Others see the device keys as uploaded, with the device's name, and failures for servers
    // this one cannot reach.
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/devices/{}", alice.device_id),
            alice.token(),
            json!({"display_name": "Alice's laptop"}),
        )
        .await;
    assert_eq!(status, 200);
    let seen = query(
        &server,
        &bob,
        json!({&alice.user_id: [], "@nobody:test.local": [], "@eve:elsewhere.example": []}),
    )
    .await;
    let device = &seen["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(device["keys"], keys["keys"], "{seen}");
    assert_eq!(device["signatures"], keys["signatures"], "{seen}");
    assert_eq!(device["unsigned"]["device_display_name"], "Alice's laptop");
    assert_eq!(
        seen["device_keys"]["@nobody:test.local"],
        json!({}),
        "{seen}"
    );
    assert!(seen["failures"]["elsewhere.example"].is_object(), "{seen}");
    let only = query(&server, &bob, json!({&alice.user_id: ["NOSUCHDEVICE"]})).await;
    assert_eq!(only["device_keys"][&alice.user_id], json!({}), "{only}");

    // The owner's sync counts the keys; claims use them up, oldest first, then the fallback key.
    let first = sync(&server, &alice, None).await;
    assert_eq!(
        first["device_one_time_keys_count"]["signed_curve25519"], 3,
        "{first}"
    );
    assert_eq!(
        first["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );
    let claimed = claim(&server, &bob, &alice).await;
    assert_eq!(
        claimed["signed_curve25519:AAAAA1"], otks["signed_curve25519:AAAAA1"],
        "{claimed}"
    );
    let after = sync(&server, &alice, Some(&next_batch(&first))).await;
    assert_eq!(
        after["device_one_time_keys_count"]["signed_curve25519"], 2,
        "{after}"
    );
    for expected in ["signed_curve25519:AAAAA2", "signed_curve25519:AAAAA3"] {
        let claimed = claim(&server, &bob, &alice).await;
        assert!(claimed.get(expected).is_some(), "{claimed}");
    }
    for _ in 0..2 {
        let claimed = claim(&server, &bob, &alice).await;
        assert_eq!(
            claimed["signed_curve25519:FALLBACK1"], fallback,
            "{claimed}"
        );
    }
    let drained = sync(&server, &alice, Some(&next_batch(&after))).await;
    assert_eq!(
        drained["device_one_time_keys_count"]["signed_curve25519"], 0,
        "{drained}"
    );
    assert_eq!(
        drained["device_unused_fallback_key_types"],
        json!([]),
        "{drained}"
    );

    // Uploading the used fallback key again does not make it fresh; a new one does.
    upload(
        &server,
        &alice,
        json!({"fallback_keys": {"signed_curve25519:FALLBACK1": fallback}}),
    )
    .await;
    let same = sync(&server, &alice, Some(&next_batch(&drained))).await;
    assert_eq!(
        same["device_unused_fallback_key_types"],
        json!([]),
        "{same}"
    );
    upload(
        &server,
        &alice,
        json!({"fallback_keys": {"signed_curve25519:FALLBACK2": one_time_key(&alice, &signer, true)}}),
    )
    .await;
    let fresh = sync(&server, &alice, Some(&next_batch(&same))).await;
    assert_eq!(
        fresh["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    // A device without any key to claim is left out; unknown users too.
    let bare = server.login_session("alice", PASSWORD).await;
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/claim",
            bob.token(),
            json!({"one_time_keys": {
                &alice.user_id: {&bare.device_id: "signed_curve25519"},
                "@nobody:test.local": {"X": "signed_curve25519"},
            }}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["one_time_keys"], json!({}), "{body}");
}

#[tokio::test]
async fn device_list_changes_in_sync_and_keys_changes() {
    let server = TestServer::start().await;
    let alice = server.register("alice", PASSWORD).await;
    let bob = server.register("bob", PASSWORD).await;
    let carol = server.register("carol", PASSWORD).await;

    let initial = sync(&server, &bob, None).await;
    assert!(initial.get("device_lists").is_none(), "{initial}");
    let t0 = next_batch(&initial);

    // Sharing a room for the first time: the other user's devices are news.
    let room = create_room(&server, &alice).await;
    join(&server, &bob, &room).await;
    let shared = sync(&server, &bob, Some(&t0)).await;
    assert!(
        user_list(&shared["device_lists"]["changed"]).contains(&alice.user_id),
        "{shared}"
    );
    let t1 = next_batch(&shared);

    // New keys of a room-mate and of the user themselves are changes; a stranger's are not.
    let signer = Signer::new(&alice.device_id);
    upload(
        &server,
        &alice,
        json!({"device_keys": device_keys(&alice, &signer)}),
    )
    .await;
    let carol_signer = Signer::new(&carol.device_id);
    upload(
        &server,
        &carol,
        json!({"device_keys": device_keys(&carol, &carol_signer)}),
    )
    .await;
    let bob_signer = Signer::new(&bob.device_id);
    upload(
        &server,
        &bob,
        json!({"device_keys": device_keys(&bob, &bob_signer)}),
    )
    .await;
    let changed = sync(&server, &bob, Some(&t1)).await;
    assert_eq!(
        user_list(&changed["device_lists"]["changed"]),
        vec![alice.user_id.clone(), bob.user_id.clone()],
        "{changed}"
    );
    let t2 = next_batch(&changed);
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/keys/changes?from={t1}&to={t2}"),
            bob.token(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        user_list(&body["changed"]),
        vec![alice.user_id.clone(), bob.user_id.clone()]
    );
    assert_eq!(user_list(&body["left"]), Vec::<String>::new());
    assert_error(
        &server
            .get(
                "/_matrix/client/v3/keys/changes?from=nonsense&to=s1",
                bob.token(),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );

    // Nothing new: nothing reported.
    let quiet = sync(&server, &bob, Some(&t2)).await;
    assert!(quiet.get("device_lists").is_none(), "{quiet}");

    // A new login of a room-mate wakes a waiting long-poll with the change.
    let waiting = {
        let url = format!(
            "{}/_matrix/client/v3/sync?since={t2}&timeout=30000",
            server.base_url
        );
        let request = server.http.get(url).bearer_auth(&bob.access_token);
        tokio::spawn(async move {
            let started = Instant::now();
            let body: Value = request.send().await.unwrap().json().await.unwrap();
            (body, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alice2 = server.login_session("alice", PASSWORD).await;
    let (woken, waited) = waiting.await.unwrap();
    assert!(
        user_list(&woken["device_lists"]["changed"]).contains(&alice.user_id),
        "{woken}"
    );
    assert!(
        waited < Duration::from_secs(25),
        "the long-poll was not woken: {waited:?}"
    );
    let t3 = next_batch(&woken);

    // Deleting a device is a change, and its keys go with it.
    let signer2 = Signer::new(&alice2.device_id);
    upload(
        &server,
        &alice2,
        json!({
            "device_keys": device_keys(&alice2, &signer2),
            "one_time_keys": {"signed_curve25519:A": one_time_key(&alice2, &signer2, false)},
        }),
    )
    .await;
    let t4 = next_batch(&sync(&server, &bob, Some(&t3)).await);
    let before = query(&server, &bob, json!({&alice.user_id: []})).await;
    assert!(
        before["device_keys"][&alice.user_id]
            .get(&alice2.device_id)
            .is_some()
    );
    let (status, body) = server
        .with_password_auth(
            Method::DELETE,
            &format!("/_matrix/client/v3/devices/{}", alice2.device_id),
            &alice,
            PASSWORD,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let deleted = sync(&server, &bob, Some(&t4)).await;
    assert!(
        user_list(&deleted["device_lists"]["changed"]).contains(&alice.user_id),
        "{deleted}"
    );
    let after = query(&server, &bob, json!({&alice.user_id: []})).await;
    assert!(
        after["device_keys"][&alice.user_id]
            .get(&alice2.device_id)
            .is_none(),
        "{after}"
    );
    assert!(
        after["device_keys"][&alice.user_id]
            .get(&alice.device_id)
            .is_some(),
        "{after}"
    );
    let claimed = claim(&server, &bob, &alice2).await;
    assert!(claimed.is_null(), "{claimed}");
    let t5 = next_batch(&deleted);

    // Leaving the only shared room: `left`, in /sync and in /keys/changes.
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            alice.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let left = sync(&server, &bob, Some(&t5)).await;
    assert_eq!(
        user_list(&left["device_lists"]["left"]),
        vec![alice.user_id.clone()],
        "{left}"
    );
    assert!(!user_list(&left["device_lists"]["changed"]).contains(&alice.user_id));
    let t6 = next_batch(&left);
    let (_, body) = server
        .get(
            &format!("/_matrix/client/v3/keys/changes?from={t5}&to={t6}"),
            bob.token(),
        )
        .await;
    assert_eq!(
        user_list(&body["left"]),
        vec![alice.user_id.clone()],
        "{body}"
    );

    // After that, alice's key changes are none of bob's business.
    upload(
        &server,
        &alice,
        json!({"device_keys": device_keys(&alice, &Signer::new(&alice.device_id))}),
    )
    .await;
    let unrelated = sync(&server, &bob, Some(&t6)).await;
    assert!(unrelated.get("device_lists").is_none(), "{unrelated}");
}

#[tokio::test]
async fn to_device_messages_are_delivered_until_acknowledged() {
    let server = TestServer::start().await;
    let alice = server.register("alice", PASSWORD).await;
    let alice2 = server.login_session("alice", PASSWORD).await;
    let bob = server.register("bob", PASSWORD).await;
    let t0 = next_batch(&sync(&server, &bob, None).await);

    let send = |txn: String, messages: Value| {
        let server = &server;
        let alice = &alice;
        async move {
            server
                .put(
                    &format!("/_matrix/client/v3/sendToDevice/m.test/{txn}"),
                    alice.token(),
                    json!({"messages": messages}),
                )
                .await
        }
    };
    let to_bob = json!({&bob.user_id: {&bob.device_id: {"n": 1}, "NOSUCHDEVICE": {"n": 0}}});
    assert_eq!(send("t1".into(), to_bob.clone()).await.0, 200);
    // The same transaction again is a retry: nothing is sent twice.
    assert_eq!(send("t1".into(), to_bob.clone()).await.0, 200);

    let first = sync(&server, &bob, Some(&t0)).await;
    let events = first["to_device"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        events,
        vec![json!({"sender": alice.user_id, "type": "m.test", "content": {"n": 1}})],
        "{first}"
    );
    // A client that lost the response syncs again from the old token: delivered again.
    let again = sync(&server, &bob, Some(&t0)).await;
    assert_eq!(
        again["to_device"]["events"].as_array().map(Vec::len),
        Some(1),
        "{again}"
    );
    // Syncing from the new token acknowledges them: gone for good.
    let t1 = next_batch(&again);
    let next = sync(&server, &bob, Some(&t1)).await;
    assert!(next.get("to_device").is_none(), "{next}");
    let old = sync(&server, &bob, Some(&t0)).await;
    assert!(old.get("to_device").is_none(), "{old}");

    // `*` reaches every device of the user.
    let a_since = next_batch(&sync(&server, &alice, None).await);
    let a2_since = next_batch(&sync(&server, &alice2, None).await);
    let (status, _) = server
        .put(
            "/_matrix/client/v3/sendToDevice/m.ping/all1",
            bob.token(),
            json!({"messages": {&alice.user_id: {"*": {"hello": true}}}}),
        )
        .await;
    assert_eq!(status, 200);
    for (who, since) in [(&alice, &a_since), (&alice2, &a2_since)] {
        let got = sync(&server, who, Some(since)).await;
        assert_eq!(
            got["to_device"]["events"],
            json!([{"sender": bob.user_id, "type": "m.ping", "content": {"hello": true}}]),
            "{got}"
        );
    }

    // A waiting long-poll wakes for a to-device message.
    let t2 = next_batch(&next);
    let waiting = {
        let url = format!(
            "{}/_matrix/client/v3/sync?since={t2}&timeout=30000",
            server.base_url
        );
        let request = server.http.get(url).bearer_auth(&bob.access_token);
        tokio::spawn(async move {
            let started = Instant::now();
            let body: Value = request.send().await.unwrap().json().await.unwrap();
            (body, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        send(
            "t2".into(),
            json!({&bob.user_id: {&bob.device_id: {"n": 2}}})
        )
        .await
        .0,
        200
    );
    let (woken, waited) = waiting.await.unwrap();
    assert_eq!(
        woken["to_device"]["events"][0]["content"]["n"], 2,
        "{woken}"
    );
    assert!(waited < Duration::from_secs(25), "not woken: {waited:?}");
    let t3 = next_batch(&woken);

    // More than one response carries: the rest come in the next sync, in order, none lost.
    for n in 0..105 {
        let messages = json!({&bob.user_id: {&bob.device_id: {"n": n}}});
        assert_eq!(send(format!("bulk{n}"), messages).await.0, 200);
    }
    let page1 = sync(&server, &bob, Some(&t3)).await;
    let page1_events = page1["to_device"]["events"].as_array().unwrap();
    assert_eq!(page1_events.len(), 100);
    assert_eq!(page1_events[0]["content"]["n"], 0);
    assert_eq!(page1_events[99]["content"]["n"], 99);
    let page2 = sync(&server, &bob, Some(&next_batch(&page1))).await;
    let page2_numbers: Vec<i64> = page2["to_device"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(page2_numbers, vec![100, 101, 102, 103, 104], "{page2}");
    let done = sync(&server, &bob, Some(&next_batch(&page2))).await;
    assert!(done.get("to_device").is_none(), "{done}");

    // A deleted device's inbox goes with it.
    assert_eq!(
        send(
            "t3".into(),
            json!({&alice.user_id: {&alice2.device_id: {"n": 3}}})
        )
        .await
        .0,
        200
    );
    let inbox = |device: &str| {
        let db = rusqlite::Connection::open(server.data_dir.join("appliance.db")).unwrap();
        db.query_row(
            "SELECT count(*) FROM to_device_inbox WHERE device_id = ?1",
            [device],
            |row| row.get::<_, i64>(0),
        )
        .unwrap()
    };
    assert!(inbox(&alice2.device_id) > 0);
    let (status, _) = server
        .post("/_matrix/client/v3/logout", alice2.token(), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(inbox(&alice2.device_id), 0);

    // A body that is not a map of contents is refused.
    let (status, body) = server
        .put(
            "/_matrix/client/v3/sendToDevice/m.test/bad",
            alice.token(),
            json!({"messages": {&bob.user_id: {&bob.device_id: "not an object"}}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

/// Master, self-signing and user-signing keys of a user, the latter two signed by the master.
struct CrossSigning {
    master: Signer,
    self_signing: Signer,
    user_signing: Signer,
}

impl CrossSigning {
    fn new() -> Self {
        Self {
            master: Signer::cross_signing(),
            self_signing: Signer::cross_signing(),
            user_signing: Signer::cross_signing(),
        }
    }

    fn key(user: &str, usage: &str, signer: &Signer) -> Value {
        json!({
            "user_id": user,
            "usage": [usage],
            "keys": {format!("ed25519:{}", signer.public): signer.public},
        })
    }

    fn upload_body(&self, user: &str) -> Value {
        json!({
            "master_key": Self::key(user, "master", &self.master),
            "self_signing_key": self.master.sign(user, Self::key(user, "self_signing", &self.self_signing)),
            "user_signing_key": self.master.sign(user, Self::key(user, "user_signing", &self.user_signing)),
        })
    }
}

#[tokio::test]
async fn cross_signing_keys_and_signatures() {
    let server = TestServer::start().await;
    let alice = server.register("alice", PASSWORD).await;
    let bob = server.register("bob", PASSWORD).await;
    let carol = server.register("carol", PASSWORD).await;
    let device_signer = Signer::new(&alice.device_id);
    let alice_keys = device_keys(&alice, &device_signer);
    upload(&server, &alice, json!({"device_keys": alice_keys})).await;
    let alice_cs = CrossSigning::new();
    let signing_upload = "/_matrix/client/v3/keys/device_signing/upload";

    // A self-signing key needs a master key.
    let (status, body) = server
        .post(
            signing_upload,
            carol.token(),
            json!({"self_signing_key": CrossSigning::key(&carol.user_id, "self_signing", &Signer::cross_signing())}),
        )
        .await;
    assert_error(&(status, body), 400, "M_MISSING_PARAM");

    // A self-signing key not signed by the master key is refused.
    let mut bad = alice_cs.upload_body(&alice.user_id);
    bad["self_signing_key"] =
        CrossSigning::key(&alice.user_id, "self_signing", &alice_cs.self_signing);
    assert_error(
        &server.post(signing_upload, alice.token(), bad).await,
        400,
        "M_INVALID_SIGNATURE",
    );
    // Keys of another user are refused.
    assert_error(
        &server
            .post(
                signing_upload,
                alice.token(),
                alice_cs.upload_body(&bob.user_id),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );

    // The first upload needs no password (the spec allows it; Element relies on it).
    let (status, body) = server
        .post(
            signing_upload,
            alice.token(),
            alice_cs.upload_body(&alice.user_id),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Uploading the same keys again is a no-op, also without a password.
    let (status, body) = server
        .post(
            signing_upload,
            alice.token(),
            alice_cs.upload_body(&alice.user_id),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let own = query(&server, &alice, json!({&alice.user_id: []})).await;
    assert_eq!(
        own["master_keys"][&alice.user_id]["keys"],
        json!({format!("ed25519:{}", alice_cs.master.public): alice_cs.master.public}),
        "{own}"
    );
    assert!(
        own["self_signing_keys"][&alice.user_id].is_object(),
        "{own}"
    );
    assert!(
        own["user_signing_keys"][&alice.user_id].is_object(),
        "{own}"
    );
    let others = query(&server, &bob, json!({&alice.user_id: []})).await;
    assert!(
        others["master_keys"][&alice.user_id].is_object(),
        "{others}"
    );
    assert!(
        others["self_signing_keys"][&alice.user_id].is_object(),
        "{others}"
    );
    assert!(others.get("user_signing_keys").is_none(), "{others}");

    // The self-signing key signs the device; a bad signature is refused and not stored.
    let ssk_id = format!("ed25519:{}", alice_cs.self_signing.public);
    let signed_device = alice_cs
        .self_signing
        .sign(&alice.user_id, alice_keys.clone());
    let mut forged = signed_device.clone();
    forged["signatures"][&alice.user_id][&ssk_id] =
        json!(Base64::<Standard>::new(vec![7; 64]).encode());
    let signatures_upload = "/_matrix/client/v3/keys/signatures/upload";
    let (status, body) = server
        .post(
            signatures_upload,
            alice.token(),
            json!({&alice.user_id: {&alice.device_id: forged}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["failures"][&alice.user_id][&alice.device_id]["errcode"], "M_INVALID_SIGNATURE",
        "{body}"
    );
    let unsigned = query(&server, &bob, json!({&alice.user_id: []})).await;
    assert!(
        unsigned["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id]
            .get(&ssk_id)
            .is_none()
    );
    let (status, body) = server
        .post(
            signatures_upload,
            alice.token(),
            json!({&alice.user_id: {&alice.device_id: signed_device}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("failures").is_none_or(|f| f == &json!({})),
        "{body}"
    );
    let signed = query(&server, &bob, json!({&alice.user_id: []})).await;
    let device = &signed["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(
        device["signatures"][&alice.user_id][&ssk_id],
        signed_device["signatures"][&alice.user_id][&ssk_id],
        "{signed}"
    );
    assert!(
        device["signatures"][&alice.user_id]
            .get(format!("ed25519:{}", alice.device_id))
            .is_some()
    );

    // The device signs the master key (as after a verification).
    let master = own["master_keys"][&alice.user_id].clone();
    let master_by_device = device_signer.sign(&alice.user_id, master.clone());
    let (status, body) = server
        .post(
            signatures_upload,
            alice.token(),
            json!({&alice.user_id: {&alice_cs.master.public: master_by_device}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("failures").is_none_or(|f| f == &json!({})),
        "{body}"
    );
    let with_device_sig = query(&server, &bob, json!({&alice.user_id: []})).await;
    assert!(
        with_device_sig["master_keys"][&alice.user_id]["signatures"][&alice.user_id]
            .get(format!("ed25519:{}", alice.device_id))
            .is_some(),
        "{with_device_sig}"
    );

    // Bob verifies alice: his user-signing key signs her master key. Only bob sees it.
    let bob_cs = CrossSigning::new();
    let (status, body) = server
        .post(
            signing_upload,
            bob.token(),
            bob_cs.upload_body(&bob.user_id),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let master_by_bob = bob_cs.user_signing.sign(&bob.user_id, master.clone());
    let (status, body) = server
        .post(
            signatures_upload,
            bob.token(),
            json!({&alice.user_id: {&alice_cs.master.public: master_by_bob}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("failures").is_none_or(|f| f == &json!({})),
        "{body}"
    );
    let usk_id = format!("ed25519:{}", bob_cs.user_signing.public);
    let bobs_view = query(&server, &bob, json!({&alice.user_id: []})).await;
    assert!(
        bobs_view["master_keys"][&alice.user_id]["signatures"][&bob.user_id]
            .get(&usk_id)
            .is_some(),
        "{bobs_view}"
    );
    let carols_view = query(&server, &carol, json!({&alice.user_id: []})).await;
    assert!(
        carols_view["master_keys"][&alice.user_id]["signatures"]
            .get(&bob.user_id)
            .is_none(),
        "{carols_view}"
    );
    // A key that is not alice's master key, and a signature by a key bob does not own.
    let (status, body) = server
        .post(
            signatures_upload,
            bob.token(),
            json!({&alice.user_id: {
                "NOTAKEY": master.clone(),
                &alice_cs.master.public: Signer::cross_signing().sign(&bob.user_id, master.clone()),
            }}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["failures"][&alice.user_id]["NOTAKEY"]["errcode"],
        "M_NOT_FOUND"
    );
    assert_eq!(
        body["failures"][&alice.user_id][&alice_cs.master.public]["errcode"], "M_INVALID_SIGNATURE",
        "{body}"
    );

    // Replacing existing keys needs the password; the old signatures go.
    let new_cs = CrossSigning::new();
    let (status, body) = server
        .with_password_auth(
            Method::POST,
            signing_upload,
            &alice,
            PASSWORD,
            new_cs.upload_body(&alice.user_id),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let replaced = query(&server, &bob, json!({&alice.user_id: []})).await;
    let new_master = &replaced["master_keys"][&alice.user_id];
    assert!(
        new_master["keys"]
            .get(format!("ed25519:{}", new_cs.master.public))
            .is_some(),
        "{replaced}"
    );
    assert!(
        new_master["signatures"].get(&bob.user_id).is_none(),
        "{replaced}"
    );
    assert!(
        replaced["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id]
            .get(&ssk_id)
            .is_none(),
        "{replaced}"
    );
}

/// A backup version's algorithm; `tag` names its (made-up) public key.
fn backup_algorithm(tag: &str) -> Value {
    json!({
        "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
        "auth_data": {"public_key": b64(tag), "signatures": {}},
    })
}

fn b64(tag: &str) -> String {
    Base64::<Standard>::new(tag.as_bytes().to_vec()).encode()
}

fn backup_key(
    first_message_index: u64,
    forwarded_count: u64,
    is_verified: bool,
    tag: &str,
) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": is_verified,
        "session_data": {"ephemeral": "AAAA", "ciphertext": tag, "mac": "BBBB"},
    })
}

#[tokio::test]
async fn key_backup_versions_and_keys() {
    let server = TestServer::start().await;
    let alice = server.register("alice", PASSWORD).await;
    let bob = server.register("bob", PASSWORD).await;
    let version_path = "/_matrix/client/v3/room_keys/version";
    assert_error(
        &server.get(version_path, alice.token()).await,
        404,
        "M_NOT_FOUND",
    );

    let (status, body) = server
        .post(version_path, alice.token(), backup_algorithm("KEY1"))
        .await;
    assert_eq!(status, 200, "{body}");
    let v1 = body["version"].as_str().unwrap().to_owned();
    let (status, info) = server.get(version_path, alice.token()).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["version"], v1);
    assert_eq!(info["algorithm"], "m.megolm_backup.v1.curve25519-aes-sha2");
    assert_eq!(info["auth_data"]["public_key"], b64("KEY1"));
    assert_eq!(info["count"], 0);
    let etag0 = info["etag"].as_str().unwrap().to_owned();
    // Backups are per user.
    assert_error(
        &server.get(version_path, bob.token()).await,
        404,
        "M_NOT_FOUND",
    );

    let room = "!room:test.local";
    let session_path = |version: &str, session: &str| {
        format!("/_matrix/client/v3/room_keys/keys/{room}/{session}?version={version}")
    };
    let put_session = |version: String, session: &'static str, key: Value| {
        let server = &server;
        let alice = &alice;
        let path = session_path(&version, session);
        async move { server.put(&path, alice.token(), key).await }
    };
    let stored = |session: &'static str| {
        let server = &server;
        let alice = &alice;
        let path = session_path(&v1, session);
        async move {
            let (status, body) = server.get(&path, alice.token()).await;
            assert_eq!(status, 200, "{body}");
            body["session_data"]["ciphertext"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };

    let (status, body) = put_session(v1.clone(), "s1", backup_key(5, 1, false, "first")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 1);
    let etag1 = body["etag"].as_str().unwrap().to_owned();
    assert_ne!(etag1, etag0);

    // The spec's rules for a session already backed up.
    let rules = [
        (backup_key(9, 0, false, "later index"), false),
        (backup_key(2, 3, false, "earlier index"), true),
        (backup_key(2, 4, false, "more forwarded"), false),
        (backup_key(2, 1, false, "less forwarded"), true),
        (backup_key(7, 9, true, "verified"), true),
        (backup_key(0, 0, false, "unverified"), false),
        (backup_key(6, 9, true, "verified, earlier"), true),
    ];
    let mut expected = "first".to_owned();
    let mut etag = etag1.clone();
    for (key, replaces) in rules {
        let tag = key["session_data"]["ciphertext"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, body) = put_session(v1.clone(), "s1", key).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["count"], 1);
        if replaces {
            expected = tag.clone();
            assert_ne!(body["etag"], etag, "{tag}: the etag must change");
        } else {
            assert_eq!(body["etag"], etag, "{tag}: nothing changed");
        }
        etag = body["etag"].as_str().unwrap().to_owned();
        assert_eq!(stored("s1").await, expected, "after uploading {tag}");
    }

    // Several rooms and sessions at once; reading them back all, per room, per session.
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/room_keys/keys?version={v1}"),
            alice.token(),
            json!({"rooms": {
                room: {"sessions": {"s2": backup_key(0, 0, false, "s2")}},
                "!other:test.local": {"sessions": {"s3": backup_key(0, 0, false, "s3")}},
            }}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 3);
    let (status, all) = server
        .get(
            &format!("/_matrix/client/v3/room_keys/keys?version={v1}"),
            alice.token(),
        )
        .await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        all["rooms"][room]["sessions"]["s1"]["session_data"]["ciphertext"],
        expected
    );
    assert_eq!(
        all["rooms"]["!other:test.local"]["sessions"]["s3"]["forwarded_count"],
        0
    );
    let (status, per_room) = server
        .get(
            &format!("/_matrix/client/v3/room_keys/keys/{room}?version={v1}"),
            alice.token(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        per_room["sessions"].as_object().map(|s| s.len()),
        Some(2),
        "{per_room}"
    );
    let (status, empty) = server
        .get(
            &format!("/_matrix/client/v3/room_keys/keys/!none:test.local?version={v1}"),
            alice.token(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(empty, json!({"sessions": {}}));
    assert_error(
        &server
            .get(&session_path(&v1, "nosuch"), alice.token())
            .await,
        404,
        "M_NOT_FOUND",
    );
    let (_, info) = server
        .get(&format!("{version_path}/{v1}"), alice.token())
        .await;
    assert_eq!(info["count"], 3);
    assert_eq!(info["etag"], json!(body["etag"]));

    // A newer version takes over: writing to the old one is M_WRONG_ROOM_KEYS_VERSION.
    let (_, body) = server
        .post(version_path, alice.token(), backup_algorithm("KEY2"))
        .await;
    let v2 = body["version"].as_str().unwrap().to_owned();
    assert_ne!(v2, v1);
    let refused = put_session(v1.clone(), "s9", backup_key(0, 0, false, "x")).await;
    assert_error(&refused, 403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(refused.1["current_version"], v2, "{}", refused.1);
    assert_error(
        &put_session("999".into(), "s9", backup_key(0, 0, false, "x")).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &put_session("nonsense".into(), "s9", backup_key(0, 0, false, "x")).await,
        404,
        "M_NOT_FOUND",
    );
    // The old version's keys can still be read.
    assert_eq!(stored("s1").await, expected);
    let (_, latest) = server.get(version_path, alice.token()).await;
    assert_eq!(latest["version"], v2);
    assert_eq!(latest["count"], 0);

    // Updating a version: auth_data may change, the algorithm may not, the version must match.
    let update = format!("{version_path}/{v2}");
    let mut changed = backup_algorithm("KEY2-SIGNED");
    changed["version"] = json!(v2);
    let (status, body) = server.put(&update, alice.token(), changed).await;
    assert_eq!(status, 200, "{body}");
    let (_, info) = server.get(&update, alice.token()).await;
    assert_eq!(info["auth_data"]["public_key"], b64("KEY2-SIGNED"));
    let mut other_algorithm = backup_algorithm("KEY2");
    other_algorithm["algorithm"] = json!("org.example.other");
    other_algorithm["auth_data"] = json!({"anything": 1});
    assert_error(
        &server.put(&update, alice.token(), other_algorithm).await,
        400,
        "M_INVALID_PARAM",
    );
    let mut wrong_version = backup_algorithm("KEY2");
    wrong_version["version"] = json!(v1);
    assert_error(
        &server.put(&update, alice.token(), wrong_version).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .put(
                &format!("{version_path}/999"),
                alice.token(),
                backup_algorithm("K"),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );

    // Deleting keys changes count and etag.
    put_session(v2.clone(), "a", backup_key(0, 0, false, "a")).await;
    let (_, body) = put_session(v2.clone(), "b", backup_key(0, 0, false, "b")).await;
    assert_eq!(body["count"], 2);
    let etag_before = body["etag"].clone();
    let (status, body) = server
        .delete(&session_path(&v2, "a"), alice.token(), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 1);
    assert_ne!(body["etag"], etag_before);
    let (status, body) = server
        .delete(
            &format!("/_matrix/client/v3/room_keys/keys?version={v2}"),
            alice.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 0);

    // Deleting the current version makes the previous one current again.
    let (status, _) = server
        .delete(&format!("{version_path}/{v2}"), alice.token(), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_error(
        &server
            .get(&format!("{version_path}/{v2}"), alice.token())
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .delete(&format!("{version_path}/{v2}"), alice.token(), json!({}))
            .await,
        404,
        "M_NOT_FOUND",
    );
    let (_, latest) = server.get(version_path, alice.token()).await;
    assert_eq!(latest["version"], v1);
    assert_eq!(latest["count"], 3);
    // A new version never reuses a deleted one's number.
    let (_, body) = server
        .post(version_path, alice.token(), backup_algorithm("KEY3"))
        .await;
    assert_ne!(body["version"], v2);
    assert_ne!(body["version"], v1);
}

#[tokio::test]
async fn password_change_and_deactivation_are_device_list_changes() {
    let server = TestServer::start().await;
    let alice = server.register("alice", PASSWORD).await;
    let alice2 = server.login_session("alice", PASSWORD).await;
    let bob = server.register("bob", PASSWORD).await;
    let room = create_room(&server, &alice).await;
    join(&server, &bob, &room).await;
    for who in [&alice, &alice2] {
        let signer = Signer::new(&who.device_id);
        let (status, body) = upload(
            &server,
            who,
            json!({
                "device_keys": device_keys(who, &signer),
                "one_time_keys": {"signed_curve25519:A": one_time_key(who, &signer, false)},
            }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let t0 = next_batch(&sync(&server, &bob, None).await);

    // A password change that signs out the other devices: their keys go, bob hears of it.
    let (status, body) = server
        .with_password_auth(
            Method::POST,
            "/_matrix/client/v3/account/password",
            &alice,
            PASSWORD,
            json!({"new_password": "another horse", "logout_devices": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let changed = sync(&server, &bob, Some(&t0)).await;
    assert_eq!(
        user_list(&changed["device_lists"]["changed"]),
        vec![alice.user_id.clone()],
        "{changed}"
    );
    let keys = query(&server, &bob, json!({&alice.user_id: []})).await;
    let devices: Vec<&String> = keys["device_keys"][&alice.user_id]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(devices, vec![&alice.device_id], "{keys}");
    assert!(claim(&server, &bob, &alice2).await.is_null());
    let t1 = next_batch(&changed);

    // Deactivation signs out every device: a change, and no keys left.
    let (status, body) = server
        .with_password_auth(
            Method::POST,
            "/_matrix/client/v3/account/deactivate",
            &alice,
            "another horse",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let deactivated = sync(&server, &bob, Some(&t1)).await;
    let lists = &deactivated["device_lists"];
    // `changed` while a deactivated account stays in its rooms, `left` if deactivation leaves them.
    assert!(
        user_list(&lists["changed"]).contains(&alice.user_id)
            || user_list(&lists["left"]).contains(&alice.user_id),
        "{deactivated}"
    );
    let keys = query(&server, &bob, json!({&alice.user_id: []})).await;
    assert_eq!(keys["device_keys"][&alice.user_id], json!({}), "{keys}");
}

#[tokio::test]
async fn acknowledged_keys_messages_and_backups_survive_kill_9() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice", PASSWORD).await;
    let bob = server.register("bob", PASSWORD).await;
    let t0 = next_batch(&sync(&server, &bob, None).await);
    let signer = Signer::new(&alice.device_id);
    let keys = device_keys(&alice, &signer);
    let (status, _) = upload(
        &server,
        &alice,
        json!({
            "device_keys": keys,
            "one_time_keys": {"signed_curve25519:A": one_time_key(&alice, &signer, false)},
        }),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .put(
            "/_matrix/client/v3/sendToDevice/m.test/persist",
            alice.token(),
            json!({"messages": {&bob.user_id: {&bob.device_id: {"kept": true}}}}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .post(
            "/_matrix/client/v3/room_keys/version",
            alice.token(),
            backup_algorithm("KEY"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let version = body["version"].as_str().unwrap().to_owned();
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/room_keys/keys/!r:test.local/s?version={version}"),
            alice.token(),
            backup_key(0, 0, true, "kept"),
        )
        .await;
    assert_eq!(status, 200);

    server.kill9();
    server.relaunch();

    let seen = query(&server, &bob, json!({&alice.user_id: []})).await;
    assert_eq!(
        seen["device_keys"][&alice.user_id][&alice.device_id]["keys"],
        keys["keys"]
    );
    assert!(
        claim(&server, &bob, &alice)
            .await
            .get("signed_curve25519:A")
            .is_some()
    );
    let delivered = sync(&server, &bob, Some(&t0)).await;
    assert_eq!(
        delivered["to_device"]["events"][0]["content"],
        json!({"kept": true})
    );
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/room_keys/keys/!r:test.local/s?version={version}"),
            alice.token(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session_data"]["ciphertext"], "kept");
}
