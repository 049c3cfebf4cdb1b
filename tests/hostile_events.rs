//! Hostile events: content nested deeper than JSON parsers (this server's, ruma's, Rust clients')
//! can read is refused at every door, and one stored event that cannot be shown (written by an
//! older version) never fails a whole response: `/sync`, `/messages`, `/context`, `/event`,
//! `/search`, `/relations`, `/threads`, `/state`, notification counts, and its redaction.
//! The same for every other client JSON the server stores and shows inside larger responses
//! (account data, to-device messages, keys, key backups, push rules): refused past 100 levels,
//! and left out when an older version stored it deeper.
//!
//! The test harness parses every response with serde_json, as Rust clients do: a response
//! nested too deeply for them would read as `null` here.

use crate::common;
use crate::room_api;

use common::{Session, TestServer, assert_error};
use reqwest::{Method, StatusCode};
use room_api::*;
use serde_json::{Value, json};

/// The deepest content the server accepts (`MAX_CONTENT_DEPTH`).
const MAX_CONTENT_DEPTH: usize = 100;

/// A value nesting `depth` levels of objects (`{}` is 1).
fn nested(depth: usize) -> Value {
    let mut value = json!({"leaf": true});
    for _ in 1..depth {
        value = json!({ "n": value });
    }
    value
}

/// Message content nesting `depth` levels, with a searchable body at the top.
fn deep_message(body: &str, depth: usize) -> Value {
    json!({"msgtype": "m.text", "body": body, "n": nested(depth - 1)})
}

fn thread_reply(root: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text", "body": body,
        "m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": true,
                         "m.in_reply_to": {"event_id": root}},
    })
}

fn contains_event(events: &[Value], event_id: &str) -> bool {
    events.iter().any(|e| e["event_id"] == event_id)
}

async fn get(server: &TestServer, who: &Session, path: &str) -> (StatusCode, Value) {
    server.get(path, who.token()).await
}

async fn must_get(server: &TestServer, who: &Session, path: &str) -> Value {
    let (status, body) = get(server, who, path).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    assert!(!body.is_null(), "GET {path}: a body serde_json can parse");
    body
}

/// An initial `/sync` with room for every event of these tests in the timeline.
async fn full_sync(server: &TestServer, who: &Session) -> Value {
    let filter = json!({"room": {"timeline": {"limit": 100}}}).to_string();
    sync(server, who, &format!("filter={}", q(&filter))).await
}

async fn search(server: &TestServer, who: &Session, term: &str) -> Value {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/search",
            who.token(),
            json!({"search_categories": {"room_events": {
                "search_term": term,
                "event_context": {"before_limit": 3, "after_limit": 3},
            }}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "search {term}: {body}");
    assert!(!body.is_null(), "search: a body serde_json can parse");
    body["search_categories"]["room_events"].clone()
}

#[tokio::test]
async fn content_nested_too_deep_is_refused_at_every_door() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let room = create_room(&server, &alice, json!({})).await;

    // The depth from the issue (accepted, then unreadable for good) and the first level over.
    for depth in [127, MAX_CONTENT_DEPTH + 1] {
        assert_error(
            &try_send(
                &server,
                &alice,
                &room,
                "m.room.message",
                deep_message("x", depth),
            )
            .await,
            400,
            "M_BAD_JSON",
        );
        assert_error(
            &try_set_state(
                &server,
                &alice,
                &room,
                "m.room.topic",
                "",
                json!({"topic": "t", "n": nested(depth - 1)}),
            )
            .await,
            400,
            "M_BAD_JSON",
        );
    }
    // createRoom's initial state, creation content and power levels override.
    let rooms_before = must_get(&server, &alice, "/_matrix/client/v3/joined_rooms").await;
    for body in [
        json!({"initial_state": [{"type": "m.room.topic", "state_key": "",
                                  "content": {"topic": "t", "n": nested(MAX_CONTENT_DEPTH)}}]}),
        json!({"creation_content": {"n": nested(MAX_CONTENT_DEPTH)}}),
        json!({"power_level_content_override": {"n": nested(MAX_CONTENT_DEPTH)}}),
    ] {
        let reply = server
            .post("/_matrix/client/v3/createRoom", alice.token(), body)
            .await;
        assert_error(&reply, 400, "M_BAD_JSON");
    }
    let rooms_after = must_get(&server, &alice, "/_matrix/client/v3/joined_rooms").await;
    assert_eq!(rooms_before, rooms_after, "no half-made room");

    // The deepest content accepted is readable everywhere, even where responses nest it
    // furthest: as a thread's latest reply bundled into its root, and as the `prev_content` of
    // the state event that replaces it.
    let root = send_text(&server, &alice, &room, "deep root").await;
    let mut reply = deep_message("deep reply", MAX_CONTENT_DEPTH);
    reply["m.relates_to"] = thread_reply(&root, "")["m.relates_to"].clone();
    let (status, body) = try_send(&server, &alice, &room, "m.room.message", reply).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deep_reply = body["event_id"].as_str().unwrap().to_owned();
    set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "deep", "n": nested(MAX_CONTENT_DEPTH - 1)}),
    )
    .await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "flat"}),
    )
    .await;

    let synced = full_sync(&server, &alice).await;
    let events = timeline(&synced, "join", &room);
    let root_event = events
        .iter()
        .find(|e| e["event_id"] == root)
        .expect("root in the timeline");
    assert_eq!(
        root_event["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"],
        deep_reply
    );
    let topic = events
        .iter()
        .rev()
        .find(|e| e["type"] == "m.room.topic")
        .expect("topic in the timeline");
    assert_eq!(topic["unsigned"]["prev_content"]["topic"], "deep");
    let found = search(&server, &alice, "deep").await;
    assert!(
        found["results"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["result"]["event_id"] == root)),
        "{found}"
    );
    must_get(
        &server,
        &alice,
        &room_path(&room, &format!("context/{}", enc(&root))),
    )
    .await;
    must_get(
        &server,
        &alice,
        &room_path(&room, &format!("event/{}", enc(&deep_reply))),
    )
    .await;
}

