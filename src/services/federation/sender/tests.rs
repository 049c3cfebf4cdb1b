use ruma::{owned_event_id, owned_room_id, server_name};

use super::*;

fn open() -> (tempfile::TempDir, Connection) {
    let (dir, path) = crate::storage::migrated_test_file();
    let conn = Connection::open(path).unwrap();
    (dir, conn)
}

fn member(conn: &Connection, room: &str, user: &str, membership: MembershipState) {
    crate::storage::rooms::set_membership(conn, room, user, membership.as_str(), "$m", 1).unwrap();
}

fn queue(conn: &Connection, destination: &str, from: i64, to: i64) {
    for stream in from..=to {
        store::enqueue_pdu(
            conn,
            destination,
            &QueuedPdu {
                stream_ordering: stream,
                room_id: "!r:us".to_owned(),
                event_id: format!("$e{stream}"),
            },
        )
        .unwrap();
    }
}

fn queue_edus(conn: &Connection, destination: &str, count: usize) {
    for i in 0..count {
        store::enqueue_edu(conn, destination, "m.typing", &format!("{{\"n\":{i}}}")).unwrap();
    }
}

fn ids(from: i64, to: i64) -> Vec<String> {
    (from..=to).map(|s| format!("$e{s}")).collect()
}

#[test]
fn batches_hold_at_most_50_pdus_and_100_edus_in_order_and_a_retry_is_the_same() {
    let (_dir, conn) = open();
    queue(&conn, "remote", 1, 120);
    queue_edus(&conn, "remote", 130);

    let first = prepare_batch(&conn, "remote", 1000).unwrap().unwrap();
    assert!(!first.retry);
    assert_eq!(first.event_ids, ids(1, 50));
    assert_eq!(first.edus.len(), 100);
    assert_eq!(first.edus[0].json, "{\"n\":0}");

    // Not acknowledged: the same ID and the same contents, even with more queued meanwhile.
    queue(&conn, "remote", 121, 125);
    let again = prepare_batch(&conn, "remote", 9000).unwrap().unwrap();
    assert!(again.retry);
    assert_eq!(again.txn_id, first.txn_id);
    assert_eq!(again.event_ids, first.event_ids);
    assert_eq!(again.edus, first.edus);

    assert!(store::finish_txn(&conn, "remote", &first.txn_id, 9500, true).unwrap());
    let second = prepare_batch(&conn, "remote", 10_000).unwrap().unwrap();
    assert_ne!(second.txn_id, first.txn_id);
    assert_eq!(second.event_ids, ids(51, 100));
    assert_eq!(second.edus.len(), 30);
    assert_eq!(second.edus[0].json, "{\"n\":100}");
    // An old ID changes nothing.
    assert!(!store::finish_txn(&conn, "remote", &first.txn_id, 10_001, true).unwrap());
    assert!(store::finish_txn(&conn, "remote", &second.txn_id, 10_002, true).unwrap());

    let third = prepare_batch(&conn, "remote", 11_000).unwrap().unwrap();
    assert_eq!(third.event_ids, ids(101, 125));
    assert!(third.edus.is_empty());
    store::finish_txn(&conn, "remote", &third.txn_id, 11_001, true).unwrap();
    assert_eq!(prepare_batch(&conn, "remote", 12_000).unwrap(), None);
    let state = store::destination_state(&conn, "remote").unwrap().unwrap();
    assert_eq!(state.last_success_ts, Some(11_001));
    assert_eq!(state.txn, None);
}

