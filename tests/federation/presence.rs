//! Presence over federation with Synapse (`m.presence` EDUs both ways): a user's state and status
//! message reach the users of the other server who share a room with them, seen through
//! `GET /presence/{userId}/status` and /sync's `presence`.

use std::time::Instant;

use serde_json::{Value, json};

use super::{
    FederatingAppliance,
    accounts::{Account, FEDERATION_DELAY, encode},
    fake_server::{FakeServer, now_ms},
    support::TestCa,
    synapse::{OPEN_REGISTRATION as SYNAPSE_OPEN_REGISTRATION, Synapse},
};

/// Synapse with presence on, and its users kept online although the test's accounts do not
/// sync (by default Synapse marks a user who does not sync offline after 30 seconds), and its
/// presence rate limit (one change per 10 s by default) lifted.
const SYNAPSE_PRESENCE: &str =
    "presence: {enabled: true, sync_online_timeout: 1h, idle_timeout: 2h}
rc_presence: {per_user: {per_second: 1000, burst_count: 1000}}
";

/// Sets `account`'s presence.
async fn set_presence(account: &Account, state: &str, status_msg: &str) {
    let (status, reply) = account
        .put(
            &format!(
                "/_matrix/client/v3/presence/{}/status",
                encode(&account.user_id)
            ),
            json!({"presence": state, "status_msg": status_msg}),
        )
        .await;
    assert_eq!(status, 200, "presence of {}: {reply}", account.user_id);
}

