//! Invites across servers, both ways, and their rejection (`make_leave` / `send_leave`), with
//! Synapse; what Synapse never sends (invites for users of other servers, unsupported room
//! versions, bad signatures) from the fake server.

use ruma::{CanonicalJsonObject, RoomVersionId};
use serde_json::{Value, json};

use super::{
    FederatingAppliance, Pair,
    accounts::{Account, encode},
    fake_server::{FakeServer, new_key, now_ms},
    support::TestCa,
};

/// The `invite_state` events of `room` in a /sync response, once it is there.
fn invite_state(sync: &Value, room: &str) -> Option<Vec<Value>> {
    sync["rooms"]["invite"][room]["invite_state"]["events"]
        .as_array()
        .cloned()
}

fn find<'a>(events: &'a [Value], kind: &str, state_key: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["type"] == kind && e["state_key"] == state_key)
        .unwrap_or_else(|| panic!("no {kind} {state_key:?} in {events:#?}"))
}

/// An appliance user invites a Synapse user: Synapse's /sync shows the invite with the room's
/// name and the inviter's member event; the Synapse user joins and messages flow both ways.
#[tokio::test(flavor = "multi_thread")]
async fn an_appliance_user_invites_a_synapse_user() {
    let Pair {
        ca: _ca,
        roots: _roots,
        ours,
        synapse,
        alice,
        bob,
    } = Pair::start().await;

    let (status, reply) = bob
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                encode(&bob.user_id)
            ),
            json!({"displayname": "Bob on Synapse"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");

    let room = alice
        .create_room(json!({"preset": "private_chat", "name": "Secret"}))
        .await;
    let (status, reply) = alice.invite(&room, &bob.user_id).await;
    assert_eq!(
        status,
        200,
        "{reply}\nthe appliance's log:\n{}\nSynapse's log:\n{}",
        ours.appliance.log_text(),
        synapse.log_tail()
    );
    let state = bob
        .wait_for_sync("alice's invite", |s| invite_state(s, &room))
        .await;
    assert_eq!(find(&state, "m.room.name", "")["content"]["name"], "Secret");
    let inviter = find(&state, "m.room.member", &alice.user_id);
    assert_eq!(inviter["content"]["membership"], "join");
    let invite = find(&state, "m.room.member", &bob.user_id);
    assert_eq!(invite["content"]["membership"], "invite");
    assert_eq!(invite["sender"], alice.user_id.as_str());
    // With the invitee's name from their server's profile, as Synapse's invites carry it.
    assert_eq!(invite["content"]["displayname"], "Bob on Synapse");
    // The countersigned invite is in the room on the appliance.
    let members = alice.state(&room).await;
    let bobs = &members[&("m.room.member".to_owned(), bob.user_id.clone())];
    assert_eq!(bobs["membership"], "invite");
    assert_eq!(bobs["displayname"], "Bob on Synapse");

    // Synapse joins through the inviter's server.
    let (status, reply) = bob.join(&room, &[]).await;
    assert_eq!(status, 200, "{reply}\n{}", synapse.log_tail());
    alice
        .wait_for_event(&room, "bob's join", |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == bob.user_id.as_str()
                && e["content"]["membership"] == "join"
        })
        .await;
    let hello = alice.send_text(&room, "glad you came").await;
    let seen = bob
        .wait_for_text(&room, &alice.user_id, "glad you came")
        .await;
    assert_eq!(seen["event_id"], hello.as_str());
    let reply_id = bob.send_text(&room, "thanks for the invite").await;
    let seen = alice
        .wait_for_text(&room, &bob.user_id, "thanks for the invite")
        .await;
    assert_eq!(seen["event_id"], reply_id.as_str());
}