#[test]
fn destinations_are_the_joined_servers_and_the_member_server_never_this_one() {
    let (_dir, conn) = open();
    let room = "!room:us";
    member(&conn, room, "@a:us", MembershipState::Join);
    member(&conn, room, "@b:one.example", MembershipState::Join);
    member(&conn, room, "@b2:one.example", MembershipState::Join);
    member(&conn, room, "@c:two.example:8448", MembershipState::Join);
    member(&conn, room, "@d:left.example", MembershipState::Leave);
    member(&conn, room, "@e:invited.example", MembershipState::Invite);
    enqueue_pdu(
        &conn,
        server_name!("us"),
        &owned_room_id!("!room:us"),
        &owned_event_id!("$kick"),
        7,
        &[server_name!("left.example"), server_name!("us")],
    )
    .unwrap();
    let pending: Vec<String> = store::pending_destinations(&conn)
        .unwrap()
        .into_iter()
        .map(|p| p.destination)
        .collect();
    let mut pending = pending;
    pending.sort();
    assert_eq!(pending, ["left.example", "one.example", "two.example:8448"]);
    // A room with only local members queues nothing.
    member(&conn, "!local:us", "@a:us", MembershipState::Join);
    enqueue_pdu(
        &conn,
        server_name!("us"),
        &owned_room_id!("!local:us"),
        &owned_event_id!("$x"),
        8,
        &[],
    )
    .unwrap();
    assert_eq!(
        store::queued_pdus(&conn, "one.example", None, 100)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_backlog_over_the_bound_falls_back_to_catch_up_with_the_newest_event_of_each_room() {
    let (_dir, conn) = open();
    for (room, user) in [("!a:us", "@r:remote"), ("!b:us", "@r:remote")] {
        member(&conn, room, user, MembershipState::Join);
    }
    let us = server_name!("us");
    for stream in 1..=MAX_BACKLOG_PDUS + 1 {
        let room = if stream % 2 == 0 { "!a:us" } else { "!b:us" };
        let event = OwnedEventId::try_from(format!("$e{stream}")).unwrap();
        enqueue_pdu(
            &conn,
            us,
            &RoomId::parse(room).unwrap(),
            &event,
            stream,
            &[],
        )
        .unwrap();
    }
    let status = store::all_status(&conn).unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].queued_pdus, 0, "the backlog was dropped");
    assert_eq!(status[0].catch_up_rooms, 2);
    assert!(status[0].state.catching_up);

    // While catching up, a new event replaces its room's row.
    let event = owned_event_id!("$newest");
    enqueue_pdu(
        &conn,
        us,
        &RoomId::parse("!a:us").unwrap(),
        &event,
        5000,
        &[],
    )
    .unwrap();
    let batch = prepare_batch(&conn, "remote", 1).unwrap().unwrap();
    assert_eq!(
        batch.event_ids,
        [format!("$e{}", MAX_BACKLOG_PDUS + 1), "$newest".to_owned()]
    );
    // A newer event arriving while that transaction is in flight stays for the next one.
    let later = owned_event_id!("$later");
    enqueue_pdu(
        &conn,
        us,
        &RoomId::parse("!a:us").unwrap(),
        &later,
        5001,
        &[],
    )
    .unwrap();
    assert_eq!(
        prepare_batch(&conn, "remote", 2).unwrap().unwrap(),
        Batch {
            retry: true,
            ..batch.clone()
        }
    );
    store::finish_txn(&conn, "remote", &batch.txn_id, 3, true).unwrap();
    let next = prepare_batch(&conn, "remote", 4).unwrap().unwrap();
    assert_eq!(next.event_ids, ["$later"]);
    store::finish_txn(&conn, "remote", &next.txn_id, 5, true).unwrap();
    assert!(!store::is_catching_up(&conn, "remote").unwrap());

    // Caught up: events are queued again.
    let again = owned_event_id!("$again");
    enqueue_pdu(
        &conn,
        us,
        &RoomId::parse("!b:us").unwrap(),
        &again,
        5002,
        &[],
    )
    .unwrap();
    assert_eq!(
        store::queued_pdus(&conn, "remote", None, 10).unwrap().len(),
        1
    );
}

#[test]
fn backoff_is_stored_and_cleared() {
    let (_dir, conn) = open();
    queue(&conn, "down.example", 1, 1);
    store::record_failure(&conn, "down.example", 1_000, 600_000).unwrap();
    store::record_failure(&conn, "down.example", 2_000, 1_200_000).unwrap();
    let state = store::destination_state(&conn, "down.example")
        .unwrap()
        .unwrap();
    assert_eq!(state.failure_ts, Some(1_000), "when it started failing");
    assert_eq!(
        (state.retry_last_ts, state.retry_interval),
        (2_000, 1_200_000)
    );
    let pending = store::pending_destinations(&conn).unwrap();
    assert_eq!(pending[0].retry_at, 1_202_000);
    assert_eq!(
        store::failing_destinations(&conn).unwrap(),
        ["down.example"]
    );
    assert!(store::clear_backoff(&conn, "down.example").unwrap());
    assert!(!store::clear_backoff(&conn, "down.example").unwrap());
    assert_eq!(store::pending_destinations(&conn).unwrap()[0].retry_at, 0);
}

#[test]
fn a_pdu_goes_out_without_the_unsigned_this_server_adds() {
    let pdu = federation_pdu(
        r#"{"type":"m.room.name","content":{"name":"x"},"unsigned":{"prev_content":{}}}"#,
    )
    .unwrap();
    assert_eq!(
        pdu.get(),
        r#"{"content":{"name":"x"},"type":"m.room.name"}"#
    );
}

/// Refusals that will not change are dropped at once (no backoff): a 4xx other than "not now",
/// and a destination outside `federation_domain_whitelist`; anything else is retried.
#[test]
fn permanent_failures_are_the_ones_that_will_not_change() {
    assert!(SendFailure::Status(403, String::new()).is_permanent());
    assert!(SendFailure::NotAllowed(String::new()).is_permanent());
    for retried in [
        SendFailure::Status(429, String::new()),
        SendFailure::Status(404, String::new()),
        SendFailure::Status(502, String::new()),
        SendFailure::Unreachable(String::new()),
        SendFailure::BadResponse(String::new()),
    ] {
        assert!(!retried.is_permanent(), "{retried}");
    }
}
