//! Rooms shared with Synapse: joins by alias in both directions, then messages and state changes
//! flowing both ways, each checked through both servers' client APIs.

use serde_json::json;

use super::{
    FederatingAppliance, Pair,
    accounts::{Account, FEDERATION_DELAY, encode},
    support::TestCa,
    synapse::{OPEN_REGISTRATION, Synapse},
};

/// A Synapse user joins a room of the appliance by its alias (Synapse asks the appliance's
/// `/query/directory`, then `make_join` / `send_join`); messages and a topic change then flow in
/// both directions.
#[tokio::test(flavor = "multi_thread")]
async fn a_synapse_user_joins_an_appliance_room_by_alias() {
    let Pair {
        ca: _ca,
        roots: _roots,
        ours,
        synapse,
        alice,
        bob,
    } = Pair::start().await;

    let room = alice
        .create_room(json!({"preset": "public_chat", "room_alias_name": "lobby", "name": "Lobby"}))
        .await;
    alice.send_text(&room, "before bob").await;
    let alias = format!("#lobby:{}", ours.server_name);
    let (status, reply) = bob.join(&alias, &[]).await;
    assert_eq!(
        status,
        200,
        "{reply}\nSynapse's log:\n{}\nthe appliance's log:\n{}",
        synapse.log_tail(),
        ours.appliance.log_text()
    );
    assert_eq!(reply["room_id"], room.as_str());

    // The appliance sees bob's join; Synapse has the room's state and history.
    alice
        .wait_for_event(&room, "bob's join", |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == bob.user_id.as_str()
                && e["content"]["membership"] == "join"
        })
        .await;
    assert_eq!(
        bob.state(&room).await[&("m.room.name".to_owned(), String::new())]["name"],
        "Lobby"
    );

    // Messages both ways.
    let hello = alice.send_text(&room, "hello from the appliance").await;
    let seen = bob
        .wait_for_text(&room, &alice.user_id, "hello from the appliance")
        .await;
    assert_eq!(seen["event_id"], hello.as_str());
    let reply_id = bob.send_text(&room, "hello from synapse").await;
    let seen = alice
        .wait_for_text(&room, &bob.user_id, "hello from synapse")
        .await;
    assert_eq!(seen["event_id"], reply_id.as_str());

    // A state change by the appliance's user reaches Synapse's current state.
    alice
        .send_state(&room, "m.room.topic", "", json!({"topic": "federated"}))
        .await;
    bob.wait_for_event(&room, "the topic change", |e| {
        e["type"] == "m.room.topic" && e["content"]["topic"] == "federated"
    })
    .await;
    assert_eq!(
        bob.state(&room).await[&("m.room.topic".to_owned(), String::new())]["topic"],
        "federated"
    );
    assert!(alice.sees_joined(&room).await);
}

