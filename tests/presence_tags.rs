//! Presence (`/presence/{userId}/status`, /sync's `set_presence` and `presence.events`) and room
//! tags (`/user/{userId}/rooms/{roomId}/tags`).

use crate::common;

use std::time::{Duration, Instant};

use common::{OPEN_REGISTRATION, Session, TestServer, assert_error};
use serde_json::{Value, json};

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

fn status_path(user: &str) -> String {
    format!("/_matrix/client/v3/presence/{user}/status")
}

async fn set_presence(server: &TestServer, who: &Session, presence: &str, msg: Option<&str>) {
    let mut body = json!({"presence": presence});
    if let Some(msg) = msg {
        body["status_msg"] = json!(msg);
    }
    let (status, reply) = server
        .put(&status_path(&who.user_id), who.token(), body)
        .await;
    assert_eq!(status, 200, "{reply}");
}

async fn sync(server: &TestServer, who: &Session, query: &str) -> Value {
    let (status, body) = server
        .get(&format!("/_matrix/client/v3/sync?{query}"), who.token())
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The `m.presence` events of a sync response sent by `user`.
fn presence_of<'a>(sync: &'a Value, user: &str) -> Vec<&'a Value> {
    sync["presence"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .inspect(|e| assert_eq!(e["type"], "m.presence", "{e}"))
                .filter(|e| e["sender"] == user)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn presence_status_and_who_may_see_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let bob = server.register("bob", "correct horse").await;

    let (status, body) = server
        .get(&status_path(&alice.user_id), alice.token())
        .await;
    assert_eq!(
        (status.as_u16(), body),
        (200, json!({"presence": "offline"})),
        "never set"
    );

    set_presence(&server, &alice, "online", Some("writing tests")).await;
    let (status, body) = server
        .get(&status_path(&alice.user_id), alice.token())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["presence"], "online");
    assert_eq!(body["status_msg"], "writing tests");
    assert_eq!(body["currently_active"], true);
    assert!(body["last_active_ago"].as_u64().unwrap() < 10_000, "{body}");

    // Only one's own presence can be set; only people sharing a room see it.
    assert_error(
        &server
            .put(
                &status_path(&bob.user_id),
                alice.token(),
                json!({"presence": "online"}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.get(&status_path(&alice.user_id), bob.token()).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .get(&status_path("@nobody:test.local"), alice.token())
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .put(
                &status_path(&alice.user_id),
                alice.token(),
                json!({"presence": "busy"}),
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
    create_public_room(&server, &alice, &[&bob]).await;
    let (status, body) = server.get(&status_path(&alice.user_id), bob.token()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["presence"], "online");
    assert_eq!(body["status_msg"], "writing tests");

    // Unavailable is not activity; leaving out the message clears it.
    set_presence(&server, &alice, "unavailable", None).await;
    let (_, body) = server.get(&status_path(&alice.user_id), bob.token()).await;
    assert_eq!(body["presence"], "unavailable");
    assert!(body.get("status_msg").is_none(), "{body}");
    assert!(body.get("currently_active").is_none(), "{body}");
    assert!(body["last_active_ago"].as_u64().is_some(), "{body}");

    // The stored presence survives a restart.
    let mut server = server;
    set_presence(&server, &alice, "offline", Some("on holiday")).await;
    server.restart();
    let (_, body) = server.get(&status_path(&alice.user_id), bob.token()).await;
    assert_eq!(body["presence"], "offline");
    assert_eq!(body["status_msg"], "on holiday");
}

#[tokio::test]
async fn presence_reaches_sync_of_those_sharing_a_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let bob = server.register("bob", "correct horse").await;
    let carol = server.register("carol", "correct horse").await;
    create_public_room(&server, &alice, &[&bob]).await;

    set_presence(&server, &alice, "online", Some("hello")).await;
    // Bob's sync marks bob online (the default `set_presence`), and shows him too.
    let first = sync(&server, &bob, "").await;
    let from_alice = presence_of(&first, &alice.user_id);
    assert_eq!(from_alice.len(), 1, "{}", first["presence"]);
    assert_eq!(from_alice[0]["content"]["presence"], "online");
    assert_eq!(from_alice[0]["content"]["status_msg"], "hello");
    assert_eq!(from_alice[0]["content"]["currently_active"], true);
    let own = presence_of(&first, &bob.user_id);
    assert_eq!(own.len(), 1, "{}", first["presence"]);
    assert_eq!(own[0]["content"]["presence"], "online");
    // Carol shares no room with alice.
    let carols = sync(&server, &carol, "set_presence=offline").await;
    assert!(
        presence_of(&carols, &alice.user_id).is_empty(),
        "{}",
        carols["presence"]
    );

    // Changes arrive in the next incremental sync, and wake a waiting one.
    let since = first["next_batch"].as_str().unwrap().to_owned();
    let quiet = sync(&server, &bob, &format!("since={since}&timeout=0")).await;
    assert!(
        presence_of(&quiet, &alice.user_id).is_empty(),
        "no change: {}",
        quiet["presence"]
    );
    let since = quiet["next_batch"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let long_poll = format!("since={since}&timeout=20000");
    let (next, ()) = tokio::join!(sync(&server, &bob, &long_poll), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        set_presence(&server, &alice, "unavailable", Some("lunch")).await;
    });
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the long-poll woke up"
    );
    let from_alice = presence_of(&next, &alice.user_id);
    assert_eq!(from_alice.len(), 1, "{next}");
    assert_eq!(from_alice[0]["content"]["presence"], "unavailable");
    assert_eq!(from_alice[0]["content"]["status_msg"], "lunch");
    assert!(from_alice[0]["content"]["last_active_ago"].is_u64());

    // A presence filter can drop the events.
    let none = sync(
        &server,
        &bob,
        r#"filter={"presence":{"not_types":["m.presence"]}}"#,
    )
    .await;
    assert!(
        presence_of(&none, &alice.user_id).is_empty(),
        "{}",
        none["presence"]
    );
}

#[tokio::test]
async fn sync_set_presence() {
    let server = TestServer::start().await;
    let carol = server.register("carol", "correct horse").await;
    let presence = || async {
        let (status, body) = server
            .get(&status_path(&carol.user_id), carol.token())
            .await;
        assert_eq!(status, 200, "{body}");
        body["presence"].as_str().unwrap().to_owned()
    };
    sync(&server, &carol, "set_presence=offline").await;
    assert_eq!(
        presence().await,
        "offline",
        "offline leaves the presence alone"
    );
    sync(&server, &carol, "set_presence=unavailable").await;
    assert_eq!(presence().await, "unavailable");
    sync(&server, &carol, "").await;
    assert_eq!(
        presence().await,
        "online",
        "a sync marks the user online by default"
    );
    sync(&server, &carol, "set_presence=offline").await;
    assert_eq!(presence().await, "online");
}

#[tokio::test]
async fn disabled_presence_answers_but_broadcasts_nothing() {
    let config = format!("{OPEN_REGISTRATION}presence:\n  enabled: false\n");
    let server = TestServer::start_with_config(&config).await;
    let alice = server.register("alice", "correct horse").await;
    let bob = server.register("bob", "correct horse").await;
    create_public_room(&server, &alice, &[&bob]).await;

    set_presence(&server, &alice, "online", Some("hello")).await;
    let (status, body) = server.get(&status_path(&alice.user_id), bob.token()).await;
    assert_eq!(
        (status.as_u16(), body),
        (200, json!({"presence": "offline"}))
    );
    let body = sync(&server, &bob, "").await;
    assert!(
        presence_of(&body, &alice.user_id).is_empty(),
        "{}",
        body["presence"]
    );
    assert!(
        presence_of(&body, &bob.user_id).is_empty(),
        "{}",
        body["presence"]
    );
    // Visibility is still checked.
    let carol = server.register("carol", "correct horse").await;
    assert_error(
        &server
            .get(&status_path(&alice.user_id), carol.token())
            .await,
        403,
        "M_FORBIDDEN",
    );
}

fn tag_events<'a>(sync: &'a Value, room: &str) -> Vec<&'a Value> {
    sync["rooms"]["join"][room]["account_data"]["events"]
        .as_array()
        .map(|events| events.iter().filter(|e| e["type"] == "m.tag").collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn room_tags() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "correct horse").await;
    let bob = server.register("bob", "correct horse").await;
    let room = create_public_room(&server, &alice, &[&bob]).await;
    let tags = format!(
        "/_matrix/client/v3/user/{}/rooms/{room}/tags",
        alice.user_id
    );

    let (status, body) = server.get(&tags, alice.token()).await;
    assert_eq!((status.as_u16(), body), (200, json!({"tags": {}})));
    let first = sync(&server, &alice, "").await;
    assert!(tag_events(&first, &room).is_empty());

    let (status, body) = server
        .put(
            &format!("{tags}/u.work"),
            alice.token(),
            json!({"order": 0.5}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .put(&format!("{tags}/m.favourite"), alice.token(), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.get(&tags, alice.token()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"tags": {"u.work": {"order": 0.5}, "m.favourite": {}}})
    );

    // Tags are room account data in /sync.
    let since = first["next_batch"].as_str().unwrap();
    let next = sync(&server, &alice, &format!("since={since}")).await;
    let events = tag_events(&next, &room);
    assert_eq!(events.len(), 1, "{next}");
    assert_eq!(events[0]["content"]["tags"]["u.work"]["order"], 0.5);
    assert_eq!(events[0]["content"]["tags"]["m.favourite"], json!({}));
    let (status, body) = server
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{room}/account_data/m.tag",
                alice.user_id
            ),
            alice.token(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tags"]["u.work"]["order"], 0.5);

    let (status, body) = server
        .delete(&format!("{tags}/u.work"), alice.token(), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .delete(&format!("{tags}/u.never"), alice.token(), json!({}))
        .await;
    assert_eq!(status, 200, "deleting a missing tag is fine: {body}");
    let (_, body) = server.get(&tags, alice.token()).await;
    assert_eq!(body, json!({"tags": {"m.favourite": {}}}));
    let since = next["next_batch"].as_str().unwrap();
    let after = sync(&server, &alice, &format!("since={since}")).await;
    assert_eq!(
        tag_events(&after, &room)[0]["content"],
        json!({"tags": {"m.favourite": {}}})
    );

    // Bob neither sees nor changes alice's tags, and has his own.
    assert_error(&server.get(&tags, bob.token()).await, 403, "M_FORBIDDEN");
    assert_error(
        &server
            .put(&format!("{tags}/u.bob"), bob.token(), json!({}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    let bobs = format!("/_matrix/client/v3/user/{}/rooms/{room}/tags", bob.user_id);
    let (_, body) = server.get(&bobs, bob.token()).await;
    assert_eq!(body, json!({"tags": {}}));

    let long = "x".repeat(256);
    assert_error(
        &server
            .put(&format!("{tags}/{long}"), alice.token(), json!({}))
            .await,
        400,
        "M_INVALID_PARAM",
    );
}
