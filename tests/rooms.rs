//! Rooms: createRoom and its options, membership (join, invite, leave, forget, kick, ban, unban,
//! knock), the authorization rules refusing what they must, idempotent sends, state, members,
//! single events, redactions and size limits. Several users against one real server.

use crate::common;
use crate::room_api;

use common::{Session, TestServer, assert_error};
use reqwest::{Method, StatusCode};
use room_api::*;
use serde_json::{Value, json};

async fn users(server: &TestServer, names: &[&str]) -> Vec<Session> {
    let mut sessions = Vec::new();
    for name in names {
        sessions.push(server.register(name, "password").await);
    }
    sessions
}

async fn membership_of(server: &TestServer, viewer: &Session, room: &str, user: &str) -> Value {
    let (status, content) = get_state(server, viewer, room, "m.room.member", user).await;
    if status == StatusCode::NOT_FOUND {
        return Value::Null;
    }
    assert_eq!(status, StatusCode::OK, "{content}");
    content["membership"].clone()
}

async fn joined_rooms(server: &TestServer, who: &Session) -> Vec<String> {
    let (status, body) = server
        .get("/_matrix/client/v3/joined_rooms", who.token())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_value(body["joined_rooms"].clone()).expect("joined_rooms")
}

async fn joined_members(server: &TestServer, who: &Session, room: &str) -> Value {
    let (status, body) = server
        .get(&room_path(room, "joined_members"), who.token())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["joined"].clone()
}

#[tokio::test]
async fn presets_set_the_spec_defaults() {
    let server = TestServer::start().await;
    let [alice, bob] = &users(&server, &["alice", "bob"]).await[..] else {
        unreachable!()
    };

    // private_chat: invite-only, shared history, guests may join, anyone may invite.
    let private = create_room(
        &server,
        alice,
        json!({"preset": "private_chat", "name": "Private", "topic": "Secrets"}),
    )
    .await;
    let state = full_state(&server, alice, &private).await;
    let content = |t: &str| find_state(&state, t, "").expect(t)["content"].clone();
    assert_eq!(content("m.room.join_rules")["join_rule"], "invite");
    assert_eq!(
        content("m.room.history_visibility")["history_visibility"],
        "shared"
    );
    assert_eq!(content("m.room.guest_access")["guest_access"], "can_join");
    assert_eq!(content("m.room.name")["name"], "Private");
    assert_eq!(content("m.room.topic")["topic"], "Secrets");
    let levels = content("m.room.power_levels");
    assert_eq!(levels["invite"], 0, "{levels}");
    // Room version 12 (the default): creators have unlimited power and are not listed.
    assert_eq!(content("m.room.create")["room_version"], "12");
    assert!(levels["users"].get(&alice.user_id).is_none(), "{levels}");
    let create = find_state(&state, "m.room.create", "").unwrap();
    assert_eq!(create["sender"], alice.user_id.as_str());
    // Since v12 the room ID is the create event's hash, without a server name.
    assert!(!private.contains(':'), "{private}");
    assert_eq!(create["event_id"].as_str().unwrap()[1..], private[1..]);
    let member = find_state(&state, "m.room.member", &alice.user_id).expect("creator member");
    assert_eq!(member["content"]["membership"], "join");

    // public_chat: anyone may join, guests may not, inviting takes PL 50.
    let public = create_room(&server, alice, json!({"preset": "public_chat"})).await;
    let state = full_state(&server, alice, &public).await;
    let content = |t: &str| find_state(&state, t, "").expect(t)["content"].clone();
    assert_eq!(content("m.room.join_rules")["join_rule"], "public");
    assert_eq!(content("m.room.guest_access")["guest_access"], "forbidden");
    assert_eq!(content("m.room.power_levels")["invite"], 50);

    // trusted_private_chat: invitees get the creator's power level.
    let trusted = create_room(
        &server,
        alice,
        json!({"preset": "trusted_private_chat", "invite": [bob.user_id], "room_version": "10"}),
    )
    .await;
    let state = full_state(&server, alice, &trusted).await;
    let levels = &find_state(&state, "m.room.power_levels", "").unwrap()["content"];
    assert_eq!(levels["users"][&bob.user_id], 100, "{levels}");
    // Before v12 the creator is listed with 100, and named in the create event.
    assert_eq!(levels["users"][&alice.user_id], 100, "{levels}");
    let create = &find_state(&state, "m.room.create", "").unwrap()["content"];
    assert_eq!(create["room_version"], "10");
    assert_eq!(create["creator"], alice.user_id.as_str());
    assert!(trusted.ends_with(":test.local"), "{trusted}");
    assert_eq!(
        find_state(&state, "m.room.member", &bob.user_id).unwrap()["content"]["membership"],
        "invite"
    );

    // visibility: public without a preset means public_chat.
    let listed = create_room(&server, alice, json!({"visibility": "public"})).await;
    let state = full_state(&server, alice, &listed).await;
    assert_eq!(
        find_state(&state, "m.room.join_rules", "").unwrap()["content"]["join_rule"],
        "public"
    );
    // No preset, no visibility: private_chat.
    let plain = create_room(&server, alice, json!({})).await;
    let state = full_state(&server, alice, &plain).await;
    assert_eq!(
        find_state(&state, "m.room.join_rules", "").unwrap()["content"]["join_rule"],
        "invite"
    );
    let mut rooms = joined_rooms(&server, alice).await;
    rooms.sort();
    let mut expected = vec![private, public, trusted, listed, plain];
    expected.sort();
    assert_eq!(rooms, expected);
    assert!(joined_rooms(&server, bob).await.is_empty());
}

/// Since room version 12 a room ID is the create event's hash: rooms made at once by one user
/// with the same options (their writes committed together, in the same millisecond) are still
/// distinct rooms.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_room_created_many_times_at_once_gives_distinct_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let creations =
        (0..12).map(|_| create_room(&server, &alice, json!({"preset": "private_chat"})));
    let rooms: Vec<String> = futures_util::future::join_all(creations).await;
    let distinct: std::collections::HashSet<&String> = rooms.iter().collect();
    assert_eq!(distinct.len(), rooms.len(), "{rooms:?}");
    let mut joined = joined_rooms(&server, &alice).await;
    joined.sort();
    let mut created = rooms.clone();
    created.sort();
    assert_eq!(joined, created);
}

#[tokio::test]
async fn create_room_options() {
    let server = TestServer::start().await;
    let [alice, bob, carol] = &users(&server, &["alice", "bob", "carol"]).await[..] else {
        unreachable!()
    };
    let room = create_room(
        &server,
        alice,
        json!({
            "preset": "public_chat",
            "room_alias_name": "lobby",
            "invite": [bob.user_id],
            "is_direct": true,
            "initial_state": [
                {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}},
                {"type": "org.example.settings", "state_key": "colour", "content": {"value": "teal"}},
            ],
            "power_level_content_override": {"events_default": 50, "users": {(carol.user_id.as_str()): 50}},
        }),
    )
    .await;
    let state = full_state(&server, alice, &room).await;
    let content = |t: &str, k: &str| find_state(&state, t, k).expect(t)["content"].clone();
    assert_eq!(
        content("m.room.canonical_alias", "")["alias"],
        "#lobby:test.local"
    );
    assert_eq!(
        content("m.room.history_visibility", "")["history_visibility"],
        "joined",
        "initial_state overrides the preset"
    );
    assert_eq!(content("org.example.settings", "colour")["value"], "teal");
    let levels = content("m.room.power_levels", "");
    assert_eq!(levels["events_default"], 50);
    assert_eq!(levels["users"][&carol.user_id], 50);
    let invite = content("m.room.member", &bob.user_id);
    assert_eq!(invite["membership"], "invite");
    assert_eq!(invite["is_direct"], true);

    // The alias resolves for joining; power_level_content_override applies.
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc("#lobby:test.local")),
            carol.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    send_text(&server, carol, &room, "carol has 50").await;
    must_join(&server, bob, &room).await;
    assert_error(
        &try_send(&server, bob, &room, "m.room.message", json!({"body": "x"})).await,
        403,
        "M_FORBIDDEN",
    );

    // An alias can be taken once.
    let taken = server
        .post(
            "/_matrix/client/v3/createRoom",
            bob.token(),
            json!({"room_alias_name": "lobby"}),
        )
        .await;
    assert_error(&taken, 400, "M_ROOM_IN_USE");
    // ... and the failed createRoom left no room behind.
    assert_eq!(joined_rooms(&server, bob).await, vec![room.clone()]);

    // Versions: every supported one works, others are refused.
    for version in ["3", "6", "7", "9", "10", "11", "12"] {
        let id = create_room(&server, alice, json!({"room_version": version})).await;
        let (status, create) = get_state(&server, alice, &id, "m.room.create", "").await;
        assert_eq!(status, StatusCode::OK, "{create}");
        assert_eq!(create["room_version"], version);
        send_text(&server, alice, &id, &format!("hello v{version}")).await;
    }
    for version in ["1", "2", "999", "org.example.v1"] {
        let reply = server
            .post(
                "/_matrix/client/v3/createRoom",
                alice.token(),
                json!({"room_version": version}),
            )
            .await;
        assert_error(&reply, 400, "M_UNSUPPORTED_ROOM_VERSION");
    }
    // Inviting someone who does not exist fails the whole createRoom.
    let reply = server
        .post(
            "/_matrix/client/v3/createRoom",
            carol.token(),
            json!({"invite": ["@nobody:test.local"]}),
        )
        .await;
    assert!(reply.0.is_client_error(), "{reply:?}");
    assert_eq!(joined_rooms(&server, carol).await, vec![room.clone()]);
    // initial_state may not smuggle in membership.
    let reply = server
        .post(
            "/_matrix/client/v3/createRoom",
            carol.token(),
            json!({"initial_state": [{"type": "m.room.member", "state_key": bob.user_id, "content": {"membership": "join"}}]}),
        )
        .await;
    assert!(reply.0.is_client_error(), "{reply:?}");
}