/// An appliance user joins a room of Synapse by its alias (the appliance asks Synapse's
/// `/query/directory`, then `make_join` / `send_join` and takes the room's state from the answer);
/// history before the join, then messages both ways.
#[tokio::test(flavor = "multi_thread")]
async fn an_appliance_user_joins_a_synapse_room_by_alias() {
    let Pair {
        ca: _ca,
        roots: _roots,
        ours,
        synapse,
        alice,
        bob,
    } = Pair::start().await;

    let room = bob
        .create_room(json!({"preset": "public_chat", "room_alias_name": "plaza", "name": "Plaza"}))
        .await;
    bob.send_text(&room, "before alice").await;
    let alias = format!("#plaza:{}", synapse.server_name);

    // Before joining: the room's summary (MSC3266), asked of Synapse's federation /hierarchy.
    let summary_path = |room: &str, via: Option<&str>| {
        let via = via
            .map(|server| format!("?via={server}"))
            .unwrap_or_default();
        format!(
            "/_matrix/client/v1/room_summary/{}{via}",
            room.replace('#', "%23")
        )
    };
    let (status, summary) = alice.get(&summary_path(&alias, None)).await;
    assert_eq!(status, 200, "{summary}\n{}", ours.appliance.log_text());
    assert_eq!(summary["room_id"], room.as_str(), "{summary}");
    assert_eq!(summary["name"], "Plaza", "{summary}");
    assert_eq!(summary["num_joined_members"], 1, "{summary}");
    assert_eq!(summary["membership"], "leave", "{summary}");
    // A private room of Synapse's is not shown, as if it did not exist.
    let private = bob.create_room(json!({"name": "Private"})).await;
    let (status, refused) = alice
        .get(&summary_path(&private, Some(&synapse.server_name)))
        .await;
    assert_eq!(
        (status, &refused["errcode"]),
        (404, &json!("M_NOT_FOUND")),
        "{refused}"
    );

    let (status, reply) = alice.join(&alias, &[]).await;
    assert_eq!(
        status,
        200,
        "{reply}\nthe appliance's log:\n{}\nSynapse's log:\n{}",
        ours.appliance.log_text(),
        synapse.log_tail()
    );
    assert_eq!(reply["room_id"], room.as_str());
    assert!(alice.sees_joined(&room).await);
    assert_eq!(
        alice.state(&room).await[&("m.room.name".to_owned(), String::new())]["name"],
        "Plaza"
    );
    let (_, summary) = alice.get(&summary_path(&room, None)).await;
    assert_eq!(summary["membership"], "join", "{summary}");

    bob.wait_for_event(&room, "alice's join", |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == alice.user_id.as_str()
            && e["content"]["membership"] == "join"
    })
    .await;
    let from_synapse = bob.send_text(&room, "welcome, alice").await;
    let seen = alice
        .wait_for_text(&room, &bob.user_id, "welcome, alice")
        .await;
    assert_eq!(seen["event_id"], from_synapse.as_str());
    let from_us = alice.send_text(&room, "thanks, bob").await;
    let seen = bob
        .wait_for_text(&room, &alice.user_id, "thanks, bob")
        .await;
    assert_eq!(seen["event_id"], from_us.as_str());
}

/// Membership changes made on one server hold on the other: the appliance's moderator bans a
/// Synapse user (Synapse then holds him out of the room), and Synapse's moderator kicks an
/// appliance user out of a Synapse room (the appliance then shows the room as left and refuses to
/// send there); the kicked user joins again through Synapse.
#[tokio::test(flavor = "multi_thread")]
async fn kicks_and_bans_hold_on_both_sides() {
    let Pair {
        ca: _ca,
        roots: _roots,
        ours,
        synapse,
        alice,
        bob,
    } = Pair::start().await;

    // An appliance room: alice bans bob, and Synapse then holds bob out of it.
    let ours_room = alice.create_room(json!({"preset": "public_chat"})).await;
    let (status, reply) = bob.join(&ours_room, &[&ours.server_name]).await;
    assert_eq!(status, 200, "{reply}");
    alice
        .wait_for_event(&ours_room, "bob's join", |e| {
            e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()
        })
        .await;
    let (status, reply) = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", encode(&ours_room)),
            json!({"user_id": bob.user_id, "reason": "spam"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let own_member = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
        encode(&ours_room),
        encode(&bob.user_id)
    );
    let deadline = std::time::Instant::now() + FEDERATION_DELAY;
    // While bob is in the room Synapse shows him his member event; banned, Synapse (which
    // leaves the room with its last user) says he is not in it.
    while bob.get(&own_member).await.0 == 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the ban never reached Synapse:\n{}",
            synapse.log_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let txn = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/banned",
        encode(&ours_room)
    );
    let (status, reply) = bob
        .put(&txn, json!({"msgtype": "m.text", "body": "still here"}))
        .await;
    assert_eq!(status, 403, "a banned user cannot send: {reply}");
    assert_eq!(reply["errcode"], "M_FORBIDDEN");
    let banned = &alice.state(&ours_room).await[&("m.room.member".to_owned(), bob.user_id.clone())];
    assert_eq!(banned["membership"], "ban");

    // A Synapse room: bob kicks alice, who then cannot send, and joins again.
    let theirs = bob.create_room(json!({"preset": "public_chat"})).await;
    let (status, reply) = alice.join(&theirs, &[&synapse.server_name]).await;
    assert_eq!(status, 200, "{reply}\n{}", ours.appliance.log_text());
    bob.wait_for_event(&theirs, "alice's join", |e| {
        e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str()
    })
    .await;
    let (status, reply) = bob
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", encode(&theirs)),
            json!({"user_id": alice.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let deadline = std::time::Instant::now() + FEDERATION_DELAY;
    loop {
        let state = alice
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                encode(&theirs),
                encode(&alice.user_id)
            ))
            .await;
        let (_, sync) = alice.get("/_matrix/client/v3/sync?timeout=0").await;
        if sync["rooms"]["join"].get(&theirs).is_none() && state.1["membership"] == "leave" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the kick never reached the appliance: {state:?}\n{}",
            ours.appliance.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let txn = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/kicked",
        encode(&theirs)
    );
    let (status, _) = alice
        .put(&txn, json!({"msgtype": "m.text", "body": "hello?"}))
        .await;
    assert_eq!(status, 403, "a kicked user cannot send");
    let (status, reply) = alice.join(&theirs, &[&synapse.server_name]).await;
    assert_eq!(status, 200, "joining again after a kick: {reply}");
    let back = alice.send_text(&theirs, "back again").await;
    let seen = bob
        .wait_for_text(&theirs, &alice.user_id, "back again")
        .await;
    assert_eq!(seen["event_id"], back.as_str());
}

