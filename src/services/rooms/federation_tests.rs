//! The room layer with events from another server: PDUs signed by a second ("remote") ed25519
//! key, fed to `Rooms` on a real SQLite file, read back through the client read paths.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomVersionId,
    UserId,
    events::{StateEventType, room::member::MembershipState},
    signatures::Ed25519KeyPair,
    state_res,
};
use serde_json::{Value, json};

use super::{
    Arrival, CreateRoom, Direction, EventDraft, IncomingPdu, PaginationToken, PduOutcome, Preset,
    Rooms,
};
use crate::{
    config::Config,
    services::{rate_limit::AccountLimits, server_key::ServerKey},
    storage::{Database, rooms as store, rooms::StateIds},
};

const VERSION: RoomVersionId = RoomVersionId::V12;

struct Setup {
    _dir: tempfile::TempDir,
    rooms: Rooms,
    remote: Ed25519KeyPair,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(&dir.path().join("appliance.db")).unwrap();
    let server_name = OwnedServerName::try_from("local.test").unwrap();
    let key = Arc::new(ServerKey::load_or_create(dir.path(), &server_name).unwrap());
    let limits = Arc::new(AccountLimits::new(db.clone(), &Config::default()));
    let rooms = Rooms::new(db, server_name, key, VERSION, 0, limits);
    let der = Ed25519KeyPair::generate();
    let remote = Ed25519KeyPair::from_der(&der, "1".to_owned()).unwrap();
    Setup {
        _dir: dir,
        rooms,
        remote,
    }
}

fn user(id: &str) -> OwnedUserId {
    UserId::parse(id).unwrap()
}

fn id(s: &str) -> OwnedEventId {
    OwnedEventId::try_from(s).unwrap()
}

/// An event of `sender`, signed by its server (the remote key, or this server's own), with
/// the auth events the spec selects from `state`.
#[allow(clippy::too_many_arguments)]
fn signed(
    key: &Ed25519KeyPair,
    room_id: Option<&OwnedRoomId>,
    sender: &UserId,
    kind: &str,
    state_key: Option<&str>,
    content: Value,
    prev_events: &[OwnedEventId],
    state: &StateIds,
    depth: i64,
    ts: u64,
) -> IncomingPdu {
    let rules = VERSION.rules().unwrap();
    let raw = serde_json::value::to_raw_value(&content).unwrap();
    let mut auth_events = Vec::new();
    for (event_type, key) in
        state_res::auth_types_for_event(&kind.into(), sender, state_key, &raw, &rules.authorization)
            .unwrap()
    {
        if event_type == StateEventType::RoomCreate {
            continue; // room version 12: implied by the room ID
        }
        if let Some(found) = state.get(&(event_type.to_string(), key)) {
            auth_events.push(found.clone());
        }
    }
    let mut object = json!({
        "sender": sender, "type": kind, "content": content, "origin_server_ts": ts,
        "depth": depth, "prev_events": prev_events, "auth_events": auth_events,
    });
    if let Some(room_id) = room_id {
        object["room_id"] = json!(room_id);
    }
    if let Some(state_key) = state_key {
        object["state_key"] = json!(state_key);
    }
    let mut object: CanonicalJsonObject = serde_json::from_value(object).unwrap();
    ruma::signatures::hash_and_sign_event(
        sender.server_name().as_str(),
        key,
        &mut object,
        &rules.redaction,
    )
    .unwrap();
    IncomingPdu::new(&rules, object).unwrap()
}

async fn depth_of(rooms: &Rooms, event: &OwnedEventId) -> i64 {
    let event = event.to_string();
    rooms
        .db
        .read(move |c| {
            Ok::<_, rusqlite::Error>(store::get_event(c, &event)?.unwrap().topological_ordering)
        })
        .await
        .unwrap()
}

/// A remote event in a room of this server, on top of `prev` (state: after `prev`).
#[allow(clippy::too_many_arguments)]
async fn remote_event(
    s: &Setup,
    room_id: &OwnedRoomId,
    sender: &str,
    kind: &str,
    state_key: Option<&str>,
    content: Value,
    prev: &[OwnedEventId],
    ts: u64,
) -> IncomingPdu {
    let mut state = StateIds::new();
    let mut depth = 0;
    for p in prev {
        state.extend(s.rooms.state_ids_after(p).await.unwrap());
        depth = depth.max(depth_of(&s.rooms, p).await);
    }
    signed(
        &s.remote,
        Some(room_id),
        &user(sender),
        kind,
        state_key,
        content,
        prev,
        &state,
        depth + 1,
        ts,
    )
}

async fn extremities(rooms: &Rooms, room_id: &OwnedRoomId) -> Vec<String> {
    let room = room_id.to_string();
    let mut ids: Vec<String> = rooms
        .db
        .read(move |c| store::forward_extremities(c, &room))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    ids.sort();
    ids
}

async fn current(rooms: &Rooms, room_id: &OwnedRoomId) -> StateIds {
    let room = room_id.to_string();
    rooms
        .db
        .read(move |c| store::current_state(c, &room))
        .await
        .unwrap()
}

/// What /sync reads for a room's timeline: events after stream position 0.
async fn sync_timeline(rooms: &Rooms, room_id: &OwnedRoomId) -> Vec<String> {
    let room = room_id.to_string();
    rooms
        .db
        .read(move |c| store::room_events_between(c, &room, 0, i64::MAX, 1000))
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.event_id)
        .collect()
}

