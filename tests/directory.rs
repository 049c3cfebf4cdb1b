//! Room aliases, the public room directory, the user directory and `/thirdparty/protocols`, with
//! several users, their errors and who may do what.

use crate::common;

use common::{OPEN_REGISTRATION, Session, TestServer, assert_error, assert_success};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Percent-encodes a path segment or query value (`#`, `!`, `:` and the rest).
fn enc(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn alias_path(alias: &str) -> String {
    format!("/_matrix/client/v3/directory/room/{}", enc(alias))
}

fn visibility_path(room: &str) -> String {
    format!("/_matrix/client/v3/directory/list/room/{}", enc(room))
}

fn room_path(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", enc(room))
}

const PUBLIC_ROOMS: &str = "/_matrix/client/v3/publicRooms";
const USER_SEARCH: &str = "/_matrix/client/v3/user_directory/search";

async fn create_room(server: &TestServer, who: &Session, body: Value) -> String {
    let (status, reply) = server
        .post("/_matrix/client/v3/createRoom", who.token(), body.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "createRoom {body}: {reply}");
    reply["room_id"].as_str().expect("room_id").to_owned()
}

async fn join(server: &TestServer, who: &Session, room_or_alias: &str) {
    let (status, reply) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(room_or_alias)),
            who.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "join {room_or_alias}: {reply}");
}

async fn put_alias(
    server: &TestServer,
    who: &Session,
    alias: &str,
    room: &str,
) -> (StatusCode, Value) {
    server
        .put(&alias_path(alias), who.token(), json!({"room_id": room}))
        .await
}

async fn delete_alias(server: &TestServer, who: &Session, alias: &str) -> (StatusCode, Value) {
    server
        .delete(&alias_path(alias), who.token(), json!({}))
        .await
}

async fn room_aliases(server: &TestServer, who: &Session, room: &str) -> (StatusCode, Value) {
    server.get(&room_path(room, "aliases"), who.token()).await
}

async fn state(server: &TestServer, who: &Session, room: &str, event_type: &str) -> Value {
    let (status, body) = server
        .get(
            &room_path(room, &format!("state/{event_type}/")),
            who.token(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{event_type}: {body}");
    body
}

async fn set_state(
    server: &TestServer,
    who: &Session,
    room: &str,
    event_type: &str,
    content: Value,
) {
    let (status, body) = server
        .put(
            &room_path(room, &format!("state/{event_type}/")),
            who.token(),
            content,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{event_type}: {body}");
}

/// A server admin made with the admin CLI.
async fn admin(server: &TestServer) -> Session {
    assert_success(&server.cli(
        &["admin", "add-user", "root", "--admin", "--password-stdin"],
        Some("root-pw\n"),
    ));
    server.login_session("root", "root-pw").await
}

async fn set_display_name(server: &TestServer, who: &Session, name: &str) {
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

fn room_ids(page: &Value) -> Vec<String> {
    page["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("no chunk in {page}"))
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

fn user_ids(reply: &Value) -> Vec<String> {
    reply["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {reply}"))
        .iter()
        .map(|r| r["user_id"].as_str().unwrap().to_owned())
        .collect()
}

// ---- aliases ----

#[tokio::test]
async fn aliases_are_created_resolved_and_listed() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "alice-pw").await;
    let bob = server.register("bob", "bob-pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let other_room = create_room(&server, &alice, json!({})).await;

    let (status, body) = put_alias(&server, &alice, "#lounge:test.local", &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));

    // Resolving needs no access token.
    let (status, body) = server.get(&alias_path("#lounge:test.local"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"room_id": room, "servers": ["test.local"]}));

    // Taken, whichever room it would point to.
    let taken = put_alias(&server, &alice, "#lounge:test.local", &room).await;
    assert_error(&taken, 409, "M_UNKNOWN");
    let taken = put_alias(&server, &alice, "#lounge:test.local", &other_room).await;
    assert_error(&taken, 409, "M_UNKNOWN");

    // Other servers' aliases, malformed aliases, unknown rooms.
    assert_error(
        &put_alias(&server, &alice, "#lounge:elsewhere.example", &room).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &put_alias(&server, &alice, "lounge", &room).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &put_alias(&server, &alice, "#:test.local", &room).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &put_alias(
            &server,
            &alice,
            "#nowhere:test.local",
            "!unknown:test.local",
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .put(
                &alias_path("#anon:test.local"),
                None,
                json!({"room_id": room}),
            )
            .await,
        401,
        "M_MISSING_TOKEN",
    );

    // Only members may point an alias at a room.
    assert_error(
        &put_alias(&server, &bob, "#bobs:test.local", &room).await,
        403,
        "M_FORBIDDEN",
    );

    // Unknown aliases here; another server's alias is asked of it, and a server that cannot be
    // reached is `502` (as Synapse).
    assert_error(
        &server.get(&alias_path("#missing:test.local"), None).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .get(&alias_path("#lounge:elsewhere.example"), None)
            .await,
        502,
        "M_UNKNOWN",
    );

    // The room's aliases: to members only.
    let (status, body) = room_aliases(&server, &alice, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"aliases": ["#lounge:test.local"]}));
    assert_error(
        &room_aliases(&server, &bob, &room).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &room_aliases(&server, &bob, "!unknown:test.local").await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.get(&room_path(&room, "aliases"), None).await,
        401,
        "M_MISSING_TOKEN",
    );

    // Bob joins through the alias; as a member he sees the aliases and may add his own.
    join(&server, &bob, "#lounge:test.local").await;
    let (status, body) = put_alias(&server, &bob, "#bobs:test.local", &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = room_aliases(&server, &bob, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"aliases": ["#bobs:test.local", "#lounge:test.local"]})
    );
    let (status, body) = room_aliases(&server, &alice, &other_room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"aliases": []}));
}