/// `createRoom` with a Synapse user in `invite` (a direct chat) reaches Synapse with the spec's
/// recommended stripped state (name, avatar, join rules, encryption, alias, create event and the
/// inviter's member event) in `invite_room_state`.
#[tokio::test(flavor = "multi_thread")]
async fn create_room_invites_a_synapse_user() {
    let Pair {
        ca: _ca,
        roots: _roots,
        ours: _ours,
        synapse: _synapse,
        alice,
        bob,
    } = Pair::start().await;

    let room = alice
        .create_room(json!({"preset": "trusted_private_chat", "is_direct": true,
        "invite": [bob.user_id], "name": "Just us", "room_alias_name": "justus",
        "initial_state": [
            {"type": "m.room.encryption", "state_key": "",
             "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            {"type": "m.room.avatar", "state_key": "", "content": {"url": "mxc://a/b"}},
        ]}))
        .await;
    let state = bob
        .wait_for_sync("alice's direct invite", |s| invite_state(s, &room))
        .await;
    let invite = find(&state, "m.room.member", &bob.user_id);
    assert_eq!(invite["content"]["membership"], "invite");
    assert_eq!(invite["content"]["is_direct"], true);
    find(&state, "m.room.member", &alice.user_id);
    find(&state, "m.room.create", "");
    assert_eq!(
        find(&state, "m.room.name", "")["content"]["name"],
        "Just us"
    );
    assert_eq!(
        find(&state, "m.room.avatar", "")["content"]["url"],
        "mxc://a/b"
    );
    assert_eq!(
        find(&state, "m.room.join_rules", "")["content"]["join_rule"],
        "invite"
    );
    let encryption = find(&state, "m.room.encryption", "");
    assert_eq!(encryption["content"]["algorithm"], "m.megolm.v1.aes-sha2");
    let alias = find(&state, "m.room.canonical_alias", "");
    assert!(
        alias["content"]["alias"]
            .as_str()
            .is_some_and(|a| a.starts_with("#justus:"))
    );
    // As for a local invitee, trusted_private_chat makes the invitee an admin.
    let levels = &alice.state(&room).await[&("m.room.power_levels".to_owned(), String::new())];
    assert_eq!(levels["users"][&bob.user_id], 100);
}

/// A Synapse user invites an appliance user: the appliance's /sync shows the invite with the
/// room's name and the inviter's member event; the appliance user joins by room ID with no
/// server named (the inviter's server is asked) and messages flow both ways.
#[tokio::test(flavor = "multi_thread")]
async fn a_synapse_user_invites_an_appliance_user() {
    let Pair {
        ca: _ca,
        roots: _roots,
        ours,
        synapse,
        alice,
        bob,
    } = Pair::start().await;

    let room = bob
        .create_room(json!({"preset": "private_chat", "name": "Hideout"}))
        .await;
    let (status, reply) = bob.invite(&room, &alice.user_id).await;
    assert_eq!(
        status,
        200,
        "{reply}\nthe appliance's log:\n{}\nSynapse's log:\n{}",
        ours.appliance.log_text(),
        synapse.log_tail()
    );
    let state = alice
        .wait_for_sync("bob's invite", |s| invite_state(s, &room))
        .await;
    assert_eq!(
        find(&state, "m.room.name", "")["content"]["name"],
        "Hideout"
    );
    assert_eq!(
        find(&state, "m.room.member", &bob.user_id)["content"]["membership"],
        "join"
    );
    let invite = find(&state, "m.room.member", &alice.user_id);
    assert_eq!(invite["content"]["membership"], "invite");
    assert_eq!(invite["sender"], bob.user_id.as_str());

    let (status, reply) = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/join", encode(&room)),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{reply}\n{}", ours.appliance.log_text());
    assert!(alice.sees_joined(&room).await);
    let sync = alice
        .wait_for_sync("the joined room", |s| {
            s["rooms"]["join"].get(&room).map(|_| s.clone())
        })
        .await;
    assert!(
        sync["rooms"]["invite"].get(&room).is_none(),
        "the invite is gone once joined"
    );
    bob.wait_for_event(&room, "alice's join", |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == alice.user_id.as_str()
            && e["content"]["membership"] == "join"
    })
    .await;
    let from_synapse = bob.send_text(&room, "welcome in").await;
    let seen = alice.wait_for_text(&room, &bob.user_id, "welcome in").await;
    assert_eq!(seen["event_id"], from_synapse.as_str());
    let from_us = alice.send_text(&room, "nice hideout").await;
    let seen = bob
        .wait_for_text(&room, &alice.user_id, "nice hideout")
        .await;
    assert_eq!(seen["event_id"], from_us.as_str());
}

