//! Element X's engine against the appliance: matrix-sdk logs in as Element X does (well-known
//! discovery over plain HTTP, `/versions`, the OAuth 2.0 probe, password login), then the
//! `SyncService` of matrix-sdk-ui drives simplified sliding sync (MSC4186) for its room list,
//! timelines and end-to-end encryption, and room previews come from room summaries (MSC3266).
//! What "another client" does (a second user sending, inviting) goes over plain HTTP.
//!
//! `RUST_LOG=matrix_sdk=debug` shows what the SDK sends and receives.

mod server;

use std::{sync::Arc, time::Duration};

use futures_util::{Stream, StreamExt, pin_mut};
use matrix_sdk::{
    Client, RoomState,
    reqwest::Method,
    room_preview::RoomPreview,
    ruma::{
        OwnedRoomId, RoomId, RoomOrAliasId, ServerName,
        api::client::session::get_login_types::v3::LoginType,
        events::room::message::RoomMessageEventContent, room::JoinRuleSummary,
    },
    sliding_sync::Version as SlidingSyncVersion,
    sliding_sync::VersionBuilder as SlidingSyncVersionBuilder,
};
use matrix_sdk_ui::{
    RoomListService, Timeline,
    eyeball_im::{Vector, VectorDiff},
    room_list_service::{RoomListItem, filters::new_filter_non_left},
    sync_service::SyncService,
    timeline::{RoomExt, TimelineItem},
};
use serde_json::json;
use server::{Server, encode};

/// How long a test waits for something the server must make happen; a failure, not a pace.
const PATIENCE: Duration = Duration::from_secs(30);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Logs in as Element X does: the server found by its name through
/// `/.well-known/matrix/client` (over HTTP: a loopback test server has no certificate), native
/// sliding sync discovered from `/versions`, no OAuth 2.0 server, so a password login.
async fn login(server: &Server, user: &str, password: &str) -> Client {
    let name = <&ServerName>::try_from(server.address.as_str()).expect("server name");
    let client = Client::builder()
        .insecure_server_name_no_tls(name)
        .sliding_sync_version_builder(SlidingSyncVersionBuilder::DiscoverNative)
        .build()
        .await
        .expect("client discovers the server");
    assert_eq!(
        client.homeserver().as_str().trim_end_matches('/'),
        server.base_url,
        "the well-known base URL"
    );
    assert!(matches!(
        client.sliding_sync_version(),
        SlidingSyncVersion::Native
    ));
    let oauth = client.oauth().server_metadata().await;
    assert!(
        oauth.as_ref().is_err_and(|e| e.is_not_supported()),
        "no OAuth 2.0 server: {oauth:?}"
    );
    let flows = client
        .matrix_auth()
        .get_login_types()
        .await
        .expect("login types");
    assert!(
        flows
            .flows
            .iter()
            .any(|f| matches!(f, LoginType::Password(_))),
        "{flows:?}"
    );
    client
        .matrix_auth()
        .login_username(user, password)
        .initial_device_display_name("Element X test")
        .await
        .unwrap_or_else(|e| panic!("login {user}: {e}"));
    client.event_cache().subscribe().expect("event cache");
    client
}

/// A started sync service (room list and encryption syncs).
async fn sync(client: &Client) -> SyncService {
    let service = SyncService::builder(client.clone())
        .build()
        .await
        .expect("sync service");
    service.start().await;
    service
}

/// Applies a stream's diffs to `items` until `done` holds; panics after [`PATIENCE`] with
/// `what` and the last items.
async fn wait_for<T: Clone, S>(
    stream: &mut S,
    items: &mut Vector<T>,
    what: &str,
    describe: impl Fn(&Vector<T>) -> String,
    done: impl Fn(&Vector<T>) -> bool,
) where
    S: Stream<Item = Vec<VectorDiff<T>>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done(items) {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(diffs)) => diffs.into_iter().for_each(|d| d.apply(items)),
            Ok(None) => panic!("{what}: the stream ended at {}", describe(items)),
            Err(_) => panic!("{what}: still {} after {PATIENCE:?}", describe(items)),
        }
    }
}

