//! Bad input from another server (a fake one written here, since a real server does not send
//! it): each PDU is refused or rejected as the spec says, nothing of it reaches a client, and
//! the server stays up.

use ruma::CanonicalJsonValue;
use serde_json::{Value, json};

use super::{
    FederatingAppliance,
    accounts::Account,
    fake_server::{FakeServer, new_key},
    support::TestCa,
};

/// The per-PDU answer of a transaction for `event_id`: `Ok` or the error text.
fn pdu_result(answer: &Value, event_id: &str) -> Result<(), String> {
    match answer["pdus"].get(event_id) {
        Some(result) if result.get("error").is_some() => {
            Err(result["error"].as_str().unwrap_or_default().to_owned())
        }
        Some(_) => Ok(()),
        None => Err(format!("no answer for {event_id}: {answer}")),
    }
}

fn text(body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body})
}

/// A remote server joins a room of the appliance, then sends, one transaction each: a good
/// message (seen), a message with a forged signature (dropped), one whose content does not match
/// its hash (redacted), a power-level change its user may not make (rejected), an oversized
/// event (dropped), a replay of an earlier transaction ID (answered as before, not processed),
/// a request signed with another key (401), and, once the room's ACL denies the server, a good
/// message (refused). The appliance's user sees only what the spec lets through.
#[tokio::test(flavor = "multi_thread")]
async fn bad_pdus_from_a_remote_server_never_reach_clients() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let ours = FederatingAppliance::start(&ca);
    let fake = FakeServer::start(&ca).await;
    let alice = Account::register(ours.port, &roots, "alice").await;
    let room_id = alice.create_room(json!({"preset": "public_chat"})).await;
    let mut room = fake.join(ours.port, &room_id, "mallory").await;
    alice
        .wait_for_event(&room_id, "mallory's join", |e| {
            e["type"] == "m.room.member" && e["state_key"] == room.user_id.as_str()
        })
        .await;

    // A good message: accepted and seen.
    let mut good = room.event("m.room.message", None, text("hello"));
    let good_id = fake.sign_event(&mut good, &room.version);
    let (status, answer) = fake
        .send_transaction(ours.port, "t1", vec![serde_json::to_value(&good).unwrap()])
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        pdu_result(&answer, &good_id),
        Ok(()),
        "{}",
        ours.appliance.log_text()
    );
    room.advance(&good_id);
    alice.wait_for_text(&room_id, &room.user_id, "hello").await;

    // A forged signature: signed by a key that is not the server's, under its key ID.
    let forger = FakeServer {
        key: std::sync::Arc::new(new_key("fake")),
        ..fake_clone(&fake)
    };
    let mut forged = room.event("m.room.message", None, text("forged"));
    let forged_id = forger.sign_event(&mut forged, &room.version);
    let (_, answer) = fake
        .send_transaction(
            ours.port,
            "t2",
            vec![serde_json::to_value(&forged).unwrap()],
        )
        .await;
    assert!(pdu_result(&answer, &forged_id).is_err(), "{answer}");

    // Content changed after hashing: redacted, then accepted (the spec's step 3).
    let mut tampered = room.event("m.room.message", None, text("original"));
    let tampered_id = fake.sign_event(&mut tampered, &room.version);
    if let Some(CanonicalJsonValue::Object(content)) = tampered.get_mut("content") {
        content.insert("body".into(), CanonicalJsonValue::String("changed".into()));
    }
    let (_, answer) = fake
        .send_transaction(
            ours.port,
            "t3",
            vec![serde_json::to_value(&tampered).unwrap()],
        )
        .await;
    assert_eq!(pdu_result(&answer, &tampered_id), Ok(()), "{answer}");
    room.advance(&tampered_id);
    let seen = alice
        .wait_for_event(&room_id, "the tampered event", |e| {
            e["event_id"] == tampered_id.as_str()
        })
        .await;
    assert_eq!(seen["content"], json!({}), "redacted: {seen}");

    // Power levels mallory may not change: rejected, the room's state unchanged.
    let mut coup = room.event(
        "m.room.power_levels",
        Some(""),
        json!({"users": {room.user_id.clone(): 100}}),
    );
    let coup_id = fake.sign_event(&mut coup, &room.version);
    let (_, answer) = fake
        .send_transaction(ours.port, "t4", vec![serde_json::to_value(&coup).unwrap()])
        .await;
    assert!(pdu_result(&answer, &coup_id).is_err(), "{answer}");
    let power = &alice.state(&room_id).await[&("m.room.power_levels".to_owned(), String::new())];
    assert!(power["users"].get(&room.user_id).is_none(), "{power}");

    // An event over 65,536 bytes: dropped.
    // ruma refuses to sign it: signed small, then grown (the size is checked first).
    let mut huge = room.event("m.room.message", None, text("small"));
    let huge_id = fake.sign_event(&mut huge, &room.version);
    if let Some(CanonicalJsonValue::Object(content)) = huge.get_mut("content") {
        content.insert(
            "body".into(),
            CanonicalJsonValue::String("x".repeat(70_000)),
        );
    }
    let (status, answer) = fake
        .send_transaction(ours.port, "t5", vec![serde_json::to_value(&huge).unwrap()])
        .await;
    assert!(
        status != 200 || pdu_result(&answer, &huge_id).is_err(),
        "{answer}"
    );

    // A replayed transaction ID: the first answer again, the new PDU not processed.
    let mut replayed = room.event("m.room.message", None, text("replayed"));
    let replayed_id = fake.sign_event(&mut replayed, &room.version);
    let (status, again) = fake
        .send_transaction(
            ours.port,
            "t1",
            vec![serde_json::to_value(&replayed).unwrap()],
        )
        .await;
    assert_eq!(status, 200);
    assert!(again["pdus"].get(&replayed_id).is_none(), "{again}");
    assert!(again["pdus"].get(&good_id).is_some(), "{again}");

    // A request signed with a key that is not the server's: 401.
    let other_key = new_key("fake");
    let (status, reply) = fake
        .request_signed_with(
            &other_key,
            ours.port,
            http::Method::PUT,
            "/_matrix/federation/v1/send/t6",
            Some(
                &json!({"origin": fake.server_name, "origin_server_ts": 0, "pdus": [], "edus": []}),
            ),
        )
        .await;
    assert_eq!(status, 401, "{reply}");
    assert_eq!(reply["errcode"], "M_UNAUTHORIZED");

    // The room's ACL denies the server: even a good PDU is refused.
    alice
        .send_state(
            &room_id,
            "m.room.server_acl",
            "",
            json!({"allow": ["*"], "deny": [fake.server_name.split(':').next().unwrap()], "allow_ip_literals": false}),
        )
        .await;
    let mut after_acl = room.event("m.room.message", None, text("after the ACL"));
    let after_acl_id = fake.sign_event(&mut after_acl, &room.version);
    let (_, answer) = fake
        .send_transaction(
            ours.port,
            "t7",
            vec![serde_json::to_value(&after_acl).unwrap()],
        )
        .await;
    assert!(pdu_result(&answer, &after_acl_id).is_err(), "{answer}");

    // Nothing refused reached alice; the server still answers.
    let events = alice.recent_events(&room_id).await;
    for refused in [&forged_id, &coup_id, &huge_id, &replayed_id, &after_acl_id] {
        assert!(
            !events.iter().any(|e| e["event_id"] == refused.as_str()),
            "{refused} reached a client: {events:?}"
        );
    }
    let bodies: Vec<&str> = events
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    for body in ["forged", "replayed", "after the ACL", "changed"] {
        assert!(
            !bodies.contains(&body),
            "{body:?} reached a client: {bodies:?}"
        );
    }
}

