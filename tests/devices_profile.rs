//! Devices, profiles, capabilities and the versions endpoint.
use crate::common;

use common::{Session, TestServer, assert_error, assert_success, password_auth};
use reqwest::Method;
use serde_json::{Value, json};

const DEVICES: &str = "/_matrix/client/v3/devices";

fn device_ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = body["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no devices in {body}"))
        .iter()
        .map(|d| d["device_id"].as_str().expect("device_id").to_owned())
        .collect();
    ids.sort();
    ids
}

async fn login_device(server: &TestServer, device_id: &str, name: &str) -> Session {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                   "password": "pw", "device_id": device_id, "initial_device_display_name": name}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    Session::from_json(&body)
}

#[tokio::test]
async fn devices_are_listed_shown_and_renamed() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "alice", "password": "pw", "device_id": "LAPTOP",
                   "initial_device_display_name": "Laptop", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let laptop = Session::from_json(&body);
    assert_eq!(laptop.device_id, "LAPTOP");
    let phone = login_device(&server, "PHONE", "Phone").await;

    let (status, body) = server.get(DEVICES, laptop.token()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(device_ids(&body), ["LAPTOP", "PHONE"]);
    let phone_entry = body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == "PHONE")
        .unwrap();
    assert_eq!(phone_entry["display_name"], "Phone");
    assert!(
        phone_entry["last_seen_ts"].as_u64().unwrap_or(0) > 0,
        "{body}"
    );
    assert_eq!(phone_entry["last_seen_ip"], "127.0.0.1", "{body}");

    let (status, body) = server
        .get(&format!("{DEVICES}/LAPTOP"), phone.token())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device_id"], "LAPTOP");
    assert_eq!(body["display_name"], "Laptop");

    let (status, body) = server
        .put(
            &format!("{DEVICES}/LAPTOP"),
            phone.token(),
            json!({"display_name": "Work laptop"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = server
        .get(&format!("{DEVICES}/LAPTOP"), laptop.token())
        .await;
    assert_eq!(body["display_name"], "Work laptop");
    assert_eq!(
        server.whoami(&laptop.access_token).await.0,
        200,
        "renaming keeps the session"
    );
}

#[tokio::test]
async fn unknown_devices_are_not_found() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw-bob").await;
    let missing = format!("{DEVICES}/NOSUCHDEVICE");
    assert_error(
        &server.get(&missing, alice.token()).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .put(&missing, alice.token(), json!({"display_name": "x"}))
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server.delete(&missing, alice.token(), json!({})).await,
        404,
        "M_NOT_FOUND",
    );

    // Another user's device is as good as missing.
    let bobs = format!("{DEVICES}/{}", bob.device_id);
    assert_error(&server.get(&bobs, alice.token()).await, 404, "M_NOT_FOUND");
    assert_error(
        &server
            .put(&bobs, alice.token(), json!({"display_name": "pwned"}))
            .await,
        404,
        "M_NOT_FOUND",
    );
    let response = server
        .delete(
            &bobs,
            alice.token(),
            json!({"auth": password_auth("alice", "pw", None)}),
        )
        .await;
    assert_error(&response, 404, "M_NOT_FOUND");
    let (status, body) = server.get(&bobs, bob.token()).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["display_name"], "pwned");
    assert_eq!(server.whoami(&bob.access_token).await.0, 200);
    // Listing needs a token.
    assert_error(&server.get(DEVICES, None).await, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn deleting_a_device_needs_the_password_and_signs_it_out() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let phone = login_device(&server, "PHONE", "Phone").await;

    let path = format!("{DEVICES}/PHONE");
    let (status, challenge) = server.delete(&path, alice.token(), json!({})).await;
    assert_eq!(status, 401, "{challenge}");
    let session = challenge["session"].as_str().unwrap().to_owned();
    let (status, body) = server
        .delete(
            &path,
            alice.token(),
            json!({"auth": password_auth("alice", "wrong", Some(&session))}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    assert_eq!(server.whoami(&phone.access_token).await.0, 200);

    let (status, body) = server
        .delete(
            &path,
            alice.token(),
            json!({"auth": password_auth("alice", "pw", Some(&session))}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &server.whoami(&phone.access_token).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(server.whoami(&alice.access_token).await.0, 200);
    let (_, body) = server.get(DEVICES, alice.token()).await;
    assert_eq!(device_ids(&body), [alice.device_id.as_str()]);
    assert_error(&server.get(&path, alice.token()).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn a_device_can_delete_itself() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let (status, body) = server
        .with_password_auth(
            Method::DELETE,
            &format!("{DEVICES}/{}", alice.device_id),
            &alice,
            "pw",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &server.whoami(&alice.access_token).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
}

#[tokio::test]
async fn delete_devices_removes_several_at_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let one = login_device(&server, "ONE", "One").await;
    let two = login_device(&server, "TWO", "Two").await;
    let three = login_device(&server, "THREE", "Three").await;
    let (status, body) = server
        .with_password_auth(
            Method::POST,
            "/_matrix/client/v3/delete_devices",
            &alice,
            "pw",
            json!({"devices": ["ONE", "TWO", "NOT-A-DEVICE"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for gone in [&one, &two] {
        assert_error(
            &server.whoami(&gone.access_token).await,
            401,
            "M_UNKNOWN_TOKEN",
        );
    }
    assert_eq!(server.whoami(&three.access_token).await.0, 200);
    let (_, body) = server.get(DEVICES, alice.token()).await;
    let mut expected = vec![alice.device_id.clone(), "THREE".to_owned()];
    expected.sort();
    assert_eq!(device_ids(&body), expected);
}

const PROFILE: &str = "/_matrix/client/v3/profile";

#[tokio::test]
async fn the_default_display_name_is_the_localpart() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let (status, body) = server
        .get(&format!("{PROFILE}/@alice:test.local/displayname"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["displayname"], "alice");
    let (status, body) = server
        .get(&format!("{PROFILE}/@alice:test.local"), alice.token())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["displayname"], "alice");
    assert!(body.get("avatar_url").is_none(), "{body}");
}

#[tokio::test]
async fn display_name_and_avatar_can_be_set() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let me = format!("{PROFILE}/@alice:test.local");

    let (status, body) = server
        .put(
            &format!("{me}/displayname"),
            alice.token(),
            json!({"displayname": "Alice Liddell 🐇"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .put(
            &format!("{me}/avatar_url"),
            alice.token(),
            json!({"avatar_url": "mxc://test.local/rabbit"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = server.get(&format!("{me}/displayname"), bob.token()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["displayname"], "Alice Liddell 🐇");
    let (status, body) = server.get(&format!("{me}/avatar_url"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["avatar_url"], "mxc://test.local/rabbit");
    let (status, body) = server.get(&me, bob.token()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"displayname": "Alice Liddell 🐇", "avatar_url": "mxc://test.local/rabbit"})
    );

    // Both survive a restart.
    let mut server = server;
    server.restart();
    let (status, body) = server.get(&me, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["displayname"], "Alice Liddell 🐇");
    assert_eq!(body["avatar_url"], "mxc://test.local/rabbit");
}

#[tokio::test]
async fn the_avatar_must_be_an_mxc_uri() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let path = format!("{PROFILE}/@alice:test.local/avatar_url");
    let (status, body) = server
        .put(
            &path,
            alice.token(),
            json!({"avatar_url": "mxc://test.local/good"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for bad in [
        "https://evil.example/tracker.png",
        "mxc://",
        "mxc://test.local",
        "mxc:///nohost",
        "not a uri",
    ] {
        let response = server
            .put(&path, alice.token(), json!({"avatar_url": bad}))
            .await;
        assert_error(&response, 400, "M_INVALID_PARAM");
    }
    let (_, body) = server.get(&path, None).await;
    assert_eq!(
        body["avatar_url"], "mxc://test.local/good",
        "refused values change nothing"
    );
}

#[tokio::test]
async fn profiles_of_others_cannot_be_changed() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    server.register("bob", "pw").await;
    let bob = format!("{PROFILE}/@bob:test.local");
    assert_error(
        &server
            .put(
                &format!("{bob}/displayname"),
                alice.token(),
                json!({"displayname": "Bob is a fool"}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .put(
                &format!("{bob}/avatar_url"),
                alice.token(),
                json!({"avatar_url": "mxc://test.local/fool"}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .put(
                &format!("{bob}/displayname"),
                None,
                json!({"displayname": "anonymous"}),
            )
            .await,
        401,
        "M_MISSING_TOKEN",
    );
    let (status, body) = server.get(&bob, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"displayname": "bob"}));
}

/// An unknown local user's profile is `404`; another server's user's, when
/// `federation_domain_whitelist` leaves that server out, is `403 M_FORBIDDEN` (Synapse's answer
/// when federation with it is denied, as when federation is off): the server is not asked.
#[tokio::test]
async fn unknown_profiles_are_not_found() {
    let server = TestServer::start_with_config(&format!(
        "{}federation_domain_whitelist: []\n",
        common::OPEN_REGISTRATION
    ))
    .await;
    let alice = server.register("alice", "pw").await;
    for path in [
        format!("{PROFILE}/@nobody:test.local"),
        format!("{PROFILE}/@nobody:test.local/displayname"),
        format!("{PROFILE}/@nobody:test.local/avatar_url"),
    ] {
        assert_error(&server.get(&path, alice.token()).await, 404, "M_NOT_FOUND");
    }
    for path in [
        format!("{PROFILE}/@someone:other.example"),
        format!("{PROFILE}/@someone:other.example/displayname"),
    ] {
        assert_error(&server.get(&path, alice.token()).await, 403, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn capabilities_need_a_token_and_allow_password_changes() {
    let server = TestServer::start().await;
    assert_error(
        &server.get("/_matrix/client/v3/capabilities", None).await,
        401,
        "M_MISSING_TOKEN",
    );
    let alice = server.register("alice", "pw").await;
    let (status, body) = server
        .get("/_matrix/client/v3/capabilities", alice.token())
        .await;
    assert_eq!(status, 200, "{body}");
    let capabilities = body["capabilities"].as_object().expect("capabilities");
    // The spec's defaults: a capability left out is enabled.
    let enabled = |name: &str| {
        capabilities
            .get(name)
            .is_none_or(|c| c["enabled"].as_bool().expect("an enabled flag"))
    };
    assert!(enabled("m.change_password"), "{body}");
    assert!(enabled("m.set_displayname"), "{body}");
    assert!(enabled("m.set_avatar_url"), "{body}");
    assert!(
        !enabled("m.3pid_changes"),
        "third-party IDs are not supported: {body}"
    );
}

#[tokio::test]
async fn versions_lists_v1_releases() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200, "{body}");
    let versions: Vec<&str> = body["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v.as_str().expect("a string"))
        .collect();
    assert!(versions.contains(&"v1.1"), "{body}");
    assert!(
        versions.iter().filter(|v| v.starts_with("v1.")).count() >= 5,
        "{body}"
    );
    assert!(
        versions
            .iter()
            .all(|v| v.starts_with("v1.") || v.starts_with("r0.")),
        "{body}"
    );
}

/// What matrix-rust-sdk (Element X) and Element Web read before they offer a password login:
/// `/versions` with the features this server has, `/.well-known/matrix/client`, no OAuth 2.0
/// authorization server (MSC2965; the SDK would send the user to it instead of asking for a
/// password), and `m.login.password` among the login flows.
#[tokio::test]
async fn login_probes_offer_password_login() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200, "{body}");
    let features = body["unstable_features"]
        .as_object()
        .unwrap_or_else(|| panic!("no unstable_features: {body}"));
    for feature in [
        "org.matrix.e2e_cross_signing",
        "org.matrix.msc3266",
        "org.matrix.simplified_msc3575",
        "org.matrix.msc2285.stable",
        "org.matrix.msc3440.stable",
    ] {
        assert_eq!(
            features.get(feature),
            Some(&json!(true)),
            "{feature}: {body}"
        );
    }
    // Only what is there: label filtering and mutual rooms (Synapse has them) are not.
    for absent in [
        "org.matrix.label_based_filtering",
        "uk.half-shot.msc2666.query_mutual_rooms.stable",
    ] {
        assert!(features.get(absent).is_none(), "{absent}: {body}");
    }
    // The same answer with a token.
    let alice = server.register("alice", "pw-alice").await;
    let (status, with_token) = server.get("/_matrix/client/versions", alice.token()).await;
    assert_eq!((status.as_u16(), &with_token), (200, &body));

    let (status, well_known) = server.get("/.well-known/matrix/client", None).await;
    assert_eq!(status, 200, "{well_known}");
    assert_eq!(
        well_known["m.homeserver"]["base_url"], "https://test.local",
        "{well_known}"
    );

    for path in [
        "/_matrix/client/v1/auth_metadata",
        "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
        "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer",
    ] {
        assert_error(&server.get(path, None).await, 404, "M_UNRECOGNIZED");
    }

    let (status, flows) = server.get("/_matrix/client/v3/login", None).await;
    assert_eq!(status, 200, "{flows}");
    assert!(
        flows["flows"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["type"] == "m.login.password")),
        "{flows}"
    );
}

/// `GET /admin/whois/{userId}` as Synapse answers it: the asker's own sessions or, for a server
/// admin, anyone's; each device with its last-seen address and time.
#[tokio::test]
async fn whois_shows_devices_to_the_user_and_to_admins() {
    let server = TestServer::start().await;
    assert_success(&server.cli(
        &["admin", "add-user", "root", "--admin", "--password-stdin"],
        Some("root-pw\n"),
    ));
    let root = server.login_session("root", "root-pw").await;
    let alice = server.register("alice", "pw").await;
    let phone = login_device(&server, "PHONE", "Phone").await;
    let bob = server.register("bob", "pw-bob").await;
    let whois = |user: &str| format!("/_matrix/client/v3/admin/whois/{user}");

    let connection = |body: &Value, device: &str| -> Value {
        body["devices"][device]["sessions"][0]["connections"][0].clone()
    };
    for asker in [&alice, &root] {
        let (status, body) = server.get(&whois("@alice:test.local"), asker.token()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["user_id"], "@alice:test.local");
        let devices: Vec<&String> = body["devices"].as_object().unwrap().keys().collect();
        let mut expected = vec![&alice.device_id, &phone.device_id];
        expected.sort();
        assert_eq!(devices, expected, "{body}");
        let phone_seen = connection(&body, "PHONE");
        assert_eq!(phone_seen["ip"], "127.0.0.1", "{body}");
        assert!(phone_seen["last_seen"].as_u64().unwrap_or(0) > 0, "{body}");
        // The appliance does not keep user agents.
        assert_eq!(phone_seen["user_agent"], Value::Null, "{body}");
    }
    // The r0 path of the same endpoint.
    let (status, _) = server
        .get(
            "/_matrix/client/r0/admin/whois/@alice:test.local",
            alice.token(),
        )
        .await;
    assert_eq!(status, 200);

    // Someone else's, unless a server admin: 403, whether or not the account exists.
    for target in [
        "@alice:test.local",
        "@nobody:test.local",
        "@x:elsewhere.example",
    ] {
        assert_error(
            &server.get(&whois(target), bob.token()).await,
            403,
            "M_FORBIDDEN",
        );
    }
    // An admin asking about an account that does not exist gets no devices, as from Synapse.
    let (status, body) = server.get(&whois("@nobody:test.local"), root.token()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@nobody:test.local");
    assert!(
        body["devices"].as_object().is_none_or(|d| d.is_empty()),
        "{body}"
    );
    // Another server's user: Synapse's 400.
    assert_error(
        &server
            .get(&whois("@x:elsewhere.example"), root.token())
            .await,
        400,
        "M_UNKNOWN",
    );
    assert_error(
        &server.get(&whois("@alice:test.local"), None).await,
        401,
        "M_MISSING_TOKEN",
    );
}

/// Extended profile fields (Matrix 1.16, MSC4133) as Synapse serves them: `m.tz` and custom
/// keys set, read (alone and in the whole profile, by anyone) and deleted by their owner; the
/// key rules and the 64 KiB limit; `displayname` through the same endpoints; the capability
/// and the `/versions` flags.
#[tokio::test]
async fn extended_profile_fields() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw-bob").await;
    let field = |key: &str| format!("/_matrix/client/v3/profile/@alice:test.local/{key}");

    let (status, body) = server
        .put(
            &field("m.tz"),
            alice.token(),
            json!({"m.tz": "Europe/Berlin"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let pronouns = json!([{"summary": "she/her", "language": "en"}]);
    let (status, body) = server
        .put(
            &field("org.example.pronouns"),
            alice.token(),
            json!({"org.example.pronouns": pronouns}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for reader in [alice.token(), bob.token(), None] {
        let (status, body) = server.get(&field("m.tz"), reader).await;
        assert_eq!(
            (status.as_u16(), &body),
            (200, &json!({"m.tz": "Europe/Berlin"}))
        );
        let (status, body) = server.get(&field("org.example.pronouns"), reader).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"org.example.pronouns": pronouns}));
    }
    let (status, whole) = server
        .get("/_matrix/client/v3/profile/@alice:test.local", bob.token())
        .await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["m.tz"], "Europe/Berlin", "{whole}");
    assert_eq!(whole["org.example.pronouns"], pronouns, "{whole}");
    assert_eq!(whole["displayname"], "alice", "{whole}");

    // A field that is not there, and a user who is not: 404.
    assert_error(
        &server.get(&field("org.example.none"), bob.token()).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .get(
                "/_matrix/client/v3/profile/@nobody:test.local/m.tz",
                bob.token(),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );

    // Only the owner changes them.
    let (status, body) = server
        .put(&field("m.tz"), bob.token(), json!({"m.tz": "Asia/Tokyo"}))
        .await;
    assert_eq!(
        (status.as_u16(), body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN"))
    );
    assert_error(
        &server.delete(&field("m.tz"), bob.token(), json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .put(&field("m.tz"), None, json!({"m.tz": "Asia/Tokyo"}))
            .await,
        401,
        "M_MISSING_TOKEN",
    );

    // Key names: the Common Namespaced Identifier Grammar, at most 255 bytes.
    let long = format!("org.{}", "x".repeat(252));
    for (key, status, errcode) in [
        ("Org.Example", 400, "M_INVALID_PARAM"),
        ("1abc", 400, "M_INVALID_PARAM"),
        ("org.example%20x", 400, "M_INVALID_PARAM"),
        (long.as_str(), 400, "M_KEY_TOO_LARGE"),
    ] {
        let name = key.replace("%20", " ");
        let reply = server
            .put(&field(key), alice.token(), json!({ name: 1 }))
            .await;
        assert_error(&reply, status, errcode);
        assert_error(
            &server.get(&field(key), alice.token()).await,
            status,
            errcode,
        );
    }
    assert_eq!(
        server
            .put(
                &field(&long[..255]),
                alice.token(),
                json!({ &long[..255]: 1 })
            )
            .await
            .0,
        200,
        "255 bytes are allowed"
    );
    assert_eq!(
        server
            .delete(&field(&long[..255]), alice.token(), json!({}))
            .await
            .0,
        200
    );
    // The body must hold the key, and `m.tz` is a string.
    let reply = server
        .put(
            &field("org.example.x"),
            alice.token(),
            json!({"org.example.y": 1}),
        )
        .await;
    assert_eq!(reply.0, 400, "{}", reply.1);
    let reply = server
        .put(&field("m.tz"), alice.token(), json!({"m.tz": 1}))
        .await;
    assert_eq!(reply.0, 400, "{}", reply.1);

    // The whole profile stays within 64 KiB as canonical JSON.
    let big = "x".repeat(40_000);
    let (status, body) = server
        .put(
            &field("org.example.big"),
            alice.token(),
            json!({"org.example.big": big}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let more = "y".repeat(30_000);
    assert_error(
        &server
            .put(
                &field("org.example.more"),
                alice.token(),
                json!({"org.example.more": more}),
            )
            .await,
        400,
        "M_PROFILE_TOO_LARGE",
    );
    // Replacing a field counts it once.
    let (status, body) = server
        .put(
            &field("org.example.big"),
            alice.token(),
            json!({"org.example.big": more}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Deleting: gone from the field and from the whole profile; deleting again is fine.
    for _ in 0..2 {
        let (status, body) = server
            .delete(&field("m.tz"), alice.token(), json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    assert_error(
        &server.get(&field("m.tz"), bob.token()).await,
        404,
        "M_NOT_FOUND",
    );
    let (_, whole) = server
        .get("/_matrix/client/v3/profile/@alice:test.local", bob.token())
        .await;
    assert!(whole.get("m.tz").is_none(), "{whole}");

    // `displayname` through the generic endpoints too: set, read, deleted.
    let (status, body) = server
        .put(
            &field("displayname"),
            alice.token(),
            json!({"displayname": "Alice"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = server.get(&field("displayname"), bob.token()).await;
    assert_eq!(body["displayname"], "Alice", "{body}");
    let (status, body) = server
        .delete(&field("displayname"), alice.token(), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, whole) = server
        .get("/_matrix/client/v3/profile/@alice:test.local", bob.token())
        .await;
    assert!(whole.get("displayname").is_none(), "{whole}");

    // Advertised as Synapse does.
    let (_, body) = server
        .get("/_matrix/client/v3/capabilities", alice.token())
        .await;
    assert_eq!(
        body["capabilities"]["m.profile_fields"]["enabled"], true,
        "{body}"
    );
    let (_, body) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(
        body["unstable_features"]["uk.tcpip.msc4133.stable"], true,
        "{body}"
    );
}