fn room_ids(items: &Vector<RoomListItem>) -> Vec<OwnedRoomId> {
    items.iter().map(|r| r.room_id().to_owned()).collect()
}

/// The bodies of the timeline's messages, in order (decrypted ones included).
fn bodies(items: &Vector<Arc<TimelineItem>>) -> Vec<String> {
    items
        .iter()
        .filter_map(|item| item.as_event())
        .filter_map(|event| event.content().as_message().map(|m| m.body().to_owned()))
        .collect()
}

fn room_id(id: &str) -> OwnedRoomId {
    RoomId::parse(id).expect("room ID")
}

/// Password login the way Element X does it; the preview (MSC3266 room summary) of a public
/// room the user is not in; then the room list of `RoomListService`: the user's rooms by
/// recency, a room moving to the top when a message arrives, an invite shown and accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_room_list_invites_and_previews() {
    init_tracing();
    let server = Server::start();
    let alice_http = server.register("alice", "pw-alice").await;
    let bob = server.register("bob", "pw-bob").await;

    // Three rooms alice is in, each with a message; by recency: second, third, first.
    let mut rooms = Vec::new();
    for name in ["first", "second", "third"] {
        let room = server
            .create_room(&alice_http, json!({"name": name, "preset": "public_chat"}))
            .await;
        server.join(&bob, &room).await;
        rooms.push(room);
    }
    server.send_text(&bob, &rooms[0], "in first").await;
    server.send_text(&bob, &rooms[2], "in third").await;
    server.send_text(&bob, &rooms[1], "in second").await;

    let alice = login(&server, "alice", "pw-alice").await;

    // The preview of a public room alice is not in, from its summary (MSC3266).
    let lobby = server
        .create_room(
            &bob,
            json!({"preset": "public_chat", "name": "Lobby", "topic": "All welcome",
                "room_alias_name": "lobby"}),
        )
        .await;
    let alias = <&RoomOrAliasId>::try_from("#lobby:test.local").unwrap();
    let preview = RoomPreview::from_room_summary(&alice, room_id(&lobby), alias, vec![])
        .await
        .expect("room summary");
    assert_eq!(preview.room_id, room_id(&lobby));
    assert_eq!(preview.name.as_deref(), Some("Lobby"));
    assert_eq!(preview.topic.as_deref(), Some("All welcome"));
    assert_eq!(
        preview.canonical_alias.as_ref().map(|a| a.as_str()),
        Some(alias.as_str())
    );
    assert_eq!(preview.num_joined_members, 1);
    assert_eq!(preview.join_rule, Some(JoinRuleSummary::Public));
    assert_eq!(preview.state, None, "alice is not in the room");
    // What Element X calls: the summary first, by alias.
    let preview = alice
        .get_room_preview(alias, vec![])
        .await
        .expect("preview");
    assert_eq!(preview.name.as_deref(), Some("Lobby"));
    // A private room is not previewed from its summary.
    let private = server.create_room(&bob, json!({"name": "Private"})).await;
    let private_ref = <&RoomOrAliasId>::try_from(private.as_str()).unwrap();
    let refused =
        RoomPreview::from_room_summary(&alice, room_id(&private), private_ref, vec![]).await;
    assert!(refused.is_err(), "{refused:?}");

    let sync_service = sync(&alice).await;
    let room_list_service: Arc<RoomListService> = sync_service.room_list_service();
    let all_rooms = room_list_service.all_rooms().await.expect("all rooms");
    let (stream, controller) = all_rooms.entries_with_dynamic_adapters(50);
    controller.set_filter(Box::new(new_filter_non_left()));
    pin_mut!(stream);
    let mut list = Vector::new();
    let describe = |items: &Vector<RoomListItem>| format!("{:?}", room_ids(items));
    let order = |ids: [&String; 3]| ids.map(|id| room_id(id)).to_vec();

    // The SDK computes a room's display name a moment after the room enters the list: wait
    // for both the order and the names (from `m.room.name` in the required state).
    let names = |l: &Vector<RoomListItem>| l.iter().map(|r| r.name()).collect::<Vec<_>>();
    let expected = order([&rooms[1], &rooms[2], &rooms[0]]);
    let expected_names = ["second", "third", "first"]
        .map(|n| Some(n.to_owned()))
        .to_vec();
    let describe_named = |l: &Vector<RoomListItem>| format!("{:?} {:?}", room_ids(l), names(l));
    wait_for(
        &mut stream,
        &mut list,
        "rooms by recency",
        describe_named,
        |l| room_ids(l) == expected && names(l) == expected_names,
    )
    .await;

    // A message from bob moves the first room to the top, live.
    server.send_text(&bob, &rooms[0], "bump").await;
    let expected = order([&rooms[0], &rooms[1], &rooms[2]]);
    wait_for(&mut stream, &mut list, "a bumped room", describe, |l| {
        room_ids(l) == expected
    })
    .await;

    // An invite shows at the top as an invite; accepting it makes it a joined room.
    let invited = server
        .create_room(
            &bob,
            json!({"name": "invitation", "invite": ["@alice:test.local"]}),
        )
        .await;
    let invited_id = room_id(&invited);
    wait_for(&mut stream, &mut list, "the invite", describe, |l| {
        l.front()
            .is_some_and(|r| r.room_id() == invited_id && r.state() == RoomState::Invited)
    })
    .await;
    let room = alice.get_room(&invited_id).expect("invited room");
    assert_eq!(room.name().as_deref(), Some("invitation"));
    let invite = room.invite_details().await.expect("invite details");
    assert_eq!(
        invite.inviter.map(|m| m.user_id().to_owned()).as_deref(),
        Some(<&matrix_sdk::ruma::UserId>::try_from("@bob:test.local").unwrap())
    );
    room.join().await.expect("accept the invite");
    wait_for(
        &mut stream,
        &mut list,
        "the accepted invite",
        describe,
        |l| {
            l.iter()
                .any(|r| r.room_id() == invited_id && r.state() == RoomState::Joined)
                && l.len() == 4
        },
    )
    .await;
    let (_, members) = server
        .request(
            Method::GET,
            &format!(
                "/_matrix/client/v3/rooms/{}/joined_members",
                encode(&invited)
            ),
            Some(&bob),
            None,
        )
        .await;
    assert!(
        members["joined"].get("@alice:test.local").is_some(),
        "{members}"
    );

    sync_service.stop().await;
}