#[tokio::test]
async fn world_readable_rooms_show_their_aliases_to_anyone() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "alice-pw").await;
    let bob = server.register("bob", "bob-pw").await;
    let room = create_room(
        &server,
        &alice,
        json!({"room_alias_name": "open", "initial_state": [
            {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}
        ]}),
    )
    .await;
    let (status, body) = room_aliases(&server, &bob, &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"aliases": ["#open:test.local"]}));
}

#[tokio::test]
async fn who_may_delete_an_alias() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "alice-pw").await;
    let bob = server.register("bob", "bob-pw").await;
    let carol = server.register("carol", "carol-pw").await;
    let root = admin(&server).await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    for alias in ["#alices:test.local", "#alices2:test.local"] {
        assert_eq!(put_alias(&server, &alice, alias, &room).await.0, 200);
    }
    for alias in ["#bobs:test.local", "#bobs2:test.local"] {
        assert_eq!(put_alias(&server, &bob, alias, &room).await.0, 200);
    }

    // Not the creator, no power in the room (bob), or not in the room at all (carol).
    assert_error(
        &delete_alias(&server, &bob, "#alices:test.local").await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &delete_alias(&server, &carol, "#alices:test.local").await,
        403,
        "M_FORBIDDEN",
    );
    // Unknown, foreign, anonymous.
    assert_error(
        &delete_alias(&server, &alice, "#missing:test.local").await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &delete_alias(&server, &alice, "#x:elsewhere.example").await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .delete(&alias_path("#alices:test.local"), None, json!({}))
            .await,
        401,
        "M_MISSING_TOKEN",
    );

    // The creator may, even without power in the room.
    let (status, body) = delete_alias(&server, &bob, "#bobs:test.local").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    assert_error(
        &server.get(&alias_path("#bobs:test.local"), None).await,
        404,
        "M_NOT_FOUND",
    );
    // So may a member with the power to send m.room.canonical_alias (alice, the room's creator).
    assert_eq!(
        delete_alias(&server, &alice, "#bobs2:test.local").await.0,
        200
    );
    // And a server admin who is not in the room.
    assert_eq!(
        delete_alias(&server, &root, "#alices:test.local").await.0,
        200
    );
    // Gone is gone.
    assert_error(
        &delete_alias(&server, &alice, "#alices:test.local").await,
        404,
        "M_NOT_FOUND",
    );
    // Once freed, the alias can be taken again.
    assert_eq!(
        put_alias(&server, &bob, "#alices:test.local", &room)
            .await
            .0,
        200
    );

    // A server admin may also point an alias at a room they are not in.
    let (status, body) = put_alias(&server, &root, "#by-admin:test.local", &room).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Bob, given the power to change aliases, may delete others' aliases.
    let mut levels = state(&server, &alice, &room, "m.room.power_levels").await;
    levels["users"][&bob.user_id] = json!(50);
    set_state(&server, &alice, &room, "m.room.power_levels", levels).await;
    assert_eq!(
        delete_alias(&server, &bob, "#alices2:test.local").await.0,
        200
    );

    let (_, body) = room_aliases(&server, &alice, &room).await;
    assert_eq!(
        body,
        json!({"aliases": ["#alices:test.local", "#by-admin:test.local"]})
    );
}

#[tokio::test]
async fn deleting_the_canonical_alias_updates_the_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "alice-pw").await;
    let room = create_room(&server, &alice, json!({"room_alias_name": "main"})).await;
    assert_eq!(
        state(&server, &alice, &room, "m.room.canonical_alias").await,
        json!({"alias": "#main:test.local"})
    );
    for alias in ["#alt:test.local", "#alt2:test.local"] {
        assert_eq!(put_alias(&server, &alice, alias, &room).await.0, 200);
    }
    set_state(
        &server,
        &alice,
        &room,
        "m.room.canonical_alias",
        json!({"alias": "#main:test.local", "alt_aliases": ["#alt:test.local", "#alt2:test.local"]}),
    )
    .await;

    assert_eq!(
        delete_alias(&server, &alice, "#main:test.local").await.0,
        200
    );
    assert_eq!(
        state(&server, &alice, &room, "m.room.canonical_alias").await,
        json!({"alt_aliases": ["#alt:test.local", "#alt2:test.local"]})
    );
    assert_eq!(
        delete_alias(&server, &alice, "#alt:test.local").await.0,
        200
    );
    assert_eq!(
        state(&server, &alice, &room, "m.room.canonical_alias").await,
        json!({"alt_aliases": ["#alt2:test.local"]})
    );
    assert_eq!(
        delete_alias(&server, &alice, "#alt2:test.local").await.0,
        200
    );
    assert_eq!(
        state(&server, &alice, &room, "m.room.canonical_alias").await,
        json!({})
    );
}

