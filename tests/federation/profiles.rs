//! Profiles and the user directory across servers, with Synapse: remote profiles asked of the
//! other server (and what a client hears when it cannot be asked), profile changes arriving as
//! member events, and the directory finding another server's users once a room is shared; and
//! OpenID tokens, which other servers check at `/openid/userinfo`.

use serde_json::{Value, json};

use super::{
    FederatingAppliance, Pair,
    accounts::{Account, call, encode},
    support::TestCa,
    synapse::{OPEN_REGISTRATION, Synapse},
};

/// `PUT /profile/{userId}/displayname` and `/avatar_url` of the account itself.
async fn set_profile(account: &Account, name: &str, avatar: &str) {
    let path = format!("/_matrix/client/v3/profile/{}", encode(&account.user_id));
    let (status, reply) = account
        .put(&format!("{path}/displayname"), json!({"displayname": name}))
        .await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = account
        .put(&format!("{path}/avatar_url"), json!({"avatar_url": avatar}))
        .await;
    assert_eq!(status, 200, "{reply}");
}

/// `GET /profile/{userId}` as `account` sees it: status and body.
async fn profile(account: &Account, user_id: &str) -> (u16, Value) {
    account
        .get(&format!("/_matrix/client/v3/profile/{}", encode(user_id)))
        .await
}