/// The `Timeline` of a room: the history paginated back from the newest events to the room's
/// creation, in order, and messages arriving live, sent by the other user over HTTP and by the
/// timeline itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_goes_live_and_back() {
    init_tracing();
    let server = Server::start();
    server.register("alice", "pw-alice").await;
    let bob = server.register("bob", "pw-bob").await;
    let room = server
        .create_room(
            &bob,
            json!({"name": "History", "invite": ["@alice:test.local"]}),
        )
        .await;
    let alice = login(&server, "alice", "pw-alice").await;
    alice.join_room_by_id(&room_id(&room)).await.expect("join");
    let history: Vec<String> = (0..30).map(|i| format!("history {i}")).collect();
    for text in &history {
        server.send_text(&bob, &room, text).await;
    }

    let sync_service = sync(&alice).await;
    let room_list_service = sync_service.room_list_service();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    // Once the room list has synced the room (its name comes from its state).
    let sdk_room = loop {
        if let Ok(room) = room_list_service.room(&room_id(&room))
            && room.name().as_deref() == Some("History")
        {
            break room;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the room never synced"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let timeline: Timeline = sdk_room.timeline().await.expect("timeline");
    let (initial, stream) = timeline.subscribe().await;
    pin_mut!(stream);
    let mut items = initial;

    // Back through the whole history: every message, oldest first, up to the room's start.
    let mut reached_start = false;
    for _ in 0..20 {
        if timeline.paginate_backwards(10).await.expect("paginate") {
            reached_start = true;
            break;
        }
    }
    assert!(
        reached_start,
        "pagination never reached the room's creation"
    );
    let describe = |items: &Vector<Arc<TimelineItem>>| format!("{:?}", bodies(items));
    wait_for(
        &mut stream,
        &mut items,
        "the whole history",
        describe,
        |items| bodies(items) == history,
    )
    .await;

    // Live: bob's message over HTTP, then alice's own through the timeline (its local echo
    // replaced by the event the server sent back).
    server.send_text(&bob, &room, "live from bob").await;
    wait_for(
        &mut stream,
        &mut items,
        "bob's live message",
        describe,
        |items| bodies(items).last().map(String::as_str) == Some("live from bob"),
    )
    .await;
    timeline
        .send(RoomMessageEventContent::text_plain("live from alice").into())
        .await
        .expect("send");
    wait_for(
        &mut stream,
        &mut items,
        "alice's message, sent",
        describe,
        |items| {
            items.last().and_then(|i| i.as_event()).is_some_and(|e| {
                !e.is_local_echo()
                    && e.content().as_message().map(|m| m.body()) == Some("live from alice")
            })
        },
    )
    .await;
    let (_, messages) = server
        .request(
            Method::GET,
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1",
                encode(&room)
            ),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(
        messages["chunk"][0]["content"]["body"], "live from alice",
        "{messages}"
    );

    sync_service.stop().await;
}

/// End-to-end encryption between two SDK clients: keys and room keys travel through the
/// sliding sync `e2ee` and `to_device` extensions, each side decrypts the other's message, and
/// the server stores only ciphertext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_room_decrypts_on_both_sides() {
    init_tracing();
    let server = Server::start();
    server.register("alice", "pw-alice").await;
    let bob_http = server.register("bob", "pw-bob").await;
    let alice = login(&server, "alice", "pw-alice").await;
    let bob = login(&server, "bob", "pw-bob").await;
    let alice_sync = sync(&alice).await;
    let bob_sync = sync(&bob).await;

    let mut request = matrix_sdk::ruma::api::client::room::create_room::v3::Request::new();
    request.name = Some("Secrets".to_owned());
    request.invite = vec![bob.user_id().expect("bob").to_owned()];
    let room = alice.create_room(request).await.expect("create room");
    room.enable_encryption().await.expect("enable encryption");
    let room_id = room.room_id().to_owned();

    // Bob accepts the invite once his room list shows it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let bob_room = loop {
        if let Some(room) = bob.get_room(&room_id)
            && room.state() == RoomState::Invited
        {
            break room;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob never saw the invite"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bob_room.join().await.expect("bob joins");

    let alice_timeline = room.timeline().await.expect("alice's timeline");
    let bob_timeline = bob_room.timeline().await.expect("bob's timeline");
    let (alice_items, alice_stream) = alice_timeline.subscribe().await;
    let (bob_items, bob_stream) = bob_timeline.subscribe().await;
    pin_mut!(alice_stream);
    pin_mut!(bob_stream);
    let (mut alice_items, mut bob_items) = (alice_items, bob_items);
    let describe = |items: &Vector<Arc<TimelineItem>>| format!("{:?}", bodies(items));

    // Alice waits until bob is a member before sending, so that her room key goes to him.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while room.joined_members_count() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice never saw bob join"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    alice_timeline
        .send(RoomMessageEventContent::text_plain("secret from alice").into())
        .await
        .expect("alice sends");
    wait_for(
        &mut bob_stream,
        &mut bob_items,
        "bob decrypts",
        describe,
        |items| bodies(items).contains(&"secret from alice".to_owned()),
    )
    .await;
    bob_timeline
        .send(RoomMessageEventContent::text_plain("secret from bob").into())
        .await
        .expect("bob sends");
    wait_for(
        &mut alice_stream,
        &mut alice_items,
        "alice decrypts",
        describe,
        |items| bodies(items).contains(&"secret from bob".to_owned()),
    )
    .await;

    // The server has only ciphertext.
    let (_, messages) = server
        .request(
            Method::GET,
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10",
                encode(room_id.as_str())
            ),
            Some(&bob_http),
            None,
        )
        .await;
    let chunk = messages["chunk"].as_array().expect("chunk");
    let encrypted = chunk
        .iter()
        .filter(|e| e["type"] == "m.room.encrypted")
        .count();
    assert!(encrypted >= 2, "{messages}");
    assert!(!messages.to_string().contains("secret from"), "{messages}");

    alice_sync.stop().await;
    bob_sync.stop().await;
}