/// `/messages` backwards from the end, as `viewer` sees it.
async fn messages(rooms: &Rooms, room_id: &OwnedRoomId, viewer: &str) -> Vec<String> {
    let page = rooms
        .messages(
            room_id,
            &user(viewer),
            None,
            None,
            None,
            Direction::Backward,
            100,
            |_| true,
        )
        .await
        .unwrap();
    page.chunk
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

fn key(kind: &str, state_key: &str) -> (String, String) {
    (kind.to_owned(), state_key.to_owned())
}

/// A local room that remote users @bob and @carol joined, bob and carol at power 50.
async fn shared_room(s: &Setup) -> (OwnedRoomId, OwnedEventId) {
    let alice = user("@alice:local.test");
    let room_id = s
        .rooms
        .create_room(
            &alice,
            CreateRoom {
                preset: Some(Preset::Public),
                topic: Some("original".into()),
                ..CreateRoom::default()
            },
        )
        .await
        .unwrap();
    for (i, who) in ["@bob:remote.test", "@carol:remote.test"]
        .iter()
        .enumerate()
    {
        let prev = extremities(&s.rooms, &room_id).await;
        let join = remote_event(
            s,
            &room_id,
            who,
            "m.room.member",
            Some(who),
            json!({"membership": "join"}),
            &[id(&prev[0])],
            1_000 + i as u64,
        )
        .await;
        let outcome = s.rooms.accept(join, Arrival::Live).await.unwrap();
        assert!(
            matches!(outcome, PduOutcome::Accepted { .. }),
            "{outcome:?}"
        );
    }
    let levels = s
        .rooms
        .append(
            &room_id,
            &alice,
            EventDraft::state(
                "m.room.power_levels",
                "",
                json!({"users": {"@bob:remote.test": 50, "@carol:remote.test": 50}}),
            ),
        )
        .await
        .unwrap();
    (room_id, levels.event_id)
}

/// A busy room forks all the time on messages: two messages on one parent, a third on one of
/// them (beside the other extremity), all on one state group, leave the current state as it is;
/// a topic change beside the remaining extremity is resolved against it and wins, and the state
/// before and after each message stays the room's state.
#[tokio::test]
async fn messages_forking_on_one_state_keep_the_current_state() {
    let s = setup();
    let (room_id, levels) = shared_room(&s).await;
    let before = current(&s.rooms, &room_id).await;
    let message = |prev: OwnedEventId, ts: u64| {
        let (s, room_id) = (&s, &room_id);
        async move {
            let event = remote_event(
                s,
                room_id,
                "@bob:remote.test",
                "m.room.message",
                None,
                json!({"msgtype": "m.text", "body": format!("at {ts}")}),
                &[prev],
                ts,
            )
            .await;
            let id = event.event_id.clone();
            assert!(matches!(
                s.rooms.accept(event, Arrival::Live).await.unwrap(),
                PduOutcome::Accepted { .. }
            ));
            id
        }
    };
    let first = message(levels.clone(), 5_000).await;
    let second = message(levels.clone(), 5_001).await;
    let mut both = vec![first.to_string(), second.to_string()];
    both.sort();
    assert_eq!(extremities(&s.rooms, &room_id).await, both);
    let third = message(first.clone(), 5_002).await;
    let mut now = vec![second.to_string(), third.to_string()];
    now.sort();
    assert_eq!(extremities(&s.rooms, &room_id).await, now);
    assert_eq!(current(&s.rooms, &room_id).await, before);
    for id in [&first, &second, &third] {
        assert_eq!(s.rooms.state_ids_before(id).await.unwrap(), before);
        assert_eq!(s.rooms.state_ids_after(id).await.unwrap(), before);
    }

    let topic = remote_event(
        &s,
        &room_id,
        "@bob:remote.test",
        "m.room.topic",
        Some(""),
        json!({"topic": "after the fork"}),
        std::slice::from_ref(&third),
        5_003,
    )
    .await;
    let topic_id = topic.event_id.clone();
    assert!(matches!(
        s.rooms.accept(topic, Arrival::Live).await.unwrap(),
        PduOutcome::Accepted { .. }
    ));
    let mut expected = before.clone();
    expected.insert(key("m.room.topic", ""), topic_id.to_string());
    assert_eq!(current(&s.rooms, &room_id).await, expected);
    let mut now = vec![second.to_string(), topic_id.to_string()];
    now.sort();
    assert_eq!(extremities(&s.rooms, &room_id).await, now);
}

/// Two branches from one parent, a demotion (local) and a topic from the demoted user (remote),
/// then a merge: state resolution orders the power levels first, so the topic of the demoted
/// user loses, in the current state and in the state before the merge; the state after each
/// branch stays as it was.
#[tokio::test]
async fn a_fork_is_resolved_by_state_resolution() {
    let s = setup();
    let (room_id, levels) = shared_room(&s).await;
    let original_topic = current(&s.rooms, &room_id).await[&key("m.room.topic", "")].clone();

    let topic = remote_event(
        &s,
        &room_id,
        "@bob:remote.test",
        "m.room.topic",
        Some(""),
        json!({"topic": "bob's"}),
        std::slice::from_ref(&levels),
        5_000,
    )
    .await;
    let topic_id = topic.event_id.clone();
    assert!(matches!(
        s.rooms.accept(topic, Arrival::Live).await.unwrap(),
        PduOutcome::Accepted { .. }
    ));
    assert_eq!(
        current(&s.rooms, &room_id).await[&key("m.room.topic", "")],
        topic_id.as_str()
    );

    // Alice's demotion of bob, on the same parent (made by this server, arriving late).
    let state = s.rooms.state_ids_after(&levels).await.unwrap();
    let demotion = signed(
        s.rooms.server_key.key_pair(),
        Some(&room_id),
        &user("@alice:local.test"),
        "m.room.power_levels",
        Some(""),
        json!({"users": {"@bob:remote.test": 0, "@carol:remote.test": 50}}),
        std::slice::from_ref(&levels),
        &state,
        depth_of(&s.rooms, &levels).await + 1,
        4_000,
    );
    let demotion_id = demotion.event_id.clone();
    assert!(matches!(
        s.rooms.accept(demotion, Arrival::Live).await.unwrap(),
        PduOutcome::Accepted { .. }
    ));
    let mut both = vec![topic_id.to_string(), demotion_id.to_string()];
    both.sort();
    assert_eq!(extremities(&s.rooms, &room_id).await, both);
    let resolved = current(&s.rooms, &room_id).await;
    assert_eq!(
        resolved[&key("m.room.power_levels", "")],
        demotion_id.as_str()
    );
    assert_eq!(resolved[&key("m.room.topic", "")], original_topic);

    // The state after each branch is kept.
    assert_eq!(
        s.rooms.state_ids_after(&topic_id).await.unwrap()[&key("m.room.topic", "")],
        topic_id.as_str()
    );
    assert_eq!(
        s.rooms.state_ids_after(&demotion_id).await.unwrap()[&key("m.room.topic", "")],
        original_topic
    );

    // Carol merges the branches.
    let merge = remote_event(
        &s,
        &room_id,
        "@carol:remote.test",
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "merged"}),
        &[topic_id.clone(), demotion_id.clone()],
        6_000,
    )
    .await;
    let merge_id = merge.event_id.clone();
    assert!(matches!(
        s.rooms.accept(merge, Arrival::Live).await.unwrap(),
        PduOutcome::Accepted { .. }
    ));
    let before = s.rooms.state_ids_before(&merge_id).await.unwrap();
    assert_eq!(before[&key("m.room.topic", "")], original_topic);
    assert_eq!(
        before[&key("m.room.power_levels", "")],
        demotion_id.as_str()
    );
    assert_eq!(s.rooms.state_ids_after(&merge_id).await.unwrap(), before);
    assert_eq!(current(&s.rooms, &room_id).await, before);
    assert_eq!(
        extremities(&s.rooms, &room_id).await,
        vec![merge_id.to_string()]
    );

    // A local event goes on from the merge, with the resolved state.
    let next = s
        .rooms
        .append(
            &room_id,
            &user("@alice:local.test"),
            EventDraft::state("m.room.topic", "", json!({"topic": "after"})),
        )
        .await
        .unwrap();
    let after = s.rooms.state_ids_after(&next.event_id).await.unwrap();
    assert_eq!(after[&key("m.room.topic", "")], next.event_id.as_str());
    assert_eq!(after[&key("m.room.power_levels", "")], demotion_id.as_str());
    assert_eq!(current(&s.rooms, &room_id).await, after);
}