/// Invites rejected both ways: an appliance user rejects a Synapse invite (`make_leave` /
/// `send_leave` to Synapse, which then shows the leave; the appliance's /sync moves the room
/// from `invite` to `leave`), and a Synapse user rejects an appliance invite (Synapse's
/// `make_leave` / `send_leave` to the appliance, which shows the leave in the room).
#[tokio::test(flavor = "multi_thread")]
async fn invites_are_rejected_both_ways() {
    let Pair {
        ca: _ca,
        roots: _roots,
        ours,
        synapse,
        alice,
        bob,
    } = Pair::start().await;

    // The appliance's user rejects.
    let theirs = bob.create_room(json!({"preset": "private_chat"})).await;
    let (status, reply) = bob.invite(&theirs, &alice.user_id).await;
    assert_eq!(status, 200, "{reply}\n{}", ours.appliance.log_text());
    alice
        .wait_for_sync("bob's invite", |s| invite_state(s, &theirs))
        .await;
    let (status, reply) = alice.leave(&theirs).await;
    assert_eq!(status, 200, "{reply}\n{}", ours.appliance.log_text());
    bob.wait_for_event(&theirs, "alice's rejection", |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == alice.user_id.as_str()
            && e["content"]["membership"] == "leave"
    })
    .await;
    let sync = alice
        .wait_for_sync("the rejected room among the left ones", |s| {
            s["rooms"]["leave"].get(&theirs).map(|_| s.clone())
        })
        .await;
    assert!(sync["rooms"]["invite"].get(&theirs).is_none(), "{sync}");
    let leave = &sync["rooms"]["leave"][&theirs]["timeline"]["events"][0];
    assert_eq!(leave["content"]["membership"], "leave", "{sync}");
    assert_eq!(leave["state_key"], alice.user_id.as_str());

    // Synapse's user rejects.
    let ours_room = alice.create_room(json!({"preset": "private_chat"})).await;
    let (status, reply) = alice.invite(&ours_room, &bob.user_id).await;
    assert_eq!(status, 200, "{reply}\n{}", ours.appliance.log_text());
    bob.wait_for_sync("alice's invite", |s| invite_state(s, &ours_room))
        .await;
    let (status, reply) = bob.leave(&ours_room).await;
    assert_eq!(status, 200, "{reply}\n{}", synapse.log_tail());
    alice
        .wait_for_event(&ours_room, "bob's rejection", |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == bob.user_id.as_str()
                && e["content"]["membership"] == "leave"
        })
        .await;
}

/// An invite event of the fake server's room for `invitee`, signed by the fake server.
fn fake_invite(fake: &FakeServer, room_id: &str, invitee: &str) -> CanonicalJsonObject {
    serde_json::from_value(json!({
        "room_id": room_id,
        "sender": format!("@mallory:{}", fake.server_name),
        "type": "m.room.member",
        "state_key": invitee,
        "content": {"membership": "invite"},
        "origin_server_ts": now_ms(),
        "depth": 5,
        "prev_events": ["$notheld1"],
        "auth_events": ["$notheld2"],
    }))
    .unwrap()
}

