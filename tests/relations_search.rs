//! `/relations`, bundled aggregations, `/threads`, `/context` and `/search`.

use crate::common;
use crate::extras;

use common::{TestServer, assert_error};
use extras::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn get_ok(server: &TestServer, path: &str, who: &common::Session) -> Value {
    let (status, body) = server.get(path, who.token()).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

async fn event(server: &TestServer, who: &common::Session, room: &str, id: &str) -> Value {
    get_ok(server, &room_path(room, &format!("event/{}", enc(id))), who).await
}

#[tokio::test]
async fn relations_pages_and_bundled_aggregations() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let carol = server.register("carol", "password").await;
    let dave = server.register("dave", "password").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;

    let root = send_text(&server, &alice, &room, "root message").await;
    let edit1 = send(
        &server,
        &alice,
        &room,
        "m.room.message",
        edit(&root, "first edit"),
    )
    .await;
    let reply1 = send(
        &server,
        &alice,
        &room,
        "m.room.message",
        thread_reply(&root, "one"),
    )
    .await;
    let reply2 = send(
        &server,
        &bob,
        &room,
        "m.room.message",
        thread_reply(&root, "two"),
    )
    .await;
    let edit2 = send(
        &server,
        &alice,
        &room,
        "m.room.message",
        edit(&root, "second edit"),
    )
    .await;
    // Someone else's "edit" is not an edit.
    let foreign_edit = send(
        &server,
        &bob,
        &room,
        "m.room.message",
        edit(&root, "hijack"),
    )
    .await;
    let reply3 = send(
        &server,
        &alice,
        &room,
        "m.room.message",
        thread_reply(&root, "three"),
    )
    .await;
    let reference = send(
        &server,
        &bob,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "see above",
               "m.relates_to": {"rel_type": "m.reference", "event_id": root}}),
    )
    .await;
    let reaction = send(
        &server,
        &bob,
        &room,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}}),
    )
    .await;
    // An edit of a thread reply: a relation of a relation.
    let reply_edit = send(
        &server,
        &alice,
        &room,
        "m.room.message",
        edit(&reply1, "one!"),
    )
    .await;
    let unrelated = send_text(&server, &alice, &room, "unrelated").await;

    // Every relation, newest first.
    let base = v1_room_path(&room, &format!("relations/{}", enc(&root)));
    let all = get_ok(&server, &base, &alice).await;
    assert_eq!(
        ids(&all["chunk"]),
        vec![
            reaction.clone(),
            reference.clone(),
            reply3.clone(),
            foreign_edit.clone(),
            edit2.clone(),
            reply2.clone(),
            reply1.clone(),
            edit1.clone()
        ]
    );
    assert!(all.get("next_batch").is_none(), "{all}");
    assert!(all.get("prev_batch").is_none(), "{all}");
    assert!(all.get("recursion_depth").is_none(), "{all}");
    assert!(!ids(&all["chunk"]).contains(&unrelated));
    assert_eq!(all["chunk"][0]["room_id"], room.as_str());

    // By relation type, paginated.
    let threads = format!("{base}/m.thread");
    let page1 = get_ok(&server, &format!("{threads}?limit=2"), &alice).await;
    assert_eq!(ids(&page1["chunk"]), vec![reply3.clone(), reply2.clone()]);
    let next = page1["next_batch"].as_str().expect("next_batch").to_owned();
    let page2 = get_ok(
        &server,
        &format!("{threads}?limit=2&from={}", enc(&next)),
        &alice,
    )
    .await;
    assert_eq!(ids(&page2["chunk"]), vec![reply1.clone()]);
    assert_eq!(page2["prev_batch"], next.as_str());
    assert!(page2.get("next_batch").is_none(), "{page2}");
    // Forwards, oldest first.
    let forwards = get_ok(&server, &format!("{threads}?dir=f"), &alice).await;
    assert_eq!(
        ids(&forwards["chunk"]),
        vec![reply1.clone(), reply2.clone(), reply3.clone()]
    );
    // `to` is exclusive: forwards up to the token of the page that returned reply2.
    let upto = get_ok(
        &server,
        &format!("{threads}?dir=f&to={}", enc(&next)),
        &alice,
    )
    .await;
    assert_eq!(ids(&upto["chunk"]), vec![reply1.clone()]);
    // And backwards: from the newest down to (not including) reply2.
    let downto = get_ok(&server, &format!("{threads}?to={}", enc(&next)), &alice).await;
    assert_eq!(ids(&downto["chunk"]), vec![reply3.clone()]);
    // By relation type and event type.
    let reactions = get_ok(&server, &format!("{base}/m.annotation/m.reaction"), &alice).await;
    assert_eq!(ids(&reactions["chunk"]), vec![reaction.clone()]);
    let none = get_ok(
        &server,
        &format!("{base}/m.annotation/m.room.message"),
        &alice,
    )
    .await;
    assert_eq!(none["chunk"], json!([]));

    // Recursion reaches the edit of a thread reply.
    let edits = get_ok(&server, &format!("{base}/m.replace"), &alice).await;
    assert_eq!(
        ids(&edits["chunk"]),
        vec![foreign_edit.clone(), edit2.clone(), edit1.clone()]
    );
    let deep = get_ok(&server, &format!("{base}/m.replace?recurse=true"), &alice).await;
    assert_eq!(
        ids(&deep["chunk"]),
        vec![
            reply_edit.clone(),
            foreign_edit.clone(),
            edit2.clone(),
            edit1.clone()
        ]
    );
    assert_eq!(deep["recursion_depth"], 3);

    // The bundle on the root: latest edit by the sender, thread summary, references.
    let served = event(&server, &alice, &room, &root).await;
    let relations = &served["unsigned"]["m.relations"];
    assert_eq!(
        relations["m.replace"]["event_id"],
        edit2.as_str(),
        "{served}"
    );
    assert_eq!(
        relations["m.replace"]["content"]["m.new_content"]["body"],
        "second edit"
    );
    assert_eq!(relations["m.thread"]["count"], 3, "{served}");
    assert_eq!(
        relations["m.thread"]["latest_event"]["event_id"],
        reply3.as_str()
    );
    assert_eq!(relations["m.thread"]["current_user_participated"], true);
    assert_eq!(
        relations["m.reference"]["chunk"],
        json!([{"event_id": reference}])
    );
    assert!(relations.get("m.annotation").is_none(), "{served}");
    // Participation is the reader's.
    let for_carol = event(&server, &carol, &room, &root).await;
    assert_eq!(
        for_carol["unsigned"]["m.relations"]["m.thread"]["current_user_participated"],
        false
    );
    let for_bob = event(&server, &bob, &room, &root).await;
    assert_eq!(
        for_bob["unsigned"]["m.relations"]["m.thread"]["current_user_participated"],
        true
    );
    // Edits carry no bundle of their own; the edited thread reply does.
    let served_edit = event(&server, &alice, &room, &edit2).await;
    assert!(
        served_edit["unsigned"].get("m.relations").is_none(),
        "{served_edit}"
    );
    let served_reply = event(&server, &alice, &room, &reply1).await;
    assert_eq!(
        served_reply["unsigned"]["m.relations"]["m.replace"]["event_id"],
        reply_edit.as_str()
    );

    // The same bundle in /messages and in the /sync timeline.
    let messages = get_ok(
        &server,
        &room_path(&room, "messages?dir=b&limit=50"),
        &alice,
    )
    .await;
    let in_messages = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == root.as_str())
        .expect("root in /messages");
    assert_eq!(
        in_messages["unsigned"]["m.relations"]["m.thread"]["count"],
        3
    );
    assert_eq!(
        in_messages["unsigned"]["m.relations"]["m.replace"]["event_id"],
        edit2.as_str()
    );
    let filter = json!({"room": {"timeline": {"limit": 50}}}).to_string();
    let sync = get_ok(
        &server,
        &format!("/_matrix/client/v3/sync?filter={}", enc(&filter)),
        &alice,
    )
    .await;
    let timeline = &sync["rooms"]["join"][room.as_str()]["timeline"]["events"];
    let in_sync = timeline
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == root.as_str())
        .expect("root in sync");
    assert_eq!(in_sync["unsigned"]["m.relations"]["m.thread"]["count"], 3);
    assert_eq!(
        in_sync["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"],
        reply3.as_str()
    );
    assert!(
        in_sync["unsigned"]["m.relations"]["m.thread"]["latest_event"]
            .get("room_id")
            .is_none(),
        "sync events carry no room_id: {in_sync}"
    );

    // Redacted relations drop out of pages and bundles.
    redact(&server, &alice, &room, &edit2).await;
    redact(&server, &alice, &room, &reply3).await;
    let served = event(&server, &alice, &room, &root).await;
    let relations = &served["unsigned"]["m.relations"];
    assert_eq!(
        relations["m.replace"]["event_id"],
        edit1.as_str(),
        "{served}"
    );
    assert_eq!(relations["m.thread"]["count"], 2);
    assert_eq!(
        relations["m.thread"]["latest_event"]["event_id"],
        reply2.as_str()
    );
    let after = get_ok(&server, &threads, &alice).await;
    assert_eq!(ids(&after["chunk"]), vec![reply2.clone(), reply1.clone()]);

    // Unknown events and readers who may not see the event: 404.
    let unknown = v1_room_path(&room, "relations/%24nope");
    assert_error(
        &server.get(&unknown, alice.token()).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(&server.get(&base, dave.token()).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn aggregations_show_only_what_the_reader_may_see() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat",
               "initial_state": [{"type": "m.room.history_visibility", "state_key": "",
                                  "content": {"history_visibility": "joined"}}]}),
    )
    .await;
    join(&server, &bob, &room).await;
    let root = send_text(&server, &alice, &room, "root").await;
    let seen_reply = send(
        &server,
        &alice,
        &room,
        "m.room.message",
        thread_reply(&root, "seen"),
    )
    .await;
    let (status, body) = server
        .post(&room_path(&room, "leave"), bob.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let hidden_reply = send(
        &server,
        &alice,
        &room,
        "m.room.message",
        thread_reply(&root, "after bob left"),
    )
    .await;
    send(
        &server,
        &alice,
        &room,
        "m.room.message",
        edit(&root, "edited later"),
    )
    .await;

    // Alice sees the newest reply and the edit.
    let for_alice = event(&server, &alice, &room, &root).await;
    let relations = &for_alice["unsigned"]["m.relations"];
    assert_eq!(
        relations["m.thread"]["latest_event"]["event_id"],
        hidden_reply.as_str()
    );
    assert_eq!(relations["m.thread"]["count"], 2);
    assert_eq!(
        relations["m.replace"]["content"]["m.new_content"]["body"],
        "edited later"
    );

    // Bob, who left, sees the root as it was while he was there: the reply he saw, no edit.
    let for_bob = event(&server, &bob, &room, &root).await;
    let relations = &for_bob["unsigned"]["m.relations"];
    assert_eq!(
        relations["m.thread"]["latest_event"]["event_id"],
        seen_reply.as_str(),
        "{for_bob}"
    );
    assert_eq!(
        relations["m.thread"]["latest_event"]["content"]["body"],
        "seen"
    );
    assert!(relations.get("m.replace").is_none(), "{for_bob}");
    assert!(!for_bob.to_string().contains("after bob left"), "{for_bob}");
    assert!(!for_bob.to_string().contains("edited later"), "{for_bob}");
}