/// A banned user's events: one whose `prev_events` come after the ban is rejected (stored,
/// never served, never fetched again); one whose `prev_events` predate the ban is soft-failed
/// (never served, never a `prev_event`).
#[tokio::test]
async fn rejected_and_soft_failed_events_are_not_served() {
    let s = setup();
    let (room_id, levels) = shared_room(&s).await;
    let alice = user("@alice:local.test");
    let ban = s
        .rooms
        .append(
            &room_id,
            &alice,
            EventDraft::state(
                "m.room.member",
                "@bob:remote.test",
                json!({"membership": "ban"}),
            ),
        )
        .await
        .unwrap();

    // Bob's message on top of the ban, citing his old join as auth event: it passes against
    // its auth events, fails against the state before it.
    let before_ban = s.rooms.state_ids_after(&levels).await.unwrap();
    let rejected = signed(
        &s.remote,
        Some(&room_id),
        &user("@bob:remote.test"),
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "after the ban"}),
        std::slice::from_ref(&ban.event_id),
        &before_ban,
        depth_of(&s.rooms, &ban.event_id).await + 1,
        9_000,
    );
    let rejected_id = rejected.event_id.clone();
    assert!(matches!(
        s.rooms
            .accept(rejected.clone(), Arrival::Live)
            .await
            .unwrap(),
        PduOutcome::Rejected(_)
    ));
    assert_eq!(
        s.rooms.accept(rejected, Arrival::Live).await.unwrap(),
        PduOutcome::AlreadyKnown
    );
    assert!(
        s.rooms
            .missing_events(std::slice::from_ref(&rejected_id))
            .await
            .unwrap()
            .is_empty(),
        "a rejected event is held: never fetched again"
    );

    // Bob's message on a parent before the ban: soft-failed.
    let soft = remote_event(
        &s,
        &room_id,
        "@bob:remote.test",
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "before the ban"}),
        std::slice::from_ref(&levels),
        9_500,
    )
    .await;
    let soft_id = soft.event_id.clone();
    assert_eq!(
        s.rooms.accept(soft, Arrival::Live).await.unwrap(),
        PduOutcome::SoftFailed
    );
    assert_eq!(
        s.rooms.pdu_outcome(&soft_id).await.unwrap(),
        Some(PduOutcome::SoftFailed)
    );

    // An event citing the rejected one as auth event is rejected too.
    let mut state = before_ban.clone();
    state.insert(
        key("m.room.member", "@bob:remote.test"),
        rejected_id.to_string(),
    );
    let on_rejected = signed(
        &s.remote,
        Some(&room_id),
        &user("@bob:remote.test"),
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "x"}),
        std::slice::from_ref(&ban.event_id),
        &state,
        depth_of(&s.rooms, &ban.event_id).await + 1,
        9_600,
    );
    assert!(matches!(
        s.rooms.accept(on_rejected, Arrival::Live).await.unwrap(),
        PduOutcome::Rejected(_)
    ));

    for served in [
        sync_timeline(&s.rooms, &room_id).await,
        messages(&s.rooms, &room_id, "@alice:local.test").await,
    ] {
        assert!(served.contains(&ban.event_id.to_string()));
        assert!(!served.contains(&rejected_id.to_string()));
        assert!(!served.contains(&soft_id.to_string()));
    }
    assert_eq!(
        extremities(&s.rooms, &room_id).await,
        vec![ban.event_id.to_string()]
    );
    let next = s
        .rooms
        .append(
            &room_id,
            &alice,
            EventDraft::message("m.room.message", json!({"msgtype": "m.text", "body": "hi"})),
        )
        .await
        .unwrap();
    let next_id = next.event_id.to_string();
    let json = s
        .rooms
        .db
        .read(move |c| store::get_event(c, &next_id))
        .await
        .unwrap()
        .unwrap()
        .json;
    let prev: Value = serde_json::from_str::<Value>(&json).unwrap()["prev_events"].clone();
    assert_eq!(prev, json!([ban.event_id]));
}