/// Rewrites a stored event, as an older version of the server could have written it.
fn rewrite_stored_event(server: &TestServer, event_id: &str, change: impl FnOnce(&mut Value)) {
    let db = rusqlite::Connection::open(server.data_dir.join("appliance.db")).unwrap();
    let json: String = db
        .query_row(
            "SELECT json FROM events WHERE event_id = ?1",
            [event_id],
            |r| r.get(0),
        )
        .unwrap();
    let mut event: Value = serde_json::from_str(&json).unwrap();
    change(&mut event);
    let json = serde_json::to_string(&event).unwrap();
    assert!(
        serde_json::from_str::<Value>(&json).is_err(),
        "the rewritten event is too deep for serde_json"
    );
    db.execute(
        "UPDATE events SET json = ?2 WHERE event_id = ?1",
        rusqlite::params![event_id, json],
    )
    .unwrap();
}

#[tokio::test]
async fn one_unreadable_stored_event_never_fails_a_response() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    must_join(&server, &bob, &room).await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.name",
        "",
        json!({"name": "first"}),
    )
    .await;
    let renamed = set_state(
        &server,
        &alice,
        &room,
        "m.room.name",
        "",
        json!({"name": "second"}),
    )
    .await;
    let topic = set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "t"}),
    )
    .await;
    let before = send_text(&server, &alice, &room, "before").await;
    let victim = send_text(&server, &alice, &room, "needle victim").await;
    let after = send_text(&server, &alice, &room, "after").await;
    let root = send_text(&server, &alice, &room, "needle root").await;
    let reply1 = try_send(
        &server,
        &bob,
        &room,
        "m.room.message",
        thread_reply(&root, "one"),
    )
    .await;
    let reply1 = reply1.1["event_id"]
        .as_str()
        .expect("reply sent")
        .to_owned();
    let reply2 = try_send(
        &server,
        &bob,
        &room,
        "m.room.message",
        thread_reply(&root, "two"),
    )
    .await;
    let reply2 = reply2.1["event_id"]
        .as_str()
        .expect("reply sent")
        .to_owned();
    let bob_join = get_state(&server, &alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(bob_join.0, StatusCode::OK);

    // What an older version stored: content 127 levels deep (the event is 128), and the
    // `prev_content` of a state change that replaced such content.
    server.stop();
    for id in [&victim, &reply2, &topic] {
        rewrite_stored_event(&server, id, |e| e["content"]["n"] = nested(127));
    }
    rewrite_stored_event(&server, &renamed, |e| {
        e["unsigned"]["prev_content"]["n"] = nested(127)
    });
    let db = rusqlite::Connection::open(server.data_dir.join("appliance.db")).unwrap();
    let bob_join_id: String = db
        .query_row(
            "SELECT event_id FROM memberships WHERE room_id = ?1 AND user_id = ?2",
            [&room, &bob.user_id],
            |r| r.get(0),
        )
        .unwrap();
    drop(db);
    rewrite_stored_event(&server, &bob_join_id, |e| e["content"]["n"] = nested(127));
    server.relaunch();

    // /sync, for the sender and for a member whose own join event is unreadable (history
    // visibility and notification counts read it and the victim).
    let synced = full_sync(&server, &alice).await;
    let events = timeline(&synced, "join", &room);
    assert!(contains_event(events, &after), "{synced}");
    assert!(!contains_event(events, &victim));
    let root_event = events.iter().find(|e| e["event_id"] == root).expect("root");
    let thread = &root_event["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(thread["latest_event"]["event_id"], reply1, "{root_event}");
    assert_eq!(thread["count"], 2);
    let bob_sync = full_sync(&server, &bob).await;
    let bob_room = &bob_sync["rooms"]["join"][&room];
    assert!(
        contains_event(timeline(&bob_sync, "join", &room), &after),
        "{bob_sync}"
    );
    // before, after and the root notify (a one-to-one room); the victim is not counted.
    assert_eq!(
        bob_room["unread_notifications"]["notification_count"], 3,
        "{bob_room}"
    );
    let since = bob_sync["next_batch"].as_str().unwrap().to_owned();
    send_text(&server, &alice, &room, "news").await;
    let news = sync_since(&server, &bob, &since, "").await;
    assert_eq!(bodies(timeline(&news, "join", &room)), ["news"]);

    // /messages, /context, /event.
    let chunk = must_messages(&server, &alice, &room, "dir=b&limit=50").await;
    let chunk = chunk["chunk"].as_array().unwrap().clone();
    assert!(contains_event(&chunk, &before) && contains_event(&chunk, &after));
    assert!(!contains_event(&chunk, &victim) && !contains_event(&chunk, &reply2));
    let context = must_get(
        &server,
        &alice,
        &room_path(&room, &format!("context/{}?limit=10", enc(&before))),
    )
    .await;
    assert!(
        contains_event(context["events_after"].as_array().unwrap(), &after),
        "{context}"
    );
    assert!(!contains_event(
        context["events_after"].as_array().unwrap(),
        &victim
    ));
    let state = context["state"].as_array().unwrap();
    assert!(
        find_state(state, "m.room.topic", "").is_none(),
        "unreadable state left out"
    );
    assert!(find_state(state, "m.room.create", "").is_some());
    for path in [
        format!("context/{}", enc(&victim)),
        format!("event/{}", enc(&victim)),
    ] {
        let reply = get(&server, &alice, &room_path(&room, &path)).await;
        assert_error(&reply, 404, "M_NOT_FOUND");
        assert!(
            reply.1["error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot be shown")),
            "a clear error: {}",
            reply.1
        );
    }

    // /search, /relations, /threads.
    let found = search(&server, &alice, "needle").await;
    let results: Vec<&Value> = found["results"].as_array().unwrap().iter().collect();
    assert!(
        results.iter().any(|r| r["result"]["event_id"] == root),
        "{found}"
    );
    assert!(!results.iter().any(|r| r["result"]["event_id"] == victim));
    let relations = must_get(
        &server,
        &alice,
        &format!(
            "/_matrix/client/v1/rooms/{}/relations/{}",
            enc(&room),
            enc(&root)
        ),
    )
    .await;
    assert_eq!(ids(relations["chunk"].as_array().unwrap()), [reply1]);
    let threads = must_get(
        &server,
        &alice,
        &format!("/_matrix/client/v1/rooms/{}/threads", enc(&room)),
    )
    .await;
    assert_eq!(threads["chunk"][0]["event_id"], root, "{threads}");

    // State: the unreadable topic is left out; the name is shown without what it replaced.
    let current = full_state(&server, &alice, &room).await;
    assert!(find_state(&current, "m.room.topic", "").is_none());
    let name = find_state(&current, "m.room.name", "").expect("name");
    assert_eq!(name["content"]["name"], "second");
    assert!(name["unsigned"].get("prev_content").is_none(), "{name}");
    assert_error(
        &get_state(&server, &alice, &room, "m.room.topic", "").await,
        404,
        "M_NOT_FOUND",
    );
    // Bob's membership is still read (he sees the room), only his join event is not shown.
    assert_eq!(
        get_state(&server, &bob, &room, "m.room.name", "").await.0,
        StatusCode::OK
    );
    // An upgrade copies the state it can read and leaves the rest.
    let (status, body) = room_request(
        &server,
        &alice,
        Method::POST,
        &room,
        "upgrade",
        Some(json!({"new_version": "11"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_room = body["replacement_room"].as_str().unwrap().to_owned();
    let copied = full_state(&server, &alice, &new_room).await;
    assert_eq!(
        find_state(&copied, "m.room.name", "").unwrap()["content"]["name"],
        "second"
    );
    assert!(
        find_state(&copied, "m.room.topic", "").is_none(),
        "{copied:?}"
    );
    // A new topic replaces the unreadable one.
    set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "fresh"}),
    )
    .await;
    let (status, content) = get_state(&server, &alice, &room, "m.room.topic", "").await;
    assert_eq!(
        (status, content),
        (StatusCode::OK, json!({"topic": "fresh"}))
    );

    // Redacting the unreadable message shows it again, redacted.
    let (status, body) = room_request(
        &server,
        &alice,
        Method::PUT,
        &room,
        &format!("redact/{}/{}", enc(&victim), txn()),
        Some(json!({"reason": "unreadable"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let shown = must_get(
        &server,
        &alice,
        &room_path(&room, &format!("event/{}", enc(&victim))),
    )
    .await;
    assert_eq!(shown["content"], json!({}), "{shown}");
    assert_eq!(
        shown["unsigned"]["redacted_because"]["content"]["reason"],
        "unreadable"
    );
    let chunk = must_messages(&server, &alice, &room, "dir=b&limit=50").await;
    assert!(contains_event(chunk["chunk"].as_array().unwrap(), &victim));

    // One warning names the event, however many responses left it out.
    let log = server.log_text();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(&reply2) && l.contains("left out"))
        .count();
    assert_eq!(warnings, 1, "{log}");
}

// ---- Other client JSON the server stores and hands back inside larger responses ----

/// An ed25519 key pair that signs JSON the way clients do (device keys must carry the device's
/// own signature).
struct Signer {
    pair: ruma::signatures::Ed25519KeyPair,
    public: String,
}

impl Signer {
    /// `key_name` `None`: a cross-signing key, named after its public key.
    fn new(key_name: Option<&str>) -> Self {
        use ruma::{
            serde::{Base64, base64::Standard},
            signatures::Ed25519KeyPair,
        };
        let der = Ed25519KeyPair::generate();
        let probe = Ed25519KeyPair::from_der(&der, String::new()).unwrap();
        let public = Base64::<Standard>::new(probe.public_key().to_vec()).encode();
        let name = key_name.map_or_else(|| public.clone(), str::to_owned);
        let pair = Ed25519KeyPair::from_der(&der, name).unwrap();
        Self { pair, public }
    }

    fn sign(&self, user: &str, value: Value) -> Value {
        let mut object: ruma::CanonicalJsonObject = serde_json::from_value(value).unwrap();
        ruma::signatures::sign_json(user, &self.pair, &mut object).unwrap();
        serde_json::to_value(object).unwrap()
    }
}

/// Every kind of client JSON the server keeps and later shows inside a larger response.
#[derive(Clone, Copy, Debug)]
enum Kind {
    GlobalAccountData,
    RoomAccountData,
    ToDevice,
    DeviceKeys,
    OneTimeKey,
    FallbackKey,
    MasterKey,
    BackupAuthData,
    BackupSession,
    PushRule,
}

const KINDS: [Kind; 10] = [
    Kind::GlobalAccountData,
    Kind::RoomAccountData,
    Kind::ToDevice,
    Kind::DeviceKeys,
    Kind::OneTimeKey,
    Kind::FallbackKey,
    Kind::MasterKey,
    Kind::BackupAuthData,
    Kind::BackupSession,
    Kind::PushRule,
];

/// Alice stores, Bob receives (to-device messages, keys).
struct Users {
    alice: Session,
    bob: Session,
    room: String,
    device_signer: Signer,
    backup_version: String,
}

const BACKUP_ROOM: &str = "!backup:test.local";

impl Kind {
    /// The depth of the stored value that made a response carrying it too deep for serde_json
    /// on today's main (every request carrying it still parsed): /sync for account data (4 and
    /// 7 levels down), to-device messages (4) and `m.push_rules` (4); `/keys/query` for device
    /// keys (3) and the master key (2); `/keys/claim` for one-time and fallback keys (4);
    /// `/room_keys/keys` for session data (5).
    /// A backup's `auth_data` is shown as deep as it arrives: any depth over the limit will do.
    fn breaking_depth(self) -> usize {
        match self {
            Kind::DeviceKeys => 125,
            Kind::MasterKey => 126,
            _ => 124,
        }
    }

    /// Stores a value of this kind nesting `depth` levels (the value itself is level 1).
    async fn store(self, server: &TestServer, u: &Users, depth: usize) -> (StatusCode, Value) {
        // Every kind holds the deep part one level down, except a push rule, whose action value
        // is 6 levels down in the stored rules.
        let deep = |wrap: usize| nested(depth - wrap);
        let alice = &u.alice;
        let account_data = format!("/_matrix/client/v3/user/{}", enc(&alice.user_id));
        match self {
            Kind::GlobalAccountData => {
                let path = format!("{account_data}/account_data/x.deep");
                server
                    .put(&path, alice.token(), json!({"n": deep(1)}))
                    .await
            }
            Kind::RoomAccountData => {
                let path = format!("{account_data}/rooms/{}/account_data/x.deep", enc(&u.room));
                server
                    .put(&path, alice.token(), json!({"n": deep(1)}))
                    .await
            }
            Kind::ToDevice => {
                let path = format!("/_matrix/client/v3/sendToDevice/x.deep/{}", txn());
                let messages = json!({&u.bob.user_id: {&u.bob.device_id: {"n": deep(1)}}});
                let body = json!({ "messages": messages });
                server.put(&path, alice.token(), body).await
            }
            Kind::DeviceKeys => {
                let device = &alice.device_id;
                let keys = json!({
                    "user_id": alice.user_id, "device_id": device,
                    "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                    "keys": {
                        format!("curve25519:{device}"): "Y3VydmU",
                        format!("ed25519:{device}"): u.device_signer.public,
                    },
                    "n": deep(1),
                });
                let keys = u.device_signer.sign(&alice.user_id, keys);
                let body = json!({ "device_keys": keys });
                server
                    .post("/_matrix/client/v3/keys/upload", alice.token(), body)
                    .await
            }
            Kind::OneTimeKey | Kind::FallbackKey => {
                let (field, id) = match self {
                    Kind::OneTimeKey => ("one_time_keys", format!("signed_curve25519:{}", txn())),
                    _ => ("fallback_keys", "signed_curve25519:F".to_owned()),
                };
                let mut key = json!({"key": "a2V5", "n": deep(1)});
                if let Kind::FallbackKey = self {
                    key["fallback"] = json!(true);
                }
                let key = u.device_signer.sign(&alice.user_id, key);
                let body = json!({ field: { id: key } });
                server
                    .post("/_matrix/client/v3/keys/upload", alice.token(), body)
                    .await
            }
            Kind::MasterKey => {
                let signer = Signer::new(None);
                let key = json!({
                    "user_id": alice.user_id, "usage": ["master"],
                    "keys": {format!("ed25519:{}", signer.public): signer.public},
                    "n": deep(1),
                });
                let path = "/_matrix/client/v3/keys/device_signing/upload";
                server
                    .post(path, alice.token(), json!({"master_key": key}))
                    .await
            }
            Kind::BackupAuthData => {
                let path = format!("/_matrix/client/v3/room_keys/version/{}", u.backup_version);
                let body = json!({
                    "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                    "auth_data": {"public_key": "cHVibGlj", "signatures": {}, "n": deep(1)},
                });
                server.put(&path, alice.token(), body).await
            }
            Kind::BackupSession => {
                let path = format!(
                    "/_matrix/client/v3/room_keys/keys/{}/deep?version={}",
                    enc(BACKUP_ROOM),
                    u.backup_version
                );
                let body = json!({
                    "first_message_index": 0, "forwarded_count": 0, "is_verified": false,
                    "session_data": {"ciphertext": "c2Vzc2lvbg", "n": deep(1)},
                });
                server.put(&path, alice.token(), body).await
            }
            Kind::PushRule => {
                let path = "/_matrix/client/v3/pushrules/global/override/x.deep";
                let body = json!({
                    "actions": [{"set_tweak": "x.deep", "value": deep(6)}],
                    "conditions": [],
                });
                server.put(path, alice.token(), body).await
            }
        }
    }
}

async fn two_users(server: &TestServer) -> Users {
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(server, &alice, json!({})).await;
    let version = json!({
        "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
        "auth_data": {"public_key": "cHVibGlj", "signatures": {}},
    });
    let (status, body) = server
        .post(
            "/_matrix/client/v3/room_keys/version",
            alice.token(),
            version,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let device_signer = Signer::new(Some(&alice.device_id));
    Users {
        alice,
        bob,
        room,
        device_signer,
        backup_version: body["version"].as_str().unwrap().to_owned(),
    }
}

/// `POST /keys/query` of Alice's keys, by Bob.
async fn query_keys(server: &TestServer, u: &Users) -> Value {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/query",
            u.bob.token(),
            json!({"device_keys": {&u.alice.user_id: []}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.is_null(), "keys/query: a body serde_json can parse");
    body
}

/// `POST /keys/claim` of a key of Alice's device, by Bob: the key object, if one was claimed.
async fn claim_key(server: &TestServer, u: &Users) -> Option<Value> {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/claim",
            u.bob.token(),
            json!({"one_time_keys": {&u.alice.user_id: {&u.alice.device_id: "signed_curve25519"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.is_null(), "keys/claim: a body serde_json can parse");
    let keys = body["one_time_keys"][&u.alice.user_id][&u.alice.device_id].as_object()?;
    keys.values().next().cloned()
}

async fn backed_up_sessions(server: &TestServer, u: &Users) -> Value {
    let path = format!(
        "/_matrix/client/v3/room_keys/keys?version={}",
        u.backup_version
    );
    let body = must_get(server, &u.alice, &path).await;
    body["rooms"][BACKUP_ROOM]["sessions"].clone()
}

fn account_data_event<'a>(events: &'a Value, data_type: &str) -> Option<&'a Value> {
    events["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == data_type)
}

/// The `x.deep` tweak of Alice's `x.deep` push rule in `m.push_rules` content.
fn deep_tweak(push_rules: &Value) -> Option<&Value> {
    push_rules["global"]["override"]
        .as_array()?
        .iter()
        .find(|rule| rule["rule_id"] == "x.deep")
        .map(|rule| &rule["actions"][0]["value"])
}

#[tokio::test]
async fn deep_client_json_is_refused_wherever_it_is_stored() {
    let server = TestServer::start().await;
    let u = two_users(&server).await;

    for kind in KINDS {
        for depth in [MAX_CONTENT_DEPTH + 1, kind.breaking_depth()] {
            let reply = kind.store(&server, &u, depth).await;
            assert_error(&reply, 400, "M_BAD_JSON");
            assert!(
                reply.1["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("more than 100 levels deep")),
                "{kind:?} at {depth}: a clear error: {}",
                reply.1
            );
        }
    }
    // Deeper than serde_json reads a value (ruma skips over it, unparsed, in a request body).
    let path = format!("/_matrix/client/v3/sendToDevice/x.deep/{}", txn());
    let messages = json!({&u.bob.user_id: {&u.bob.device_id: nested(130)}});
    let reply = server
        .put(&path, u.alice.token(), json!({ "messages": messages }))
        .await;
    assert_error(&reply, 400, "M_BAD_JSON");
    assert!(
        reply.1["error"]
            .as_str()
            .is_some_and(|e| e.contains("more than 100 levels deep")),
        "{}",
        reply.1
    );
    let path = format!(
        "/_matrix/client/v3/user/{}/account_data/x.deep",
        enc(&u.alice.user_id)
    );
    assert_error(
        &server.put(&path, u.alice.token(), nested(130)).await,
        400,
        "M_BAD_JSON",
    );
    // A push rule's custom tweak value (kept as raw JSON by ruma).
    let rule = json!({"actions": [{"set_tweak": "x.deep", "value": nested(130)}]});
    let path = "/_matrix/client/v3/pushrules/global/override/x.deep";
    let reply = server.put(path, u.alice.token(), rule).await;
    assert_error(&reply, 400, "M_BAD_JSON");
    // Nothing was stored.
    let path = format!(
        "/_matrix/client/v3/user/{}/account_data/x.deep",
        enc(&u.alice.user_id)
    );
    assert_error(&get(&server, &u.alice, &path).await, 404, "M_NOT_FOUND");

    // The deepest value accepted is shown everywhere it goes.
    for kind in KINDS {
        let (status, body) = kind.store(&server, &u, MAX_CONTENT_DEPTH).await;
        assert_eq!(status, StatusCode::OK, "{kind:?}: {body}");
    }
    let synced = full_sync(&server, &u.alice).await;
    assert!(!synced.is_null(), "Alice's /sync parses");
    let global = &synced["account_data"];
    assert!(account_data_event(global, "x.deep").is_some(), "{global}");
    let push_rules = &account_data_event(global, "m.push_rules").unwrap()["content"];
    assert!(
        deep_tweak(push_rules).is_some_and(|v| v.is_object()),
        "{push_rules}"
    );
    let room_data = &synced["rooms"]["join"][&u.room]["account_data"];
    assert!(
        account_data_event(room_data, "x.deep").is_some(),
        "{room_data}"
    );
    let rules = must_get(&server, &u.alice, "/_matrix/client/v3/pushrules/").await;
    assert!(deep_tweak(&rules).is_some_and(|v| v.is_object()), "{rules}");
    assert!(must_get(&server, &u.alice, &path).await["n"].is_object());

    let bob_sync = full_sync(&server, &u.bob).await;
    assert!(!bob_sync.is_null(), "Bob's /sync parses");
    let to_device = bob_sync["to_device"]["events"].as_array().unwrap();
    assert!(
        to_device
            .iter()
            .any(|e| e["type"] == "x.deep" && e["content"]["n"].is_object())
    );

    let keys = query_keys(&server, &u).await;
    assert!(
        keys["device_keys"][&u.alice.user_id][&u.alice.device_id]["n"].is_object(),
        "{keys}"
    );
    assert!(
        keys["master_keys"][&u.alice.user_id]["n"].is_object(),
        "{keys}"
    );
    let claimed = claim_key(&server, &u).await.expect("a one-time key");
    assert!(claimed["n"].is_object(), "{claimed}");
    let fallback = claim_key(&server, &u).await.expect("the fallback key");
    assert_eq!(fallback["fallback"], true, "{fallback}");
    assert!(fallback["n"].is_object(), "{fallback}");

    let sessions = backed_up_sessions(&server, &u).await;
    assert!(
        sessions["deep"]["session_data"]["n"].is_object(),
        "{sessions}"
    );
    let version = must_get(&server, &u.alice, "/_matrix/client/v3/room_keys/version").await;
    assert!(version["auth_data"]["n"].is_object(), "{version}");
}

/// Rewrites stored rows as an older version could have stored them: `n` set, in each row's JSON
/// object, to a value that makes the whole `depth` levels deep.
fn deepen_rows(server: &TestServer, table: &str, column: &str, filter: &str, depth: usize) {
    let db = rusqlite::Connection::open(server.data_dir.join("appliance.db")).unwrap();
    let update =
        format!("UPDATE {table} SET {column} = json_set({column}, '$.n', json(?1)) WHERE {filter}");
    let deep = nested(depth - 1).to_string();
    let changed = db.execute(&update, [&deep]).unwrap();
    assert!(changed > 0, "{update}");
}

#[tokio::test]
async fn deep_client_json_stored_before_is_left_out_of_responses() {
    let mut server = TestServer::start().await;
    let u = two_users(&server).await;
    // One readable and one soon unreadable value of every kind that can hold two.
    for kind in KINDS {
        let (status, body) = kind.store(&server, &u, 7).await;
        assert_eq!(status, StatusCode::OK, "{kind:?}: {body}");
    }
    let alice_data = format!("/_matrix/client/v3/user/{}", enc(&u.alice.user_id));
    for path in [
        format!("{alice_data}/account_data/x.fine"),
        format!("{alice_data}/rooms/{}/account_data/x.fine", enc(&u.room)),
    ] {
        let (status, body) = server.put(&path, u.alice.token(), json!({"a": 1})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let path = format!("/_matrix/client/v3/sendToDevice/x.fine/{}", txn());
    let messages = json!({&u.bob.user_id: {&u.bob.device_id: {"a": 1}}});
    let (status, _) = server
        .put(&path, u.alice.token(), json!({ "messages": messages }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let path = format!(
        "/_matrix/client/v3/room_keys/keys/{}/fine?version={}",
        enc(BACKUP_ROOM),
        u.backup_version
    );
    let session = json!({"first_message_index": 0, "forwarded_count": 0, "is_verified": false,
                         "session_data": {"ciphertext": "ZmluZQ"}});
    let (status, _) = server.put(&path, u.alice.token(), session).await;
    assert_eq!(status, StatusCode::OK);
    // A second one-time key, left as it is.
    let (status, _) = Kind::OneTimeKey.store(&server, &u, 7).await;
    assert_eq!(status, StatusCode::OK);

    // What an older version accepted, each as deep as broke the responses carrying it.
    server.stop();
    let deepen = |kind: Kind, table: &str, column: &str, filter: &str| {
        deepen_rows(&server, table, column, filter, kind.breaking_depth());
    };
    let global = Kind::GlobalAccountData;
    deepen(
        global,
        "account_data",
        "content",
        "type = 'x.deep' AND room_id = ''",
    );
    deepen(
        Kind::RoomAccountData,
        "account_data",
        "content",
        "type = 'x.deep' AND room_id != ''",
    );
    deepen(
        Kind::PushRule,
        "account_data",
        "content",
        "type = 'm.push_rules'",
    );
    deepen(
        Kind::ToDevice,
        "to_device_inbox",
        "content",
        "type = 'x.deep'",
    );
    deepen(Kind::DeviceKeys, "device_keys", "key_json", "1");
    deepen(
        Kind::MasterKey,
        "cross_signing_keys",
        "key_json",
        "key_type = 'master'",
    );
    let oldest_key = "rowid = (SELECT min(rowid) FROM one_time_keys)";
    deepen(Kind::OneTimeKey, "one_time_keys", "key_json", oldest_key);
    deepen(Kind::FallbackKey, "fallback_keys", "key_json", "1");
    deepen(
        Kind::BackupSession,
        "backup_keys",
        "session_data",
        "session_id = 'deep'",
    );
    server.relaunch();

    // Alice's /sync and reads: the rest is shown, the push rules are the defaults.
    for _ in 0..2 {
        let synced = full_sync(&server, &u.alice).await;
        assert!(!synced.is_null(), "Alice's /sync parses");
        let global = &synced["account_data"];
        assert!(account_data_event(global, "x.fine").is_some(), "{global}");
        assert!(account_data_event(global, "x.deep").is_none(), "{global}");
        let push_rules = &account_data_event(global, "m.push_rules").expect("rules")["content"];
        assert!(push_rules["global"]["override"].is_array(), "{push_rules}");
        assert!(deep_tweak(push_rules).is_none(), "{push_rules}");
        let room_data = &synced["rooms"]["join"][&u.room]["account_data"];
        assert!(
            account_data_event(room_data, "x.fine").is_some(),
            "{room_data}"
        );
        assert!(
            account_data_event(room_data, "x.deep").is_none(),
            "{room_data}"
        );
    }
    let reply = get(
        &server,
        &u.alice,
        &format!("{alice_data}/account_data/x.deep"),
    )
    .await;
    assert_error(&reply, 404, "M_NOT_FOUND");
    let rules = must_get(&server, &u.alice, "/_matrix/client/v3/pushrules/").await;
    assert!(deep_tweak(&rules).is_none(), "{rules}");
    // Setting a rule again replaces the unreadable rules.
    let (status, body) = Kind::PushRule.store(&server, &u, 7).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rules = must_get(&server, &u.alice, "/_matrix/client/v3/pushrules/").await;
    assert!(deep_tweak(&rules).is_some(), "{rules}");

    // Bob's /sync, keys query and claims.
    let bob_sync = full_sync(&server, &u.bob).await;
    assert!(!bob_sync.is_null(), "Bob's /sync parses");
    let to_device: Vec<&Value> = bob_sync["to_device"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["type"])
        .collect();
    assert_eq!(to_device, ["x.fine"]);
    let keys = query_keys(&server, &u).await;
    let alice_keys = &keys["device_keys"][&u.alice.user_id];
    assert!(alice_keys.get(&u.alice.device_id).is_none(), "{keys}");
    assert!(
        keys["master_keys"].get(&u.alice.user_id).is_none(),
        "{keys}"
    );
    // The unreadable oldest key is used up without being handed out; then the readable one;
    // the fallback key is unreadable too.
    let claimed = [claim_key(&server, &u).await, claim_key(&server, &u).await];
    let claimed: Vec<&Value> = claimed.iter().flatten().collect();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert!(claimed[0]["key"].is_string() && claimed[0].get("n").is_some());
    assert_eq!(claim_key(&server, &u).await, None);

    // Alice's backup: the readable session only.
    let sessions = backed_up_sessions(&server, &u).await;
    assert!(sessions.get("fine").is_some(), "{sessions}");
    assert!(sessions.get("deep").is_none(), "{sessions}");
    let path = format!(
        "/_matrix/client/v3/room_keys/keys/{}/deep?version={}",
        enc(BACKUP_ROOM),
        u.backup_version
    );
    assert_error(&get(&server, &u.alice, &path).await, 404, "M_NOT_FOUND");

    // One warning per stored value, however many responses left it out.
    let log = server.log_text();
    let warnings = log
        .lines()
        .filter(|l| {
            l.contains("WARN") && l.contains("account data x.deep of") && l.contains("left out")
        })
        .count();
    assert_eq!(
        warnings, 2,
        "global and room account data, once each: {log}"
    );
}
