//! `POST /rooms/{roomId}/upgrade`: the new room, the copied state, aliases and the tombstone.

use crate::common;
use crate::extras;

use common::{Session, TestServer, assert_error};
use extras::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn upgrade(
    server: &TestServer,
    who: &Session,
    room: &str,
    body: Value,
) -> (StatusCode, Value) {
    server
        .post(&room_path(room, "upgrade"), who.token(), body)
        .await
}

async fn state(server: &TestServer, who: &Session, room: &str, event_type: &str) -> Value {
    let (status, body) = state_content(server, who, room, event_type, "").await;
    assert_eq!(status, StatusCode::OK, "{event_type} in {room}: {body}");
    body
}

async fn joined_rooms(server: &TestServer, who: &Session) -> Vec<String> {
    let (status, body) = server
        .get("/_matrix/client/v3/joined_rooms", who.token())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_value(body["joined_rooms"].clone()).unwrap()
}

#[tokio::test]
async fn upgrade_to_v11_copies_state_and_moves_aliases() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let carol = server.register("carol", "password").await;
    let room = create_room(
        &server,
        &alice,
        json!({"room_version": "10", "preset": "public_chat", "visibility": "public",
               "room_alias_name": "upgrademe", "name": "Old name", "topic": "Old topic",
               "power_level_content_override": {"users_default": 5, "events": {"m.room.topic": 20}}}),
    )
    .await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;
    send_state(
        &server,
        &alice,
        &room,
        "m.room.encryption",
        "",
        json!({"algorithm": "m.megolm.v1.aes-sha2"}),
    )
    .await;
    send_state(
        &server,
        &alice,
        &room,
        "m.room.history_visibility",
        "",
        json!({"history_visibility": "joined"}),
    )
    .await;
    let (status, body) = server
        .post(
            &room_path(&room, "ban"),
            alice.token(),
            json!({"user_id": carol.user_id, "reason": "spam"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let last = send_text(&server, &alice, &room, "last words").await;

    // Bob (level 5) may not send the tombstone: refused, and nothing is created.
    let before = joined_rooms(&server, &alice).await;
    assert_error(
        &upgrade(&server, &bob, &room, json!({"new_version": "11"})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(joined_rooms(&server, &alice).await, before);
    assert_eq!(joined_rooms(&server, &bob).await, vec![room.clone()]);
    assert_error(
        &upgrade(&server, &alice, &room, json!({"new_version": "999"})).await,
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
    );

    let (status, body) = upgrade(&server, &alice, &room, json!({"new_version": "11"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_room = body["replacement_room"]
        .as_str()
        .expect("replacement_room")
        .to_owned();
    assert_ne!(new_room, room);
    assert!(joined_rooms(&server, &alice).await.contains(&new_room));

    // The new room: its create event points back, the state followed.
    let create = state(&server, &alice, &new_room, "m.room.create").await;
    assert_eq!(create["room_version"], "11");
    assert_eq!(create["predecessor"]["room_id"], room.as_str());
    assert_eq!(create["predecessor"]["event_id"], last.as_str());
    assert!(
        create.get("creator").is_none(),
        "v11 has no creator field: {create}"
    );
    assert_eq!(
        state(&server, &alice, &new_room, "m.room.name").await["name"],
        "Old name"
    );
    assert_eq!(
        state(&server, &alice, &new_room, "m.room.topic").await["topic"],
        "Old topic"
    );
    assert_eq!(
        state(&server, &alice, &new_room, "m.room.join_rules").await["join_rule"],
        "public"
    );
    assert_eq!(
        state(&server, &alice, &new_room, "m.room.history_visibility").await["history_visibility"],
        "joined"
    );
    assert_eq!(
        state(&server, &alice, &new_room, "m.room.encryption").await["algorithm"],
        "m.megolm.v1.aes-sha2"
    );
    let levels = state(&server, &alice, &new_room, "m.room.power_levels").await;
    assert_eq!(levels["users"][alice.user_id.as_str()], 100, "{levels}");
    assert_eq!(levels["users_default"], 5);
    assert_eq!(levels["events"]["m.room.topic"], 20);
    let (status, carol_there) =
        state_content(&server, &alice, &new_room, "m.room.member", &carol.user_id).await;
    assert_eq!(status, StatusCode::OK, "{carol_there}");
    assert_eq!(carol_there["membership"], "ban");
    assert_eq!(carol_there["reason"], "spam");

    // The alias now leads to the new room, which names it; the old room no longer does.
    let alias = "#upgrademe:test.local";
    assert_eq!(
        state(&server, &alice, &new_room, "m.room.canonical_alias").await["alias"],
        alias
    );
    assert_eq!(
        state(&server, &alice, &room, "m.room.canonical_alias").await,
        json!({})
    );
    let dave = server.register("dave", "password").await;
    let (status, joined) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(alias)),
            dave.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["room_id"], new_room.as_str());

    // The old room: a tombstone, and only moderators may talk or invite.
    let tombstone = state(&server, &alice, &room, "m.room.tombstone").await;
    assert_eq!(tombstone["replacement_room"], new_room.as_str());
    let old_levels = state(&server, &alice, &room, "m.room.power_levels").await;
    assert_eq!(old_levels["events_default"], 50, "{old_levels}");
    assert_eq!(old_levels["invite"], 50);
    let (status, _) = try_send(
        &server,
        &bob,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "still here?"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Bob follows the tombstone.
    join(&server, &bob, &new_room).await;
    send_text(&server, &bob, &new_room, "hello again").await;
}

#[tokio::test]
async fn upgrade_to_v12_leaves_creators_out_of_power_levels() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(
        &server,
        &alice,
        json!({"room_version": "11", "preset": "private_chat", "name": "Eleven"}),
    )
    .await;

    let (status, body) = upgrade(
        &server,
        &alice,
        &room,
        json!({"new_version": "12", "additional_creators": [bob.user_id]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_room = body["replacement_room"].as_str().unwrap().to_owned();
    // Since v12 the room ID is the hash of the create event: no server name.
    assert!(!new_room.contains(':'), "{new_room}");
    let create = state(&server, &alice, &new_room, "m.room.create").await;
    assert_eq!(create["room_version"], "12");
    assert_eq!(create["predecessor"]["room_id"], room.as_str());
    assert_eq!(create["additional_creators"], json!([bob.user_id]));
    let levels = state(&server, &alice, &new_room, "m.room.power_levels").await;
    assert!(
        levels["users"].get(alice.user_id.as_str()).is_none(),
        "{levels}"
    );
    assert!(
        levels["users"].get(bob.user_id.as_str()).is_none(),
        "{levels}"
    );
    assert_eq!(
        state(&server, &alice, &new_room, "m.room.name").await["name"],
        "Eleven"
    );
    assert_eq!(
        state(&server, &alice, &new_room, "m.room.join_rules").await["join_rule"],
        "invite"
    );
    // The creator keeps full power.
    send_state(
        &server,
        &alice,
        &new_room,
        "m.room.topic",
        "",
        json!({"topic": "new"}),
    )
    .await;

    // And back from v12 to an older version: the creator gets an explicit level.
    let (status, body) = upgrade(&server, &alice, &new_room, json!({"new_version": "11"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let newest = body["replacement_room"].as_str().unwrap().to_owned();
    let levels = state(&server, &alice, &newest, "m.room.power_levels").await;
    assert_eq!(levels["users"][alice.user_id.as_str()], 100, "{levels}");
    assert_eq!(
        state(&server, &alice, &newest, "m.room.topic").await["topic"],
        "new"
    );

    // additional_creators needs a version that has them.
    assert_error(
        &upgrade(
            &server,
            &alice,
            &newest,
            json!({"new_version": "10", "additional_creators": [bob.user_id]}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    // Only members may upgrade.
    assert_error(
        &upgrade(&server, &bob, &newest, json!({"new_version": "12"})).await,
        403,
        "M_FORBIDDEN",
    );
}

/// Every room version `/capabilities` lists can be created, written to, joined by another user
/// and upgraded to the next one listed (whose room holds both users again).
#[tokio::test]
async fn every_advertised_room_version_is_created_joined_and_upgraded() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let (status, capabilities) = server
        .get("/_matrix/client/v3/capabilities", alice.token())
        .await;
    assert_eq!(status, StatusCode::OK, "{capabilities}");
    let available = capabilities["capabilities"]["m.room_versions"]["available"]
        .as_object()
        .expect("available room versions");
    let mut versions: Vec<u32> = available
        .keys()
        .map(|v| v.parse().expect("numeric room versions"))
        .collect();
    versions.sort_unstable();
    assert!(versions.len() >= 2, "{capabilities}");
    for pair in versions.windows(2) {
        let (version, next) = (pair[0].to_string(), pair[1].to_string());
        let room = create_room(
            &server,
            &alice,
            json!({"room_version": version, "preset": "public_chat",
                   "name": format!("v{version}")}),
        )
        .await;
        let create = state(&server, &alice, &room, "m.room.create").await;
        assert_eq!(create["room_version"], version.as_str(), "{create}");
        send_text(&server, &alice, &room, "hello").await;
        join(&server, &bob, &room).await;
        send_text(&server, &bob, &room, "hi").await;

        let (status, body) = upgrade(&server, &alice, &room, json!({"new_version": next})).await;
        assert_eq!(status, StatusCode::OK, "v{version} -> v{next}: {body}");
        let new_room = body["replacement_room"].as_str().expect("replacement_room");
        let tombstone = state(&server, &bob, &room, "m.room.tombstone").await;
        assert_eq!(tombstone["replacement_room"], new_room, "v{version}");
        let create = state(&server, &alice, new_room, "m.room.create").await;
        assert_eq!(create["room_version"], next.as_str(), "{create}");
        assert_eq!(create["predecessor"]["room_id"], room.as_str(), "{create}");
        join(&server, &bob, new_room).await;
        send_text(&server, &bob, new_room, "moved").await;
        assert_eq!(
            state(&server, &bob, new_room, "m.room.name").await["name"],
            format!("v{version}")
        );
    }
}