/// A room on another server: joined with its state and auth chain as outliers (never in the
/// timeline), then history backfilled: below every live stream position (not in /sync), in
/// /messages in topological order; backward extremities follow.
#[tokio::test]
async fn joined_remote_room_and_backfill() {
    let s = setup();
    let bob = user("@bob:remote.test");
    let mut state = StateIds::new();
    let mut ts = 10_000;
    let mut chain: Vec<IncomingPdu> = Vec::new();
    let mut room_id: Option<OwnedRoomId> = None;
    let mut send = |kind: &str, state_key: Option<&str>, content: Value, state: &mut StateIds| {
        ts += 1;
        let prev: Vec<OwnedEventId> = chain
            .last()
            .map(|p| p.event_id.clone())
            .into_iter()
            .collect();
        let pdu = signed(
            &s.remote,
            room_id.as_ref(),
            &bob,
            kind,
            state_key,
            content,
            &prev,
            state,
            chain.len() as i64 + 1,
            ts,
        );
        room_id.get_or_insert(pdu.room_id.clone());
        if let Some(state_key) = state_key {
            state.insert(key(kind, state_key), pdu.event_id.to_string());
        }
        chain.push(pdu.clone());
        pdu
    };
    let create = send(
        "m.room.create",
        Some(""),
        json!({"room_version": "12"}),
        &mut state,
    );
    let bob_join = send(
        "m.room.member",
        Some("@bob:remote.test"),
        json!({"membership": "join"}),
        &mut state,
    );
    let levels = send(
        "m.room.power_levels",
        Some(""),
        json!({"users": {}}),
        &mut state,
    );
    let rules = send(
        "m.room.join_rules",
        Some(""),
        json!({"join_rule": "public"}),
        &mut state,
    );
    let visibility = send(
        "m.room.history_visibility",
        Some(""),
        json!({"history_visibility": "world_readable"}),
        &mut state,
    );
    let mut history = Vec::new();
    for n in 1..=3 {
        history.push(send(
            "m.room.message",
            None,
            json!({"msgtype": "m.text", "body": format!("old {n}")}),
            &mut state,
        ));
    }
    let state_at_join = state.clone();
    let mut join_state = state.clone();
    let join = {
        let dave = user("@dave:local.test");
        let prev = vec![history[2].event_id.clone()];
        let pdu = signed(
            s.rooms.server_key.key_pair(),
            room_id.as_ref(),
            &dave,
            "m.room.member",
            Some("@dave:local.test"),
            json!({"membership": "join"}),
            &prev,
            &join_state,
            9,
            ts + 1,
        );
        join_state.insert(
            key("m.room.member", "@dave:local.test"),
            pdu.event_id.to_string(),
        );
        pdu
    };
    let room_id = room_id.unwrap();
    let outliers = vec![
        create.clone(),
        bob_join.clone(),
        levels.clone(),
        rules.clone(),
        visibility.clone(),
    ];
    let joined = s
        .rooms
        .persist_joined_room(
            &room_id,
            &VERSION,
            prepared(&outliers),
            Vec::new(),
            join.clone(),
        )
        .await
        .unwrap();
    assert_eq!(joined.event_id, join.event_id);
    assert!(joined.stream > 0);
    assert_eq!(current(&s.rooms, &room_id).await, join_state);
    assert_eq!(
        s.rooms
            .membership(&room_id, &user("@dave:local.test"))
            .await
            .unwrap(),
        Some(MembershipState::Join)
    );
    assert_eq!(
        s.rooms.membership(&room_id, &bob).await.unwrap(),
        Some(MembershipState::Join)
    );
    assert_eq!(
        s.rooms
            .joined_servers(&room_id)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        vec!["local.test".to_owned(), "remote.test".to_owned()]
    );
    assert_eq!(
        s.rooms.state_ids_before(&join.event_id).await.unwrap(),
        state_at_join
    );
    assert_eq!(
        s.rooms.backward_extremities(&room_id).await.unwrap(),
        vec![(history[2].event_id.clone(), 9)]
    );
    // The room's state (outliers) is what state reads see: push rules, the directory.
    let room = room_id.to_string();
    let (levels_json, contents) = s
        .rooms
        .db
        .read(move |c| {
            Ok::<_, rusqlite::Error>((
                crate::storage::push::current_state_json(c, &room, "m.room.power_levels", "")?,
                crate::storage::directory::current_state_contents(
                    c,
                    &room,
                    &["m.room.create", "m.room.join_rules"],
                )?,
            ))
        })
        .await
        .unwrap();
    let levels_json: Value = serde_json::from_str(&levels_json.unwrap()).unwrap();
    assert_eq!(levels_json["type"], "m.room.power_levels");
    assert_eq!(levels_json["sender"], "@bob:remote.test");
    assert_eq!(contents.len(), 2);
    // Outliers are held, not in the timeline.
    assert!(
        s.rooms
            .missing_events(&[create.event_id.clone(), history[0].event_id.clone()])
            .await
            .unwrap()
            == vec![history[0].event_id.clone()]
    );
    assert_eq!(
        sync_timeline(&s.rooms, &room_id).await,
        vec![join.event_id.to_string()]
    );
    assert_eq!(
        messages(&s.rooms, &room_id, "@dave:local.test").await,
        vec![join.event_id.to_string()]
    );
    let auth_chain = s
        .rooms
        .auth_chain(std::slice::from_ref(&join.event_id))
        .await
        .unwrap();
    // Room version 12: the create event is named by the room ID, not listed.
    for outlier in [&bob_join, &levels, &rules] {
        assert!(auth_chain.contains(&outlier.event_id));
    }
    assert!(!auth_chain.contains(&join.event_id));

    // Backfill, oldest first: the first with the state before it given (the origin's
    // /state_ids), the others on their parents.
    let mut before_first = state_at_join.clone();
    before_first.retain(|_, id| !history.iter().any(|h| h.event_id.as_str() == id));
    let mut streams = Vec::new();
    for (n, pdu) in history.iter().enumerate() {
        let outcome = if n == 0 {
            s.rooms
                .accept_with_state(pdu.clone(), Arrival::Backfill, before_first.clone())
                .await
                .unwrap()
        } else {
            s.rooms
                .accept(pdu.clone(), Arrival::Backfill)
                .await
                .unwrap()
        };
        let PduOutcome::Accepted { stream } = outcome else {
            panic!("backfilled event not accepted: {outcome:?}");
        };
        assert!(stream < 0, "below every live position");
        streams.push(stream);
    }
    assert!(streams.windows(2).all(|w| w[1] < w[0]));
    assert_eq!(
        sync_timeline(&s.rooms, &room_id).await,
        vec![join.event_id.to_string()]
    );
    let mut expected = vec![join.event_id.to_string()];
    expected.extend(history.iter().rev().map(|p| p.event_id.to_string()));
    assert_eq!(
        messages(&s.rooms, &room_id, "@dave:local.test").await,
        expected
    );
    // Page by page: the tokens carry the negative stream positions.
    let mut paged = Vec::new();
    let mut from = None;
    loop {
        let page = s
            .rooms
            .messages(
                &room_id,
                &user("@dave:local.test"),
                None,
                from,
                None,
                Direction::Backward,
                1,
                |_| true,
            )
            .await
            .unwrap();
        paged.extend(
            page.chunk
                .iter()
                .map(|e| e["event_id"].as_str().unwrap().to_owned()),
        );
        match page.end {
            Some(end) => from = Some(end.parse::<PaginationToken>().unwrap()),
            None => break,
        }
        assert!(paged.len() <= expected.len(), "pagination ends");
    }
    assert_eq!(paged, expected);
    assert_eq!(
        format!("t6_{}", streams[0])
            .parse::<PaginationToken>()
            .unwrap(),
        PaginationToken::Topological((6, streams[0]))
    );
    // The join's parent is held now; the oldest message's parent (an outlier) is where
    // backfill goes on.
    assert_eq!(
        s.rooms.backward_extremities(&room_id).await.unwrap(),
        vec![(visibility.event_id.clone(), 6)]
    );
    // Current state and extremities did not move.
    assert_eq!(current(&s.rooms, &room_id).await, join_state);
    assert_eq!(
        extremities(&s.rooms, &room_id).await,
        vec![join.event_id.to_string()]
    );
}