// ---- the public room directory ----

#[tokio::test]
async fn public_rooms_list_published_joinable_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "alice-pw").await;
    let bob = server.register("bob", "bob-pw").await;
    let rust = create_room(
        &server,
        &alice,
        json!({"visibility": "public", "preset": "public_chat", "name": "Rust Lovers",
               "topic": "All about crabs", "room_alias_name": "rust"}),
    )
    .await;
    set_state(
        &server,
        &alice,
        &rust,
        "m.room.avatar",
        json!({"url": "mxc://test.local/crab"}),
    )
    .await;
    let space = create_room(
        &server,
        &alice,
        json!({"visibility": "public", "name": "Space", "creation_content": {"type": "m.space"},
               "initial_state": [
                   {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}},
                   {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}}
               ]}),
    )
    .await;
    // Unpublished, and published but invite-only: neither is listed.
    let private = create_room(&server, &alice, json!({"name": "Secret crabs"})).await;
    let invite_only = create_room(
        &server,
        &alice,
        json!({"visibility": "public", "preset": "private_chat", "name": "Invite crabs"}),
    )
    .await;
    join(&server, &bob, &space).await;

    // Needs no access token; the largest room first.
    let (status, page) = server.get(PUBLIC_ROOMS, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(room_ids(&page), [space.clone(), rust.clone()]);
    assert_eq!(page["total_room_count_estimate"], 2, "{page}");
    assert!(page.get("next_batch").is_none(), "{page}");
    assert!(page.get("prev_batch").is_none(), "{page}");
    let space_entry = &page["chunk"][0];
    assert_eq!(space_entry["name"], "Space");
    assert_eq!(space_entry["num_joined_members"], 2);
    assert_eq!(space_entry["world_readable"], true);
    assert_eq!(space_entry["guest_can_join"], true);
    assert_eq!(space_entry["room_type"], "m.space");
    assert!(
        space_entry.get("join_rule").is_none(),
        "public: {space_entry}"
    );
    let rust_entry = &page["chunk"][1];
    assert_eq!(
        rust_entry,
        &json!({
            "room_id": rust,
            "name": "Rust Lovers",
            "topic": "All about crabs",
            "canonical_alias": "#rust:test.local",
            "avatar_url": "mxc://test.local/crab",
            "num_joined_members": 1,
            "world_readable": false,
            "guest_can_join": false,
        }),
        "the public join rule is the default and may be left out"
    );

    // The filtered POST needs a token; the search term is matched on name, topic and alias.
    assert_error(
        &server.post(PUBLIC_ROOMS, None, json!({})).await,
        401,
        "M_MISSING_TOKEN",
    );
    for (term, expected) in [
        ("CRAB", vec![rust.clone()]),
        ("lovers", vec![rust.clone()]),
        ("#rust:", vec![rust.clone()]),
        ("spa", vec![space.clone()]),
        ("", vec![space.clone(), rust.clone()]),
        ("nothing like this", vec![]),
    ] {
        let (status, page) = server
            .post(
                PUBLIC_ROOMS,
                bob.token(),
                json!({"filter": {"generic_search_term": term}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(room_ids(&page), expected, "search {term:?}: {page}");
        assert_eq!(page["total_room_count_estimate"], 2, "{page}");
    }
    // Room types: `null` is a room without a type.
    let (_, page) = server
        .post(
            PUBLIC_ROOMS,
            bob.token(),
            json!({"filter": {"room_types": ["m.space"]}}),
        )
        .await;
    assert_eq!(room_ids(&page), [space.as_str()], "{page}");
    assert_eq!(page["total_room_count_estimate"], 1, "{page}");
    let (_, page) = server
        .post(
            PUBLIC_ROOMS,
            bob.token(),
            json!({"filter": {"room_types": [null]}}),
        )
        .await;
    assert_eq!(room_ids(&page), [rust.as_str()], "{page}");

    // This server by name is fine; another server is asked over federation, and one that
    // cannot be reached is `502` (tests/federation.rs asks a real Synapse).
    let (status, page) = server
        .get(&format!("{PUBLIC_ROOMS}?server=test.local"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(room_ids(&page).len(), 2);
    assert_error(
        &server
            .get(&format!("{PUBLIC_ROOMS}?server=elsewhere.example"), None)
            .await,
        502,
        "M_UNKNOWN",
    );
    assert_error(
        &server
            .post(
                &format!("{PUBLIC_ROOMS}?server=elsewhere.example"),
                bob.token(),
                json!({}),
            )
            .await,
        502,
        "M_UNKNOWN",
    );
    // No application service lists rooms here (tests/nio_client.rs has one that does); an
    // instance ID is `{appservice id}|{network id}` (Synapse's 400 otherwise).
    let (status, page) = server
        .post(
            PUBLIC_ROOMS,
            bob.token(),
            json!({"third_party_instance_id": "bridge|irc"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(room_ids(&page), Vec::<String>::new());
    let invalid = server
        .post(
            PUBLIC_ROOMS,
            bob.token(),
            json!({"third_party_instance_id": "irc"}),
        )
        .await;
    assert_error(&invalid, 400, "M_UNKNOWN");
    let (_, page) = server
        .post(
            PUBLIC_ROOMS,
            bob.token(),
            json!({"include_all_networks": true}),
        )
        .await;
    assert_eq!(room_ids(&page).len(), 2, "{page}");

    // A room nobody is joined to any more leaves the list.
    let (status, body) = server
        .post(&room_path(&rust, "leave"), alice.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, page) = server.get(PUBLIC_ROOMS, None).await;
    assert_eq!(room_ids(&page), [space.as_str()], "{page}");
    let _ = (private, invite_only);
}

#[tokio::test]
async fn room_visibility_is_read_by_anyone_and_changed_by_moderators() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "alice-pw").await;
    let bob = server.register("bob", "bob-pw").await;
    let carol = server.register("carol", "carol-pw").await;
    let root = admin(&server).await;
    let listed = create_room(
        &server,
        &alice,
        json!({"visibility": "public", "preset": "public_chat"}),
    )
    .await;
    let unlisted = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &unlisted).await;

    let visibility = |room: String| {
        let server = &server;
        async move {
            let (status, body) = server.get(&visibility_path(&room), None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["visibility"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(visibility(listed.clone()).await, "public");
    assert_eq!(visibility(unlisted.clone()).await, "private");
    assert_error(
        &server
            .get(&visibility_path("!unknown:test.local"), None)
            .await,
        404,
        "M_NOT_FOUND",
    );

    let publish = |who: Option<String>, room: String, visibility: &'static str| {
        let server = &server;
        async move {
            server
                .put(
                    &visibility_path(&room),
                    who.as_deref(),
                    json!({"visibility": visibility}),
                )
                .await
        }
    };
    // A member without power, a non-member, no token, an unknown room, a bad value.
    assert_error(
        &publish(Some(bob.access_token.clone()), unlisted.clone(), "public").await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &publish(Some(carol.access_token.clone()), unlisted.clone(), "public").await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &publish(None, unlisted.clone(), "public").await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &publish(
            Some(alice.access_token.clone()),
            "!unknown:test.local".to_owned(),
            "public",
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &publish(Some(alice.access_token.clone()), unlisted.clone(), "hidden").await,
        400,
        "M_INVALID_PARAM",
    );
    assert_eq!(visibility(unlisted.clone()).await, "private");

    // The room's creator may.
    let (status, body) =
        publish(Some(alice.access_token.clone()), unlisted.clone(), "public").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    assert_eq!(visibility(unlisted.clone()).await, "public");
    let (_, page) = server.get(PUBLIC_ROOMS, None).await;
    let mut listed_now = room_ids(&page);
    listed_now.sort();
    let mut both = vec![listed.clone(), unlisted.clone()];
    both.sort();
    assert_eq!(listed_now, both);

    // So may a server admin, in the room or not.
    let (status, body) = publish(Some(root.access_token.clone()), listed.clone(), "private").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(visibility(listed.clone()).await, "private");
    let (_, page) = server.get(PUBLIC_ROOMS, None).await;
    assert_eq!(room_ids(&page), [unlisted.as_str()]);

    // And a member given the power to send m.room.canonical_alias.
    let mut levels = state(&server, &alice, &unlisted, "m.room.power_levels").await;
    levels["events"]["m.room.canonical_alias"] = json!(10);
    levels["users"][&bob.user_id] = json!(10);
    set_state(&server, &alice, &unlisted, "m.room.power_levels", levels).await;
    let (status, body) = publish(Some(bob.access_token.clone()), unlisted.clone(), "private").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(visibility(unlisted.clone()).await, "private");
}

#[tokio::test]
async fn public_rooms_paginate_both_ways() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "alice-pw").await;
    let mut rooms = Vec::new();
    for i in 0..5 {
        rooms.push(
            create_room(
                &server,
                &alice,
                json!({"visibility": "public", "preset": "public_chat", "name": format!("Room {i}")}),
            )
            .await,
        );
    }
    // A second member puts one room first.
    let bob = server.register("bob", "bob-pw").await;
    join(&server, &bob, &rooms[3]).await;

    let (status, all) = server.get(PUBLIC_ROOMS, None).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let order = room_ids(&all);
    assert_eq!(order.len(), 5);
    assert_eq!(order[0], rooms[3], "the largest room comes first");
    let mut rest = order[1..].to_vec();
    let mut sorted = rest.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(rest, sorted, "ties are ordered by room ID");
    rest.clear();

    // Forwards, two at a time.
    let (status, page1) = server.get(&format!("{PUBLIC_ROOMS}?limit=2"), None).await;
    assert_eq!(status, StatusCode::OK, "{page1}");
    assert_eq!(room_ids(&page1), order[0..2]);
    assert!(page1.get("prev_batch").is_none(), "{page1}");
    assert_eq!(page1["total_room_count_estimate"], 5);
    let next = page1["next_batch"].as_str().expect("next_batch").to_owned();
    let (_, page2) = server
        .get(
            &format!("{PUBLIC_ROOMS}?limit=2&since={}", enc(&next)),
            None,
        )
        .await;
    assert_eq!(room_ids(&page2), order[2..4], "{page2}");
    let next = page2["next_batch"].as_str().expect("next_batch").to_owned();
    let (_, page3) = server
        .get(
            &format!("{PUBLIC_ROOMS}?limit=2&since={}", enc(&next)),
            None,
        )
        .await;
    assert_eq!(room_ids(&page3), order[4..5], "{page3}");
    assert!(page3.get("next_batch").is_none(), "{page3}");

    // Backwards from the last page, through the filtered POST.
    let prev = page3["prev_batch"].as_str().expect("prev_batch").to_owned();
    let (status, back) = server
        .post(
            PUBLIC_ROOMS,
            alice.token(),
            json!({"limit": 2, "since": prev}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(room_ids(&back), order[2..4], "{back}");
    let prev = back["prev_batch"].as_str().expect("prev_batch").to_owned();
    let (_, back) = server
        .post(
            PUBLIC_ROOMS,
            alice.token(),
            json!({"limit": 2, "since": prev}),
        )
        .await;
    assert_eq!(room_ids(&back), order[0..2], "{back}");
    assert!(back.get("prev_batch").is_none(), "{back}");
    assert!(back.get("next_batch").is_some(), "{back}");

    // Pagination within a search.
    let (_, filtered) = server
        .post(
            PUBLIC_ROOMS,
            alice.token(),
            json!({"limit": 1, "filter": {"generic_search_term": "room"}}),
        )
        .await;
    assert_eq!(room_ids(&filtered), order[0..1], "{filtered}");
    assert!(filtered.get("next_batch").is_some(), "{filtered}");

    for bad in ["garbage", "x1_!a:test.local", "n_!a:test.local"] {
        assert_error(
            &server
                .get(&format!("{PUBLIC_ROOMS}?since={}", enc(bad)), None)
                .await,
            400,
            "M_INVALID_PARAM",
        );
    }
}

// ---- the user directory ----

#[tokio::test]
async fn user_directory_finds_room_mates_and_people_in_public_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "alice-pw").await;
    let bob = server.register("bob", "bob-pw").await;
    let carol = server.register("carol", "carol-pw").await;
    let dave = server.register("dave", "dave-pw").await;
    let eve = server.register("eve", "eve-pw").await;
    set_display_name(&server, &bob, "Bobby Tables").await;
    set_display_name(&server, &carol, "Carol Àlvarez").await;

    // Alice and Bob share a private room; Carol is in a public room; Dave and Eve share a
    // private room of their own.
    let private = create_room(&server, &alice, json!({"invite": [bob.user_id]})).await;
    join(&server, &bob, &private).await;
    create_room(&server, &carol, json!({"preset": "public_chat"})).await;
    let theirs = create_room(&server, &dave, json!({"invite": [eve.user_id]})).await;
    join(&server, &eve, &theirs).await;

    let search = |who: &Session, body: Value| {
        let (server, token) = (&server, who.access_token.clone());
        async move {
            let (status, reply) = server.post(USER_SEARCH, Some(&token), body).await;
            assert_eq!(status, StatusCode::OK, "{reply}");
            reply
        }
    };

    let reply = search(&alice, json!({"search_term": "bob"})).await;
    assert_eq!(
        reply,
        json!({"results": [{"user_id": "@bob:test.local", "display_name": "Bobby Tables"}],
               "limited": false})
    );
    // Display names and localparts, ignoring case (also beyond ASCII).
    for term in [
        "TABLES",
        "bobby t",
        "Bob",
        "@bob:test",
        "àlv",
        "ÀLVAREZ",
        "caro",
    ] {
        let reply = search(&alice, json!({"search_term": term})).await;
        assert_eq!(user_ids(&reply).len(), 1, "{term}: {reply}");
    }
    // Carol is in a public room: everyone finds her, and she finds herself.
    for who in [&alice, &dave, &carol] {
        let reply = search(who, json!({"search_term": "carol"})).await;
        assert_eq!(user_ids(&reply), ["@carol:test.local"], "{reply}");
    }
    // Bob and Eve are only in private rooms: only their room mates find them.
    assert_eq!(
        user_ids(&search(&dave, json!({"search_term": "bob"})).await).len(),
        0
    );
    assert_eq!(
        user_ids(&search(&alice, json!({"search_term": "eve"})).await).len(),
        0
    );
    assert_eq!(
        user_ids(&search(&dave, json!({"search_term": "eve"})).await),
        ["@eve:test.local"]
    );
    // Nobody finds themselves through a private room alone, nor the server name.
    assert_eq!(
        user_ids(&search(&alice, json!({"search_term": "alice"})).await).len(),
        0
    );
    assert_eq!(
        user_ids(&search(&alice, json!({"search_term": "test.local"})).await).len(),
        0
    );
    assert_eq!(
        user_ids(&search(&alice, json!({"search_term": ""})).await).len(),
        0
    );

    // The limit, and `limited` when more matched; the best match first.
    let reply = search(&alice, json!({"search_term": "b"})).await;
    assert_eq!(user_ids(&reply), ["@bob:test.local"], "{reply}");
    let reply = search(&alice, json!({"search_term": "o", "limit": 1})).await;
    assert_eq!(user_ids(&reply).len(), 1, "{reply}");
    assert_eq!(reply["limited"], true, "{reply}");
    let reply = search(&alice, json!({"search_term": "o", "limit": 10})).await;
    let mut found = user_ids(&reply);
    found.sort();
    assert_eq!(found, ["@bob:test.local", "@carol:test.local"], "{reply}");
    assert_eq!(reply["limited"], false, "{reply}");

    // Leaving the shared room hides Bob from Alice.
    let (status, body) = server
        .post(&room_path(&private, "leave"), bob.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        user_ids(&search(&alice, json!({"search_term": "bob"})).await).len(),
        0
    );

    // Deactivated accounts are never found.
    assert_success(&server.cli(&["admin", "deactivate", "carol"], None));
    assert_eq!(
        user_ids(&search(&alice, json!({"search_term": "carol"})).await).len(),
        0
    );

    assert_error(
        &server
            .post(USER_SEARCH, None, json!({"search_term": "bob"}))
            .await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server.post(USER_SEARCH, alice.token(), json!({})).await,
        400,
        "M_BAD_JSON",
    );
}

#[tokio::test]
async fn search_all_users_finds_every_active_account() {
    let server = TestServer::start_with_config(&format!(
        "{OPEN_REGISTRATION}user_directory:\n  search_all_users: true\n"
    ))
    .await;
    let alice = server.register("alice", "alice-pw").await;
    server.register("bob", "bob-pw").await;
    server.register("bobette", "bobette-pw").await;
    let (status, reply) = server
        .post(USER_SEARCH, alice.token(), json!({"search_term": "bob"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        user_ids(&reply),
        ["@bob:test.local", "@bobette:test.local"],
        "an exact match first"
    );
    let (_, reply) = server
        .post(USER_SEARCH, alice.token(), json!({"search_term": "alice"}))
        .await;
    assert_eq!(user_ids(&reply), ["@alice:test.local"]);

    assert_success(&server.cli(&["admin", "deactivate", "bob"], None));
    let (_, reply) = server
        .post(USER_SEARCH, alice.token(), json!({"search_term": "bob"}))
        .await;
    assert_eq!(user_ids(&reply), ["@bobette:test.local"]);
}

#[test]
fn the_user_directory_config_key_is_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.yaml");
    let check = |yaml: &str| {
        std::fs::write(&path, yaml).expect("write config");
        common::appliance(
            &["--config", common::path_str(&path), "config", "check"],
            None,
        )
    };
    let printed = assert_success(&check("user_directory: {search_all_users: true}\n"));
    let config: serde_yaml::Value = serde_yaml::from_str(&printed).expect("YAML");
    assert_eq!(config["user_directory"]["search_all_users"], true);
    let printed = assert_success(&check("server_name: example.org\n"));
    let config: serde_yaml::Value = serde_yaml::from_str(&printed).expect("YAML");
    assert_eq!(
        config["user_directory"]["search_all_users"], false,
        "the default"
    );
    let refused = common::assert_failure(&check("user_directory:\n  search_everything: true\n"));
    assert!(refused.contains("search_everything"), "{refused}");
}

// ---- third-party networks ----

#[tokio::test]
async fn no_third_party_protocols() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "alice-pw").await;
    let (status, body) = server
        .get("/_matrix/client/v3/thirdparty/protocols", alice.token())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    assert_error(
        &server
            .get("/_matrix/client/v3/thirdparty/protocols", None)
            .await,
        401,
        "M_MISSING_TOKEN",
    );
}

/// `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}` and MSC3266's unstable paths.
fn summary_paths(room_or_alias: &str) -> [String; 3] {
    let room = enc(room_or_alias);
    [
        format!("/_matrix/client/v1/room_summary/{room}"),
        format!("/_matrix/client/unstable/im.nheko.summary/summary/{room}"),
        format!("/_matrix/client/unstable/im.nheko.summary/rooms/{room}/summary"),
    ]
}

async fn summary(server: &TestServer, who: Option<&Session>, room: &str) -> (StatusCode, Value) {
    let [stable, ..] = summary_paths(room);
    server.get(&stable, who.and_then(Session::token)).await
}

/// Room summaries (MSC3266): the rooms anyone may see (public, knockable, world-readable) to
/// anyone, signed in or not, by ID or alias on every path; the others only to their members,
/// invitees and, for a restricted room, members of an allowed room; every other room answers
/// exactly as one that does not exist.
#[tokio::test]
async fn room_summaries_show_what_the_user_may_see() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw-alice").await;
    let bob = server.register("bob", "pw-bob").await;
    let public = create_room(
        &server,
        &alice,
        json!({
            "preset": "public_chat", "name": "Lobby", "topic": "Say hello",
            "room_alias_name": "lobby",
            "initial_state": [{"type": "m.room.encryption", "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
        }),
    )
    .await;
    let private = create_room(&server, &alice, json!({"name": "Secret"})).await;
    let readable = create_room(
        &server,
        &alice,
        json!({"name": "Readable", "initial_state": [{"type": "m.room.history_visibility",
            "state_key": "", "content": {"history_visibility": "world_readable"}}]}),
    )
    .await;
    let knock = create_room(
        &server,
        &alice,
        json!({"name": "Knock", "initial_state": [{"type": "m.room.join_rules",
            "state_key": "", "content": {"join_rule": "knock"}}]}),
    )
    .await;
    let space = create_room(
        &server,
        &alice,
        json!({"name": "Space", "creation_content": {"type": "m.space"}}),
    )
    .await;
    let restricted = create_room(
        &server,
        &alice,
        json!({"name": "Members of the space", "initial_state": [{"type": "m.room.join_rules",
            "state_key": "", "content": {"join_rule": "restricted",
            "allow": [{"type": "m.room_membership", "room_id": space}]}}]}),
    )
    .await;

    // A public room by ID and by alias, on all three paths, to a user who is not in it.
    let alias = "#lobby:test.local";
    for path in summary_paths(&public).iter().chain(&summary_paths(alias)) {
        let (status, body) = server.get(path, bob.token()).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["room_id"], public.as_str(), "{path}: {body}");
        assert_eq!(body["name"], "Lobby", "{body}");
        assert_eq!(body["topic"], "Say hello", "{body}");
        assert_eq!(body["canonical_alias"], alias, "{body}");
        assert_eq!(body["num_joined_members"], 1, "{body}");
        // `public` is the default, which ruma leaves out (the spec allows it).
        assert!(
            body.get("join_rule").is_none_or(|rule| rule == "public"),
            "{body}"
        );
        assert_eq!(body["world_readable"], false, "{body}");
        assert_eq!(body["guest_can_join"], false, "{body}");
        assert_eq!(body["encryption"], "m.megolm.v1.aes-sha2", "{body}");
        assert_eq!(body["room_version"], "12", "{body}");
        assert_eq!(body["membership"], "leave", "{body}");
        assert!(body.get("room_type").is_none(), "{body}");
    }
    // Without a token: the same summary, with no membership.
    let (status, anonymous) = summary(&server, None, &public).await;
    assert_eq!(status, StatusCode::OK, "{anonymous}");
    assert_eq!(anonymous["name"], "Lobby", "{anonymous}");
    assert!(anonymous.get("membership").is_none(), "{anonymous}");
    // The member sees their own membership.
    assert_eq!(
        summary(&server, Some(&alice), &public).await.1["membership"],
        "join"
    );

    // World-readable and knockable rooms are visible too; the space says its type.
    let (status, body) = summary(&server, Some(&bob), &readable).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["world_readable"].clone(), body["join_rule"].clone()),
        (json!(true), json!("invite"))
    );
    let (status, body) = summary(&server, None, &knock).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["join_rule"], "knock", "{body}");
    let (status, body) = summary(&server, Some(&alice), &space).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_type"], "m.space", "{body}");

    // A private room is, to others, a room that does not exist: same status, same errcode.
    for who in [Some(&bob), None] {
        for room in [&private, &space, &restricted] {
            assert_error(&summary(&server, who, room).await, 404, "M_NOT_FOUND");
        }
        assert_error(
            &summary(&server, who, "!nowhere:test.local").await,
            404,
            "M_NOT_FOUND",
        );
        assert_error(
            &summary(&server, who, "#nowhere:test.local").await,
            404,
            "M_NOT_FOUND",
        );
    }
    // An invite shows it, with the membership.
    let (status, body) = server
        .post(
            &room_path(&private, "invite"),
            alice.token(),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = summary(&server, Some(&bob), &private).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["name"].clone(), body["membership"].clone()),
        (json!("Secret"), json!("invite"))
    );

    // A restricted room shows to members of a room its join rule allows.
    set_state(
        &server,
        &alice,
        &space,
        "m.room.join_rules",
        json!({"join_rule": "public"}),
    )
    .await;
    join(&server, &bob, &space).await;
    let (status, body) = summary(&server, Some(&bob), &restricted).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["join_rule"], "restricted", "{body}");
    assert_eq!(body["allowed_room_ids"], json!([space]), "{body}");
    assert_eq!(body["membership"], "leave", "{body}");
    assert_error(
        &summary(&server, None, &restricted).await,
        404,
        "M_NOT_FOUND",
    );
}

/// `GET /_matrix/client/v1/rooms/{roomId}/hierarchy` (Element's "Explore space"): a space's rooms
/// depth first in the spec's order of children (`order`, then the link's age), only those the
/// user may see, with `max_depth`, `suggested_only`, pages, and the spec's errors.
#[tokio::test]
async fn a_space_hierarchy_shows_what_the_user_may_see() {
    use crate::room_api::set_state;
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw-alice").await;
    let bob = server.register("bob", "pw-bob").await;
    let public_space = |name: &str| {
        let space = json!({"type": "m.space"});
        json!({"preset": "public_chat", "name": name, "creation_content": space})
    };
    let space = create_room(&server, &alice, public_space("Space")).await;
    let sub = create_room(&server, &alice, public_space("Sub")).await;
    let public = |name: &str| json!({"preset": "public_chat", "name": name});
    let lobby = create_room(&server, &alice, public("Lobby")).await;
    let deep = create_room(&server, &alice, public("Deep")).await;
    let secret = create_room(&server, &alice, json!({"name": "Secret"})).await;
    // Children in the order the spec sorts them: `order` first ("a" < "b"), the rest by age.
    let link = |order: Option<&str>, suggested: bool| {
        let mut content = json!({"via": ["test.local"], "suggested": suggested});
        if let Some(order) = order {
            content["order"] = json!(order);
        }
        content
    };
    set_state(
        &server,
        &alice,
        &space,
        "m.space.child",
        &lobby,
        link(Some("b"), true),
    )
    .await;
    set_state(
        &server,
        &alice,
        &space,
        "m.space.child",
        &sub,
        link(Some("a"), false),
    )
    .await;
    set_state(
        &server,
        &alice,
        &space,
        "m.space.child",
        &secret,
        link(None, false),
    )
    .await;
    set_state(
        &server,
        &alice,
        &sub,
        "m.space.child",
        &deep,
        link(None, false),
    )
    .await;
    // A link without `via` links nothing.
    set_state(&server, &alice, &sub, "m.space.child", &lobby, json!({})).await;

    let hierarchy = async |who: &Session, room: &str, query: &str| {
        server
            .get(
                &format!("/_matrix/client/v1/rooms/{}/hierarchy?{query}", enc(room)),
                who.token(),
            )
            .await
    };
    let rooms = |answer: &(StatusCode, Value)| -> Vec<String> {
        assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
        answer.1["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|room| room["room_id"].as_str().unwrap().to_owned())
            .collect()
    };

    let all = hierarchy(&alice, &space, "").await;
    assert_eq!(
        rooms(&all),
        [
            space.as_str(),
            sub.as_str(),
            deep.as_str(),
            lobby.as_str(),
            secret.as_str()
        ],
        "{}",
        all.1
    );
    let first = &all.1["rooms"][0];
    assert_eq!(first["name"], "Space");
    assert_eq!(first["room_type"], "m.space");
    assert_eq!(
        first["children_state"].as_array().unwrap().len(),
        3,
        "{first}"
    );
    assert!(all.1.get("next_batch").is_none(), "{}", all.1);
    // Bob, in none of them, sees the public ones.
    let by_bob = hierarchy(&bob, &space, "").await;
    assert_eq!(
        rooms(&by_bob),
        [space.as_str(), sub.as_str(), deep.as_str(), lobby.as_str()],
        "{}",
        by_bob.1
    );
    let shallow = hierarchy(&alice, &space, "max_depth=1").await;
    assert_eq!(
        rooms(&shallow),
        [
            space.as_str(),
            sub.as_str(),
            lobby.as_str(),
            secret.as_str()
        ]
    );
    let suggested = hierarchy(&alice, &space, "suggested_only=true").await;
    assert_eq!(rooms(&suggested), [space.as_str(), lobby.as_str()]);
    // Pages: two rooms, then the rest.
    let page = hierarchy(&bob, &space, "limit=2").await;
    assert_eq!(rooms(&page), [space.as_str(), sub.as_str()]);
    let next = page.1["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let rest = hierarchy(&bob, &space, &format!("limit=2&from={next}")).await;
    assert_eq!(rooms(&rest), [deep.as_str(), lobby.as_str()]);
    assert!(rest.1.get("next_batch").is_none(), "{}", rest.1);

    assert_error(&hierarchy(&bob, &secret, "").await, 403, "M_FORBIDDEN");
    assert_error(
        &hierarchy(&bob, &space, "limit=0").await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &hierarchy(&bob, &space, "from=nonsense").await,
        400,
        "M_INVALID_PARAM",
    );
}
