//! Rooms of the old versions on Synapse. Version 2 keeps version 1's event format (`event_id`
//! inside the event, `$random:server`; `prev_events` / `auth_events` as `[ID, hashes]` pairs)
//! with state resolution v2, which ruma has: the appliance joins such rooms and writes events in
//! that format. Version 1 needs state resolution v1, which ruma does not have: its joins are
//! refused with `M_INCOMPATIBLE_ROOM_VERSION`, which the client sees.

use serde_json::json;

use super::{
    FederatingAppliance, Pair,
    accounts::{Account, encode},
    support::TestCa,
    synapse::{OPEN_REGISTRATION as SYNAPSE_OPEN_REGISTRATION, Synapse},
};

/// An appliance user joins a version 2 room of Synapse by its alias: the room's state from the
/// `send_join` answer, messages both ways (the appliance's events with IDs of its own server, as
/// the old format wants), and a state change of the appliance's user in Synapse's current state.
#[tokio::test(flavor = "multi_thread")]
async fn an_appliance_user_joins_a_version_2_room_of_synapse() {
    let Pair {
        ca: _ca,
        roots: _roots,
        ours,
        synapse,
        alice,
        bob,
    } = Pair::start().await;

    let room = bob
        .create_room(
            json!({"preset": "public_chat", "room_alias_name": "old", "name": "Old",
            "room_version": "2"}),
        )
        .await;
    let before = bob.send_text(&room, "before alice").await;
    assert!(
        before.ends_with(&format!(":{}", synapse.server_name)),
        "Synapse made a version 2 room: old event IDs ({before})"
    );
    let (status, reply) = alice
        .join(&format!("#old:{}", synapse.server_name), &[])
        .await;
    assert_eq!(
        status,
        200,
        "{reply}\nthe appliance's log:\n{}\nSynapse's log:\n{}",
        ours.appliance.log_text(),
        synapse.log_tail()
    );
    assert_eq!(reply["room_id"], room.as_str());
    assert!(alice.sees_joined(&room).await);
    let state = alice.state(&room).await;
    assert_eq!(
        state[&("m.room.name".to_owned(), String::new())]["name"],
        "Old"
    );
    assert_eq!(
        state[&("m.room.create".to_owned(), String::new())]["room_version"],
        "2"
    );

    // Synapse accepted the join the appliance named and signed.
    let join = bob
        .wait_for_event(&room, "alice's join", |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == alice.user_id.as_str()
                && e["content"]["membership"] == "join"
        })
        .await;
    assert!(
        join["event_id"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", ours.server_name)),
        "{join}"
    );

    let from_synapse = bob.send_text(&room, "welcome to an old room").await;
    let seen = alice
        .wait_for_text(&room, &bob.user_id, "welcome to an old room")
        .await;
    assert_eq!(seen["event_id"], from_synapse.as_str());
    let from_us = alice.send_text(&room, "it still works").await;
    assert!(
        from_us.ends_with(&format!(":{}", ours.server_name)),
        "{from_us}"
    );
    let seen = bob
        .wait_for_text(&room, &alice.user_id, "it still works")
        .await;
    assert_eq!(seen["event_id"], from_us.as_str());

    // A profile change: the appliance sends the new member event into the room.
    let (status, reply) = alice
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                encode(&alice.user_id)
            ),
            json!({"displayname": "Alice of old"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    bob.wait_for_event(&room, "alice's new name", |e| {
        e["type"] == "m.room.member" && e["content"]["displayname"] == "Alice of old"
    })
    .await;
    assert_eq!(
        bob.state(&room).await[&("m.room.member".to_owned(), alice.user_id.clone())]["displayname"],
        "Alice of old"
    );
}

/// A join of a version 1 room is refused before anything is signed: Synapse's
/// `M_INCOMPATIBLE_ROOM_VERSION` to `make_join` (the appliance does not list version 1) reaches
/// the client with the room's version, and the appliance is not in the room.
#[tokio::test(flavor = "multi_thread")]
async fn a_join_of_a_version_1_room_is_refused_clearly() {
    let Pair {
        ca: _ca,
        roots: _roots,
        ours,
        synapse,
        alice,
        bob,
    } = Pair::start().await;

    let room = bob
        .create_room(
            json!({"preset": "public_chat", "room_alias_name": "ancient",
            "room_version": "1"}),
        )
        .await;
    let (status, reply) = alice
        .join(&format!("#ancient:{}", synapse.server_name), &[])
        .await;
    assert_eq!(
        (status, reply["errcode"].as_str()),
        (400, Some("M_INCOMPATIBLE_ROOM_VERSION")),
        "{reply}\nthe appliance's log:\n{}",
        ours.appliance.log_text()
    );
    assert_eq!(reply["room_version"], "1", "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("version 1"),
        "{reply}"
    );
    assert!(!alice.sees_joined(&room).await);
    // Nothing reached Synapse's room either.
    let members = bob.state(&room).await;
    assert!(
        !members.contains_key(&("m.room.member".to_owned(), alice.user_id.clone())),
        "{members:?}"
    );
}

/// A version 2 room served by the appliance: a second appliance joins Synapse's version 2 room
/// through the first one (`make_join` / `send_join` answered by the first with events of the old
/// format, its own and Synapse's), and messages reach all three servers.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_2_room_is_joined_through_the_appliance() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let first = FederatingAppliance::start(&ca);
    let second = FederatingAppliance::start(&ca);
    let synapse = Synapse::start(&ca, SYNAPSE_OPEN_REGISTRATION).await;
    let alice = Account::register(first.port, &roots, "alice").await;
    let carol = Account::register(second.port, &roots, "carol").await;
    let bob = Account::register(synapse.port, &roots, "bob").await;
    let logs = || {
        format!(
            "first appliance's log:\n{}\nsecond appliance's log:\n{}\nSynapse's log:\n{}",
            first.appliance.log_text(),
            second.appliance.log_text(),
            synapse.log_tail()
        )
    };

    let room = bob
        .create_room(json!({"preset": "public_chat", "room_version": "2"}))
        .await;
    let (status, reply) = alice.join(&room, &[&synapse.server_name]).await;
    assert_eq!(status, 200, "{reply}\n{}", logs());
    // Only the first appliance is named: it answers the second one's join.
    let (status, reply) = carol.join(&room, &[&first.server_name]).await;
    assert_eq!(status, 200, "{reply}\n{}", logs());
    // Not through Synapse, the last resort (the room ID's server).
    assert!(
        !second.appliance.log_text().contains("remote join failed"),
        "{}",
        logs()
    );
    assert!(carol.sees_joined(&room).await);
    assert_eq!(
        carol.state(&room).await[&("m.room.create".to_owned(), String::new())]["room_version"],
        "2"
    );
    for (who, server) in [(&bob, "Synapse"), (&alice, "the first appliance")] {
        who.wait_for_event(&room, &format!("carol's join on {server}"), |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == carol.user_id.as_str()
                && e["content"]["membership"] == "join"
        })
        .await;
    }

    let from_carol = carol.send_text(&room, "joined through an appliance").await;
    assert!(
        from_carol.ends_with(&format!(":{}", second.server_name)),
        "{from_carol}"
    );
    for who in [&bob, &alice] {
        let seen = who
            .wait_for_text(&room, &carol.user_id, "joined through an appliance")
            .await;
        assert_eq!(seen["event_id"], from_carol.as_str());
    }
    let from_bob = bob.send_text(&room, "welcome, both").await;
    let seen = carol
        .wait_for_text(&room, &bob.user_id, "welcome, both")
        .await;
    assert_eq!(seen["event_id"], from_bob.as_str());
}