/// Backfilled history of a room joined elsewhere, under `history_visibility: joined` set by an
/// event that is still an outlier (the state the join brought): the messages from before the
/// join stay hidden from the local member, and the backfill targets of a page are the
/// extremities it reaches.
#[tokio::test]
async fn backfilled_history_is_judged_with_outlier_state() {
    let s = setup();
    let bob = user("@bob:remote.test");
    let dave = user("@dave:local.test");
    let mut state = StateIds::new();
    let mut chain: Vec<IncomingPdu> = Vec::new();
    let mut room_id: Option<OwnedRoomId> = None;
    let events: [(&str, Option<&str>, Value); 7] = [
        ("m.room.create", Some(""), json!({"room_version": "12"})),
        (
            "m.room.member",
            Some("@bob:remote.test"),
            json!({"membership": "join"}),
        ),
        ("m.room.power_levels", Some(""), json!({"users": {}})),
        (
            "m.room.join_rules",
            Some(""),
            json!({"join_rule": "public"}),
        ),
        (
            "m.room.history_visibility",
            Some(""),
            json!({"history_visibility": "joined"}),
        ),
        (
            "m.room.message",
            None,
            json!({"msgtype": "m.text", "body": "secret 1"}),
        ),
        (
            "m.room.message",
            None,
            json!({"msgtype": "m.text", "body": "secret 2"}),
        ),
    ];
    for (n, (kind, state_key, content)) in events.into_iter().enumerate() {
        let prev: Vec<OwnedEventId> = chain
            .last()
            .map(|p| p.event_id.clone())
            .into_iter()
            .collect();
        let pdu = signed(
            &s.remote,
            room_id.as_ref(),
            &bob,
            kind,
            state_key,
            content,
            &prev,
            &state,
            n as i64 + 1,
            10_000 + n as u64,
        );
        room_id.get_or_insert(pdu.room_id.clone());
        if let Some(state_key) = state_key {
            state.insert(key(kind, state_key), pdu.event_id.to_string());
        }
        chain.push(pdu);
    }
    let room_id = room_id.unwrap();
    let join = signed(
        s.rooms.server_key.key_pair(),
        Some(&room_id),
        &dave,
        "m.room.member",
        Some("@dave:local.test"),
        json!({"membership": "join"}),
        &[chain[6].event_id.clone()],
        &state,
        8,
        20_000,
    );
    s.rooms
        .persist_joined_room(
            &room_id,
            &VERSION,
            prepared(&chain[..5]),
            Vec::new(),
            join.clone(),
        )
        .await
        .unwrap();
    // Nothing held below the join: a page of any size reaches the extremity.
    let from = Some(PaginationToken::Stream(i64::MAX / 2));
    assert_eq!(
        s.rooms.backfill_targets(&room_id, from, 10).await.unwrap(),
        vec![chain[6].event_id.clone()]
    );

    // A batch accepted oldest first at positions reserved for it: numbered in its order, below
    // every position held.
    let lowest = s.rooms.reserve_backfill_positions(2).await.unwrap();
    let first = s
        .rooms
        .accept_backfilled(chain[5].clone(), Some(state.clone()), lowest)
        .await
        .unwrap();
    let second = s
        .rooms
        .accept_backfilled(chain[6].clone(), None, lowest + 1)
        .await
        .unwrap();
    assert_eq!(
        (first, second),
        (
            PduOutcome::Accepted { stream: lowest },
            PduOutcome::Accepted { stream: lowest + 1 }
        )
    );
    assert!(lowest + 1 < 0);
    // The history visibility event is an outlier still; it is what the messages are judged by.
    assert_eq!(s.rooms.pdu_outcome(&chain[4].event_id).await.unwrap(), None);
    assert_eq!(
        messages(&s.rooms, &room_id, "@dave:local.test").await,
        vec![join.event_id.to_string()]
    );
    // Two events held below the join now: a page of 2 stops above the new extremity (the
    // outlier history visibility event, pointed at by the oldest), a page of 4 reaches it.
    assert!(
        s.rooms
            .backfill_targets(&room_id, from, 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.rooms.backfill_targets(&room_id, from, 4).await.unwrap(),
        vec![chain[4].event_id.clone()]
    );

    // Served to another server: the state before a remote state event is the one recorded
    // (its `unsigned` is not kept), with an auth chain that includes the outliers.
    let serve = crate::services::federation::serve::Serve::new(s.rooms.db.clone());
    async fn topic(s: &Setup, room_id: &OwnedRoomId, n: u64, prev: &OwnedEventId) -> IncomingPdu {
        let content = json!({"topic": format!("topic {n}")});
        let prev = std::slice::from_ref(prev);
        remote_event(
            s,
            room_id,
            "@bob:remote.test",
            "m.room.topic",
            Some(""),
            content,
            prev,
            n,
        )
        .await
    }
    let first = topic(&s, &room_id, 30_001, &join.event_id).await;
    s.rooms.accept(first.clone(), Arrival::Live).await.unwrap();
    let second = topic(&s, &room_id, 30_002, &first.event_id).await;
    s.rooms.accept(second.clone(), Arrival::Live).await.unwrap();
    let remote = ruma::server_name!("remote.test");
    let served = serve
        .state_ids(remote, &room_id, &second.event_id)
        .await
        .unwrap();
    let mut expected: Vec<OwnedEventId> = current(&s.rooms, &room_id)
        .await
        .into_iter()
        .filter(|(_, id)| *id != second.event_id.as_str())
        .map(|(_, id)| id.parse().unwrap())
        .chain([first.event_id.clone()])
        .collect();
    expected.sort();
    assert_eq!(served.pdu_ids, expected);
    for outlier in &chain[1..4] {
        assert!(
            served.auth_chain_ids.contains(&outlier.event_id),
            "{} not in {:?}",
            outlier.event_id,
            served.auth_chain_ids
        );
    }
}

/// A batch of outliers in any order is stored in auth order; an event its sender may not send
/// is recorded as rejected; auth events neither held nor in the batch are named.
#[tokio::test]
async fn outliers_are_checked_against_their_auth_events() {
    let s = setup();
    let (room_id, levels) = shared_room(&s).await;
    let state = s.rooms.state_ids_after(&levels).await.unwrap();
    let depth = depth_of(&s.rooms, &levels).await + 1;
    let eve = user("@eve:remote.test");
    let eve_join = signed(
        &s.remote,
        Some(&room_id),
        &eve,
        "m.room.member",
        Some("@eve:remote.test"),
        json!({"membership": "join"}),
        std::slice::from_ref(&levels),
        &state,
        depth,
        20_000,
    );
    let mut with_eve = state.clone();
    with_eve.insert(
        key("m.room.member", "@eve:remote.test"),
        eve_join.event_id.to_string(),
    );
    // Eve (power 0) may not change the power levels.
    let eve_levels = signed(
        &s.remote,
        Some(&room_id),
        &eve,
        "m.room.power_levels",
        Some(""),
        json!({"users": {"@eve:remote.test": 100}}),
        std::slice::from_ref(&eve_join.event_id),
        &with_eve,
        depth + 1,
        20_001,
    );
    let eve_topic = signed(
        &s.remote,
        Some(&room_id),
        &eve,
        "m.room.name",
        Some(""),
        json!({"name": "eve's"}),
        std::slice::from_ref(&eve_join.event_id),
        &with_eve,
        depth + 1,
        20_002,
    );
    let results = s
        .rooms
        .store_outliers(&VERSION, vec![eve_levels.clone(), eve_join.clone()])
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].0, eve_join.event_id, "auth order");
    assert!(matches!(results[0].1, PduOutcome::Accepted { .. }));
    assert!(matches!(results[1].1, PduOutcome::Rejected(_)));
    assert!(matches!(
        s.rooms.pdu_outcome(&eve_levels.event_id).await.unwrap(),
        Some(PduOutcome::Rejected(_))
    ));
    assert_eq!(s.rooms.pdu_outcome(&eve_join.event_id).await.unwrap(), None);
    // Outliers are not in the timeline.
    assert!(
        !sync_timeline(&s.rooms, &room_id)
            .await
            .contains(&eve_join.event_id.to_string())
    );
    assert_eq!(
        s.rooms
            .store_outliers(&VERSION, vec![eve_join.clone()])
            .await
            .unwrap()[0]
            .1,
        PduOutcome::AlreadyKnown
    );
    // The outlier joins the timeline once accepted.
    assert!(matches!(
        s.rooms
            .accept(eve_join.clone(), Arrival::Live)
            .await
            .unwrap(),
        PduOutcome::Accepted { .. }
    ));
    assert!(
        sync_timeline(&s.rooms, &room_id)
            .await
            .contains(&eve_join.event_id.to_string())
    );
    assert_eq!(
        s.rooms.membership(&room_id, &eve).await.unwrap(),
        Some(MembershipState::Join)
    );

    // Unknown auth events are named, nothing is stored.
    let mut unknown = with_eve.clone();
    unknown.insert(
        key("m.room.member", "@eve:remote.test"),
        "$unknown".to_owned(),
    );
    let orphan = signed(
        &s.remote,
        Some(&room_id),
        &eve,
        "m.room.name",
        Some(""),
        json!({"name": "x"}),
        std::slice::from_ref(&eve_join.event_id),
        &unknown,
        depth + 1,
        20_003,
    );
    let error = s
        .rooms
        .store_outliers(&VERSION, vec![orphan.clone()])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("$unknown"), "{error}");
    let error = s
        .rooms
        .accept(orphan.clone(), Arrival::Live)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("$unknown"), "{error}");
    assert_eq!(
        s.rooms
            .missing_events(std::slice::from_ref(&orphan.event_id))
            .await
            .unwrap(),
        vec![orphan.event_id.clone()]
    );
    // An event whose parent is unknown is refused, naming it.
    let lost = signed(
        &s.remote,
        Some(&room_id),
        &eve,
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "x"}),
        &[id("$nowhere")],
        &with_eve,
        depth + 1,
        20_004,
    );
    let error = s.rooms.accept(lost, Arrival::Live).await.unwrap_err();
    assert!(error.to_string().contains("$nowhere"), "{error}");
    // Eve (power 0) may not rename the room either.
    assert!(matches!(
        s.rooms.accept(eve_topic, Arrival::Live).await.unwrap(),
        PduOutcome::Rejected(_)
    ));
}