/// The user directory's results for `term`, as `account` searches.
async fn search(account: &Account, term: &str) -> Vec<Value> {
    let (status, reply) = account
        .post(
            "/_matrix/client/v3/user_directory/search",
            json!({"search_term": term}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    reply["results"].as_array().unwrap().clone()
}

/// An appliance user sees a Synapse user's profile (whole and field by field), finds them in the
/// user directory only while they share a room, and sees their name and avatar change (in
/// /profile, the member list and the directory) once the member event arrives; Synapse sees the
/// appliance user's profile and its change. A user Synapse lacks is `404 M_NOT_FOUND`, a server
/// that cannot be reached `502`, and one outside `federation_domain_whitelist` `403 M_FORBIDDEN`.
#[tokio::test(flavor = "multi_thread")]
async fn profiles_and_the_user_directory_across_servers() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let synapse = Synapse::start(&ca, OPEN_REGISTRATION).await;
    // Nothing listens on port 1: a server that cannot be reached.
    let ours = FederatingAppliance::start_with(
        &ca,
        &format!(
            "{}federation_domain_whitelist: ['{}', 'localhost:1']\n",
            FederatingAppliance::TEST_YAML,
            synapse.server_name
        ),
    );
    let logs = || {
        format!(
            "\nthe appliance's log:\n{}\nSynapse's log:\n{}",
            ours.appliance.log_text(),
            synapse.log_tail()
        )
    };
    let alice = Account::register(ours.port, &roots, "alice").await;
    let bob = Account::register(synapse.port, &roots, "bob").await;
    let bob_avatar = format!("mxc://{}/bobface", synapse.server_name);
    set_profile(&bob, "Bob Builder", &bob_avatar).await;
    let alice_avatar = format!("mxc://{}/aliceface", ours.server_name);
    set_profile(&alice, "Alice Liddell", &alice_avatar).await;

    // Profiles, both ways.
    let (status, reply) = profile(&alice, &bob.user_id).await;
    assert_eq!(status, 200, "{reply}{}", logs());
    assert_eq!(
        reply,
        json!({"displayname": "Bob Builder", "avatar_url": bob_avatar})
    );
    let (status, reply) = alice
        .get(&format!(
            "/_matrix/client/v3/profile/{}/avatar_url",
            encode(&bob.user_id)
        ))
        .await;
    assert_eq!((status, reply), (200, json!({"avatar_url": bob_avatar})));
    let (status, reply) = profile(&bob, &alice.user_id).await;
    assert_eq!(status, 200, "{reply}{}", logs());
    assert_eq!(
        reply,
        json!({"displayname": "Alice Liddell", "avatar_url": alice_avatar})
    );

    // What a client hears when the other server says no or cannot be asked (Synapse's codes).
    let nobody = format!("@nobody:{}", synapse.server_name);
    let (status, reply) = profile(&alice, &nobody).await;
    assert_eq!((status, &reply["errcode"]), (404, &json!("M_NOT_FOUND")));
    let (status, reply) = profile(&alice, "@someone:localhost:1").await;
    assert_eq!((status, &reply["errcode"]), (502, &json!("M_UNKNOWN")));
    let (status, reply) = profile(&alice, "@someone:elsewhere.test").await;
    assert_eq!(
        (status, &reply["errcode"]),
        (403, &json!("M_FORBIDDEN")),
        "{reply}"
    );

    // No room shared, and Bob in no public room: the directory does not find him.
    assert_eq!(search(&alice, "bob").await, Vec::<Value>::new());

    let room = alice
        .create_room(json!({"preset": "private_chat", "name": "Workshop"}))
        .await;
    let (status, reply) = alice.invite(&room, &bob.user_id).await;
    assert_eq!(status, 200, "{reply}{}", logs());
    bob.wait_for_sync("alice's invite", |s| {
        s["rooms"]["invite"].get(&room).map(|_| ())
    })
    .await;
    let (status, reply) = bob.join(&room, &[&ours.server_name]).await;
    assert_eq!(status, 200, "{reply}{}", logs());
    alice
        .wait_for_event(&room, "bob's join", |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == bob.user_id.as_str()
                && e["content"]["membership"] == "join"
        })
        .await;

    // Sharing a room: found by ID, by name, with the name and avatar of his member event.
    let found = json!([{"user_id": bob.user_id, "display_name": "Bob Builder",
        "avatar_url": bob_avatar}]);
    assert_eq!(
        Value::from(search(&alice, "bob").await),
        found,
        "{}",
        logs()
    );
    assert_eq!(Value::from(search(&alice, "builder").await), found);

    // Bob changes his profile: Synapse sends new member events into the room. The profile asked
    // just before is cached; the member event must make it stale.
    assert_eq!(
        profile(&alice, &bob.user_id).await.1["displayname"],
        "Bob Builder"
    );
    let new_avatar = format!("mxc://{}/bobhat", synapse.server_name);
    set_profile(&bob, "Robert", &new_avatar).await;
    alice
        .wait_for_event(&room, "bob's new avatar", |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == bob.user_id.as_str()
                && e["content"]["avatar_url"] == new_avatar.as_str()
        })
        .await;
    let (status, reply) = profile(&alice, &bob.user_id).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply,
        json!({"displayname": "Robert", "avatar_url": new_avatar}),
        "a profile change arrived as a member event, the old profile must not be served"
    );
    let (status, members) = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/members",
            encode(&room)
        ))
        .await;
    assert_eq!(status, 200, "{members}");
    let bobs = members["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["state_key"] == bob.user_id.as_str())
        .expect("bob in /members");
    assert_eq!(bobs["content"]["displayname"], "Robert");
    assert_eq!(bobs["content"]["avatar_url"], new_avatar.as_str());
    assert_eq!(
        Value::from(search(&alice, "robert").await),
        json!([{"user_id": bob.user_id, "display_name": "Robert", "avatar_url": new_avatar}])
    );
    assert_eq!(search(&alice, "builder").await, Vec::<Value>::new());

    // Alice's change reaches Synapse both ways: its /profile and the room's member event.
    set_profile(&alice, "Alice in Wonderland", &alice_avatar).await;
    bob.wait_for_event(&room, "alice's new name", |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == alice.user_id.as_str()
            && e["content"]["displayname"] == "Alice in Wonderland"
    })
    .await;
    let (status, reply) = profile(&bob, &alice.user_id).await;
    assert_eq!(
        (status, &reply["displayname"]),
        (200, &json!("Alice in Wonderland"))
    );

    // Bob leaves: no room shared any more, the directory no longer finds him.
    let (status, reply) = bob.leave(&room).await;
    assert_eq!(status, 200, "{reply}");
    alice
        .wait_for_event(&room, "bob's leave", |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == bob.user_id.as_str()
                && e["content"]["membership"] == "leave"
        })
        .await;
    assert_eq!(search(&alice, "robert").await, Vec::<Value>::new());
}

