//! Room data served to other servers (`/state`, `/state_ids`, `/event`, `/event_auth`,
//! `/backfill`, `/get_missing_events`, `/timestamp_to_event`, `/publicRooms`), over HTTP to the
//! real binary. Requests are signed with the key in the server's data directory, as `test.local`
//! itself (no other server is needed to verify them). What a server with no user in the room,
//! or one whose users joined late, may read is checked in process (`services::federation::
//! serve`'s tests) with members of another server.

use std::collections::BTreeSet;

use reqwest::Method;
use ruma::signatures::Ed25519KeyPair;
use serde_json::{Value, json};

use super::{
    FederatingAppliance,
    common::{OPEN_REGISTRATION, Session, TestServer, room_event_ids, send},
    keys,
    support::TestCa,
    synapse::Synapse,
};

const SERVER: &str = "test.local";

/// The `Authorization` header of a request signed by the server itself, over its JSON `body`.
fn x_matrix(server: &TestServer, method: &Method, uri: &str, body: Option<&Value>) -> String {
    use base64::Engine;
    let text = std::fs::read_to_string(server.data_dir.join("signing.key")).unwrap();
    let parts: Vec<&str> = text.split_whitespace().collect();
    let document = base64::engine::general_purpose::STANDARD
        .decode(parts[2])
        .unwrap();
    let key_pair = Ed25519KeyPair::from_der(&document, parts[1].to_owned()).unwrap();
    keys::x_matrix(&key_pair, SERVER, SERVER, method.as_str(), uri, body)
}

/// A federation request signed by the server itself (`test.local`): (status, JSON body).
pub async fn signed(
    server: &TestServer,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server.builder(method.clone(), uri).header(
        "authorization",
        x_matrix(server, &method, uri, body.as_ref()),
    );
    if let Some(body) = body {
        request = request.json(&body);
    }
    let reply = send(request).await;
    (reply.status.as_u16(), reply.body)
}

async fn get(server: &TestServer, uri: &str) -> (u16, Value) {
    signed(server, Method::GET, uri, None).await
}

#[track_caller]
fn assert_errcode(reply: &(u16, Value), status: u16, errcode: &str) {
    assert_eq!(reply.0, status, "{}", reply.1);
    assert_eq!(reply.1["errcode"], errcode, "{}", reply.1);
}

/// The PDUs of a list.
fn pdus(list: &Value) -> &Vec<Value> {
    list.as_array().expect("a list of PDUs")
}

fn types(list: &[Value]) -> BTreeSet<String> {
    list.iter()
        .map(|pdu| pdu["type"].as_str().expect("type").to_owned())
        .collect()
}

fn id_set(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .expect("event IDs")
        .iter()
        .map(|id| id.as_str().expect("an event ID").to_owned())
        .collect()
}

/// A PDU as servers exchange it: signed and hashed by this server, no `unsigned` of ours.
#[track_caller]
fn assert_pdu(pdu: &Value) {
    assert!(pdu["signatures"][SERVER].is_object(), "{pdu}");
    assert!(pdu["hashes"]["sha256"].is_string(), "{pdu}");
    assert!(pdu["depth"].is_i64(), "{pdu}");
    assert!(pdu.get("unsigned").is_none(), "{pdu}");
}