/// What Synapse never sends: an invite for a user of another server (`400`), of a room version
/// the appliance does not support (`400 M_INCOMPATIBLE_ROOM_VERSION`), signed with a key that is
/// not the origin's (`403`). A good invite is answered with the appliance's signature added and
/// shows in /sync (one from an ignored user does not); rejected while the fake server cannot take
/// the leave, it is still rejected here.
#[tokio::test(flavor = "multi_thread")]
async fn bad_invites_are_refused() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let ours = FederatingAppliance::start(&ca);
    let fake = FakeServer::start(&ca).await;
    let alice = Account::register(ours.port, &roots, "alice").await;
    let room_id = format!("!hall:{}", fake.server_name);
    let version = RoomVersionId::V10;
    let put_invite = |event: CanonicalJsonObject, event_id: String, version: &str| {
        let body = json!({"room_version": version, "event": event, "invite_room_state": []});
        let path = format!(
            "/_matrix/federation/v2/invite/{}/{}",
            encode(&room_id),
            encode(&event_id)
        );
        let fake = &fake;
        async move {
            fake.request(ours.port, http::Method::PUT, &path, Some(&body))
                .await
        }
    };

    // For a user of another server.
    let mut event = fake_invite(&fake, &room_id, "@someone:elsewhere.example");
    let id = fake.sign_event(&mut event, &version);
    let (status, reply) = put_invite(event, id, "10").await;
    assert_eq!(status, 400, "{reply}");

    // For a user that does not exist here.
    let mut event = fake_invite(&fake, &room_id, &format!("@ghost:{}", ours.server_name));
    let id = fake.sign_event(&mut event, &version);
    let (status, reply) = put_invite(event, id, "10").await;
    assert_eq!(status, 404, "{reply}");

    // Of a room version the appliance does not support.
    let mut event = fake_invite(&fake, &room_id, &alice.user_id);
    let id = fake.sign_event(&mut event, &version);
    let (status, reply) = put_invite(event, id, "1").await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["errcode"], "M_INCOMPATIBLE_ROOM_VERSION", "{reply}");

    // Signed with a key that is not the fake server's.
    let mut event = fake_invite(&fake, &room_id, &alice.user_id);
    let rules = version.rules().unwrap();
    ruma::signatures::hash_and_sign_event(
        &fake.server_name,
        &new_key("fake"),
        &mut event,
        &rules.redaction,
    )
    .unwrap();
    let id = format!(
        "${}",
        ruma::signatures::reference_hash(&event, &rules).unwrap()
    );
    let (status, reply) = put_invite(event, id, "10").await;
    assert_eq!(status, 403, "{reply}");
    assert_eq!(reply["errcode"], "M_FORBIDDEN");
    let (_, sync) = alice.get("/_matrix/client/v3/sync?timeout=0").await;
    assert!(sync["rooms"]["invite"].get(&room_id).is_none(), "{sync}");

    // From a user alice ignores: accepted, never shown.
    let eve = format!("@eve:{}", fake.server_name);
    let (status, reply) = alice
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.ignored_user_list",
                encode(&alice.user_id)
            ),
            json!({"ignored_users": serde_json::Map::from_iter([(eve.clone(), json!({}))])}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let eve_room = format!("!yard:{}", fake.server_name);
    let mut event = fake_invite(&fake, &eve_room, &alice.user_id);
    event.insert("sender".into(), eve.clone().into());
    let id = fake.sign_event(&mut event, &version);
    let body = json!({"room_version": "10", "event": event, "invite_room_state": []});
    let (status, reply) = fake
        .request(
            ours.port,
            http::Method::PUT,
            &format!(
                "/_matrix/federation/v2/invite/{}/{}",
                encode(&eve_room),
                encode(&id)
            ),
            Some(&body),
        )
        .await;
    assert_eq!(status, 200, "{reply}");

    // A good one: signed by the appliance too, and shown with its stripped state.
    let mut event = fake_invite(&fake, &room_id, &alice.user_id);
    let id = fake.sign_event(&mut event, &version);
    let name = json!({"type": "m.room.name", "state_key": "", "content": {"name": "Hall"},
        "sender": format!("@mallory:{}", fake.server_name)});
    let body = json!({"room_version": "10", "event": event, "invite_room_state": [name]});
    let (status, reply) = fake
        .request(
            ours.port,
            http::Method::PUT,
            &format!(
                "/_matrix/federation/v2/invite/{}/{}",
                encode(&room_id),
                encode(&id)
            ),
            Some(&body),
        )
        .await;
    assert_eq!(status, 200, "{reply}\n{}", ours.appliance.log_text());
    assert!(
        reply["event"]["signatures"][&ours.server_name].is_object(),
        "{reply}"
    );
    let state = alice
        .wait_for_sync("mallory's invite", |s| invite_state(s, &room_id))
        .await;
    assert_eq!(find(&state, "m.room.name", "")["content"]["name"], "Hall");
    let (_, sync) = alice.get("/_matrix/client/v3/sync?timeout=0").await;
    assert!(sync["rooms"]["invite"].get(&room_id).is_some(), "{sync}");
    assert!(
        sync["rooms"]["invite"].get(&eve_room).is_none(),
        "an ignored user's invite is hidden: {sync}"
    );

    // The fake server serves no make_leave: the rejection holds here all the same.
    let (status, reply) = alice.leave(&room_id).await;
    assert_eq!(status, 200, "{reply}");
    let sync = alice
        .wait_for_sync("the rejection", |s| {
            s["rooms"]["leave"].get(&room_id).map(|_| s.clone())
        })
        .await;
    assert!(sync["rooms"]["invite"].get(&room_id).is_none());
    let (status, reply) = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/forget", encode(&room_id)),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    alice
        .wait_for_sync("the forgotten room gone", |s| {
            s["rooms"]["leave"].get(&room_id).is_none().then_some(())
        })
        .await;
}

