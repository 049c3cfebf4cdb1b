//! Push rules (`/pushrules`), `m.push_rules` in /sync, and the notification counts /sync computes
//! from the rules; pushers, push delivery to a gateway and `/notifications` (`pushers.rs`).

use crate::common;
#[path = "push_rules/pushers.rs"]
mod pushers;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Session, TestServer, assert_error};
use serde_json::{Value, json};

const RULES: &str = "/_matrix/client/v3/pushrules";

async fn create_public_room(server: &TestServer, owner: &Session, joiners: &[&Session]) -> String {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            owner.token(),
            json!({"preset": "public_chat"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let room = body["room_id"].as_str().unwrap().to_owned();
    for who in joiners {
        let (status, body) = server
            .post(
                &format!("/_matrix/client/v3/join/{room}"),
                who.token(),
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    room
}

async fn send(server: &TestServer, who: &Session, room: &str, content: Value) -> String {
    static TXN: AtomicUsize = AtomicUsize::new(0);
    let txn = TXN.fetch_add(1, Ordering::Relaxed);
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t{txn}"),
            who.token(),
            content,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

async fn text(server: &TestServer, who: &Session, room: &str, body: &str) -> String {
    send(
        server,
        who,
        room,
        json!({"msgtype": "m.text", "body": body}),
    )
    .await
}

async fn sync(server: &TestServer, who: &Session, query: &str) -> Value {
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/sync?timeout=0{query}"),
            who.token(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `(notification_count, highlight_count)` of a room in a fresh /sync.
async fn counts(server: &TestServer, who: &Session, room: &str) -> (u64, u64) {
    let body = sync(server, who, "").await;
    let unread = &body["rooms"]["join"][room]["unread_notifications"];
    (
        unread["notification_count"]
            .as_u64()
            .expect("notification_count"),
        unread["highlight_count"].as_u64().expect("highlight_count"),
    )
}

async fn read_up_to(
    server: &TestServer,
    who: &Session,
    room: &str,
    event: &str,
    thread: Option<&str>,
) {
    let body = match thread {
        Some(thread) => json!({"thread_id": thread}),
        None => json!({}),
    };
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}"),
            who.token(),
            body,
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

fn rule_ids(rules: &Value) -> Vec<&str> {
    rules
        .as_array()
        .expect("a list of rules")
        .iter()
        .map(|r| r["rule_id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn default_rules_and_their_management() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;

    let (status, all) = server.get(&format!("{RULES}/"), alice.token()).await;
    assert_eq!(status, 200, "{all}");
    let overrides = rule_ids(&all["global"]["override"]);
    assert_eq!(overrides[0], ".m.rule.master");
    assert!(
        overrides.contains(&".m.rule.is_user_mention"),
        "{overrides:?}"
    );
    assert!(rule_ids(&all["global"]["underride"]).contains(&".m.rule.message"));
    let mention = all["global"]["override"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule_id"] == ".m.rule.is_user_mention")
        .unwrap();
    assert_eq!(
        mention["conditions"][0]["value"], "@alice:test.local",
        "the defaults are the user's own: {mention}"
    );
    let (status, global) = server.get(&format!("{RULES}/global/"), alice.token()).await;
    assert_eq!(status, 200, "{global}");
    assert_eq!(global, all["global"]);

    let (status, master) = server
        .get(
            &format!("{RULES}/global/override/.m.rule.master"),
            alice.token(),
        )
        .await;
    assert_eq!(status, 200, "{master}");
    assert_eq!(master["default"], true);
    assert_eq!(master["enabled"], false);
    assert_error(
        &server
            .get(&format!("{RULES}/global/override/nope"), alice.token())
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server.get(&format!("{RULES}/"), None).await,
        401,
        "M_MISSING_TOKEN",
    );

    // User rules, placed with `before` and `after`.
    let cake = json!({
        "conditions": [{"kind": "event_match", "key": "content.body", "pattern": "cake"}],
        "actions": ["notify"],
    });
    for path in ["a", "b?after=a", "c?before=a"] {
        let (status, body) = server
            .put(
                &format!("{RULES}/global/override/{path}"),
                alice.token(),
                cake.clone(),
            )
            .await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (_, global) = server.get(&format!("{RULES}/global/"), alice.token()).await;
    let overrides = rule_ids(&global["override"]);
    assert_eq!(
        overrides[..4],
        [".m.rule.master", "c", "a", "b"],
        "{overrides:?}"
    );
    let (status, a) = server
        .get(&format!("{RULES}/global/override/a"), alice.token())
        .await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["default"], false);
    assert_eq!(a["enabled"], true);
    assert_eq!(a["actions"], json!(["notify"]));
    assert_eq!(a["conditions"][0]["pattern"], "cake");

    let (status, body) = server
        .put(
            &format!("{RULES}/global/content/cakes"),
            alice.token(),
            json!({"pattern": "cake*", "actions": ["notify", {"set_tweak": "highlight"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, cakes) = server
        .get(&format!("{RULES}/global/content/cakes"), alice.token())
        .await;
    assert_eq!(cakes["pattern"], "cake*");
    assert_eq!(
        cakes["actions"],
        json!(["notify", {"set_tweak": "highlight"}])
    );

    // What the spec refuses.
    assert_error(
        &server
            .put(
                &format!("{RULES}/global/override/d?before=nope"),
                alice.token(),
                cake.clone(),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .put(
                &format!("{RULES}/global/override/.m.rule.mine"),
                alice.token(),
                cake.clone(),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .put(
                &format!("{RULES}/global/override/.m.rule.master"),
                alice.token(),
                cake.clone(),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .put(
                &format!("{RULES}/global/override/e?after=.m.rule.master"),
                alice.token(),
                cake.clone(),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
    let (status, _) = server
        .put(
            &format!("{RULES}/global/content/nopattern"),
            alice.token(),
            json!({"actions": []}),
        )
        .await;
    assert_eq!(status, 400);
    assert_error(
        &server
            .delete(
                &format!("{RULES}/global/override/.m.rule.master"),
                alice.token(),
                json!({}),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .delete(
                &format!("{RULES}/global/override/nope"),
                alice.token(),
                json!({}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );

    let (status, body) = server
        .delete(
            &format!("{RULES}/global/override/a"),
            alice.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &server
            .get(&format!("{RULES}/global/override/a"), alice.token())
            .await,
        404,
        "M_NOT_FOUND",
    );
    let (_, global) = server.get(&format!("{RULES}/global/"), alice.token()).await;
    assert_eq!(
        rule_ids(&global["override"])[..3],
        [".m.rule.master", "c", "b"]
    );

    // Enabled and actions, of default rules too.
    let enabled = format!("{RULES}/global/override/.m.rule.master/enabled");
    let (status, body) = server.get(&enabled, alice.token()).await;
    assert_eq!((status.as_u16(), body), (200, json!({"enabled": false})));
    let (status, body) = server
        .put(&enabled, alice.token(), json!({"enabled": true}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = server.get(&enabled, alice.token()).await;
    assert_eq!(body, json!({"enabled": true}));
    assert_error(
        &server
            .put(
                &format!("{RULES}/global/override/nope/enabled"),
                alice.token(),
                json!({"enabled": true}),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );

    let actions = format!("{RULES}/global/underride/.m.rule.message/actions");
    let (_, body) = server.get(&actions, alice.token()).await;
    assert_eq!(body, json!({"actions": ["notify"]}));
    let (status, body) = server
        .put(
            &actions,
            alice.token(),
            json!({"actions": ["notify", {"set_tweak": "sound", "value": "default"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = server.get(&actions, alice.token()).await;
    assert_eq!(
        body,
        json!({"actions": ["notify", {"set_tweak": "sound", "value": "default"}]})
    );
    assert_error(
        &server
            .get(
                &format!("{RULES}/global/underride/nope/actions"),
                alice.token(),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );

    // Another user's rules are untouched.
    let bob = server.register("bob", "correct horse").await;
    let (_, body) = server.get(&enabled, bob.token()).await;
    assert_eq!(body, json!({"enabled": false}));

    // Changes survive a restart.
    let mut server = server;
    server.restart();
    let (_, body) = server.get(&enabled, alice.token()).await;
    assert_eq!(body, json!({"enabled": true}));
    let (_, global) = server.get(&format!("{RULES}/global/"), alice.token()).await;
    assert_eq!(
        rule_ids(&global["override"])[..3],
        [".m.rule.master", "c", "b"]
    );
}

fn push_rules_in(sync: &Value) -> Option<&Value> {
    sync["account_data"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == "m.push_rules")
}

#[tokio::test]
async fn push_rules_are_account_data_in_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;

    let first = sync(&server, &alice, "").await;
    let rules = push_rules_in(&first).expect("m.push_rules in a first sync");
    assert_eq!(
        rules["content"]["global"]["override"][0]["rule_id"],
        ".m.rule.master"
    );
    let since = first["next_batch"].as_str().unwrap();
    let quiet = sync(&server, &alice, &format!("&since={since}")).await;
    assert!(
        push_rules_in(&quiet).is_none(),
        "unchanged rules are not sent again"
    );

    let (status, body) = server
        .put(
            &format!("{RULES}/global/sender/@spam:test.local"),
            alice.token(),
            json!({"actions": []}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let next = sync(&server, &alice, &format!("&since={since}")).await;
    let rules = push_rules_in(&next).expect("changed rules are in the next sync");
    assert_eq!(
        rules["content"]["global"]["sender"][0]["rule_id"],
        "@spam:test.local"
    );
    assert_eq!(
        rules["content"]["global"]["override"][0]["rule_id"], ".m.rule.master",
        "the whole ruleset, defaults included"
    );
    // Also through the account data API, as Synapse shows it.
    let (status, body) = server
        .get(
            "/_matrix/client/v3/user/@alice:test.local/account_data/m.push_rules",
            alice.token(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["global"]["sender"][0]["rule_id"], "@spam:test.local");
}

#[tokio::test]
async fn notification_counts_follow_the_push_rules() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let bob = server.register("bob", "correct horse").await;
    let carol = server.register("carol", "correct horse").await;
    let (status, body) = server
        .put(
            "/_matrix/client/v3/profile/@bob:test.local/displayname",
            bob.token(),
            json!({"displayname": "Bobby Tables"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Three members: the one-to-one rules do not apply.
    let room = create_public_room(&server, &alice, &[&bob, &carol]).await;
    assert_eq!(
        counts(&server, &bob, &room).await,
        (0, 0),
        "joining is no notification"
    );

    text(&server, &alice, &room, "hello").await;
    assert_eq!(counts(&server, &bob, &room).await, (1, 0));

    // An intentional mention highlights.
    send(
        &server,
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "Bobby Tables: look", "m.mentions": {"user_ids": ["@bob:test.local"]}}),
    )
    .await;
    assert_eq!(counts(&server, &bob, &room).await, (2, 1));
    assert_eq!(
        counts(&server, &carol, &room).await,
        (2, 0),
        "only bob is mentioned"
    );

    // Notices do not notify (`.m.rule.suppress_notices`).
    let notice = send(
        &server,
        &alice,
        &room,
        json!({"msgtype": "m.notice", "body": "bot says"}),
    )
    .await;
    assert_eq!(counts(&server, &bob, &room).await, (2, 1));

    // A read receipt resets the counts.
    read_up_to(&server, &bob, &room, &notice, None).await;
    assert_eq!(counts(&server, &bob, &room).await, (0, 0));
    assert_eq!(counts(&server, &carol, &room).await, (2, 0));

    // Sending is reading: one's own message counts as a receipt, and never notifies oneself.
    text(&server, &alice, &room, "anyone?").await;
    assert_eq!(counts(&server, &bob, &room).await, (1, 0));
    text(&server, &bob, &room, "me").await;
    assert_eq!(counts(&server, &bob, &room).await, (0, 0));
    assert_eq!(
        counts(&server, &carol, &room).await,
        (4, 0),
        "bob's message counts for carol"
    );

    // A disabled rule stops counting.
    let message_rule = format!("{RULES}/global/underride/.m.rule.message/enabled");
    let (status, body) = server
        .put(&message_rule, bob.token(), json!({"enabled": false}))
        .await;
    assert_eq!(status, 200, "{body}");
    let quiet = text(&server, &alice, &room, "nobody listens").await;
    assert_eq!(counts(&server, &bob, &room).await, (0, 0));
    assert_eq!(counts(&server, &carol, &room).await, (5, 0));
    read_up_to(&server, &bob, &room, &quiet, None).await;

    // A rule on the display name (the legacy mention condition) sees bob's name in the room.
    let (status, body) = server
        .put(
            &format!("{RULES}/global/override/my_name"),
            bob.token(),
            json!({"conditions": [{"kind": "contains_display_name"}], "actions": ["notify", {"set_tweak": "highlight"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    text(&server, &alice, &room, "where is Bobby Tables?").await;
    assert_eq!(counts(&server, &bob, &room).await, (1, 1));
    text(&server, &alice, &room, "no names here").await;
    assert_eq!(counts(&server, &bob, &room).await, (1, 1));

    // A sender rule with no actions mutes carol for bob.
    let (status, body) = server
        .put(&message_rule, bob.token(), json!({"enabled": true}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        counts(&server, &bob, &room).await,
        (2, 1),
        "counts use the current rules"
    );
    let (status, body) = server
        .put(
            &format!("{RULES}/global/sender/@carol:test.local"),
            bob.token(),
            json!({"actions": []}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    text(&server, &carol, &room, "muted").await;
    assert_eq!(counts(&server, &bob, &room).await, (2, 1));
    text(&server, &alice, &room, "not muted").await;
    assert_eq!(counts(&server, &bob, &room).await, (3, 1));
}

#[tokio::test]
async fn two_people_and_room_mentions() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let bob = server.register("bob", "correct horse").await;
    let room = create_public_room(&server, &alice, &[&bob]).await;

    // In a room of two, messages notify even with `.m.rule.message` off (`.m.rule.room_one_to_one`).
    let (status, body) = server
        .put(
            &format!("{RULES}/global/underride/.m.rule.message/enabled"),
            bob.token(),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    text(&server, &alice, &room, "just us").await;
    assert_eq!(counts(&server, &bob, &room).await, (1, 0));

    // `@room` highlights when the sender may notify the room (alice created it: power 100).
    send(
        &server,
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "@room hi", "m.mentions": {"room": true}}),
    )
    .await;
    assert_eq!(counts(&server, &bob, &room).await, (2, 1));
    // Bob has power 0: his `@room` notifies alice (a message) but does not highlight.
    send(
        &server,
        &bob,
        &room,
        json!({"msgtype": "m.text", "body": "@room hi", "m.mentions": {"room": true}}),
    )
    .await;
    assert_eq!(
        counts(&server, &alice, &room).await,
        (1, 0),
        "power 0 cannot notify the room"
    );
}

#[tokio::test]
async fn thread_notification_counts() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let bob = server.register("bob", "correct horse").await;
    let room = create_public_room(&server, &alice, &[&bob]).await;
    let (status, body) = server
        .post(
            "/_matrix/client/v3/user/@bob:test.local/filter",
            bob.token(),
            json!({"room": {"timeline": {"unread_thread_notifications": true}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let threaded = format!("&filter={}", body["filter_id"].as_str().unwrap());

    let root = text(&server, &alice, &room, "root").await;
    let reply = |n: usize| {
        json!({"msgtype": "m.text", "body": format!("reply {n}"),
               "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
    };
    let first = send(&server, &alice, &room, reply(1)).await;
    let second = send(&server, &alice, &room, reply(2)).await;

    // Without the filter option: one count for the whole room.
    assert_eq!(counts(&server, &bob, &room).await, (3, 0));
    let thread_counts = |sync: &Value| {
        let joined = &sync["rooms"]["join"][&room];
        (
            joined["unread_notifications"]["notification_count"]
                .as_u64()
                .unwrap(),
            joined["unread_thread_notifications"][&root]["notification_count"].as_u64(),
        )
    };
    let body = sync(&server, &bob, "").await;
    assert!(
        body["rooms"]["join"][&room]
            .get("unread_thread_notifications")
            .is_none(),
        "per-thread counts only when asked for: {}",
        body["rooms"]["join"][&room]
    );
    assert_eq!(
        thread_counts(&sync(&server, &bob, &threaded).await),
        (1, Some(2))
    );

    // A receipt on the main timeline leaves the thread unread, and the other way round.
    read_up_to(&server, &bob, &room, &root, Some("main")).await;
    assert_eq!(
        thread_counts(&sync(&server, &bob, &threaded).await),
        (0, Some(2))
    );
    read_up_to(&server, &bob, &room, &first, Some(&root)).await;
    assert_eq!(
        thread_counts(&sync(&server, &bob, &threaded).await),
        (0, Some(1))
    );
    assert_eq!(counts(&server, &bob, &room).await, (1, 0));
    // An unthreaded receipt covers everything before it.
    read_up_to(&server, &bob, &room, &second, None).await;
    assert_eq!(
        thread_counts(&sync(&server, &bob, &threaded).await),
        (0, None)
    );
    assert_eq!(counts(&server, &bob, &room).await, (0, 0));
    // Replying in a thread reads that thread only.
    text(&server, &alice, &room, "main again").await;
    send(&server, &alice, &room, reply(3)).await;
    assert_eq!(
        thread_counts(&sync(&server, &bob, &threaded).await),
        (1, Some(1))
    );
    send(&server, &bob, &room, reply(4)).await;
    assert_eq!(
        thread_counts(&sync(&server, &bob, &threaded).await),
        (1, None)
    );
}

#[tokio::test]
async fn counts_stop_at_the_newest_hundred_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let bob = server.register("bob", "correct horse").await;
    let room = create_public_room(&server, &alice, &[&bob]).await;
    for i in 0..105 {
        text(&server, &alice, &room, &format!("message {i}")).await;
    }
    assert_eq!(counts(&server, &bob, &room).await, (100, 0));
}