/// Joins of rooms on other servers count against `rc_joins.remote` (Synapse's key), before any
/// server is asked: past the burst the client gets `429 M_LIMIT_EXCEEDED`.
#[tokio::test(flavor = "multi_thread")]
async fn remote_joins_are_rate_limited_by_rc_joins_remote() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let ours = FederatingAppliance::start_with(
        &ca,
        "ip_range_whitelist: ['127.0.0.0/8']
enable_registration: true
enable_registration_without_verification: true
rc_registration: {per_second: 1000, burst_count: 1000}
rc_joins: {remote: {per_second: 0.001, burst_count: 1}}
",
    );
    let alice = Account::register(ours.port, &roots, "alice").await;
    // Nobody listens there: the first join fails at the door of the other server.
    let nowhere = format!("localhost:{}", super::support::free_port());
    let room = format!("!nowhere:{nowhere}");
    let (status, reply) = alice.join(&room, &[&nowhere]).await;
    assert_eq!(status, 502, "{reply}");
    let (status, reply) = alice.join(&room, &[&nowhere]).await;
    assert_eq!(status, 429, "{reply}");
    assert_eq!(reply["errcode"], "M_LIMIT_EXCEEDED");
}

/// A space of the appliance browsed from Synapse, whose user is in none of its rooms: Synapse's
/// client `/hierarchy` (told the appliance's name through MSC4235's `via`) and its room previews
/// (MSC3266 `room_summary`) ask the appliance's federation `/hierarchy`, which answers the space
/// with its public child and lists the invite-only child as inaccessible, so Synapse neither shows
/// it nor asks for it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_synapse_user_browses_an_appliance_space() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let ours = FederatingAppliance::start(&ca);
    let synapse = Synapse::start(
        &ca,
        &format!("{OPEN_REGISTRATION}experimental_features: {{msc4235_enabled: true}}\n"),
    )
    .await;
    let alice = Account::register(ours.port, &roots, "alice").await;
    let bob = Account::register(synapse.port, &roots, "bob").await;

    let space = alice
        .create_room(json!({
            "preset": "public_chat",
            "name": "Appliance space",
            "creation_content": {"type": "m.space"},
        }))
        .await;
    let open = alice
        .create_room(json!({"preset": "public_chat", "name": "Open child", "topic": "for all"}))
        .await;
    let closed = alice
        .create_room(json!({"preset": "private_chat", "name": "Closed child"}))
        .await;
    for child in [&open, &closed] {
        alice
            .send_state(
                &space,
                "m.space.child",
                child,
                json!({"via": [ours.server_name]}),
            )
            .await;
    }

    // The space's hierarchy, from Synapse, which knows the space only through the appliance.
    let (status, hierarchy) = bob
        .get(&format!(
            "/_matrix/client/v1/rooms/{}/hierarchy?org.matrix.msc4235.via={}",
            encode(&space),
            ours.server_name
        ))
        .await;
    let logs = || {
        format!(
            "Synapse's log:\n{}\nthe appliance's log:\n{}",
            synapse.log_tail(),
            ours.appliance.log_text()
        )
    };
    assert_eq!(status, 200, "{hierarchy}\n{}", logs());
    let rooms = hierarchy["rooms"].as_array().expect("rooms");
    let ids: Vec<&str> = rooms.iter().filter_map(|r| r["room_id"].as_str()).collect();
    assert_eq!(
        ids,
        [space.as_str(), open.as_str()],
        "{hierarchy}\n{}",
        logs()
    );
    assert_eq!(rooms[0]["name"], "Appliance space", "{hierarchy}");
    assert_eq!(rooms[0]["room_type"], "m.space", "{hierarchy}");
    // Both links are shown in the space's stripped `m.space.child` events.
    let mut linked: Vec<&str> = rooms[0]["children_state"]
        .as_array()
        .expect("children_state")
        .iter()
        .filter_map(|e| e["state_key"].as_str())
        .collect();
    linked.sort_unstable();
    let mut expected = [open.as_str(), closed.as_str()];
    expected.sort_unstable();
    assert_eq!(linked, expected, "{hierarchy}");
    assert_eq!(rooms[1]["name"], "Open child", "{hierarchy}");
    assert_eq!(rooms[1]["topic"], "for all", "{hierarchy}");
    assert_eq!(rooms[1]["num_joined_members"], 1, "{hierarchy}");

    // Room previews of the children through Synapse: the open one is described, the closed one
    // is not found, as if it did not exist.
    let summary_path = |room: &str| {
        format!(
            "/_matrix/client/v1/room_summary/{}?via={}",
            encode(room),
            ours.server_name
        )
    };
    let (status, summary) = bob.get(&summary_path(&open)).await;
    assert_eq!(status, 200, "{summary}\n{}", logs());
    assert_eq!(summary["name"], "Open child", "{summary}");
    assert_eq!(summary["membership"], "leave", "{summary}");
    let (status, refused) = bob.get(&summary_path(&closed)).await;
    assert_eq!(status, 404, "{refused}");

    // Once alice invites bob, his server may see the closed child (it has someone invited).
    let (status, reply) = alice.invite(&closed, &bob.user_id).await;
    assert_eq!(status, 200, "{reply}");
    let deadline = std::time::Instant::now() + FEDERATION_DELAY;
    loop {
        let (status, summary) = bob.get(&summary_path(&closed)).await;
        if status == 200 {
            assert_eq!(summary["name"], "Closed child", "{summary}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {status}: {summary}\n{}",
            logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // And the other way: alice's space links rooms of Synapse, which the appliance describes
    // from Synapse's federation `/hierarchy` in alice's client `/hierarchy` (a room only
    // Synapse's members may see is left out).
    let remote_open = bob
        .create_room(json!({"preset": "public_chat", "name": "Synapse child"}))
        .await;
    let remote_closed = bob
        .create_room(json!({"preset": "private_chat", "name": "Synapse secret"}))
        .await;
    for child in [&remote_open, &remote_closed] {
        alice
            .send_state(
                &space,
                "m.space.child",
                child,
                json!({"via": [synapse.server_name], "order": "z"}),
            )
            .await;
    }
    let (status, hierarchy) = alice
        .get(&format!(
            "/_matrix/client/v1/rooms/{}/hierarchy",
            encode(&space)
        ))
        .await;
    assert_eq!(status, 200, "{hierarchy}\n{}", logs());
    let rooms = hierarchy["rooms"].as_array().expect("rooms");
    let names: Vec<&str> = rooms.iter().filter_map(|r| r["name"].as_str()).collect();
    assert!(names.contains(&"Synapse child"), "{hierarchy}\n{}", logs());
    assert!(!names.contains(&"Synapse secret"), "{hierarchy}");
    assert!(names.contains(&"Closed child"), "{hierarchy}");
}