/// The deprecated `PUT /_matrix/federation/v1/invite` (Synapse sends only v2): the body is the
/// invite PDU of a room version 1/2 format event (event ID inside, stripped state in its
/// `unsigned`); answered `[200, {"event": …}]` with the appliance's signature, and the invite
/// shows in /sync with its stripped state. The event ID in the path must be the event's.
#[tokio::test(flavor = "multi_thread")]
async fn invite_v1_is_served() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let ours = FederatingAppliance::start(&ca);
    let fake = FakeServer::start(&ca).await;
    let alice = Account::register(ours.port, &roots, "alice").await;
    let room_id = format!("!old:{}", fake.server_name);
    let event_id = format!("$invite1:{}", fake.server_name);
    let mallory = format!("@mallory:{}", fake.server_name);
    let mut event: CanonicalJsonObject = serde_json::from_value(json!({
        "event_id": event_id,
        "room_id": room_id,
        "sender": mallory,
        "origin": fake.server_name,
        "type": "m.room.member",
        "state_key": alice.user_id,
        "content": {"membership": "invite"},
        "origin_server_ts": now_ms(),
        "depth": 5,
        "prev_events": [[format!("$prev:{}", fake.server_name), {"sha256": "aGFzaA"}]],
        "auth_events": [[format!("$create:{}", fake.server_name), {"sha256": "aGFzaA"}]],
    }))
    .unwrap();
    fake.sign_event(&mut event, &RoomVersionId::V2);
    let mut body = serde_json::to_value(&event).unwrap();
    body["unsigned"] = json!({"invite_room_state": [{"type": "m.room.name", "state_key": "",
        "content": {"name": "Old hall"}, "sender": mallory}]});
    let path = |id: &str| {
        format!(
            "/_matrix/federation/v1/invite/{}/{}",
            encode(&room_id),
            encode(id)
        )
    };

    let other_id = format!("$other:{}", fake.server_name);
    let (status, reply) = fake
        .request(ours.port, http::Method::PUT, &path(&other_id), Some(&body))
        .await;
    assert_eq!(
        (status, &reply["errcode"]),
        (400, &json!("M_BAD_JSON")),
        "{reply}"
    );

    let (status, reply) = fake
        .request(ours.port, http::Method::PUT, &path(&event_id), Some(&body))
        .await;
    assert_eq!(status, 200, "{reply}\n{}", ours.appliance.log_text());
    assert_eq!(
        reply[0], 200,
        "v1's answer is [200, {{\"event\": …}}]: {reply}"
    );
    let signed = &reply[1]["event"];
    assert_eq!(signed["event_id"], event_id.as_str(), "{reply}");
    assert!(
        signed["signatures"][&ours.server_name].is_object(),
        "{reply}"
    );
    assert!(
        signed["signatures"][&fake.server_name].is_object(),
        "{reply}"
    );
    let state = alice
        .wait_for_sync("mallory's v1 invite", |s| invite_state(s, &room_id))
        .await;
    assert_eq!(
        find(&state, "m.room.name", "")["content"]["name"],
        "Old hall"
    );
    let invite = find(&state, "m.room.member", &alice.user_id);
    assert_eq!(invite["sender"], mallory.as_str());
}

/// A room whose join rule is `knock`, named `name`, created by `account`.
async fn knock_room(account: &Account, name: &str) -> String {
    account
        .create_room(
            json!({"preset": "private_chat", "name": name, "initial_state": [
                {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}
            ]}),
        )
        .await
}

