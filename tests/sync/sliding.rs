//! Simplified sliding sync (MSC4186) over HTTP: lists sorted by recency as rooms are bumped,
//! `required_state` with `$LAZY`/`$ME` and its changes, timelines usable with `/messages`,
//! room subscriptions, positions (unknown, per connection, two connections of one device),
//! long-polling, filtered lists that rooms leave, invites, and every extension.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    common::{Session, TestServer, assert_error},
    extras::{edit, send, thread_reply},
    room_api::*,
};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// One sliding sync request: `pos` and `timeout` in the query, the rest in the body.
async fn sliding(
    server: &TestServer,
    who: &Session,
    pos: Option<&str>,
    timeout_ms: u64,
    body: Value,
) -> (StatusCode, Value) {
    let mut path = format!("{PATH}?timeout={timeout_ms}");
    if let Some(pos) = pos {
        path.push_str(&format!("&pos={}", q(pos)));
    }
    server.post(&path, who.token(), body).await
}

async fn must_slide(
    server: &TestServer,
    who: &Session,
    pos: Option<&str>,
    body: Value,
) -> (String, Value) {
    let (status, response) = sliding(server, who, pos, 0, body).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    (response["pos"].as_str().expect("pos").to_owned(), response)
}

fn pairs(required: &Value) -> Vec<(String, String)> {
    required
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["state_key"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn room_list(required_state: Value, ranges: Value, timeline_limit: u64) -> Value {
    json!({
        "conn_id": "room-list",
        "lists": {"all": {
            "ranges": ranges,
            "timeline_limit": timeline_limit,
            "required_state": required_state,
        }},
    })
}

#[tokio::test]
async fn sliding_sync_lists_timelines_positions_and_connections() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let carol = server.register("carol", "password").await;
    let mut rooms = Vec::new();
    for name in ["A", "B", "C"] {
        let room = create_room(
            &server,
            &alice,
            json!({"preset": "public_chat", "name": name, "topic": format!("about {name}")}),
        )
        .await;
        must_join(&server, &bob, &room).await;
        must_join(&server, &carol, &room).await;
        rooms.push(room);
    }
    let (a, b, c) = (rooms[0].clone(), rooms[1].clone(), rooms[2].clone());
    for (room, text) in [(&a, "a1"), (&b, "b1"), (&c, "c1"), (&c, "c2"), (&c, "c3")] {
        send_text(&server, &alice, room, text).await;
    }
    let required = json!([
        ["m.room.name", ""],
        ["m.room.member", "$LAZY"],
        ["m.room.member", "$ME"],
    ]);

    // First request: the two most recent rooms of three, newest first by bump_stamp.
    let (pos, first) = must_slide(
        &server,
        &bob,
        None,
        room_list(required.clone(), json!([[0, 1]]), 2),
    )
    .await;
    assert_eq!(first["lists"]["all"]["count"], 3, "{first}");
    let sent = first["rooms"].as_object().unwrap();
    assert!(
        sent.contains_key(&c) && sent.contains_key(&b) && !sent.contains_key(&a),
        "{first}"
    );
    let room_c = &first["rooms"][&c];
    assert!(room_c["bump_stamp"].as_u64() > first["rooms"][&b]["bump_stamp"].as_u64());
    assert_eq!(room_c["initial"], true);
    assert_eq!(room_c["name"], "C");
    assert_eq!(room_c["joined_count"], 3);
    assert_eq!(bodies(room_c["timeline"].as_array().unwrap()), ["c2", "c3"]);
    assert_eq!(room_c["limited"], true);
    // $LAZY: of the members only the timeline's sender (Alice), and the user ($ME).
    let mut state = pairs(&room_c["required_state"]);
    state.sort();
    let mut expected = vec![
        ("m.room.member".to_owned(), alice.user_id.clone()),
        ("m.room.member".to_owned(), bob.user_id.clone()),
        ("m.room.name".to_owned(), String::new()),
    ];
    expected.sort();
    assert_eq!(state, expected, "{room_c}");
    let heroes = room_c["heroes"].as_array().unwrap();
    assert!(
        heroes
            .iter()
            .any(|h| h["user_id"] == alice.user_id.as_str()),
        "{room_c}"
    );
    // prev_batch pages back with /messages to what the timeline left out.
    let prev_batch = room_c["prev_batch"].as_str().unwrap();
    let older = must_messages(
        &server,
        &bob,
        &c,
        &format!("dir=b&limit=1&from={}", q(prev_batch)),
    )
    .await;
    assert_eq!(
        bodies(older["chunk"].as_array().unwrap()),
        ["c1"],
        "{older}"
    );

    // Nothing new: a request with no timeout answers at once without rooms.
    let (pos, quiet) = must_slide(
        &server,
        &bob,
        Some(&pos),
        room_list(required.clone(), json!([[0, 1]]), 2),
    )
    .await;
    assert!(quiet.get("rooms").is_none(), "{quiet}");

    // A message bumps room A to the top: it enters the range (sent in full, with its
    // timeline), B leaves it, C is not sent again.
    send_text(&server, &carol, &a, "a2").await;
    let (pos, bumped) = must_slide(
        &server,
        &bob,
        Some(&pos),
        room_list(required.clone(), json!([[0, 1]]), 2),
    )
    .await;
    let sent = bumped["rooms"].as_object().unwrap();
    assert_eq!(sent.keys().collect::<Vec<_>>(), [&a], "{bumped}");
    let room_a = &bumped["rooms"][&a];
    assert_eq!(room_a["initial"], true);
    assert_eq!(bodies(room_a["timeline"].as_array().unwrap()), ["a1", "a2"]);
    assert_eq!(room_a["num_live"], 1, "{room_a}");
    let mut members = pairs(&room_a["required_state"]);
    members.retain(|(kind, _)| kind == "m.room.member");
    assert_eq!(
        members.len(),
        3,
        "Alice and Carol sent, Bob is $ME: {room_a}"
    );

    // Unknown positions: garbage, and another connection's.
    let list = room_list(required.clone(), json!([[0, 1]]), 2);
    assert_error(
        &sliding(&server, &bob, Some("nonsense"), 0, list.clone()).await,
        400,
        "M_UNKNOWN_POS",
    );
    let encryption = json!({
        "conn_id": "encryption",
        "extensions": {"to_device": {"enabled": true}, "e2ee": {"enabled": true}},
    });
    let (enc_pos, enc_first) = must_slide(&server, &bob, None, encryption.clone()).await;
    assert!(enc_first.get("rooms").is_none() && enc_first.get("lists").is_none());
    assert_error(
        &sliding(&server, &bob, Some(&enc_pos), 0, list.clone()).await,
        400,
        "M_UNKNOWN_POS",
    );
    // Nor does another user's device share a connection.
    assert_error(
        &sliding(&server, &carol, Some(&pos), 0, list.clone()).await,
        400,
        "M_UNKNOWN_POS",
    );

    // Both connections of the device go on, each from its own state; the room list long-polls
    // and wakes on a new message, sent as the new event alone.
    let old_pos = pos;
    let (poll, ()) = tokio::join!(
        sliding(&server, &bob, Some(&old_pos), 30_000, list.clone()),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            send_text(&server, &alice, &c, "c4").await;
        }
    );
    assert_eq!(poll.0, StatusCode::OK, "{}", poll.1);
    let woke = poll.1;
    let room_c = &woke["rooms"][&c];
    assert!(room_c.get("initial").is_none(), "{woke}");
    assert_eq!(bodies(room_c["timeline"].as_array().unwrap()), ["c4"]);
    assert_eq!(room_c["num_live"], 1);
    assert!(room_c.get("limited").is_none() || room_c["limited"] == false);
    assert!(
        room_c.get("required_state").is_none(),
        "nothing changed: {room_c}"
    );
    let pos = woke["pos"].as_str().unwrap().to_owned();
    let (_, enc_next) = must_slide(&server, &bob, Some(&enc_pos), encryption.clone()).await;
    assert!(enc_next.get("rooms").is_none(), "{enc_next}");

    // A retried request (the same pos again, its answer lost) gets the same rooms again.
    let (_, again) = must_slide(&server, &bob, Some(&old_pos), list.clone()).await;
    assert_eq!(
        bodies(again["rooms"][&c]["timeline"].as_array().unwrap()),
        ["c4"]
    );
    let (_, quiet) = must_slide(&server, &bob, Some(&pos), list.clone()).await;
    assert!(quiet.get("rooms").is_none(), "{quiet}");

    // Widening required_state sends the newly asked state of the rooms in range only; a room
    // subscription adds a room outside the range, in full.
    let wider = json!([
        ["m.room.name", ""],
        ["m.room.topic", ""],
        ["m.room.member", "$LAZY"],
        ["m.room.member", "$ME"],
    ]);
    let mut request = room_list(wider, json!([[0, 1]]), 2);
    request["room_subscriptions"] =
        json!({&b: {"timeline_limit": 5, "required_state": [["*", "*"]]}});
    let (_, widened) = must_slide(&server, &bob, Some(&pos), request).await;
    for room in [&a, &c] {
        assert_eq!(
            pairs(&widened["rooms"][room]["required_state"]),
            [("m.room.topic".to_owned(), String::new())],
            "{widened}"
        );
    }
    // B was sent before (then left the range): of `*`, only what it was not sent yet.
    let room_b = &widened["rooms"][&b];
    let state = pairs(&room_b["required_state"]);
    assert!(
        state.contains(&("m.room.create".to_owned(), String::new())),
        "{room_b}"
    );
    assert!(state.contains(&("m.room.topic".to_owned(), String::new())));
    assert!(!state.contains(&("m.room.name".to_owned(), String::new())));
    assert!(room_b.get("initial").is_none());
    // Its timeline limit grew (2 in the list, 5 subscribed): the newest 5 events again.
    let timeline = room_b["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 5, "{room_b}");
    assert_eq!(timeline[4]["content"]["body"], "b1");
    assert_eq!(room_b["limited"], true);

    // Connections live in memory only: after a restart every position is unknown, and the
    // client starts over.
    assert!(server.stop(), "clean shutdown");
    server.relaunch();
    assert_error(
        &sliding(&server, &bob, Some(&pos), 0, list.clone()).await,
        400,
        "M_UNKNOWN_POS",
    );
    let (_, fresh) = must_slide(&server, &bob, None, list).await;
    assert_eq!(fresh["lists"]["all"]["count"], 3, "{fresh}");
    assert_eq!(fresh["rooms"].as_object().unwrap().len(), 2);
}

#[tokio::test]
async fn sliding_sync_filters_invites_and_extensions() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(&server, &alice, json!({"name": "Secret"})).await;
    must_invite(&server, &alice, &room, &bob.user_id).await;
    let request = json!({
        "lists": {
            "invites": {"ranges": [[0, 9]], "timeline_limit": 1, "filters": {"is_invite": true}},
            "plain": {
                "ranges": [[0, 9]], "timeline_limit": 1,
                "required_state": [["m.room.encryption", ""]],
                "filters": {"is_encrypted": false, "is_invite": false},
            },
            "encrypted": {
                "ranges": [[0, 9]], "timeline_limit": 1,
                "required_state": [["m.room.encryption", ""]],
                "filters": {"is_encrypted": true},
            },
        },
        "extensions": {
            "to_device": {"enabled": true},
            "e2ee": {"enabled": true},
            "account_data": {"enabled": true},
            "receipts": {"enabled": true},
            "typing": {"enabled": true},
        },
    });
    let count = |response: &Value, list: &str| response["lists"][list]["count"].clone();

    // An invite: in the invite list with its stripped state, the user's member event in it.
    let (pos, first) = must_slide(&server, &bob, None, request.clone()).await;
    assert_eq!(count(&first, "invites"), 1, "{first}");
    assert_eq!(count(&first, "plain"), 0);
    let invite_state = first["rooms"][&room]["invite_state"]
        .as_array()
        .expect("invite_state");
    assert!(invite_state.iter().any(|e| e["type"] == "m.room.member"
        && e["state_key"] == bob.user_id.as_str()
        && e["content"]["membership"] == "invite"));
    assert!(
        invite_state.iter().any(|e| e["type"] == "m.room.name"),
        "{first}"
    );
    let extensions = &first["extensions"];
    assert_eq!(
        extensions["e2ee"]["device_one_time_keys_count"]["signed_curve25519"],
        0
    );
    assert!(
        extensions["account_data"]["global"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.push_rules"),
        "{extensions}"
    );
    let to_device_since = extensions["to_device"]["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // Joining moves the room from the invite list to the unencrypted one, sent afresh as joined.
    must_join(&server, &bob, &room).await;
    let (pos, joined) = must_slide(&server, &bob, Some(&pos), request.clone()).await;
    assert_eq!(count(&joined, "invites"), 0, "{joined}");
    assert_eq!(count(&joined, "plain"), 1);
    let sent = &joined["rooms"][&room];
    assert_eq!(sent["initial"], true, "{sent}");
    assert!(sent.get("invite_state").is_none());
    assert_eq!(sent["joined_count"], 2);

    // Encryption moves it again; the encryption event comes as a required_state change.
    set_state(
        &server,
        &alice,
        &room,
        "m.room.encryption",
        "",
        json!({"algorithm": "m.megolm.v1.aes-sha2"}),
    )
    .await;
    let (pos, encrypted) = must_slide(&server, &bob, Some(&pos), request.clone()).await;
    assert_eq!(count(&encrypted, "plain"), 0, "{encrypted}");
    assert_eq!(count(&encrypted, "encrypted"), 1);
    assert!(
        pairs(&encrypted["rooms"][&room]["required_state"])
            .contains(&("m.room.encryption".to_owned(), String::new())),
        "{encrypted}"
    );

    // Extensions: account data, receipts, typing, to-device messages, device-list changes.
    let event = send_text(&server, &alice, &room, "hello").await;
    let (status, _) = server
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/org.example",
                enc(&bob.user_id)
            ),
            bob.token(),
            json!({"n": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{}/account_data/org.example.room",
                enc(&bob.user_id),
                enc(&room)
            ),
            bob.token(),
            json!({"n": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .post(
            &room_path(&room, &format!("receipt/m.read/{}", enc(&event))),
            alice.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .put(
            &room_path(&room, &format!("typing/{}", enc(&alice.user_id))),
            alice.token(),
            json!({"typing": true, "timeout": 30000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .put(
            "/_matrix/client/v3/sendToDevice/m.test/t1",
            alice.token(),
            json!({"messages": {&bob.user_id: {&bob.device_id: {"n": 1}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .put(
            "/_matrix/client/v3/sendToDevice/m.test/t2",
            alice.token(),
            json!({"messages": {&bob.user_id: {&bob.device_id: {"n": 2}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/devices/{}", enc(&alice.device_id)),
            alice.token(),
            json!({"display_name": "renamed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut next = request.clone();
    next["extensions"]["to_device"]["since"] = json!(to_device_since);
    next["extensions"]["to_device"]["limit"] = json!(1);
    let (pos, news) = must_slide(&server, &bob, Some(&pos), next.clone()).await;
    let extensions = &news["extensions"];
    assert!(
        extensions["account_data"]["global"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "org.example" && e["content"]["n"] == 1),
        "{extensions}"
    );
    assert_eq!(
        extensions["account_data"]["rooms"][&room][0]["type"],
        "org.example.room"
    );
    let receipt = &extensions["receipts"]["rooms"][&room];
    assert!(
        receipt["content"][&event]["m.read"][&alice.user_id].is_object(),
        "{extensions}"
    );
    assert_eq!(
        extensions["typing"]["rooms"][&room]["content"]["user_ids"],
        json!([alice.user_id])
    );
    let to_device = &extensions["to_device"];
    assert_eq!(to_device["events"][0]["content"]["n"], 1, "{extensions}");
    assert_eq!(to_device["events"][0]["sender"], alice.user_id.as_str());
    assert!(
        extensions["e2ee"]["device_lists"]["changed"]
            .as_array()
            .unwrap()
            .contains(&json!(alice.user_id)),
        "{extensions}"
    );
    assert_eq!(
        bodies(news["rooms"][&room]["timeline"].as_array().unwrap()),
        ["hello"]
    );

    // `limit: 1`: the second message follows from the first's `next_batch`. Each next `since`
    // acknowledges the messages before it: deleted, never sent again, even to a request that
    // starts over from no `since`.
    assert_eq!(to_device["events"].as_array().unwrap().len(), 1);
    let first_batch = to_device["next_batch"].as_str().unwrap().to_owned();
    next["extensions"]["to_device"]["since"] = json!(first_batch);
    let (pos, second) = must_slide(&server, &bob, Some(&pos), next.clone()).await;
    let to_device = &second["extensions"]["to_device"];
    assert_eq!(to_device["events"][0]["content"]["n"], 2, "{second}");
    assert_eq!(to_device["events"].as_array().unwrap().len(), 1);
    let acknowledged = to_device["next_batch"].as_str().unwrap().to_owned();
    next["extensions"]["to_device"]["since"] = json!(acknowledged);
    let (pos, after) = must_slide(&server, &bob, Some(&pos), next.clone()).await;
    assert!(
        after["extensions"]["to_device"].get("events").is_none(),
        "{after}"
    );
    let mut fresh = request.clone();
    fresh["conn_id"] = json!("other");
    let (_, fresh) = must_slide(&server, &bob, None, fresh).await;
    assert!(
        fresh["extensions"]["to_device"].get("events").is_none(),
        "{fresh}"
    );

    // A read receipt of the user's own (sent from another client) resends the room's counts.
    assert_eq!(news["rooms"][&room]["notification_count"], 1, "{news}");
    let (status, _) = server
        .post(
            &room_path(&room, &format!("receipt/m.read/{}", enc(&event))),
            bob.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (pos, read) = must_slide(&server, &bob, Some(&pos), next.clone()).await;
    assert_eq!(read["rooms"][&room]["notification_count"], 0, "{read}");
    assert!(read["rooms"][&room].get("timeline").is_none());

    // Leaving: the room is sent once more, ending with the leave, then is gone from the lists.
    let (status, _) = leave(&server, &bob, &room).await;
    assert_eq!(status, StatusCode::OK);
    send_text(&server, &alice, &room, "after bob left").await;
    let (pos, left) = must_slide(&server, &bob, Some(&pos), request.clone()).await;
    let timeline = left["rooms"][&room]["timeline"]
        .as_array()
        .expect("timeline");
    let last = timeline.last().unwrap();
    assert_eq!(last["type"], "m.room.member", "{left}");
    assert_eq!(last["content"]["membership"], "leave");
    let (_, gone) = must_slide(&server, &bob, Some(&pos), request.clone()).await;
    assert_eq!(count(&gone, "encrypted"), 0, "{gone}");
    assert!(gone.get("rooms").is_none(), "{gone}");

    // Room types (a space) and DMs (the user's m.direct), on a new connection.
    let space = create_room(
        &server,
        &bob,
        json!({"creation_content": {"type": "m.space"}}),
    )
    .await;
    let dm = create_room(
        &server,
        &bob,
        json!({"is_direct": true, "invite": [alice.user_id]}),
    )
    .await;
    let (status, _) = server
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.direct",
                enc(&bob.user_id)
            ),
            bob.token(),
            json!({&alice.user_id: [dm]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let list =
        |filters: Value| json!({"ranges": [[0, 9]], "timeline_limit": 0, "filters": filters});
    let filters = json!({"conn_id": "filters", "lists": {
        "spaces": list(json!({"room_types": ["m.space"]})),
        "rooms": list(json!({"not_room_types": ["m.space"]})),
        "dms": list(json!({"is_dm": true})),
        "not_dms": list(json!({"is_dm": false})),
    }});
    let (_, filtered) = must_slide(&server, &bob, None, filters).await;
    for (list, expected) in [("spaces", 1), ("rooms", 1), ("dms", 1), ("not_dms", 1)] {
        assert_eq!(count(&filtered, list), expected, "{list}: {filtered}");
    }
    // timeline_limit 0: no events, but `limited` and a prev_batch to page back from.
    let sent_space = &filtered["rooms"][&space];
    assert!(sent_space.get("timeline").is_none(), "{filtered}");
    assert_eq!(sent_space["limited"], true);
    assert!(sent_space["prev_batch"].is_string());
    assert!(filtered["rooms"][&dm].is_object());
    assert!(
        filtered["rooms"].get(&room).is_none(),
        "left before this connection"
    );
}

/// The timelines of all the rooms of a response are bundled together: each root gets the edit
/// and thread replies of its own room, and a reply sent in another room naming a root's ID
/// counts for nothing.
#[tokio::test]
async fn sliding_sync_bundles_the_relations_of_each_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let mut rooms = Vec::new();
    let mut roots = Vec::new();
    for name in ["A", "B"] {
        let room = create_room(
            &server,
            &alice,
            json!({"preset": "public_chat", "name": name}),
        )
        .await;
        must_join(&server, &bob, &room).await;
        roots.push(send_text(&server, &alice, &room, &format!("root {name}")).await);
        rooms.push(room);
    }
    let ((a, b), (root_a, root_b)) = ((&rooms[0], &rooms[1]), (&roots[0], &roots[1]));
    let message = "m.room.message";
    let edit_a = send(&server, &alice, a, message, edit(root_a, "root A, edited")).await;
    let reply_a = send(&server, &bob, a, message, thread_reply(root_a, "a1")).await;
    send(&server, &bob, b, message, thread_reply(root_b, "b1")).await;
    let reply_b = send(&server, &alice, b, message, thread_reply(root_b, "b2")).await;
    send(&server, &bob, a, message, thread_reply(root_b, "in A")).await;

    let (_, first) = must_slide(
        &server,
        &bob,
        None,
        room_list(json!([]), json!([[0, 9]]), 10),
    )
    .await;
    let root = |room: &str, id: &str| {
        let timeline = first["rooms"][room]["timeline"].as_array().unwrap();
        let root = timeline.iter().find(|e| e["event_id"] == id);
        root.unwrap_or_else(|| panic!("{id} in {first}"))["unsigned"]["m.relations"].clone()
    };
    let in_a = root(a, root_a);
    assert_eq!(in_a["m.replace"]["event_id"], edit_a.as_str(), "{in_a}");
    assert_eq!(in_a["m.thread"]["count"], 1, "{in_a}");
    assert_eq!(
        in_a["m.thread"]["latest_event"]["event_id"],
        reply_a.as_str()
    );
    assert_eq!(in_a["m.thread"]["current_user_participated"], true);
    let in_b = root(b, root_b);
    assert!(in_b.get("m.replace").is_none(), "{in_b}");
    assert_eq!(in_b["m.thread"]["count"], 2, "{in_b}");
    assert_eq!(
        in_b["m.thread"]["latest_event"]["event_id"],
        reply_b.as_str()
    );
}