/// The gap path: a live event whose parents are unknown, with the state before it from its
/// origin (`/state_ids`, here a topic change held only as an outlier). It enters the timeline,
/// the topic it was given becomes the room's, its unknown parent is a backward extremity, and
/// the next event on top of it is accepted on its parents as usual. The state from the IDs
/// leaves out what is not held or not a state event, and refuses two events for one key.
#[tokio::test]
async fn an_event_after_a_gap_is_accepted_with_the_state_from_its_origin() {
    let s = setup();
    let (room_id, levels) = shared_room(&s).await;
    let bob = user("@bob:remote.test");
    let after_levels = s.rooms.state_ids_after(&levels).await.unwrap();
    let depth = depth_of(&s.rooms, &levels).await;
    let message = |prev: &OwnedEventId, state: &StateIds, depth: i64, body: &str| {
        signed(
            &s.remote,
            Some(&room_id),
            &bob,
            "m.room.message",
            None,
            json!({"msgtype": "m.text", "body": body}),
            std::slice::from_ref(prev),
            state,
            depth,
            7_000,
        )
    };
    // Bob's branch: a topic, then a message we never get, then the one we get.
    let topic = signed(
        &s.remote,
        Some(&room_id),
        &bob,
        "m.room.topic",
        Some(""),
        json!({"topic": "from the gap"}),
        std::slice::from_ref(&levels),
        &after_levels,
        depth + 1,
        6_000,
    );
    let mut after_topic = after_levels.clone();
    after_topic.insert(key("m.room.topic", ""), topic.event_id.to_string());
    let unknown = message(&topic.event_id, &after_topic, depth + 2, "never fetched");
    let arrived = message(&unknown.event_id, &after_topic, depth + 3, "arrived");

    s.rooms
        .store_outliers(&VERSION, vec![topic.clone()])
        .await
        .unwrap();
    let mut ids: Vec<OwnedEventId> = after_topic.values().map(|v| id(v)).collect();
    ids.push(unknown.event_id.clone()); // not held
    let (state, left_out) = s
        .rooms
        .state_from_event_ids(&room_id, ids.clone())
        .await
        .unwrap();
    assert_eq!(state, after_topic);
    assert_eq!(left_out, vec![unknown.event_id.clone()]);
    // A held message is no state event; two events for one key are refused.
    let first_message = s
        .rooms
        .append(
            &room_id,
            &user("@alice:local.test"),
            EventDraft::message(
                "m.room.message",
                json!({"msgtype": "m.text", "body": "local"}),
            ),
        )
        .await
        .unwrap();
    let (_, left_out) = s
        .rooms
        .state_from_event_ids(&room_id, vec![first_message.event_id.clone()])
        .await
        .unwrap();
    assert_eq!(left_out, vec![first_message.event_id.clone()]);
    let mut ids_with_two_topics = vec![topic.event_id.clone()];
    ids_with_two_topics.push(id(&after_levels[&key("m.room.topic", "")]));
    assert!(
        s.rooms
            .state_from_event_ids(&room_id, ids_with_two_topics)
            .await
            .is_err()
    );

    // `accept` names the unknown parent; `accept_with_state` takes the given state.
    assert!(
        s.rooms
            .accept(arrived.clone(), Arrival::Live)
            .await
            .is_err()
    );
    let outcome = s
        .rooms
        .accept_with_state(arrived.clone(), Arrival::Live, state)
        .await
        .unwrap();
    assert!(
        matches!(outcome, PduOutcome::Accepted { .. }),
        "{outcome:?}"
    );
    let current_state = current(&s.rooms, &room_id).await;
    assert_eq!(
        current_state[&key("m.room.topic", "")],
        topic.event_id.as_str()
    );
    assert_eq!(
        s.rooms.backward_extremities(&room_id).await.unwrap(),
        vec![(unknown.event_id.clone(), depth + 3)]
    );
    assert_eq!(
        sync_timeline(&s.rooms, &room_id).await.last(),
        Some(&arrived.event_id.to_string())
    );
    // Both branches are forward extremities: alice's message and the arrived one.
    let mut both = vec![
        first_message.event_id.to_string(),
        arrived.event_id.to_string(),
    ];
    both.sort();
    assert_eq!(extremities(&s.rooms, &room_id).await, both);

    // The next event of bob's branch is accepted on its parent as usual.
    let next = message(&arrived.event_id, &after_topic, depth + 4, "next");
    assert!(matches!(
        s.rooms.accept(next.clone(), Arrival::Live).await.unwrap(),
        PduOutcome::Accepted { .. }
    ));
    assert_eq!(
        current(&s.rooms, &room_id).await[&key("m.room.topic", "")],
        topic.event_id.as_str()
    );
}

