//! Two appliances federating with each other (both trusting the same test CA): a join by alias,
//! messages both ways, and state changes made on each side seen on the other.

use serde_json::json;

use super::{
    FederatingAppliance,
    accounts::{Account, encode},
    support::TestCa,
};

/// A user of the second appliance joins a room of the first by its alias; messages flow both
/// ways and a topic change (first appliance) and a display name change (second) reach the other
/// side's current state.
#[tokio::test(flavor = "multi_thread")]
async fn two_appliances_share_a_room() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let first = FederatingAppliance::start(&ca);
    let second = FederatingAppliance::start(&ca);
    let alice = Account::register(first.port, &roots, "alice").await;
    let carol = Account::register(second.port, &roots, "carol").await;
    let logs = || {
        format!(
            "first appliance's log:\n{}\nsecond appliance's log:\n{}",
            first.appliance.log_text(),
            second.appliance.log_text()
        )
    };

    let room = alice
        .create_room(json!({"preset": "public_chat", "room_alias_name": "meet", "name": "Meet"}))
        .await;
    alice.send_text(&room, "before carol").await;
    let (status, reply) = carol
        .join(&format!("#meet:{}", first.server_name), &[])
        .await;
    assert_eq!(status, 200, "{reply}\n{}", logs());
    assert_eq!(reply["room_id"], room.as_str());
    assert!(carol.sees_joined(&room).await);
    assert_eq!(
        carol.state(&room).await[&("m.room.name".to_owned(), String::new())]["name"],
        "Meet"
    );
    alice
        .wait_for_event(&room, "carol's join", |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == carol.user_id.as_str()
                && e["content"]["membership"] == "join"
        })
        .await;

    let from_first = alice.send_text(&room, "hello from the first").await;
    let seen = carol
        .wait_for_text(&room, &alice.user_id, "hello from the first")
        .await;
    assert_eq!(seen["event_id"], from_first.as_str());
    let from_second = carol.send_text(&room, "hello from the second").await;
    let seen = alice
        .wait_for_text(&room, &carol.user_id, "hello from the second")
        .await;
    assert_eq!(seen["event_id"], from_second.as_str());

    alice
        .send_state(
            &room,
            "m.room.topic",
            "",
            json!({"topic": "between appliances"}),
        )
        .await;
    carol
        .wait_for_event(&room, "the topic change", |e| {
            e["type"] == "m.room.topic" && e["content"]["topic"] == "between appliances"
        })
        .await;
    assert_eq!(
        carol.state(&room).await[&("m.room.topic".to_owned(), String::new())]["topic"],
        "between appliances"
    );
    // A profile change: the appliance sends the new member event into the room.
    let (status, reply) = carol
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                encode(&carol.user_id)
            ),
            json!({"displayname": "Carol B"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    alice
        .wait_for_event(&room, "carol's new name", |e| {
            e["type"] == "m.room.member" && e["content"]["displayname"] == "Carol B"
        })
        .await;
    let member = ("m.room.member".to_owned(), carol.user_id.clone());
    assert_eq!(alice.state(&room).await[&member]["displayname"], "Carol B");
}