/// Knocks both ways: an appliance user knocks on a Synapse room (`make_knock` / `send_knock`
/// to Synapse; the appliance's /sync shows it under `rooms.knock` with the room's name) and
/// withdraws it (a leave through Synapse); a Synapse user knocks on an appliance room.
#[tokio::test(flavor = "multi_thread")]
async fn knocks_both_ways() {
    let Pair {
        ca: _ca,
        roots: _roots,
        ours,
        synapse,
        alice,
        bob,
    } = Pair::start().await;

    let theirs = knock_room(&bob, "Porch").await;
    let (status, reply) = alice
        .post(
            &format!(
                "/_matrix/client/v3/knock/{}?via={}",
                encode(&theirs),
                encode(&synapse.server_name)
            ),
            json!({"reason": "let me in"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}\n{}", ours.appliance.log_text());
    let knock_state = alice
        .wait_for_sync("the knock", |s| {
            s["rooms"]["knock"][&theirs]["knock_state"]["events"]
                .as_array()
                .cloned()
        })
        .await;
    assert_eq!(
        find(&knock_state, "m.room.name", "")["content"]["name"],
        "Porch"
    );
    assert_eq!(
        find(&knock_state, "m.room.member", &alice.user_id)["content"]["membership"],
        "knock"
    );
    bob.wait_for_event(&theirs, "alice's knock", |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == alice.user_id.as_str()
            && e["content"]["membership"] == "knock"
            && e["content"]["reason"] == "let me in"
    })
    .await;
    let (status, reply) = alice.leave(&theirs).await;
    assert_eq!(status, 200, "{reply}");
    bob.wait_for_event(&theirs, "alice's withdrawn knock", |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == alice.user_id.as_str()
            && e["content"]["membership"] == "leave"
    })
    .await;
    alice
        .wait_for_sync("the withdrawn knock among the left rooms", |s| {
            (s["rooms"]["leave"].get(&theirs).is_some()
                && s["rooms"]["knock"].get(&theirs).is_none())
            .then_some(())
        })
        .await;

    let ours_room = knock_room(&alice, "Doorstep").await;
    let (status, reply) = bob
        .post(
            &format!(
                "/_matrix/client/v3/knock/{}?via={}",
                encode(&ours_room),
                encode(&ours.server_name)
            ),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{reply}\n{}", synapse.log_tail());
    alice
        .wait_for_event(&ours_room, "bob's knock", |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == bob.user_id.as_str()
                && e["content"]["membership"] == "knock"
        })
        .await;
    let knock_state = bob
        .wait_for_sync("bob's knock", |s| {
            s["rooms"]["knock"][&ours_room]["knock_state"]["events"]
                .as_array()
                .cloned()
        })
        .await;
    assert_eq!(
        find(&knock_state, "m.room.name", "")["content"]["name"],
        "Doorstep"
    );
}

/// An invite the invitee's server does not countersign fails for the client with that server's
/// answer (the fake server serves no `/invite`: its `404 M_UNRECOGNIZED`), one that cannot be
/// reached with `502`; neither invite enters the room.
#[tokio::test(flavor = "multi_thread")]
async fn refused_or_unreachable_invites_fail_for_the_client() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let ours = FederatingAppliance::start(&ca);
    let fake = FakeServer::start(&ca).await;
    let alice = Account::register(ours.port, &roots, "alice").await;
    let room = alice.create_room(json!({"preset": "private_chat"})).await;

    let refusing = format!("@mallory:{}", fake.server_name);
    let (status, reply) = alice.invite(&room, &refusing).await;
    assert_eq!(status, 404, "{reply}");
    assert_eq!(reply["errcode"], "M_UNRECOGNIZED", "{reply}");

    let closed = super::support::free_port();
    let unreachable = format!("@nobody:localhost:{closed}");
    let (status, reply) = alice.invite(&room, &unreachable).await;
    assert_eq!(status, 502, "{reply}");

    let state = alice.state(&room).await;
    for user in [&refusing, &unreachable] {
        assert!(
            !state.contains_key(&("m.room.member".to_owned(), user.clone())),
            "{state:?}"
        );
    }
}