/// Events as a join's answer brings them to the room layer.
fn prepared(events: &[IncomingPdu]) -> Vec<super::PreparedPdu> {
    events
        .iter()
        .map(|event| super::PreparedPdu::new(event.clone()).unwrap())
        .collect()
}

/// A remote redaction of a local user's event takes effect when its sender may redact others'
/// events by the room's power levels (`rooms::power_levels`), and is kept without effect when
/// the room asks for more.
#[tokio::test]
async fn remote_redactions_apply_by_the_power_levels() {
    let s = setup();
    let (room_id, _) = shared_room(&s).await;
    let alice = user("@alice:local.test");
    let say = |body: &'static str| {
        let (s, room_id, alice) = (&s, &room_id, &alice);
        async move {
            let content = json!({"msgtype": "m.text", "body": body});
            let draft = EventDraft::message("m.room.message", content);
            s.rooms
                .append(room_id, alice, draft)
                .await
                .unwrap()
                .event_id
        }
    };
    let redacted_by = |target: OwnedEventId| {
        let rooms = &s.rooms;
        async move {
            let target = target.to_string();
            rooms
                .db
                .read(move |c| Ok::<_, rusqlite::Error>(store::get_event(c, &target)?.unwrap()))
                .await
                .unwrap()
                .redacted_by
        }
    };
    let redact = |sender: &'static str, target: OwnedEventId, ts: u64| {
        let (s, room_id) = (&s, &room_id);
        async move {
            let prev = extremities(&s.rooms, room_id).await;
            let content = json!({"redacts": target});
            let redaction = remote_event(
                s,
                room_id,
                sender,
                "m.room.redaction",
                None,
                content,
                &[id(&prev[0])],
                ts,
            )
            .await;
            let redaction_id = redaction.event_id.clone();
            let outcome = s.rooms.accept(redaction, Arrival::Live).await.unwrap();
            assert!(
                matches!(outcome, PduOutcome::Accepted { .. }),
                "{outcome:?}"
            );
            redaction_id
        }
    };

    // bob is at 50, the default `redact` level.
    let first = say("first").await;
    let by_bob = redact("@bob:remote.test", first.clone(), 6_000).await;
    assert_eq!(redacted_by(first).await, Some(by_bob.to_string()));

    // With `redact` at 100 carol (at 50) may still send a redaction, to no effect on alice's.
    let levels =
        json!({"users": {"@bob:remote.test": 50, "@carol:remote.test": 50}, "redact": 100});
    let draft = EventDraft::state("m.room.power_levels", "", levels);
    s.rooms.append(&room_id, &alice, draft).await.unwrap();
    let second = say("second").await;
    redact("@carol:remote.test", second.clone(), 6_001).await;
    assert_eq!(redacted_by(second).await, None);
}