#[tokio::test]
async fn join_invite_leave_forget() {
    let server = TestServer::start().await;
    let [alice, bob, carol] = &users(&server, &["alice", "bob", "carol"]).await[..] else {
        unreachable!()
    };
    let room = create_room(&server, alice, json!({"preset": "private_chat"})).await;

    // Invite-only: no join without an invite, and the refusal changes nothing.
    assert_error(&join(&server, bob, &room).await, 403, "M_FORBIDDEN");
    assert_eq!(
        membership_of(&server, alice, &room, &bob.user_id).await,
        Value::Null
    );
    assert!(joined_rooms(&server, bob).await.is_empty());
    // Nor can a non-member invite.
    assert_error(
        &invite(&server, carol, &room, &bob.user_id).await,
        403,
        "M_FORBIDDEN",
    );
    // An unknown room.
    let reply = join(&server, bob, "!unknown:test.local").await;
    assert_eq!(reply.0, StatusCode::NOT_FOUND, "{}", reply.1);

    must_invite(&server, alice, &room, &bob.user_id).await;
    assert_eq!(
        membership_of(&server, alice, &room, &bob.user_id).await,
        "invite"
    );
    // A join without any body (as matrix-nio sends it) is a join with `{}`.
    let reply = common::send(
        server
            .builder(Method::POST, &room_path(&room, "join"))
            .bearer_auth(&bob.access_token),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["room_id"], room.as_str());
    assert_eq!(joined_rooms(&server, bob).await, vec![room.clone()]);
    let members = joined_members(&server, bob, &room).await;
    let mut names: Vec<&String> = members.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, vec![&alice.user_id, &bob.user_id]);

    // A PL 0 member may invite in a private_chat (invite level 0).
    must_invite(&server, bob, &room, &carol.user_id).await;
    // Rejecting an invite is leaving.
    let (status, body) = leave(&server, carol, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        membership_of(&server, alice, &room, &carol.user_id).await,
        "leave"
    );
    assert_error(&join(&server, carol, &room).await, 403, "M_FORBIDDEN");

    // Forget: only after leaving.
    let reply = member_action(&server, bob, &room, "forget", json!({})).await;
    assert_eq!(reply.0, StatusCode::BAD_REQUEST, "{}", reply.1);
    let (status, body) = leave(&server, bob, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(joined_rooms(&server, bob).await.is_empty());
    assert_eq!(
        membership_of(&server, alice, &room, &bob.user_id).await,
        "leave"
    );
    // A former member reads the state as of their leave (never later state), and cannot send.
    let state = full_state(&server, bob, &room).await;
    let own = find_state(&state, "m.room.member", &bob.user_id).expect("own member event");
    assert_eq!(own["content"]["membership"], "leave");
    assert_error(
        &try_send(&server, bob, &room, "m.room.message", json!({"body": "x"})).await,
        403,
        "M_FORBIDDEN",
    );
    // Leaving twice only repeats the leave: answered with it, nothing new (as Synapse).
    let (status, body) = leave(&server, bob, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let again = find_state(
        &full_state(&server, bob, &room).await,
        "m.room.member",
        &bob.user_id,
    )
    .expect("own member event")["event_id"]
        .clone();
    assert_eq!(again, own["event_id"]);

    // The left room shows in sync with include_leave until forgotten.
    let filter = q(&json!({"room": {"include_leave": true}}).to_string());
    let before = sync(&server, bob, &format!("filter={filter}")).await;
    assert!(
        before["rooms"]["leave"].get(&room).is_some(),
        "left room in initial sync with include_leave: {before}"
    );
    let (status, body) = member_action(&server, bob, &room, "forget", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = sync(&server, bob, &format!("filter={filter}")).await;
    assert!(
        after["rooms"]["leave"].get(&room).is_none(),
        "forgotten room still in sync: {after}"
    );
    // A forgotten room can be joined again when invited.
    must_invite(&server, alice, &room, &bob.user_id).await;
    must_join(&server, bob, &room).await;
    assert_eq!(joined_rooms(&server, bob).await, vec![room.clone()]);
    // Forgetting a room one was never in.
    let reply = member_action(&server, carol, "!nowhere:test.local", "forget", json!({})).await;
    assert_eq!(reply.0, StatusCode::NOT_FOUND, "{}", reply.1);
}

#[tokio::test]
async fn kick_ban_unban() {
    let server = TestServer::start().await;
    let [alice, bob, carol] = &users(&server, &["alice", "bob", "carol"]).await[..] else {
        unreachable!()
    };
    let room = create_room(
        &server,
        alice,
        json!({"preset": "public_chat", "room_version": "10"}),
    )
    .await;
    must_join(&server, bob, &room).await;
    must_join(&server, carol, &room).await;

    // PL 0 may neither kick nor ban.
    let kick = |target: &str, reason: &str| json!({"user_id": target, "reason": reason});
    assert_error(
        &member_action(&server, bob, &room, "kick", kick(&carol.user_id, "no")).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &member_action(&server, bob, &room, "ban", kick(&alice.user_id, "no")).await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        membership_of(&server, alice, &room, &carol.user_id).await,
        "join"
    );
    assert_eq!(
        membership_of(&server, alice, &room, &alice.user_id).await,
        "join"
    );

    // Kick: the target is out, with the reason, and may come back to a public room.
    let (status, body) =
        member_action(&server, alice, &room, "kick", kick(&bob.user_id, "spam")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, member) = get_state(&server, alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(member["membership"], "leave");
    assert_eq!(member["reason"], "spam");
    assert!(joined_rooms(&server, bob).await.is_empty());
    must_join(&server, bob, &room).await;

    // Ban: out, and cannot rejoin or be invited.
    let (status, body) =
        member_action(&server, alice, &room, "ban", kick(&bob.user_id, "again")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        membership_of(&server, alice, &room, &bob.user_id).await,
        "ban"
    );
    assert_error(&join(&server, bob, &room).await, 403, "M_FORBIDDEN");
    assert_error(
        &server
            .post(
                &format!("/_matrix/client/v3/join/{}", enc(&room)),
                bob.token(),
                json!({}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &invite(&server, alice, &room, &bob.user_id).await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        membership_of(&server, alice, &room, &bob.user_id).await,
        "ban"
    );
    // A banned user cannot leave their ban behind either.
    assert_error(&leave(&server, bob, &room).await, 403, "M_FORBIDDEN");
    // A PL 0 member cannot unban; unbanning someone not banned is refused.
    assert_error(
        &member_action(
            &server,
            carol,
            &room,
            "unban",
            json!({"user_id": bob.user_id}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &member_action(
            &server,
            alice,
            &room,
            "unban",
            json!({"user_id": carol.user_id}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        membership_of(&server, alice, &room, &carol.user_id).await,
        "join"
    );

    let (status, body) = member_action(
        &server,
        alice,
        &room,
        "unban",
        json!({"user_id": bob.user_id}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        membership_of(&server, alice, &room, &bob.user_id).await,
        "leave"
    );
    must_join(&server, bob, &room).await;

    // Banning someone who never was in the room works too (pre-emptive ban).
    let dave = server.register("dave", "password").await;
    let (status, body) = member_action(
        &server,
        alice,
        &room,
        "ban",
        kick(&dave.user_id, "pre-emptive"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(&join(&server, &dave, &room).await, 403, "M_FORBIDDEN");
    // Kicking someone not in the room.
    let eve = server.register("eve", "password").await;
    let reply = member_action(&server, alice, &room, "kick", kick(&eve.user_id, "x")).await;
    assert_eq!(reply.0, StatusCode::FORBIDDEN, "{}", reply.1);
}

#[tokio::test]
async fn knocking() {
    let server = TestServer::start().await;
    let [alice, bob, carol] = &users(&server, &["alice", "bob", "carol"]).await[..] else {
        unreachable!()
    };
    let knock_rule = json!([{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}]);
    let room = create_room(
        &server,
        alice,
        json!({"room_version": "10", "initial_state": knock_rule, "name": "Knock knock"}),
    )
    .await;
    // Joining is not allowed, knocking is.
    assert_error(&join(&server, bob, &room).await, 403, "M_FORBIDDEN");
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/knock/{}", enc(&room)),
            bob.token(),
            json!({"reason": "let me in"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    let (_, member) = get_state(&server, alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(member["membership"], "knock");
    assert_eq!(member["reason"], "let me in");
    // The knocker sees the room under rooms.knock with stripped state.
    let bob_sync = sync(&server, bob, "").await;
    let knock_state = &bob_sync["rooms"]["knock"][&room]["knock_state"]["events"];
    let knock_state = knock_state.as_array().expect("knock_state");
    assert!(
        knock_state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Knock knock"),
        "{bob_sync}"
    );
    assert!(
        knock_state.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob.user_id.as_str()
            && e["content"]["membership"] == "knock"),
        "{bob_sync}"
    );
    // A knocker cannot send or knock again into a join.
    assert_error(
        &try_send(&server, bob, &room, "m.room.message", json!({"body": "x"})).await,
        403,
        "M_FORBIDDEN",
    );
    // Accepting a knock is an invite; then the knocker joins.
    must_invite(&server, alice, &room, &bob.user_id).await;
    must_join(&server, bob, &room).await;

    // Knocking on an invite-only room is refused.
    let private = create_room(&server, alice, json!({"room_version": "10"})).await;
    assert_error(
        &server
            .post(
                &format!("/_matrix/client/v3/knock/{}", enc(&private)),
                carol.token(),
                json!({}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    // Before room version 7 there is no knocking, whatever the join rule says.
    let old = create_room(
        &server,
        alice,
        json!({"room_version": "6", "initial_state": knock_rule}),
    )
    .await;
    assert_error(
        &server
            .post(
                &format!("/_matrix/client/v3/knock/{}", enc(&old)),
                carol.token(),
                json!({}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        membership_of(&server, alice, &old, &carol.user_id).await,
        Value::Null
    );
    // Withdrawing a knock is leaving.
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/knock/{}", enc(&room)),
            carol.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = leave(&server, carol, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        membership_of(&server, alice, &room, &carol.user_id).await,
        "leave"
    );
}

#[tokio::test]
async fn unauthorized_events_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let [alice, bob, mallory] = &users(&server, &["alice", "bob", "mallory"]).await[..] else {
        unreachable!()
    };
    let room = create_room(
        &server,
        alice,
        json!({"preset": "private_chat", "name": "Original"}),
    )
    .await;
    must_invite(&server, alice, &room, &bob.user_id).await;
    must_join(&server, bob, &room).await;
    let state_before = full_state(&server, alice, &room).await;
    let since = sync(&server, alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // A non-member can neither send nor set state.
    assert_error(
        &try_send(
            &server,
            mallory,
            &room,
            "m.room.message",
            json!({"body": "hi"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &try_set_state(
            &server,
            mallory,
            &room,
            "m.room.name",
            "",
            json!({"name": "Pwned"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    // A PL 0 member cannot change the power levels (not even to give themselves power), the
    // name (state_default 50), or the join rules.
    let mut levels =
        find_state(&state_before, "m.room.power_levels", "").unwrap()["content"].clone();
    levels["users"][&bob.user_id] = json!(100);
    assert_error(
        &try_set_state(&server, bob, &room, "m.room.power_levels", "", levels).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &try_set_state(
            &server,
            bob,
            &room,
            "m.room.name",
            "",
            json!({"name": "Pwned"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &try_set_state(
            &server,
            bob,
            &room,
            "m.room.join_rules",
            "",
            json!({"join_rule": "public"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    // Nobody may send a second create event, or someone else's membership through /state.
    let reply = try_set_state(&server, alice, &room, "m.room.create", "", json!({})).await;
    assert!(reply.0.is_client_error(), "{reply:?}");
    let reply = try_set_state(
        &server,
        bob,
        &room,
        "m.room.member",
        &mallory.user_id,
        json!({"membership": "join"}),
    )
    .await;
    assert!(reply.0.is_client_error(), "{reply:?}");
    // State keys starting with another user's ID belong to that user.
    assert_error(
        &try_set_state(
            &server,
            bob,
            &room,
            "org.example.note",
            &alice.user_id,
            json!({"x": 1}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );

    // Nothing changed: same state, and nothing new in anyone's sync.
    let mut after = full_state(&server, alice, &room).await;
    let mut before = state_before.clone();
    let key = |e: &Value| (e["type"].to_string(), e["state_key"].to_string());
    after.sort_by_key(key);
    before.sort_by_key(key);
    assert_eq!(ids(&after), ids(&before));
    let news = sync_since(&server, alice, &since, "").await;
    assert!(
        timeline(&news, "join", &room).is_empty(),
        "refused events leaked into sync: {news}"
    );
    let (_, name) = get_state(&server, alice, &room, "m.room.name", "").await;
    assert_eq!(name["name"], "Original");

    // With power, the same changes go through.
    set_state(
        &server,
        alice,
        &room,
        "m.room.name",
        "",
        json!({"name": "Renamed"}),
    )
    .await;
    let mut levels =
        find_state(&state_before, "m.room.power_levels", "").unwrap()["content"].clone();
    levels["users"][&bob.user_id] = json!(50);
    set_state(&server, alice, &room, "m.room.power_levels", "", levels).await;
    set_state(
        &server,
        bob,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "bob's now"}),
    )
    .await;
    // ... but PL 50 still cannot grant 100.
    let (_, mut levels) = get_state(&server, alice, &room, "m.room.power_levels", "").await;
    levels["users"][&bob.user_id] = json!(100);
    assert_error(
        &try_set_state(&server, bob, &room, "m.room.power_levels", "", levels).await,
        403,
        "M_FORBIDDEN",
    );
    // Sending into a room that does not exist.
    let reply = try_send(
        &server,
        alice,
        "!missing:test.local",
        "m.room.message",
        json!({}),
    )
    .await;
    assert!(
        reply.0 == StatusCode::FORBIDDEN || reply.0 == StatusCode::NOT_FOUND,
        "{reply:?}"
    );
}

#[tokio::test]
async fn sends_are_idempotent_per_device_and_txn() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let laptop = server.login_session("alice", "password").await;
    let room = create_room(&server, &alice, json!({})).await;
    let since = sync(&server, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let content = json!({"msgtype": "m.text", "body": "once"});
    let first = send_txn(
        &server,
        &alice,
        &room,
        "m.room.message",
        "t1",
        content.clone(),
    )
    .await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    let again = send_txn(
        &server,
        &alice,
        &room,
        "m.room.message",
        "t1",
        content.clone(),
    )
    .await;
    assert_eq!(again.0, StatusCode::OK, "{}", again.1);
    assert_eq!(first.1["event_id"], again.1["event_id"]);
    // Same txnId, other device: a new event.
    let other = send_txn(
        &server,
        &laptop,
        &room,
        "m.room.message",
        "t1",
        content.clone(),
    )
    .await;
    assert_eq!(other.0, StatusCode::OK, "{}", other.1);
    assert_ne!(first.1["event_id"], other.1["event_id"]);
    // A new txnId on the first device: a new event.
    let third = send_txn(
        &server,
        &alice,
        &room,
        "m.room.message",
        "t2",
        content.clone(),
    )
    .await;
    assert_ne!(first.1["event_id"], third.1["event_id"]);

    let news = sync_since(&server, &alice, &since, "").await;
    let events = timeline(&news, "join", &room);
    assert_eq!(
        ids(events),
        vec![
            first.1["event_id"].as_str().unwrap(),
            other.1["event_id"].as_str().unwrap(),
            third.1["event_id"].as_str().unwrap(),
        ],
        "{news}"
    );
    // transaction_id is shown to the sending device only.
    assert_eq!(events[0]["unsigned"]["transaction_id"], "t1");
    assert!(
        events[1]["unsigned"].get("transaction_id").is_none(),
        "{}",
        events[1]
    );
    assert_eq!(events[2]["unsigned"]["transaction_id"], "t2");
    let on_laptop = sync_since(&server, &laptop, &since, "").await;
    let events = timeline(&on_laptop, "join", &room);
    assert!(
        events[0]["unsigned"].get("transaction_id").is_none(),
        "{}",
        events[0]
    );
    assert_eq!(events[1]["unsigned"]["transaction_id"], "t1");
    let event_id = first.1["event_id"].as_str().unwrap();
    let (_, event) = room_request(
        &server,
        &alice,
        Method::GET,
        &room,
        &format!("event/{}", enc(event_id)),
        None,
    )
    .await;
    assert_eq!(event["unsigned"]["transaction_id"], "t1");
    let (_, event) = room_request(
        &server,
        &laptop,
        Method::GET,
        &room,
        &format!("event/{}", enc(event_id)),
        None,
    )
    .await;
    assert!(event["unsigned"].get("transaction_id").is_none(), "{event}");

    // Concurrent retries of one txnId: one event.
    let mut tasks = Vec::new();
    for _ in 0..5 {
        tasks.push(send_txn(
            &server,
            &alice,
            &room,
            "m.room.message",
            "t3",
            content.clone(),
        ));
    }
    let replies = join_all(tasks).await;
    let mut event_ids: Vec<&Value> = replies.iter().map(|r| &r.1["event_id"]).collect();
    assert!(replies.iter().all(|r| r.0 == StatusCode::OK), "{replies:?}");
    event_ids.dedup();
    assert_eq!(event_ids.len(), 1, "{replies:?}");
}

#[tokio::test]
async fn state_put_and_get() {
    let server = TestServer::start().await;
    let [alice, bob, carol] = &users(&server, &["alice", "bob", "carol"]).await[..] else {
        unreachable!()
    };
    let room = create_room(&server, alice, json!({"preset": "public_chat"})).await;

    // The state key may be omitted (or empty after a trailing slash).
    let path = room_path(&room, "state/m.room.name");
    let (status, body) = server
        .put(&path, alice.token(), json!({"name": "No key"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = body["event_id"].as_str().unwrap().to_owned();
    let (status, body) = server.get(&path, alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"name": "No key"}));
    let (status, body) = server
        .put(&format!("{path}/"), alice.token(), json!({"name": "Slash"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(body["event_id"], first.as_str());
    let (status, body) = server.get(&format!("{path}/"), alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "Slash");
    let (_, body) = server.get(&path, alice.token()).await;
    assert_eq!(body["name"], "Slash");

    // Custom state with a state key; missing state is 404.
    set_state(
        &server,
        alice,
        &room,
        "org.example.widget",
        "w1",
        json!({"url": "https://example.org"}),
    )
    .await;
    let (status, body) = get_state(&server, alice, &room, "org.example.widget", "w1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["url"], "https://example.org");
    let (status, body) = get_state(&server, alice, &room, "org.example.widget", "w2").await;
    assert_eq!(
        (status, body["errcode"].clone()),
        (StatusCode::NOT_FOUND, json!("M_NOT_FOUND"))
    );
    let (status, _) = get_state(&server, alice, &room, "m.room.topic", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The full event with format=event.
    let (status, event) = server
        .get(&format!("{path}?format=event"), alice.token())
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["type"], "m.room.name");
    assert_eq!(event["content"]["name"], "Slash");
    assert_eq!(event["sender"], alice.user_id.as_str());

    // /state: everything, as client events.
    let state = full_state(&server, alice, &room).await;
    for (t, k) in [
        ("m.room.create", ""),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.name", ""),
        ("org.example.widget", "w1"),
        ("m.room.member", alice.user_id.as_str()),
    ] {
        let event = find_state(&state, t, k).unwrap_or_else(|| panic!("no {t} in {state:?}"));
        for field in [
            "event_id",
            "sender",
            "origin_server_ts",
            "content",
            "room_id",
        ] {
            assert!(event.get(field).is_some(), "{field} missing in {event}");
        }
        for field in [
            "auth_events",
            "prev_events",
            "hashes",
            "signatures",
            "depth",
        ] {
            assert!(
                event.get(field).is_none(),
                "federation field {field} in {event}"
            );
        }
    }
    assert_eq!(
        state.iter().filter(|e| e["type"] == "m.room.name").count(),
        1,
        "only the current name"
    );

    // /event/{id}: the event; unknown IDs are 404; members of other rooms cannot read it.
    let event_id = send_text(&server, alice, &room, "look at me").await;
    let path = room_path(&room, &format!("event/{}", enc(&event_id)));
    let (status, event) = server.get(&path, alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["event_id"], event_id.as_str());
    assert_eq!(event["room_id"], room.as_str());
    assert_eq!(event["content"]["body"], "look at me");
    assert_eq!(event["type"], "m.room.message");
    let (status, body) = server
        .get(
            &room_path(&room, &format!("event/{}", enc("$nope"))),
            alice.token(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = server.get(&path, carol.token()).await;
    assert!(
        status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN,
        "{status}"
    );

    // /members with filters, /joined_members with profiles.
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&bob.user_id)
            ),
            bob.token(),
            json!({"displayname": "Bobby"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    must_join(&server, bob, &room).await;
    must_join(&server, carol, &room).await;
    let (status, body) = leave(&server, carol, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let dave = server.register("dave", "password").await;
    let (status, body) = invite(&server, alice, &room, &dave.user_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let members = |query: &'static str| {
        let server = &server;
        let room = room.clone();
        async move {
            let (status, body) = server
                .get(&room_path(&room, &format!("members{query}")), alice.token())
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            member_list(&body)
        }
    };
    let pair = |u: &Session, m: &str| (u.user_id.clone(), m.to_owned());
    assert_eq!(
        members("").await,
        vec![
            pair(alice, "join"),
            pair(bob, "join"),
            pair(carol, "leave"),
            pair(&dave, "invite")
        ]
    );
    assert_eq!(
        members("?membership=join").await,
        vec![pair(alice, "join"), pair(bob, "join")]
    );
    assert_eq!(
        members("?membership=invite").await,
        vec![pair(&dave, "invite")]
    );
    assert_eq!(
        members("?not_membership=leave").await,
        vec![
            pair(alice, "join"),
            pair(bob, "join"),
            pair(&dave, "invite")
        ]
    );
    assert_eq!(
        members("?not_membership=join").await,
        vec![pair(carol, "leave"), pair(&dave, "invite")]
    );
    let joined = joined_members(&server, alice, &room).await;
    assert_eq!(joined.as_object().unwrap().len(), 2, "{joined}");
    assert_eq!(joined[&bob.user_id]["display_name"], "Bobby", "{joined}");
    // A former member gets no /joined_members, and /members as of when she left.
    let (status, _) = server
        .get(&room_path(&room, "joined_members"), carol.token())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = server
        .get(&room_path(&room, "members"), carol.token())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        member_list(&body).contains(&(carol.user_id.clone(), "leave".to_owned())),
        "{body}"
    );
    assert!(
        !member_list(&body)
            .iter()
            .any(|(user, _)| *user == dave.user_id),
        "{body}"
    );
}

#[tokio::test]
async fn redactions() {
    let server = TestServer::start().await;
    let [alice, bob] = &users(&server, &["alice", "bob"]).await[..] else {
        unreachable!()
    };
    for version in ["10", "12"] {
        let room = create_room(
            &server,
            alice,
            json!({"preset": "public_chat", "room_version": version}),
        )
        .await;
        must_join(&server, bob, &room).await;
        let alices = send_text(&server, alice, &room, "alice's words").await;
        let bobs = try_send(
            &server,
            bob,
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "bob's words", "extra": {"nested": true}}),
        )
        .await
        .1["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let redact = |who: &Session, event_id: &str, reason: Option<&str>| {
            let body = match reason {
                Some(reason) => json!({"reason": reason}),
                None => json!({}),
            };
            let path = room_path(&room, &format!("redact/{}/{}", enc(event_id), txn()));
            let server = &server;
            let token = who.access_token.clone();
            async move { server.put(&path, Some(&token), body).await }
        };

        // Without power, another user's event cannot be redacted.
        assert_error(&redact(bob, &alices, None).await, 403, "M_FORBIDDEN");
        let (_, event) = server
            .get(
                &room_path(&room, &format!("event/{}", enc(&alices))),
                alice.token(),
            )
            .await;
        assert_eq!(event["content"]["body"], "alice's words");
        assert!(event["unsigned"].get("redacted_because").is_none());

        // Own events can be; a moderator can redact anyone's.
        let (status, own) = redact(bob, &bobs, Some("typo")).await;
        assert_eq!(status, StatusCode::OK, "v{version}: {own}");
        let (status, moderated) = redact(alice, &alices, None).await;
        assert_eq!(status, StatusCode::OK, "v{version}: {moderated}");

        for (target, redaction, sender) in [
            (&bobs, own["event_id"].as_str().unwrap(), bob),
            (&alices, moderated["event_id"].as_str().unwrap(), alice),
        ] {
            let (status, event) = server
                .get(
                    &room_path(&room, &format!("event/{}", enc(target))),
                    bob.token(),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{event}");
            assert_eq!(
                event["content"],
                json!({}),
                "v{version}: content kept: {event}"
            );
            assert_eq!(event["type"], "m.room.message");
            assert_eq!(event["sender"], sender.user_id.as_str());
            let because = &event["unsigned"]["redacted_because"];
            assert_eq!(because["event_id"], redaction, "v{version}: {event}");
            assert_eq!(because["type"], "m.room.redaction");
            assert_eq!(because["sender"], sender.user_id.as_str());
            // The redaction event names its target (top-level before v11, in content since).
            let (_, redaction_event) = server
                .get(
                    &room_path(&room, &format!("event/{}", enc(redaction))),
                    bob.token(),
                )
                .await;
            let redacts = if version == "10" {
                &redaction_event["redacts"]
            } else {
                &redaction_event["content"]["redacts"]
            };
            assert_eq!(redacts, target, "v{version}: {redaction_event}");
        }
        // Redacted everywhere: /messages and sync.
        let page = must_messages(&server, bob, &room, "dir=b&limit=10").await;
        let chunk = page["chunk"].as_array().unwrap();
        for event in chunk.iter().filter(|e| e["type"] == "m.room.message") {
            assert_eq!(event["content"], json!({}), "{event}");
            assert!(event["unsigned"]["redacted_because"].is_object(), "{event}");
        }
        let initial = sync(&server, bob, "").await;
        let messages: Vec<&Value> = timeline(&initial, "join", &room)
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .collect();
        assert_eq!(messages.len(), 2, "{initial}");
        assert!(
            messages.iter().all(|e| e["content"] == json!({})),
            "{initial}"
        );
        let redactions: Vec<&Value> = timeline(&initial, "join", &room)
            .iter()
            .filter(|e| e["type"] == "m.room.redaction")
            .collect();
        assert_eq!(redactions.len(), 2, "{initial}");
        assert_eq!(redactions[0]["content"]["reason"], "typo");

        // Redaction keeps what the redaction algorithm protects in state events.
        let rules = set_state(
            &server,
            alice,
            &room,
            "m.room.join_rules",
            "",
            json!({"join_rule": "public", "org.example.extra": "gone"}),
        )
        .await;
        let (status, body) = redact(alice, &rules, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, event) = server
            .get(
                &room_path(&room, &format!("event/{}", enc(&rules))),
                alice.token(),
            )
            .await;
        assert_eq!(event["content"], json!({"join_rule": "public"}), "{event}");
        assert_eq!(event["state_key"], "");
        // The state API serves the redacted content too.
        let (status, content) = get_state(&server, alice, &room, "m.room.join_rules", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content, json!({"join_rule": "public"}));
        // Redacting an unknown event.
        let (status, _) = redact(alice, "$unknown", None).await;
        assert!(status.is_client_error(), "{status}");
    }
}

#[tokio::test]
async fn oversized_and_malformed_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let room = create_room(&server, &alice, json!({})).await;
    let since = sync(&server, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // Content alone over 64 KiB.
    let big = "x".repeat(70_000);
    assert_error(
        &try_send(
            &server,
            &alice,
            &room,
            "m.room.message",
            json!({"body": big}),
        )
        .await,
        413,
        "M_TOO_LARGE",
    );
    // Content under 64 KiB whose signed event is over.
    let nearly = "y".repeat(65_400);
    assert_error(
        &try_send(
            &server,
            &alice,
            &room,
            "m.room.message",
            json!({"body": nearly}),
        )
        .await,
        413,
        "M_TOO_LARGE",
    );
    assert_error(
        &try_set_state(
            &server,
            &alice,
            &room,
            "org.example.big",
            "",
            json!({"v": big}),
        )
        .await,
        413,
        "M_TOO_LARGE",
    );
    // A large event that fits is fine.
    let fits = "z".repeat(60_000);
    let (status, body) = try_send(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({"body": fits}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Content must be a JSON object.
    let reply = try_send(&server, &alice, &room, "m.room.message", json!([1, 2])).await;
    assert_eq!(reply.0, StatusCode::BAD_REQUEST, "{}", reply.1);
    let reply = try_set_state(&server, &alice, &room, "m.room.name", "", json!("name")).await;
    assert_eq!(reply.0, StatusCode::BAD_REQUEST, "{}", reply.1);
    // Invalid content for a power levels event (a level that is not an integer).
    let reply = try_set_state(
        &server,
        &alice,
        &room,
        "m.room.power_levels",
        "",
        json!({"users_default": "lots"}),
    )
    .await;
    assert!(reply.0.is_client_error(), "{reply:?}");

    let news = sync_since(&server, &alice, &since, "").await;
    let events = timeline(&news, "join", &room);
    assert_eq!(events.len(), 1, "only the event that fits: {news}");
    assert_eq!(events[0]["content"]["body"].as_str().unwrap().len(), 60_000);
}

/// The spec's size limits on `type` and `state_key` (255 bytes, not characters) hold for every
/// way an event is made; like Synapse, a too long field is `413 M_TOO_LARGE`.
#[tokio::test]
async fn event_types_and_state_keys_longer_than_255_bytes_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let room = create_room(&server, &alice, json!({})).await;
    let since = sync(&server, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // The lengths from the issue, and one byte over (128 two-byte characters).
    let long_type = "t".repeat(5_000);
    let long_key = "k".repeat(60_000);
    let over = "é".repeat(128);
    for event_type in [long_type.as_str(), over.as_str()] {
        let sent = try_send(&server, &alice, &room, event_type, json!({"body": "x"})).await;
        assert_error(&sent, 413, "M_TOO_LARGE");
        let set = try_set_state(&server, &alice, &room, event_type, "", json!({})).await;
        assert_error(&set, 413, "M_TOO_LARGE");
    }
    for state_key in [long_key.as_str(), over.as_str()] {
        let set = try_set_state(&server, &alice, &room, "org.example", state_key, json!({})).await;
        assert_error(&set, 413, "M_TOO_LARGE");
    }
    let rooms_before = joined_rooms(&server, &alice).await;
    for initial in [
        json!({"type": over, "state_key": "", "content": {}}),
        json!({"type": "org.example", "state_key": over, "content": {}}),
    ] {
        let reply = server
            .post(
                "/_matrix/client/v3/createRoom",
                alice.token(),
                json!({"initial_state": [initial]}),
            )
            .await;
        assert_error(&reply, 413, "M_TOO_LARGE");
    }
    assert_eq!(
        joined_rooms(&server, &alice).await,
        rooms_before,
        "no half-made room"
    );

    // 255 bytes fit.
    let fits = format!("{}x", "é".repeat(127));
    assert_eq!(fits.len(), 255);
    let (status, body) = try_send(&server, &alice, &room, &fits, json!({"body": "x"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    set_state(&server, &alice, &room, &fits, &fits, json!({"v": 1})).await;
    let news = sync_since(&server, &alice, &since, "").await;
    let events = timeline(&news, "join", &room);
    assert_eq!(events.len(), 2, "only the events that fit: {news}");
    assert!(events.iter().all(|e| e["type"] == fits.as_str()));
}

#[tokio::test]
async fn a_state_change_carries_what_it_replaced_in_unsigned() {
    let server = TestServer::start().await;
    let [alice] = &users(&server, &["alice"]).await[..] else {
        unreachable!()
    };
    let room = create_room(&server, alice, json!({"name": "Before"})).await;
    let first = set_state(
        &server,
        alice,
        &room,
        "m.room.name",
        "",
        json!({"name": "After"}),
    )
    .await;
    let (status, event) = server
        .get(
            &room_path(&room, &format!("event/{}", enc(&first))),
            alice.token(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["unsigned"]["prev_content"], json!({"name": "Before"}));
    assert_eq!(event["unsigned"]["prev_sender"], alice.user_id.as_str());
    assert!(
        event["unsigned"]["replaces_state"]
            .as_str()
            .is_some_and(|id| id.starts_with('$'))
    );

    // The same in /sync's timeline; an event that replaced nothing has none.
    let sync = sync(&server, alice, "").await;
    let events = timeline(&sync, "join", &room);
    let renamed = events
        .iter()
        .find(|e| e["event_id"] == first.as_str())
        .unwrap();
    assert_eq!(renamed["unsigned"]["prev_content"]["name"], "Before");
    let create = events
        .iter()
        .find(|e| e["type"] == "m.room.create")
        .unwrap();
    assert!(create["unsigned"].get("prev_content").is_none(), "{create}");
}

#[tokio::test]
async fn a_profile_change_reaches_every_joined_room() {
    let mut server = TestServer::start().await;
    let [alice, bob] = &users(&server, &["alice", "bob"]).await[..] else {
        unreachable!()
    };
    let first = create_room(&server, alice, json!({})).await;
    let second = create_room(&server, bob, json!({"preset": "public_chat"})).await;
    must_join(&server, alice, &second).await;
    let left = create_room(&server, alice, json!({"preset": "public_chat"})).await;
    must_join(&server, bob, &left).await;
    assert_eq!(leave(&server, alice, &left).await.0, StatusCode::OK);

    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&alice.user_id)
            ),
            alice.token(),
            json!({"displayname": "Alice A."}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for room in [&first, &second] {
        let (status, member) = get_state(
            &server,
            bob_or(alice, bob, room, &first),
            room,
            "m.room.member",
            &alice.user_id,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{member}");
        assert_eq!(member["displayname"], "Alice A.", "{room}: {member}");
        assert_eq!(member["membership"], "join");
    }
    // Not in a room she left.
    let events = full_state(&server, bob, &left).await;
    let member = find_state(&events, "m.room.member", &alice.user_id).unwrap();
    assert_eq!(member["content"]["membership"], "leave");
    assert!(member["content"].get("displayname").is_none(), "{member}");

    // Setting the same name again sends nothing new.
    let before = full_state(&server, alice, &first).await;
    let (status, _) = server
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&alice.user_id)
            ),
            alice.token(),
            json!({"displayname": "Alice A."}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let after = full_state(&server, alice, &first).await;
    assert_eq!(
        find_state(&before, "m.room.member", &alice.user_id).unwrap()["event_id"],
        find_state(&after, "m.room.member", &alice.user_id).unwrap()["event_id"]
    );

    // In many rooms the change goes on after the answer (stored as waiting, so that a restart
    // still finishes it); every room gets it.
    let mut rooms = vec![first.clone(), second.clone()];
    for _ in 0..10 {
        rooms.push(create_room(&server, alice, json!({})).await);
    }
    set_displayname(&server, alice, "Alice C.").await;
    for room in &rooms {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let (_, member) =
                get_state(&server, alice, room, "m.room.member", &alice.user_id).await;
            if member["displayname"] == "Alice C." {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{room}: {member}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    // A change stored but not yet copied when the server stopped (what a crash in the middle
    // leaves: the new profile and its waiting row) is finished after the restart.
    server.stop();
    let db = rusqlite::Connection::open(server.data_dir.join("appliance.db")).unwrap();
    db.execute(
        "UPDATE users SET displayname = 'Alice D.' WHERE user_id = ?1",
        [&alice.user_id],
    )
    .unwrap();
    db.execute(
        "INSERT INTO pending_profile_updates (user_id, generation) VALUES (?1, 1)",
        [&alice.user_id],
    )
    .unwrap();
    drop(db);
    server.relaunch();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for room in &rooms {
        loop {
            let (_, member) =
                get_state(&server, alice, room, "m.room.member", &alice.user_id).await;
            if member["displayname"] == "Alice D." {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{room}: {member}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Whoever of the two is joined to `room` (alice created `first`, bob the other).
fn bob_or<'a>(alice: &'a Session, bob: &'a Session, room: &str, first: &str) -> &'a Session {
    if room == first { alice } else { bob }
}

/// Member user IDs (with membership) of a `/members` answer.
fn member_list(body: &Value) -> Vec<(String, String)> {
    let mut members: Vec<(String, String)> = body["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "m.room.member", "{e}");
            (
                e["state_key"].as_str().unwrap_or_default().to_owned(),
                e["content"]["membership"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    members.sort();
    members
}

#[tokio::test]
async fn former_members_read_the_state_of_when_they_left() {
    let server = TestServer::start().await;
    let [alice, bob, carol, dave] = &users(&server, &["alice", "bob", "carol", "dave"]).await[..]
    else {
        unreachable!()
    };
    let room = create_room(
        &server,
        alice,
        json!({"preset": "public_chat", "name": "Before"}),
    )
    .await;
    must_join(&server, bob, &room).await;
    must_join(&server, carol, &room).await;
    let (status, body) = leave(&server, bob, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = member_action(
        &server,
        alice,
        &room,
        "ban",
        json!({"user_id": carol.user_id}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    set_state(
        &server,
        alice,
        &room,
        "m.room.name",
        "",
        json!({"name": "After"}),
    )
    .await;
    must_join(&server, dave, &room).await;

    // Bob left: /state, /state/{type}/{key} and /members answer as of his leave.
    let state = full_state(&server, bob, &room).await;
    let name = find_state(&state, "m.room.name", "").expect("name in state");
    assert_eq!(name["content"]["name"], "Before");
    let own = find_state(&state, "m.room.member", &bob.user_id).expect("own member event");
    assert_eq!(own["content"]["membership"], "leave");
    assert!(find_state(&state, "m.room.member", &dave.user_id).is_none());
    let (status, content) = get_state(&server, bob, &room, "m.room.name", "").await;
    assert_eq!(status, StatusCode::OK, "{content}");
    assert_eq!(content["name"], "Before");
    let (status, content) = get_state(&server, bob, &room, "m.room.member", &dave.user_id).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{content}");
    let (status, body) = server.get(&room_path(&room, "members"), bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(member_list(&body), {
        let mut expected = vec![
            (alice.user_id.clone(), "join".to_owned()),
            (bob.user_id.clone(), "leave".to_owned()),
            (carol.user_id.clone(), "join".to_owned()),
        ];
        expected.sort();
        expected
    });

    // Carol was banned: she sees the room as it was at her ban, not the later name.
    let (status, content) = get_state(&server, carol, &room, "m.room.name", "").await;
    assert_eq!(status, StatusCode::OK, "{content}");
    assert_eq!(content["name"], "Before");
    let (status, content) = get_state(&server, carol, &room, "m.room.member", &carol.user_id).await;
    assert_eq!(status, StatusCode::OK, "{content}");
    assert_eq!(content["membership"], "ban");

    // Joined members see the current state; someone who was never in the room sees nothing.
    let (status, content) = get_state(&server, dave, &room, "m.room.name", "").await;
    assert_eq!(status, StatusCode::OK, "{content}");
    assert_eq!(content["name"], "After");
    let erin = server.register("erin", "password").await;
    assert_error(
        &server.get(&room_path(&room, "state"), erin.token()).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &get_state(&server, &erin, &room, "m.room.name", "").await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.get(&room_path(&room, "members"), erin.token()).await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn members_at_a_token_show_the_membership_of_that_time() {
    let server = TestServer::start().await;
    let [alice, bob, carol] = &users(&server, &["alice", "bob", "carol"]).await[..] else {
        unreachable!()
    };
    let room = create_room(&server, alice, json!({"preset": "public_chat"})).await;
    must_join(&server, bob, &room).await;
    let before_carol = sync(&server, alice, "timeout=0").await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    must_join(&server, carol, &room).await;
    let (status, body) = leave(&server, bob, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = sync_since(&server, alice, &before_carol, "").await;
    let prev_batch = after["rooms"]["join"][&room]["timeline"]["prev_batch"]
        .as_str()
        .expect("prev_batch")
        .to_owned();

    let members_at = |token: String| {
        let server = &server;
        let room = room.clone();
        async move {
            let (status, body) = server
                .get(
                    &room_path(&room, &format!("members?at={}", q(&token))),
                    alice.token(),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            member_list(&body)
        }
    };
    let mut expected_then = vec![
        (alice.user_id.clone(), "join".to_owned()),
        (bob.user_id.clone(), "join".to_owned()),
    ];
    expected_then.sort();
    // A sync token names the state after everything up to it; the prev_batch of the timeline
    // that starts with Carol's join names the state just before that join.
    assert_eq!(members_at(before_carol.clone()).await, expected_then);
    assert_eq!(members_at(prev_batch).await, expected_then);
    let (status, body) = server
        .get(&room_path(&room, "members"), alice.token())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut expected_now = vec![
        (alice.user_id.clone(), "join".to_owned()),
        (bob.user_id.clone(), "leave".to_owned()),
        (carol.user_id.clone(), "join".to_owned()),
    ];
    expected_now.sort();
    assert_eq!(member_list(&body), expected_now);
    assert_error(
        &server
            .get(&room_path(&room, "members?at=bogus"), alice.token())
            .await,
        400,
        "M_INVALID_PARAM",
    );
}

/// The member event of `user` in a room's state, as an event (with its ID).
async fn member_event(server: &TestServer, viewer: &Session, room: &str, user: &str) -> Value {
    let state = full_state(server, viewer, room).await;
    find_state(&state, "m.room.member", user)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn set_displayname(server: &TestServer, who: &Session, name: &str) {
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&who.user_id)
            ),
            who.token(),
            json!({"displayname": name}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// An invite made by createRoom names the invitee as `/invite` does and shows the room's
/// prejoin state; state set twice and joins repeated answer the event already there; `/join`
/// keeps the member content asked for; one's own member event may be sent as state (a per-room
/// display name) while other transitions by that path follow the authorization rules.
#[tokio::test]
async fn invites_repeated_state_and_per_room_names() {
    let server = TestServer::start().await;
    let [alice, bob, carol] = &users(&server, &["alice", "bob", "carol"]).await[..] else {
        unreachable!()
    };
    set_displayname(&server, alice, "Alice").await;
    set_displayname(&server, bob, "Bob").await;
    let room = create_room(
        &server,
        alice,
        json!({
            "preset": "private_chat", "name": "Book club", "room_alias_name": "books",
            "invite": [bob.user_id], "is_direct": true,
            "initial_state": [
                {"type": "m.room.encryption", "state_key": "",
                 "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
                {"type": "m.room.avatar", "state_key": "", "content": {"url": "mxc://x/y"}},
            ],
        }),
    )
    .await;

    // Bob's invite: the room's name, avatar, join rules, encryption, alias and create event,
    // Alice's member event (the inviter), and his own invite with his profile in it.
    let invited = sync(&server, bob, "timeout=0").await;
    let stripped = invited["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let find = |kind: &str, key: &str| {
        stripped
            .iter()
            .find(|e| e["type"] == kind && e["state_key"] == key)
            .map(|e| e["content"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(find("m.room.name", "")["name"], "Book club", "{stripped:?}");
    assert_eq!(find("m.room.avatar", "")["url"], "mxc://x/y");
    assert_eq!(find("m.room.join_rules", "")["join_rule"], "invite");
    assert_eq!(
        find("m.room.encryption", "")["algorithm"],
        "m.megolm.v1.aes-sha2"
    );
    assert_eq!(
        find("m.room.canonical_alias", "")["alias"],
        "#books:test.local"
    );
    assert!(find("m.room.create", "").is_object(), "{stripped:?}");
    assert_eq!(
        find("m.room.member", &alice.user_id)["displayname"],
        "Alice"
    );
    let own = find("m.room.member", &bob.user_id);
    assert_eq!(own["membership"], "invite");
    assert_eq!(
        own["displayname"], "Bob",
        "createRoom's invite carries the profile"
    );
    assert_eq!(own["is_direct"], true);

    // The same state twice (same sender, same content) is one event.
    let topic = json!({"topic": "Chapter one"});
    let first = set_state(&server, alice, &room, "m.room.topic", "", topic.clone()).await;
    let again = set_state(&server, alice, &room, "m.room.topic", "", topic).await;
    assert_eq!(first, again, "a repeated state event is not sent again");
    let changed = set_state(
        &server,
        alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "Two"}),
    )
    .await;
    assert_ne!(changed, first);

    // Joining twice with the same content is one event too; a join with a reason and fields of
    // the client's own is a new one that keeps them (and the profile beside them).
    must_join(&server, bob, &room).await;
    let joined = member_event(&server, alice, &room, &bob.user_id).await;
    must_join(&server, bob, &room).await;
    assert_eq!(
        member_event(&server, alice, &room, &bob.user_id).await["event_id"],
        joined["event_id"]
    );
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            bob.token(),
            json!({"reason": "Back again", "org.example.badge": {"level": 3}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let custom = member_event(&server, alice, &room, &bob.user_id).await;
    assert_ne!(custom["event_id"], joined["event_id"]);
    assert_eq!(custom["content"]["reason"], "Back again", "{custom}");
    assert_eq!(custom["content"]["org.example.badge"]["level"], 3);
    assert_eq!(custom["content"]["displayname"], "Bob");
    assert_eq!(custom["content"]["membership"], "join");

    // A per-room display name (Element's /myroomnick): Bob's own join event, sent as state.
    let mut content = custom["content"].clone();
    content["displayname"] = json!("Bob (books)");
    content.as_object_mut().unwrap().remove("reason");
    let nick = set_state(&server, bob, &room, "m.room.member", &bob.user_id, content).await;
    let member = member_event(&server, alice, &room, &bob.user_id).await;
    assert_eq!(member["event_id"], nick.as_str());
    assert_eq!(member["content"]["displayname"], "Bob (books)");
    assert_eq!(member["content"]["membership"], "join");
    let (_, profile) = server
        .get(
            &format!("/_matrix/client/v3/profile/{}", enc(&bob.user_id)),
            bob.token(),
        )
        .await;
    assert_eq!(
        profile["displayname"], "Bob",
        "the global profile is untouched"
    );

    // Other transitions by that path follow the rules: Bob may not join Carol in, nor ban
    // Alice; an invite of Carol by Alice works and is an ordinary invite; a ban by Alice too.
    let (status, body) = try_set_state(
        &server,
        bob,
        &room,
        "m.room.member",
        &carol.user_id,
        json!({"membership": "join"}),
    )
    .await;
    assert_error(&(status, body), 403, "M_FORBIDDEN");
    let (status, body) = try_set_state(
        &server,
        bob,
        &room,
        "m.room.member",
        &alice.user_id,
        json!({"membership": "ban"}),
    )
    .await;
    assert_error(&(status, body), 403, "M_FORBIDDEN");
    let (status, body) = try_set_state(
        &server,
        bob,
        &room,
        "m.room.member",
        "not-a-user",
        json!({"membership": "leave"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    set_state(
        &server,
        alice,
        &room,
        "m.room.member",
        &carol.user_id,
        json!({"membership": "invite"}),
    )
    .await;
    let carol_sync = sync(&server, carol, "timeout=0").await;
    assert!(
        carol_sync["rooms"]["invite"][&room].is_object(),
        "{carol_sync}"
    );
    // Carol joins by sending her own join as state, with a name of her own for this room.
    set_state(
        &server,
        carol,
        &room,
        "m.room.member",
        &carol.user_id,
        json!({"membership": "join", "displayname": "C."}),
    )
    .await;
    let member = member_event(&server, alice, &room, &carol.user_id).await;
    assert_eq!(member["content"]["membership"], "join");
    assert_eq!(member["content"]["displayname"], "C.");
    set_state(
        &server,
        alice,
        &room,
        "m.room.member",
        &carol.user_id,
        json!({"membership": "ban", "reason": "spoilers"}),
    )
    .await;
    assert_eq!(
        membership_of(&server, alice, &room, &carol.user_id).await,
        "ban"
    );
}

/// Requests the spec (or Synapse, where the spec names no code) refuses, each with its status
/// and errcode; and a typing notice without `timeout`, which the spec allows.
#[tokio::test]
async fn room_requests_refused_with_the_spec_codes() {
    let server = TestServer::start().await;
    let [alice, bob] = &users(&server, &["alice", "bob"]).await[..] else {
        unreachable!()
    };
    let room = create_room(&server, alice, json!({})).await;
    let other = create_room(&server, alice, json!({})).await;
    let message = send_text(&server, alice, &room, "hello").await;
    let elsewhere = send_text(&server, alice, &other, "elsewhere").await;

    // Typing: `timeout` may be left out (Synapse's 30 s then); a body of the wrong shape not.
    let typing = format!("typing/{}", enc(&alice.user_id));
    let reply = room_request(
        &server,
        alice,
        Method::PUT,
        &room,
        &typing,
        Some(json!({"typing": true})),
    )
    .await;
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.1);
    let synced = sync(&server, alice, "timeout=0").await;
    assert_eq!(
        synced["rooms"]["join"][&room]["ephemeral"]["events"][0]["content"]["user_ids"],
        json!([alice.user_id]),
        "{synced}"
    );
    let reply = room_request(
        &server,
        alice,
        Method::PUT,
        &room,
        &typing,
        Some(json!({"typing": "yes"})),
    )
    .await;
    assert_error(&reply, 400, "M_BAD_JSON");

    // Receipts: the spec's types only; `m.fully_read` has no thread.
    let receipt = |kind: &str| format!("receipt/{kind}/{}", enc(&message));
    let reply = room_request(
        &server,
        alice,
        Method::POST,
        &room,
        &receipt("m.weird"),
        Some(json!({})),
    )
    .await;
    assert_error(&reply, 400, "M_INVALID_PARAM");
    let reply = room_request(
        &server,
        alice,
        Method::POST,
        &room,
        &receipt("m.fully_read"),
        Some(json!({"thread_id": "main"})),
    )
    .await;
    assert_error(&reply, 400, "M_INVALID_PARAM");
    for kind in ["m.read", "m.read.private", "m.fully_read"] {
        let reply = room_request(
            &server,
            alice,
            Method::POST,
            &room,
            &receipt(kind),
            Some(json!({})),
        )
        .await;
        assert_eq!(reply.0, StatusCode::OK, "{kind}: {}", reply.1);
    }

    // Canonical aliases: new ones must exist and point here; malformed ones are invalid.
    for (alias, target) in [("#here:test.local", &room), ("#there:test.local", &other)] {
        let (status, body) = server
            .put(
                &format!("/_matrix/client/v3/directory/room/{}", enc(alias)),
                alice.token(),
                json!({"room_id": target}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let alias_event = |content: Value| {
        try_set_state(&server, alice, &room, "m.room.canonical_alias", "", content)
    };
    let bad = [
        (
            json!({"alias": "#here:test.local", "alt_aliases": ["#there:test.local"]}),
            "M_BAD_ALIAS",
        ),
        (
            json!({"alt_aliases": ["#nowhere:test.local"]}),
            "M_BAD_ALIAS",
        ),
        (json!({"alias": "#there:test.local"}), "M_BAD_ALIAS"),
        (json!({"alt_aliases": ["not an alias"]}), "M_INVALID_PARAM"),
        (
            json!({"alt_aliases": "#here:test.local"}),
            "M_INVALID_PARAM",
        ),
    ];
    for (content, errcode) in bad {
        let reply = alias_event(content.clone()).await;
        assert_eq!(reply.1["errcode"], errcode, "{content}: {}", reply.1);
        assert_eq!(reply.0, StatusCode::BAD_REQUEST);
    }
    let good = json!({"alias": "#here:test.local", "alt_aliases": ["#here:test.local"]});
    assert_eq!(alias_event(good).await.0, StatusCode::OK);

    // A redaction names an event of its own room.
    let reply = room_request(
        &server,
        alice,
        Method::PUT,
        &room,
        &format!("redact/{}/{}", enc(&elsewhere), txn()),
        Some(json!({})),
    )
    .await;
    assert_error(&reply, 404, "M_NOT_FOUND");
    let (status, event) = server
        .get(
            &room_path(&other, &format!("event/{}", enc(&elsewhere))),
            alice.token(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        event["unsigned"].get("redacted_because").is_none(),
        "{event}"
    );

    // `/context` in a room one may not see (private, never joined): the spec's 404.
    let context = room_path(&room, &format!("context/{}", enc(&message)));
    assert_error(&server.get(&context, bob.token()).await, 404, "M_NOT_FOUND");
    assert_eq!(server.get(&context, alice.token()).await.0, StatusCode::OK);
}

async fn set_ignored(server: &TestServer, who: &Session, ignored: &[&str]) {
    let users: serde_json::Map<String, Value> = ignored
        .iter()
        .map(|u| ((*u).to_owned(), json!({})))
        .collect();
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.ignored_user_list",
                enc(&who.user_id)
            ),
            who.token(),
            json!({"ignored_users": users}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn to_device(server: &TestServer, from: &Session, to: &Session, tag: &str) {
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/sendToDevice/m.test/{}", txn()),
            from.token(),
            json!({"messages": {&to.user_id: {&to.device_id: {"tag": tag}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// `m.ignored_user_list`: an ignored user's messages (sync, `/messages`, `/context`, `/event`),
/// invites and to-device messages do not reach the user ignoring them, and their messages do
/// not count as notifications (/sync, `/notifications`); their state events stay.
/// Un-ignoring shows them again, history included.
#[tokio::test]
async fn ignored_users_are_not_heard() {
    let server = TestServer::start().await;
    let [alice, bob, carol] = &users(&server, &["alice", "bob", "carol"]).await[..] else {
        unreachable!()
    };
    let room = create_room(&server, alice, json!({"preset": "public_chat"})).await;
    must_join(&server, bob, &room).await;
    must_join(&server, carol, &room).await;
    let since = sync(&server, bob, "timeout=0").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    set_ignored(&server, bob, &[&carol.user_id]).await;

    let from_carol = send_text(&server, carol, &room, "from carol").await;
    let from_alice = send_text(&server, alice, &room, "from alice").await;
    let carols_room = create_room(&server, carol, json!({"invite": [bob.user_id]})).await;
    to_device(&server, carol, bob, "carol").await;
    to_device(&server, alice, bob, "alice").await;

    let news = sync_since(&server, bob, &since, "").await;
    assert_eq!(
        bodies(timeline(&news, "join", &room)),
        ["from alice"],
        "{news}"
    );
    assert!(
        news["rooms"]["invite"].get(&carols_room).is_none(),
        "{news}"
    );
    let tags: Vec<&Value> = news["to_device"]["events"]
        .as_array()
        .map(|events| events.iter().map(|e| &e["content"]["tag"]).collect())
        .unwrap_or_default();
    assert_eq!(tags, [&json!("alice")], "{news}");
    // Nor do their messages count as notifications, in /sync or in `/notifications`.
    let count = |sync: &Value| {
        sync["rooms"]["join"][&room]["unread_notifications"]["notification_count"].clone()
    };
    assert_eq!(count(&news), json!(1), "{news}");
    let (status, listed) = server
        .get("/_matrix/client/v3/notifications", bob.token())
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let listed: Vec<&Value> = listed["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["event"]["event_id"])
        .collect();
    assert_eq!(listed, [&json!(from_alice)]);
    let page = must_messages(&server, bob, &room, "dir=b&limit=50").await;
    let chunk = page["chunk"].as_array().unwrap();
    assert_eq!(bodies(chunk), ["from alice"]);
    assert!(
        chunk
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["sender"] == carol.user_id.as_str()),
        "an ignored user's state events stay: {page}"
    );
    let context = server
        .get(
            &room_path(&room, &format!("context/{}", enc(&from_alice))),
            bob.token(),
        )
        .await;
    assert_eq!(context.0, StatusCode::OK, "{}", context.1);
    assert!(
        !context.1.to_string().contains("from carol"),
        "{}",
        context.1
    );
    let context = room_path(&room, &format!("context/{}", enc(&from_carol)));
    assert_error(&server.get(&context, bob.token()).await, 404, "M_NOT_FOUND");
    let event = room_path(&room, &format!("event/{}", enc(&from_carol)));
    assert_error(&server.get(&event, bob.token()).await, 404, "M_NOT_FOUND");
    // Alice, who ignores nobody, sees everything.
    let page = must_messages(&server, alice, &room, "dir=b&limit=50").await;
    assert_eq!(
        bodies(page["chunk"].as_array().unwrap()),
        ["from alice", "from carol"]
    );

    // Un-ignored: history shows Carol again, as does a full sync with her invite.
    set_ignored(&server, bob, &[]).await;
    let page = must_messages(&server, bob, &room, "dir=b&limit=50").await;
    assert_eq!(
        bodies(page["chunk"].as_array().unwrap()),
        ["from alice", "from carol"]
    );
    assert_eq!(server.get(&event, bob.token()).await.0, StatusCode::OK);
    let full = sync(&server, bob, "timeout=0").await;
    assert!(full["rooms"]["invite"][&carols_room].is_object(), "{full}");
    assert_eq!(
        bodies(timeline(&full, "join", &room)),
        ["from carol", "from alice"],
        "{full}"
    );
    assert_eq!(count(&full), json!(2), "{full}");
    let next = full["next_batch"].as_str().unwrap().to_owned();
    send_text(&server, carol, &room, "heard again").await;
    let news = sync_since(&server, bob, &next, "").await;
    assert_eq!(bodies(timeline(&news, "join", &room)), ["heard again"]);
}