async fn send_text(server: &TestServer, alice: &Session, room: &str, body: &str) -> String {
    let txn = format!("t{}", body.replace(' ', "_"));
    let (status, reply) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            alice.token(),
            json!({"msgtype": "m.text", "body": body}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    reply["event_id"].as_str().unwrap().to_owned()
}

async fn set_state(
    server: &TestServer,
    alice: &Session,
    room: &str,
    kind: &str,
    content: Value,
) -> String {
    let (status, reply) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/{kind}/"),
            alice.token(),
            content,
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    reply["event_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn serves_a_room_to_a_server_of_its_members() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let (status, created) = server
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            json!({"preset": "public_chat", "name": "Served", "topic": "first topic"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let m1 = send_text(&server, &alice, &room, "m1").await;
    let m2 = send_text(&server, &alice, &room, "m2").await;
    let m3 = send_text(&server, &alice, &room, "m3").await;
    let topic2 = set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        json!({"topic": "second topic"}),
    )
    .await;
    let joined_only = set_state(
        &server,
        &alice,
        &room,
        "m.room.history_visibility",
        json!({"history_visibility": "joined"}),
    )
    .await;
    let m4 = send_text(&server, &alice, &room, "m4").await;
    let m5 = send_text(&server, &alice, &room, "m5").await;
    let (status, reply) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/redact/{m2}/r1"),
            alice.token(),
            json!({"reason": "oops"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let ids = room_event_ids(&server, alice.token().unwrap(), &room).await;
    let create = ids[0].clone();

    // /event: the PDU in a transaction of this server; a redacted event as redacted.
    let (status, reply) = get(&server, &format!("/_matrix/federation/v1/event/{m1}")).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["origin"], SERVER);
    assert!(reply["origin_server_ts"].is_u64(), "{reply}");
    let pdu = &pdus(&reply["pdus"])[0];
    assert_eq!(pdus(&reply["pdus"]).len(), 1);
    assert_pdu(pdu);
    assert_eq!(pdu["content"]["body"], "m1");
    assert_eq!(pdu["room_id"], room.as_str());
    let (status, reply) = get(&server, &format!("/_matrix/federation/v1/event/{m2}")).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["pdus"][0]["content"], json!({}), "redacted: {reply}");
    assert_errcode(
        &get(&server, "/_matrix/federation/v1/event/$nosuchevent").await,
        404,
        "M_NOT_FOUND",
    );

    // /state_ids and /state: the state before the event, and its auth chain.
    let (status, client_state) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state"),
            alice.token(),
        )
        .await;
    assert_eq!(status, 200);
    let current: BTreeSet<String> = client_state
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    let (status, state_ids) = get(
        &server,
        &format!("/_matrix/federation/v1/state_ids/{room}?event_id={m5}"),
    )
    .await;
    assert_eq!(status, 200, "{state_ids}");
    assert_eq!(id_set(&state_ids["pdu_ids"]), current);
    let auth_chain_ids = id_set(&state_ids["auth_chain_ids"]);
    assert!(auth_chain_ids.contains(&create), "{state_ids}");
    assert!(
        auth_chain_ids.iter().all(|id| ids.contains(id)),
        "{state_ids}"
    );
    let (status, before_topic) = get(
        &server,
        &format!("/_matrix/federation/v1/state_ids/{room}?event_id={topic2}"),
    )
    .await;
    assert_eq!(status, 200, "{before_topic}");
    let before_topic_ids = id_set(&before_topic["pdu_ids"]);
    assert!(!before_topic_ids.contains(&topic2), "the state *before* it");
    assert!(!before_topic_ids.contains(&joined_only));
    let (status, before_topic) = get(
        &server,
        &format!("/_matrix/federation/v1/state/{room}?event_id={topic2}"),
    )
    .await;
    assert_eq!(status, 200, "{before_topic}");
    let topics: Vec<&Value> = pdus(&before_topic["pdus"])
        .iter()
        .filter(|pdu| pdu["type"] == "m.room.topic")
        .map(|pdu| &pdu["content"]["topic"])
        .collect();
    assert_eq!(topics, ["first topic"], "the topic it replaced");

    let (status, state) = get(
        &server,
        &format!("/_matrix/federation/v1/state/{room}?event_id={m5}"),
    )
    .await;
    assert_eq!(status, 200, "{state}");
    let state_pdus = pdus(&state["pdus"]);
    assert_eq!(state_pdus.len(), current.len());
    state_pdus.iter().for_each(assert_pdu);
    assert!(types(state_pdus).contains("m.room.topic"));
    let chain = pdus(&state["auth_chain"]);
    assert_eq!(chain.len(), auth_chain_ids.len());
    assert!(types(chain).contains("m.room.create"), "{state}");
    assert_errcode(
        &get(
            &server,
            &format!("/_matrix/federation/v1/state_ids/{room}?event_id=$nosuchevent"),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_errcode(
        &get(
            &server,
            &format!("/_matrix/federation/v1/state/!nosuchroom:{SERVER}?event_id={m5}"),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );

    // /event_auth: the event's auth events and theirs, not the event.
    let (status, auth) = get(
        &server,
        &format!("/_matrix/federation/v1/event_auth/{room}/{m5}"),
    )
    .await;
    assert_eq!(status, 200, "{auth}");
    let auth_types = types(pdus(&auth["auth_chain"]));
    for kind in ["m.room.create", "m.room.power_levels", "m.room.member"] {
        assert!(auth_types.contains(kind), "{auth_types:?}");
    }
    assert!(!auth_types.contains("m.room.message"), "{auth_types:?}");

    // /backfill: the given event first, deeper events first, at most `limit`, at most 100.
    let (status, backfill) = get(
        &server,
        &format!("/_matrix/federation/v1/backfill/{room}?v={m5}&limit=3"),
    )
    .await;
    assert_eq!(status, 200, "{backfill}");
    assert_eq!(backfill["origin"], SERVER);
    let page = pdus(&backfill["pdus"]);
    assert_eq!(page.len(), 3, "{backfill}");
    assert_eq!(page[0]["content"]["body"], "m5");
    assert_eq!(page[1]["content"]["body"], "m4");
    assert_eq!(page[2]["type"], "m.room.history_visibility");
    page.iter().for_each(assert_pdu);
    for i in 0..100 {
        send_text(&server, &alice, &room, &format!("filler {i}")).await;
    }
    let ids = room_event_ids(&server, alice.token().unwrap(), &room).await;
    let newest = ids.last().unwrap();
    let (status, backfill) = get(
        &server,
        &format!("/_matrix/federation/v1/backfill/{room}?v={newest}&limit=1000"),
    )
    .await;
    assert_eq!(status, 200, "{backfill}");
    let page = pdus(&backfill["pdus"]);
    assert_eq!(page.len(), 100, "capped at 100");
    let depths: Vec<i64> = page.iter().map(|p| p["depth"].as_i64().unwrap()).collect();
    assert!(depths.windows(2).all(|w| w[0] > w[1]), "{depths:?}");

    // /get_missing_events: between `earliest` and `latest` (neither included), oldest first.
    let uri = format!("/_matrix/federation/v1/get_missing_events/{room}");
    let (status, missing) = signed(
        &server,
        Method::POST,
        &uri,
        Some(json!({"earliest_events": [m3], "latest_events": [m5]})),
    )
    .await;
    assert_eq!(status, 200, "{missing}");
    let events = pdus(&missing["events"]);
    let bodies: Vec<&Value> = events.iter().map(|e| &e["type"]).collect();
    assert_eq!(
        bodies,
        [
            "m.room.topic",
            "m.room.history_visibility",
            "m.room.message"
        ],
        "{missing}"
    );
    assert_eq!(events[2]["content"]["body"], "m4");
    let (status, missing) = signed(
        &server,
        Method::POST,
        &uri,
        Some(json!({"earliest_events": [m3], "latest_events": [m4], "limit": 1})),
    )
    .await;
    assert_eq!(status, 200, "{missing}");
    let events = pdus(&missing["events"]);
    assert_eq!(events.len(), 1, "{missing}");
    assert_eq!(
        events[0]["type"], "m.room.history_visibility",
        "the nearest first"
    );
    let (status, missing) = signed(
        &server,
        Method::POST,
        &uri,
        Some(json!({"earliest_events": [], "latest_events": [newest], "limit": 500})),
    )
    .await;
    assert_eq!(status, 200, "{missing}");
    assert_eq!(pdus(&missing["events"]).len(), 20, "capped at 20");

    // /timestamp_to_event: the first event at or after, the last at or before.
    let (status, found) = get(
        &server,
        &format!("/_matrix/federation/v1/timestamp_to_event/{room}?ts=0&dir=f"),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["event_id"], create.as_str());
    assert!(found["origin_server_ts"].is_u64());
    let future = 4_000_000_000_000u64;
    let (status, found) = get(
        &server,
        &format!("/_matrix/federation/v1/timestamp_to_event/{room}?ts={future}&dir=b"),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["event_id"], newest.as_str());
    assert_errcode(
        &get(
            &server,
            &format!("/_matrix/federation/v1/timestamp_to_event/{room}?ts={future}&dir=f"),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );

    // A server the ACL denies reads nothing.
    set_state(
        &server,
        &alice,
        &room,
        "m.room.server_acl",
        json!({"allow": ["*"], "deny": [SERVER], "allow_ip_literals": false}),
    )
    .await;
    let room_endpoints = [
        format!("/_matrix/federation/v1/event/{m1}"),
        format!("/_matrix/federation/v1/state_ids/{room}?event_id={m5}"),
        format!("/_matrix/federation/v1/state/{room}?event_id={m5}"),
        format!("/_matrix/federation/v1/event_auth/{room}/{m5}"),
        format!("/_matrix/federation/v1/backfill/{room}?v={m5}&limit=10"),
        format!("/_matrix/federation/v1/timestamp_to_event/{room}?ts=0&dir=f"),
    ];
    for uri in &room_endpoints {
        assert_errcode(&get(&server, uri).await, 403, "M_FORBIDDEN");
    }
    let (status, denied) = signed(
        &server,
        Method::POST,
        &uri,
        Some(json!({"earliest_events": [], "latest_events": [m5]})),
    )
    .await;
    assert_errcode(&(status, denied), 403, "M_FORBIDDEN");

    // Allowed again; then a server with nobody left in a room that is not world-readable.
    set_state(
        &server,
        &alice,
        &room,
        "m.room.server_acl",
        json!({"allow": ["*"]}),
    )
    .await;
    assert_eq!(get(&server, &room_endpoints[1]).await.0, 200);
    let (status, reply) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            alice.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    for uri in &room_endpoints {
        assert_errcode(&get(&server, uri).await, 403, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn public_rooms_over_federation_only_when_allowed() {
    for allowed in [false, true] {
        let config = format!("{OPEN_REGISTRATION}allow_public_rooms_over_federation: {allowed}\n");
        let server = TestServer::start_with_config(&config).await;
        let alice = server.register("alice", "correct horse").await;
        let (status, created) = server
            .post(
                "/_matrix/client/v3/createRoom",
                alice.token(),
                json!({"preset": "public_chat", "visibility": "public", "name": "Listed"}),
            )
            .await;
        assert_eq!(status, 200, "{created}");
        let reply = get(&server, "/_matrix/federation/v1/publicRooms?limit=5").await;
        if !allowed {
            assert_errcode(&reply, 403, "M_FORBIDDEN");
            continue;
        }
        assert_eq!(reply.0, 200, "{}", reply.1);
        let chunk = reply.1["chunk"].as_array().expect("chunk");
        assert_eq!(chunk.len(), 1, "{}", reply.1);
        assert_eq!(chunk[0]["room_id"], created["room_id"]);
        assert_eq!(chunk[0]["name"], "Listed");
        assert_eq!(reply.1["total_room_count_estimate"], 1);
    }
}

/// A client of the appliance reads a Synapse's public room list (`/publicRooms?server=`, and
/// `POST` with a filter): the appliance asks Synapse over federation, Synapse checks the
/// appliance's signature with the keys it fetches from it. A server that cannot be reached is
/// `502`.
#[tokio::test(flavor = "multi_thread")]
async fn clients_read_another_servers_public_rooms() {
    use super::support::{https_get, https_post_json};
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let synapse = Synapse::start(
        &ca,
        "allow_public_rooms_over_federation: true
enable_registration: true
enable_registration_without_verification: true
room_list_publication_rules: [{action: allow}]
",
    )
    .await;
    let ca_path = synapse.dir.path().join("ca.pem");
    let ours = FederatingAppliance::start_with(
        &ca,
        &format!(
            "federation_custom_ca_list: ['{}']\nip_range_whitelist: ['127.0.0.0/8']\n\
             enable_registration: true\nenable_registration_without_verification: true\n",
            ca_path.display()
        ),
    );

    let registered = https_post_json(
        synapse.port,
        "localhost",
        &roots,
        "/_matrix/client/v3/register",
        &json!({"username": "sam", "password": "correct horse battery", "auth": {"type": "m.login.dummy"}}),
    )
    .await;
    assert_eq!(registered.status, 200, "{}", registered.json());
    let token = registered.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = https_post_json(
        synapse.port,
        "localhost",
        &roots,
        &format!("/_matrix/client/v3/createRoom?access_token={token}"),
        &json!({"preset": "public_chat", "visibility": "public", "name": "On Synapse"}),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.json());
    let room_id = created.json()["room_id"].clone();

    let synapse_name = &synapse.server_name;
    let listed = https_get(
        ours.port,
        "localhost",
        &roots,
        &format!("/_matrix/client/v3/publicRooms?server={synapse_name}&limit=10"),
        &[],
    )
    .await;
    let body = listed.json();
    assert_eq!(
        listed.status,
        200,
        "{body}\nthe appliance's log:\n{}\nSynapse's log:\n{}",
        ours.appliance.log_text(),
        synapse.log_tail()
    );
    let chunk = body["chunk"].as_array().expect("chunk");
    assert_eq!(chunk.len(), 1, "{body}");
    assert_eq!(chunk[0]["room_id"], room_id);
    assert_eq!(chunk[0]["name"], "On Synapse");

    // The filtered list needs an account here.
    let ours_registered = https_post_json(
        ours.port,
        "localhost",
        &roots,
        "/_matrix/client/v3/register",
        &json!({"username": "alice", "password": "correct horse battery", "auth": {"type": "m.login.dummy"}}),
    )
    .await;
    assert_eq!(ours_registered.status, 200, "{}", ours_registered.json());
    let our_token = ours_registered.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for (term, expected) in [("synapse", 1), ("nothing like it", 0)] {
        let filtered = https_post_json(
            ours.port,
            "localhost",
            &roots,
            &format!(
                "/_matrix/client/v3/publicRooms?server={synapse_name}&access_token={our_token}"
            ),
            &json!({"filter": {"generic_search_term": term}}),
        )
        .await;
        let body = filtered.json();
        assert_eq!(filtered.status, 200, "{body}\n{}", synapse.log_tail());
        assert_eq!(
            body["chunk"].as_array().expect("chunk").len(),
            expected,
            "{body}"
        );
    }

    // Nobody listens on port 1.
    let unreachable = https_get(
        ours.port,
        "localhost",
        &roots,
        "/_matrix/client/v3/publicRooms?server=localhost:1",
        &[],
    )
    .await;
    assert_eq!(unreachable.status, 502, "{}", unreachable.json());
    assert_eq!(unreachable.json()["errcode"], "M_UNKNOWN");
}

/// Another server, whose keys the appliance fetches (requests signed with Synapse's key, as
/// Synapse): with no user in a room it reads nothing unless the room is world-readable, then it
/// gets events its users could not have seen redacted; the room's ACL shuts it out.
#[tokio::test(flavor = "multi_thread")]
async fn another_server_reads_only_what_it_may() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let synapse = Synapse::start(&ca, "").await;
    let ours = FederatingAppliance::start_with(&ca, &keys::outbound_yaml(&synapse, ""));
    let key = keys::synapse_key_pair(&synapse);
    let as_synapse = |path: String| {
        let (synapse_name, ours_name, roots) = (&synapse.server_name, &ours.server_name, &roots);
        let key = &key;
        async move {
            let header = keys::x_matrix(key, synapse_name, ours_name, "GET", &path, None);
            keys::https_json(
                ours.port,
                roots,
                "GET",
                &path,
                &[("authorization", &header)],
                None,
            )
            .await
        }
    };
    let token = keys::register(ours.port, &roots, "alice").await;
    let auth = keys::bearer(&token);
    let client = |method: &'static str, path: String, body: Value| {
        let (roots, auth) = (&roots, auth.clone());
        async move {
            let reply = keys::https_json(
                ours.port,
                roots,
                method,
                &path,
                &[("authorization", &auth)],
                Some(&body),
            )
            .await;
            assert_eq!(reply.0, 200, "{path}: {}", reply.1);
            reply.1
        }
    };
    let created = client(
        "POST",
        "/_matrix/client/v3/createRoom".to_owned(),
        json!({"preset": "public_chat"}),
    )
    .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    let state = |kind: &str| format!("/_matrix/client/v3/rooms/{room}/state/{kind}/");
    client(
        "PUT",
        state("m.room.history_visibility"),
        json!({"history_visibility": "joined"}),
    )
    .await;
    let hidden = client(
        "PUT",
        format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1"),
        json!({"msgtype": "m.text", "body": "members only"}),
    )
    .await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let state_ids = format!("/_matrix/federation/v1/state_ids/{room}?event_id={hidden}");
    let event = format!("/_matrix/federation/v1/event/{hidden}");
    let reply = as_synapse(state_ids.clone()).await;
    assert_eq!(reply.0, 403, "{}\n{}", reply.1, ours.appliance.log_text());
    assert_eq!(reply.1["errcode"], "M_FORBIDDEN");
    assert_eq!(as_synapse(event.clone()).await.0, 403);

    // World-readable now: the room is open to it, the earlier message still redacted.
    client(
        "PUT",
        state("m.room.history_visibility"),
        json!({"history_visibility": "world_readable"}),
    )
    .await;
    let reply = as_synapse(state_ids.clone()).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    let reply = as_synapse(event.clone()).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    assert_eq!(reply.1["pdus"][0]["content"], json!({}), "{}", reply.1);
    assert_eq!(reply.1["pdus"][0]["type"], "m.room.message");

    // Denied by the ACL: nothing.
    client(
        "PUT",
        state("m.room.server_acl"),
        json!({"allow": ["*"], "deny": ["localhost*"]}),
    )
    .await;
    for path in [state_ids, event] {
        let reply = as_synapse(path).await;
        assert_eq!(reply.0, 403, "{}", reply.1);
        assert_eq!(reply.1["errcode"], "M_FORBIDDEN");
    }
}