/// A PDU whose prev events the appliance lacks, from a server that answers
/// `/get_missing_events` with events that are themselves missing their parents (an endless
/// chain, and a cycle): the appliance asks a bounded number of times (a round that brings
/// nothing new ends the gap's rounds; the state from `/state_ids`, which this server does not
/// answer, is asked for at most twice), refuses the PDU, and stays up.
#[tokio::test(flavor = "multi_thread")]
async fn an_endless_gap_is_bounded() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let ours = FederatingAppliance::start(&ca);
    let fake = FakeServer::start(&ca).await;
    let alice = Account::register(ours.port, &roots, "alice").await;
    let room_id = alice.create_room(json!({"preset": "public_chat"})).await;
    let mut room = fake.join(ours.port, &room_id, "mallory").await;

    // Events that point at parents nobody has: each answer of get_missing_events is one of them.
    let mut chain = Vec::new();
    for n in 0..20 {
        room.latest = format!("$nonexistent{n}");
        let mut event = room.event("m.room.message", None, text(&format!("gap {n}")));
        fake.sign_event(&mut event, &room.version);
        chain.push(serde_json::to_value(&event).unwrap());
    }
    fake.behaviour.lock().unwrap().missing_events = chain.clone();
    let mut last = room.event("m.room.message", None, text("after the gap"));
    let (_, answer) = {
        let id = fake.sign_event(&mut last, &room.version);
        let reply = fake
            .send_transaction(ours.port, "gap", vec![serde_json::to_value(&last).unwrap()])
            .await;
        assert!(pdu_result(&reply.1, &id).is_err(), "{}", reply.1);
        reply
    };
    assert!(answer.is_object());
    let asked = fake
        .behaviour
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|(_, path)| path.contains("get_missing_events"))
        .count();
    assert!(asked <= 2, "get_missing_events asked {asked} times");
    let state_asked = fake
        .behaviour
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|(_, path)| path.contains("/state_ids/"))
        .count();
    assert!(state_asked <= 2, "state_ids asked {state_asked} times");
    let (status, _) = alice.get("/_matrix/client/versions").await;
    assert_eq!(status, 200);
    let bodies: Vec<String> = alice
        .recent_events(&room_id)
        .await
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !bodies
            .iter()
            .any(|b| b.starts_with("gap") || b == "after the gap"),
        "{bodies:?}"
    );
}

/// The same server under another key: a forger.
fn fake_clone(fake: &FakeServer) -> FakeServer {
    FakeServer {
        port: fake.port,
        server_name: fake.server_name.clone(),
        key: fake.key.clone(),
        behaviour: fake.behaviour.clone(),
        roots: fake.roots_clone(),
    }
}