#[tokio::test]
async fn threads_by_latest_activity() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;

    let a = send_text(&server, &alice, &room, "thread A").await;
    let b = send_text(&server, &alice, &room, "thread B").await;
    let c = send_text(&server, &alice, &room, "not a thread").await;
    send(
        &server,
        &alice,
        &room,
        "m.room.message",
        thread_reply(&a, "a1"),
    )
    .await;
    send(
        &server,
        &bob,
        &room,
        "m.room.message",
        thread_reply(&b, "b1"),
    )
    .await;
    let a2 = send(
        &server,
        &alice,
        &room,
        "m.room.message",
        thread_reply(&a, "a2"),
    )
    .await;

    let path = v1_room_path(&room, "threads");
    let all = get_ok(&server, &path, &alice).await;
    assert_eq!(ids(&all["chunk"]), vec![a.clone(), b.clone()]);
    assert!(!ids(&all["chunk"]).contains(&c));
    assert_eq!(
        all["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"],
        2
    );
    assert_eq!(
        all["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"],
        a2.as_str()
    );
    assert!(all.get("next_batch").is_none(), "{all}");

    // Pagination.
    let first = get_ok(&server, &format!("{path}?limit=1"), &alice).await;
    assert_eq!(ids(&first["chunk"]), vec![a.clone()]);
    let next = first["next_batch"].as_str().expect("next_batch");
    let second = get_ok(
        &server,
        &format!("{path}?limit=1&from={}", enc(next)),
        &alice,
    )
    .await;
    assert_eq!(ids(&second["chunk"]), vec![b.clone()]);

    // Only threads bob took part in; alice started both.
    let bobs = get_ok(&server, &format!("{path}?include=participated"), &bob).await;
    assert_eq!(ids(&bobs["chunk"]), vec![b.clone()]);
    let alices = get_ok(&server, &format!("{path}?include=participated"), &alice).await;
    assert_eq!(ids(&alices["chunk"]), vec![a.clone(), b.clone()]);

    // New activity in B moves it to the top.
    send(
        &server,
        &alice,
        &room,
        "m.room.message",
        thread_reply(&b, "b2"),
    )
    .await;
    let all = get_ok(&server, &path, &alice).await;
    assert_eq!(ids(&all["chunk"]), vec![b, a]);

    // Outsiders of a private room may not list its threads.
    let private = create_room(&server, &alice, json!({})).await;
    let carol = server.register("carol", "password").await;
    assert_error(
        &server
            .get(&v1_room_path(&private, "threads"), carol.token())
            .await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn context_around_an_event() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let mut sent = Vec::new();
    for i in 0..10 {
        sent.push(send_text(&server, &alice, &room, &format!("m{i}")).await);
    }

    let path = |id: &str, query: &str| room_path(&room, &format!("context/{}?{query}", enc(id)));
    let context = get_ok(&server, &path(&sent[5], "limit=4"), &alice).await;
    assert_eq!(context["event"]["event_id"], sent[5].as_str());
    assert_eq!(context["event"]["content"]["body"], "m5");
    assert_eq!(
        ids(&context["events_before"]),
        vec![sent[4].clone(), sent[3].clone()]
    );
    assert_eq!(
        ids(&context["events_after"]),
        vec![sent[6].clone(), sent[7].clone()]
    );
    // The state at the last event: everything, members included.
    let state = context["state"].as_array().expect("state");
    assert!(state.iter().any(|e| e["type"] == "m.room.create"));
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
    );

    // The tokens continue with /messages on both sides without gap or overlap.
    let start = context["start"].as_str().expect("start");
    let end = context["end"].as_str().expect("end");
    let back = get_ok(
        &server,
        &room_path(
            &room,
            &format!("messages?dir=b&limit=2&from={}", enc(start)),
        ),
        &alice,
    )
    .await;
    assert_eq!(ids(&back["chunk"]), vec![sent[2].clone(), sent[1].clone()]);
    let forward = get_ok(
        &server,
        &room_path(&room, &format!("messages?dir=f&limit=2&from={}", enc(end))),
        &alice,
    )
    .await;
    assert_eq!(
        ids(&forward["chunk"]),
        vec![sent[8].clone(), sent[9].clone()]
    );

    // Filtered, with lazy-loaded members: only the members of the senders shown.
    let filter = json!({"types": ["m.room.message", "m.room.member", "m.room.create"],
                        "lazy_load_members": true})
    .to_string();
    let lazy = get_ok(
        &server,
        &path(&sent[1], &format!("limit=6&filter={}", enc(&filter))),
        &alice,
    )
    .await;
    // Before m1: m0, then bob's join, alice's join (the filter keeps members and messages).
    assert_eq!(lazy["events_before"][0]["event_id"], sent[0].as_str());
    assert_eq!(lazy["events_before"][1]["type"], "m.room.member");
    assert_eq!(ids(&lazy["events_after"]), sent[2..5].to_vec());
    let state = lazy["state"].as_array().expect("state");
    let members: Vec<&str> = state
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert!(members.contains(&alice.user_id.as_str()), "{lazy}");
    assert!(
        members.contains(&bob.user_id.as_str()),
        "bob's join is shown: {lazy}"
    );
    assert!(state.iter().any(|e| e["type"] == "m.room.create"));
    assert!(
        !state.iter().any(|e| e["type"] == "m.room.join_rules"),
        "filtered: {lazy}"
    );
    let only_messages = json!({"types": ["m.room.message"], "lazy_load_members": true}).to_string();
    let lazy = get_ok(
        &server,
        &path(&sent[5], &format!("limit=2&filter={}", enc(&only_messages))),
        &alice,
    )
    .await;
    assert_eq!(ids(&lazy["events_before"]), vec![sent[4].clone()]);
    assert_eq!(ids(&lazy["events_after"]), vec![sent[6].clone()]);

    // limit=0: the event alone.
    let alone = get_ok(&server, &path(&sent[5], "limit=0"), &alice).await;
    assert_eq!(alone["event"]["event_id"], sent[5].as_str());
    assert!(
        alone.get("events_before").is_none_or(|e| e == &json!([])),
        "{alone}"
    );
    assert!(
        alone.get("events_after").is_none_or(|e| e == &json!([])),
        "{alone}"
    );

    // Unknown events and events the reader may not see: 404.
    assert_error(
        &server
            .get(&path("$unknown", "limit=2"), alice.token())
            .await,
        404,
        "M_NOT_FOUND",
    );
    let private = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    send_state(
        &server,
        &alice,
        &private,
        "m.room.history_visibility",
        "",
        json!({"history_visibility": "joined"}),
    )
    .await;
    let early = send_text(&server, &alice, &private, "before carol").await;
    let carol = server.register("carol", "password").await;
    join(&server, &carol, &private).await;
    let later = send_text(&server, &alice, &private, "after carol").await;
    let private_path = |id: &str| room_path(&private, &format!("context/{}?limit=10", enc(id)));
    assert_error(
        &server.get(&private_path(&early), carol.token()).await,
        404,
        "M_NOT_FOUND",
    );
    let visible = get_ok(&server, &private_path(&later), &carol).await;
    let before: Vec<String> = ids(&visible["events_before"]);
    assert!(
        !before.contains(&early),
        "history before joining is hidden: {visible}"
    );
}