/// Waits until `viewer` sees `user` with `state` and `status_msg` through
/// `GET /presence/{userId}/status`; panics after `FEDERATION_DELAY` with what it saw.
async fn wait_for_presence(viewer: &Account, user: &str, state: &str, status_msg: &str) -> Value {
    let deadline = Instant::now() + FEDERATION_DELAY;
    loop {
        let (status, reply) = viewer
            .get(&format!(
                "/_matrix/client/v3/presence/{}/status",
                encode(user)
            ))
            .await;
        if status == 200 && reply["presence"] == state && reply["status_msg"] == status_msg {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "{} never saw {user} {state} ({status_msg:?}); last answer {status}: {reply}",
            viewer.user_id
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// An appliance user and a Synapse user share a room; each one's presence changes (online, then
/// unavailable, each with a status message) reach the other server's user.
#[tokio::test(flavor = "multi_thread")]
async fn presence_flows_both_ways_with_synapse() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let ours = FederatingAppliance::start(&ca);
    let synapse = Synapse::start(
        &ca,
        &format!("{SYNAPSE_OPEN_REGISTRATION}{SYNAPSE_PRESENCE}"),
    )
    .await;
    let alice = Account::register(ours.port, &roots, "alice").await;
    let bob = Account::register(synapse.port, &roots, "bob").await;

    let room = bob
        .create_room(json!({"preset": "public_chat", "room_alias_name": "presence"}))
        .await;
    let (status, reply) = alice
        .join(&format!("#presence:{}", synapse.server_name), &[])
        .await;
    assert_eq!(
        status,
        200,
        "{reply}\nthe appliance's log:\n{}",
        ours.appliance.log_text()
    );
    bob.wait_for_event(&room, "alice's join", |e| {
        e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str()
    })
    .await;
    let (_, first_sync) = alice.get("/_matrix/client/v3/sync?timeout=0").await;
    let since = first_sync["next_batch"].as_str().unwrap().to_owned();

    // The appliance's user, seen on Synapse.
    set_presence(&alice, "online", "at the appliance").await;
    let seen = wait_for_presence(&bob, &alice.user_id, "online", "at the appliance").await;
    assert_eq!(seen["currently_active"], true, "{seen}");
    set_presence(&alice, "unavailable", "away from the appliance").await;
    wait_for_presence(
        &bob,
        &alice.user_id,
        "unavailable",
        "away from the appliance",
    )
    .await;

    // Synapse's user, seen on the appliance: the presence endpoint, then /sync.
    set_presence(&bob, "online", "at synapse").await;
    wait_for_presence(&alice, &bob.user_id, "online", "at synapse").await;
    set_presence(&bob, "unavailable", "gone fishing").await;
    let seen = wait_for_presence(&alice, &bob.user_id, "unavailable", "gone fishing").await;
    assert!(seen["last_active_ago"].is_u64(), "{seen}");
    let (status, sync) = alice
        .get(&format!("/_matrix/client/v3/sync?timeout=0&since={since}"))
        .await;
    assert_eq!(status, 200, "{sync}");
    let events = sync["presence"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let bobs = events
        .iter()
        .rfind(|e| e["sender"] == bob.user_id.as_str())
        .unwrap_or_else(|| panic!("no presence of bob in /sync: {sync}"));
    assert_eq!(bobs["type"], "m.presence");
    assert_eq!(bobs["content"]["presence"], "unavailable", "{bobs}");
    assert_eq!(bobs["content"]["status_msg"], "gone fishing", "{bobs}");
}

/// Another server's `m.presence` EDU is taken only for that server's users who share a room with
/// a local user (a fake server, since Synapse sends nothing else): its joined user's presence is
/// shown; a forged presence of a local user and one of its users who is in no room yet change
/// nothing.
#[tokio::test(flavor = "multi_thread")]
async fn remote_presence_is_taken_only_for_the_origins_users_in_shared_rooms() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let ours = FederatingAppliance::start(&ca);
    let fake = FakeServer::start(&ca).await;
    let alice = Account::register(ours.port, &roots, "alice").await;
    let room_id = alice.create_room(json!({"preset": "public_chat"})).await;
    let room = fake.join(ours.port, &room_id, "mallory").await;
    alice
        .wait_for_event(&room_id, "mallory's join", |e| {
            e["type"] == "m.room.member" && e["state_key"] == room.user_id.as_str()
        })
        .await;
    set_presence(&alice, "unavailable", "mine").await;

    let late = format!("@late:{}", fake.name());
    let update = |user: &str, status_msg: &str| {
        json!({"user_id": user, "presence": "online", "status_msg": status_msg,
            "last_active_ago": 5000, "currently_active": true})
    };
    let body = json!({
        "origin": fake.name(), "origin_server_ts": now_ms(), "pdus": [],
        "edus": [{"edu_type": "m.presence", "content": {"push": [
            update(&room.user_id, "from the fake server"),
            update(&alice.user_id, "forged"),
            update(&late, "too early"),
        ]}}],
    });
    let (status, answer) = fake
        .request(
            ours.port,
            http::Method::PUT,
            "/_matrix/federation/v1/send/presence1",
            Some(&body),
        )
        .await;
    assert_eq!(status, 200, "{answer}");

    let seen = wait_for_presence(&alice, &room.user_id, "online", "from the fake server").await;
    assert_eq!(seen["currently_active"], true, "{seen}");
    assert!(seen["last_active_ago"].as_u64().unwrap() >= 5000, "{seen}");
    let (_, own) = alice
        .get(&format!(
            "/_matrix/client/v3/presence/{}/status",
            encode(&alice.user_id)
        ))
        .await;
    assert_eq!(
        (own["presence"].as_str(), own["status_msg"].as_str()),
        (Some("unavailable"), Some("mine")),
        "{own}"
    );

    // Once in the room, the late user reads as offline: nothing was kept from before.
    fake.join(ours.port, &room_id, "late").await;
    alice
        .wait_for_event(&room_id, "late's join", |e| {
            e["type"] == "m.room.member" && e["state_key"] == late.as_str()
        })
        .await;
    let (status, theirs) = alice
        .get(&format!(
            "/_matrix/client/v3/presence/{}/status",
            encode(&late)
        ))
        .await;
    assert_eq!(status, 200, "{theirs}");
    assert_eq!(theirs["presence"], "offline", "{theirs}");
    assert!(theirs.get("status_msg").is_none(), "{theirs}");
}

/// Presence set before two servers share a room reaches the other side when they start sharing
/// one, with no further change: a Synapse user joining an appliance room gets the presence of
/// the room's local members (and Synapse sends its user's), and a local user joining a room
/// Synapse is in has theirs sent there.
#[tokio::test(flavor = "multi_thread")]
async fn presence_is_shared_when_servers_start_sharing_a_room() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let ours = FederatingAppliance::start(&ca);
    let synapse = Synapse::start(
        &ca,
        &format!("{SYNAPSE_OPEN_REGISTRATION}{SYNAPSE_PRESENCE}"),
    )
    .await;
    let alice = Account::register(ours.port, &roots, "alice").await;
    let carol = Account::register(ours.port, &roots, "carol").await;
    let bob = Account::register(synapse.port, &roots, "bob").await;
    set_presence(&alice, "online", "alice before").await;
    set_presence(&carol, "unavailable", "carol before").await;
    set_presence(&bob, "online", "bob before").await;

    let room = alice
        .create_room(json!({"preset": "public_chat", "room_alias_name": "shared"}))
        .await;
    let (status, reply) = bob
        .join(&format!("#shared:{}", ours.server_name), &[])
        .await;
    assert_eq!(status, 200, "{reply}");
    wait_for_presence(&bob, &alice.user_id, "online", "alice before").await;
    wait_for_presence(&alice, &bob.user_id, "online", "bob before").await;

    let (status, reply) = carol.join(&room, &[]).await;
    assert_eq!(status, 200, "{reply}");
    wait_for_presence(&bob, &carol.user_id, "unavailable", "carol before").await;
}