/// An OpenID token from the client API names its user at the federation listener's
/// `/openid/userinfo`, unsigned (an integration manager asks, not a homeserver); a wrong token is
/// `401 M_UNKNOWN_TOKEN`, and a token for someone else is refused. (Expiry: the unit test
/// `storage::openid::tests`.)
#[tokio::test(flavor = "multi_thread")]
async fn openid_tokens_are_checked_over_federation() {
    let ca = TestCa::new("federation test CA");
    let roots = ca.roots();
    let ours = FederatingAppliance::start(&ca);
    let alice = Account::register(ours.port, &roots, "alice").await;
    let bob = Account::register(ours.port, &roots, "bob").await;
    let request_token = |user_id: &str| {
        format!(
            "/_matrix/client/v3/user/{}/openid/request_token",
            encode(user_id)
        )
    };
    let (status, token) = alice.post(&request_token(&alice.user_id), json!({})).await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["matrix_server_name"], ours.server_name.as_str());
    assert_eq!(token["expires_in"], 3600);
    let access_token = token["access_token"].as_str().unwrap();
    let (status, reply) = alice.post(&request_token(&bob.user_id), json!({})).await;
    assert_eq!((status, &reply["errcode"]), (403, &json!("M_FORBIDDEN")));

    let userinfo = |token: &str| {
        let path = format!(
            "/_matrix/federation/v1/openid/userinfo?access_token={}",
            encode(token)
        );
        let (port, roots) = (ours.port, roots.clone());
        async move { call(port, &roots, http::Method::GET, &path, None, None).await }
    };
    let (status, reply) = userinfo(access_token).await;
    assert_eq!(
        (status, reply),
        (200, json!({"sub": alice.user_id})),
        "{}",
        ours.appliance.log_text()
    );
    // Neither a wrong token nor the user's access token is an OpenID token.
    for wrong in ["not-a-token", alice.token.as_str()] {
        let (status, reply) = userinfo(wrong).await;
        assert_eq!(
            (status, &reply["errcode"]),
            (401, &json!("M_UNKNOWN_TOKEN")),
            "{reply}"
        );
    }
    // A second token leaves the first valid.
    let (status, second) = alice.post(&request_token(&alice.user_id), json!({})).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["access_token"], token["access_token"]);
    assert_eq!(userinfo(access_token).await.0, 200);
}

/// Extended profile fields (Matrix 1.16) across servers: Synapse's users read an appliance
/// user's `m.tz` and custom field (whole profile and field by field, through `/query/profile`),
/// and the appliance's users Synapse's; a field the user does not have is `404` both ways.
#[tokio::test(flavor = "multi_thread")]
async fn extended_profile_fields_across_servers() {
    let Pair {
        ca: _ca,
        roots: _roots,
        ours,
        synapse,
        alice,
        bob,
    } = Pair::start().await;
    let logs = || {
        format!(
            "\nthe appliance's log:\n{}\nSynapse's log:\n{}",
            ours.appliance.log_text(),
            synapse.log_tail()
        )
    };
    let field =
        |user: &str, key: &str| format!("/_matrix/client/v3/profile/{}/{key}", encode(user));
    let status = json!({"text": "gardening", "since": 2026});
    for (account, tz) in [(&alice, "Europe/Berlin"), (&bob, "America/Lima")] {
        let (code, reply) = account
            .put(&field(&account.user_id, "m.tz"), json!({"m.tz": tz}))
            .await;
        assert_eq!(code, 200, "{reply}{}", logs());
        let (code, reply) = account
            .put(
                &field(&account.user_id, "org.example.status"),
                json!({"org.example.status": status}),
            )
            .await;
        assert_eq!(code, 200, "{reply}{}", logs());
    }

    for (reader, owner, tz) in [
        (&bob, &alice, "Europe/Berlin"),
        (&alice, &bob, "America/Lima"),
    ] {
        let (code, whole) = profile(reader, &owner.user_id).await;
        assert_eq!(code, 200, "{whole}{}", logs());
        assert_eq!(whole["m.tz"], tz, "{whole}");
        assert_eq!(whole["org.example.status"], status, "{whole}");
        let (code, reply) = reader.get(&field(&owner.user_id, "m.tz")).await;
        assert_eq!((code, &reply), (200, &json!({"m.tz": tz})), "{}", logs());
        let (code, reply) = reader
            .get(&field(&owner.user_id, "org.example.status"))
            .await;
        assert_eq!(
            (code, &reply),
            (200, &json!({"org.example.status": status})),
            "{}",
            logs()
        );
        let (code, reply) = reader.get(&field(&owner.user_id, "org.example.none")).await;
        assert_eq!(
            (code, &reply["errcode"]),
            (404, &json!("M_NOT_FOUND")),
            "{reply}"
        );
    }
}