async fn search(server: &TestServer, who: &common::Session, criteria: Value) -> Value {
    search_page(server, who, criteria, None).await
}

async fn search_page(
    server: &TestServer,
    who: &common::Session,
    criteria: Value,
    next_batch: Option<&str>,
) -> Value {
    let path = match next_batch {
        Some(token) => format!("/_matrix/client/v3/search?next_batch={}", enc(token)),
        None => "/_matrix/client/v3/search".to_owned(),
    };
    let (status, body) = server
        .post(
            &path,
            who.token(),
            json!({"search_categories": {"room_events": criteria}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "search {criteria}: {body}");
    body["search_categories"]["room_events"].clone()
}

fn result_ids(results: &Value) -> Vec<String> {
    results["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {results}"))
        .iter()
        .map(|r| r["result"]["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn search_room_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let bob = server.register("bob", "password").await;
    server
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&alice.user_id)
            ),
            alice.token(),
            json!({"displayname": "Alice A."}),
        )
        .await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "name": "Quick room", "topic": "about foxes"}),
    )
    .await;
    join(&server, &bob, &room).await;
    let fox = send_text(&server, &alice, &room, "The quick brown fox").await;
    let dog = send_text(&server, &bob, &room, "A lazy dog sleeps").await;
    let thinking = send_text(&server, &alice, &room, "Quick thinking, Élodie!").await;
    let emote = send(
        &server,
        &bob,
        &room,
        "m.room.message",
        json!({"msgtype": "m.emote", "body": "quickly leaves"}),
    )
    .await;
    // A room bob is not in.
    let secret_room = create_room(&server, &alice, json!({})).await;
    let secret = send_text(&server, &alice, &secret_room, "quick secret").await;

    // Bob finds the messages and the room name in his rooms only, best match first.
    let found = search(&server, &bob, json!({"search_term": "quick"})).await;
    let got = result_ids(&found);
    assert_eq!(found["count"], 4, "{found}");
    assert_eq!(got.len(), 4);
    for id in [&fox, &thinking, &emote] {
        assert!(got.contains(id), "{found}");
    }
    assert!(!got.contains(&secret));
    assert!(!got.contains(&dog));
    let name_result = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["result"]["type"] == "m.room.name")
        .expect("the room name matches");
    assert_eq!(name_result["result"]["content"]["name"], "Quick room");
    for result in found["results"].as_array().unwrap() {
        assert!(result["rank"].as_f64().unwrap() > 0.0, "{result}");
        assert_eq!(result["result"]["room_id"], room.as_str());
    }
    assert_eq!(found["highlights"], json!(["quick"]));
    // Alice sees her other room too.
    let alices = search(&server, &alice, json!({"search_term": "quick"})).await;
    assert!(result_ids(&alices).contains(&secret));

    // Keys, recency, phrases, negation, diacritics and prefixes.
    let bodies = search(
        &server,
        &bob,
        json!({"search_term": "quick", "keys": ["content.body"], "order_by": "recent"}),
    )
    .await;
    assert_eq!(
        result_ids(&bodies),
        vec![emote.clone(), thinking.clone(), fox.clone()]
    );
    let topic = search(
        &server,
        &bob,
        json!({"search_term": "foxes", "keys": ["content.topic"]}),
    )
    .await;
    assert_eq!(topic["results"][0]["result"]["type"], "m.room.topic");
    let phrase = search(&server, &bob, json!({"search_term": "\"brown fox\""})).await;
    assert_eq!(result_ids(&phrase), vec![fox.clone()]);
    let negated = search(
        &server,
        &bob,
        json!({"search_term": "quick -fox", "keys": ["content.body"], "order_by": "recent"}),
    )
    .await;
    assert_eq!(result_ids(&negated), vec![emote.clone(), thinking.clone()]);
    let either = search(
        &server,
        &bob,
        json!({"search_term": "lazy or brown", "order_by": "recent"}),
    )
    .await;
    assert_eq!(result_ids(&either), vec![dog.clone(), fox.clone()]);
    let accents = search(&server, &bob, json!({"search_term": "elodie"})).await;
    assert_eq!(result_ids(&accents), vec![thinking.clone()]);
    let prefix = search(&server, &bob, json!({"search_term": "sle"})).await;
    assert_eq!(result_ids(&prefix), vec![dog.clone()]);
    let nothing = search(&server, &bob, json!({"search_term": "zebra"})).await;
    assert_eq!(nothing["count"], 0);
    assert!(
        nothing.get("results").is_none_or(|r| r == &json!([])),
        "{nothing}"
    );
    // Filters: senders and rooms.
    let from_alice = search(
        &server,
        &alice,
        json!({"search_term": "quick", "keys": ["content.body"],
               "filter": {"senders": [alice.user_id], "rooms": [room]}, "order_by": "recent"}),
    )
    .await;
    assert_eq!(result_ids(&from_alice), vec![thinking.clone(), fox.clone()]);

    // Pages: the filter's limit, next_batch until exhausted.
    let criteria = json!({"search_term": "quick", "order_by": "recent", "filter": {"limit": 3}});
    let first = search(&server, &bob, criteria.clone()).await;
    assert_eq!(first["count"], 4);
    assert_eq!(result_ids(&first).len(), 3);
    let next = first["next_batch"].as_str().expect("next_batch").to_owned();
    let second = search_page(&server, &bob, criteria.clone(), Some(&next)).await;
    assert_eq!(result_ids(&second).len(), 1);
    assert!(second.get("next_batch").is_none(), "{second}");
    let mut all = result_ids(&first);
    all.extend(result_ids(&second));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4);
    let ranked = json!({"search_term": "quick", "filter": {"limit": 2}});
    let first = search(&server, &bob, ranked.clone()).await;
    let next = first["next_batch"].as_str().expect("next_batch").to_owned();
    let second = search_page(&server, &bob, ranked, Some(&next)).await;
    let mut all = result_ids(&first);
    all.extend(result_ids(&second));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4);

    // Context, profiles and groupings.
    let with_context = search(
        &server,
        &bob,
        json!({"search_term": "brown", "event_context":
                {"before_limit": 1, "after_limit": 2, "include_profile": true},
               "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
               "include_state": true}),
    )
    .await;
    let result = &with_context["results"][0];
    assert_eq!(result["result"]["event_id"], fox.as_str());
    assert_eq!(
        ids(&result["context"]["events_after"]),
        vec![dog.clone(), thinking.clone()]
    );
    assert_eq!(
        result["context"]["events_before"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        result["context"]["profile_info"][alice.user_id.as_str()]["displayname"],
        "Alice A."
    );
    assert!(result["context"]["start"].is_string() && result["context"]["end"].is_string());
    assert_eq!(
        with_context["groups"]["room_id"][room.as_str()]["results"],
        json!([fox])
    );
    assert_eq!(with_context["groups"]["room_id"][room.as_str()]["order"], 0);
    assert_eq!(
        with_context["groups"]["sender"][alice.user_id.as_str()]["results"],
        json!([fox])
    );
    assert!(
        with_context["state"][room.as_str()]
            .as_array()
            .is_some_and(|s| s.iter().any(|e| e["type"] == "m.room.create")),
        "{with_context}"
    );

    // Redacted events drop out; so do rooms bob leaves.
    redact(&server, &alice, &room, &thinking).await;
    let found = search(
        &server,
        &bob,
        json!({"search_term": "quick", "keys": ["content.body"]}),
    )
    .await;
    assert_eq!(found["count"], 2);
    assert!(!result_ids(&found).contains(&thinking));
    let (status, body) = server
        .post(&room_path(&room, "leave"), bob.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let found = search(&server, &bob, json!({"search_term": "quick"})).await;
    assert_eq!(found["count"], 0);

    // Bad requests.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/search?next_batch=garbage",
            bob.token(),
            json!({"search_categories": {"room_events": {"search_term": "quick"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = server
        .post(
            "/_matrix/client/v3/search",
            bob.token(),
            json!({"search_categories": {"room_events": {"search_term": "x", "keys": ["content.nope"]}}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn search_index_survives_restart() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice", "password").await;
    let room = create_room(&server, &alice, json!({})).await;
    let event = send_text(&server, &alice, &room, "persistent needle").await;
    server.restart();
    let found = search(&server, &alice, json!({"search_term": "needle"})).await;
    assert_eq!(result_ids(&found), vec![event]);
}
