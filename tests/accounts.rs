//! Login, whoami, logout, password changes and deactivation.
use crate::common;

use common::{Session, TestServer, assert_error, password_auth};
use reqwest::Method;
use serde_json::json;

const LOGIN: &str = "/_matrix/client/v3/login";

#[tokio::test]
async fn login_offers_password_flow() {
    let server = TestServer::start().await;
    let (status, body) = server.get(LOGIN, None).await;
    assert_eq!(status, 200, "{body}");
    let flows = body["flows"].as_array().expect("flows");
    assert!(
        flows.iter().any(|f| f["type"] == "m.login.password"),
        "{body}"
    );
}

#[tokio::test]
#[allow(deprecated)]
async fn login_accepts_every_way_of_naming_the_user() {
    let server = TestServer::start().await;
    let registered = server.register("alice", "pw-alice").await;

    let mut devices = vec![registered.device_id.clone()];
    for body in [
        json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw-alice"}),
        json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "@alice:test.local"}, "password": "pw-alice"}),
        json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "ALICE"}, "password": "pw-alice"}),
        json!({"type": "m.login.password", "user": "alice", "password": "pw-alice"}),
        json!({"type": "m.login.password", "user": "@alice:test.local", "password": "pw-alice"}),
    ] {
        let (status, response) = server.post(LOGIN, None, body.clone()).await;
        assert_eq!(status, 200, "{body} -> {response}");
        assert_eq!(response["user_id"], "@alice:test.local", "{response}");
        let session = Session::from_json(&response);
        assert!(
            !devices.contains(&session.device_id),
            "each login is a new device"
        );
        devices.push(session.device_id.clone());
        let (status, who) = server.whoami(&session.access_token).await;
        assert_eq!(status, 200, "{who}");
        assert_eq!(who["device_id"], session.device_id.as_str());
    }
    // Every login is listed as a device.
    let (status, body) = server
        .get("/_matrix/client/v3/devices", registered.token())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["devices"].as_array().unwrap().len(), devices.len());
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_are_forbidden() {
    let server = TestServer::start().await;
    server.register("alice", "pw-alice").await;
    assert_error(&server.login("alice", "pw-bob").await, 403, "M_FORBIDDEN");
    assert_error(&server.login("alice", "").await, 403, "M_FORBIDDEN");
    assert_error(
        &server.login("nobody", "pw-alice").await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.login("@alice:other.server", "pw-alice").await,
        403,
        "M_FORBIDDEN",
    );
    // The errors do not tell which user names exist.
    let wrong_password = server.login("alice", "nope").await.1;
    let unknown_user = server.login("nobody", "nope").await.1;
    assert_eq!(wrong_password, unknown_user);
}

#[tokio::test]
async fn unsupported_login_types_are_refused() {
    let server = TestServer::start().await;
    server.register("alice", "pw").await;
    assert_error(
        &server
            .post(
                LOGIN,
                None,
                json!({"type": "org.example.magic", "user": "alice"}),
            )
            .await,
        400,
        "M_UNKNOWN",
    );
}

#[tokio::test]
async fn logging_in_with_a_known_device_id_revokes_its_old_token() {
    let server = TestServer::start().await;
    server.register("alice", "pw").await;
    let login_on = |device: &'static str, name: Option<&'static str>| {
        let mut body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw", "device_id": device});
        if let Some(name) = name {
            body["initial_device_display_name"] = name.into();
        }
        server.post(LOGIN, None, body)
    };
    let (status, body) = login_on("PHONE", Some("Alice's phone")).await;
    assert_eq!(status, 200, "{body}");
    let first = Session::from_json(&body);
    assert_eq!(first.device_id, "PHONE");
    let (status, body) = login_on("PHONE", Some("Not the name")).await;
    assert_eq!(status, 200, "{body}");
    let second = Session::from_json(&body);
    assert_eq!(second.device_id, "PHONE");
    assert_ne!(first.access_token, second.access_token);

    assert_error(
        &server.whoami(&first.access_token).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let (status, body) = server.whoami(&second.access_token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device_id"], "PHONE");

    // Still one device of that ID, which kept its name: the spec ignores
    // `initial_device_display_name` for a known device.
    let (status, body) = server
        .get("/_matrix/client/v3/devices/PHONE", second.token())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["display_name"], "Alice's phone");
    let (_, body) = server
        .get("/_matrix/client/v3/devices", second.token())
        .await;
    let phones = body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["device_id"] == "PHONE")
        .count();
    assert_eq!(phones, 1, "{body}");
}

#[tokio::test]
async fn whoami_names_user_and_device() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let (status, body) = server.whoami(&alice.access_token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:test.local");
    assert_eq!(body["device_id"], alice.device_id.as_str());
    assert_ne!(body["is_guest"], true, "{body}");
}

#[tokio::test]
async fn logout_ends_only_that_session() {
    let server = TestServer::start().await;
    let first = server.register("alice", "pw").await;
    let second = server.login_session("alice", "pw").await;
    let (status, body) = server
        .post("/_matrix/client/v3/logout", first.token(), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &server.whoami(&first.access_token).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &server
            .post("/_matrix/client/v3/logout", first.token(), json!({}))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(server.whoami(&second.access_token).await.0, 200);
    // The device is gone with its token.
    let (status, body) = server
        .get("/_matrix/client/v3/devices", second.token())
        .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.device_id.as_str()]);
}

#[tokio::test]
async fn logout_all_ends_every_session() {
    let server = TestServer::start().await;
    let sessions = [
        server.register("alice", "pw").await,
        server.login_session("alice", "pw").await,
        server.login_session("alice", "pw").await,
    ];
    let bob = server.register("bob", "pw").await;
    let (status, body) = server
        .post(
            "/_matrix/client/v3/logout/all",
            sessions[1].token(),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for session in &sessions {
        assert_error(
            &server.whoami(&session.access_token).await,
            401,
            "M_UNKNOWN_TOKEN",
        );
    }
    assert_eq!(
        server.whoami(&bob.access_token).await.0,
        200,
        "other users are not affected"
    );
    // The account itself is fine.
    let again = server.login_session("alice", "pw").await;
    let (_, body) = server
        .get("/_matrix/client/v3/devices", again.token())
        .await;
    assert_eq!(body["devices"].as_array().unwrap().len(), 1, "{body}");
}

const PASSWORD: &str = "/_matrix/client/v3/account/password";

#[tokio::test]
async fn changing_the_password_needs_the_current_one() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "old-pw").await;

    // Without a token: not even a challenge.
    assert_error(
        &server
            .post(PASSWORD, None, json!({"new_password": "new-pw"}))
            .await,
        401,
        "M_MISSING_TOKEN",
    );

    let (status, challenge) = server
        .post(PASSWORD, alice.token(), json!({"new_password": "new-pw"}))
        .await;
    assert_eq!(status, 401, "{challenge}");
    assert_eq!(
        challenge["flows"],
        json!([{"stages": ["m.login.password"]}])
    );
    let session = challenge["session"].as_str().expect("session").to_owned();

    let (status, body) = server
        .post(
            PASSWORD,
            alice.token(),
            json!({"new_password": "new-pw", "auth": password_auth("alice", "wrong", Some(&session))}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    assert_eq!(body["session"], session.as_str(), "{body}");
    assert_eq!(
        body["flows"],
        json!([{"stages": ["m.login.password"]}]),
        "{body}"
    );
    // Nothing changed.
    server.login_session("alice", "old-pw").await;
    assert_error(&server.login("alice", "new-pw").await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn a_password_change_signs_out_the_other_devices() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "old-pw").await;
    let other = server.login_session("alice", "old-pw").await;
    let bob = server.register("bob", "pw").await;

    let (status, body) = server
        .with_password_auth(
            Method::POST,
            PASSWORD,
            &alice,
            "old-pw",
            json!({"new_password": "new-pw"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    assert_error(&server.login("alice", "old-pw").await, 403, "M_FORBIDDEN");
    server.login_session("alice", "new-pw").await;
    assert_eq!(
        server.whoami(&alice.access_token).await.0,
        200,
        "the device that changed the password stays signed in"
    );
    assert_error(
        &server.whoami(&other.access_token).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(server.whoami(&bob.access_token).await.0, 200);
}

#[tokio::test]
async fn a_password_change_may_keep_the_other_devices() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "old-pw").await;
    let other = server.login_session("alice", "old-pw").await;
    let (status, body) = server
        .with_password_auth(
            Method::POST,
            PASSWORD,
            &alice,
            "old-pw",
            json!({"new_password": "new-pw", "logout_devices": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.whoami(&alice.access_token).await.0, 200);
    assert_eq!(server.whoami(&other.access_token).await.0, 200);
    server.login_session("alice", "new-pw").await;
    assert_error(&server.login("alice", "old-pw").await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn an_empty_new_password_is_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let other = server.login_session("alice", "pw").await;
    let response = server
        .with_password_auth(
            Method::POST,
            PASSWORD,
            &alice,
            "pw",
            json!({"new_password": ""}),
        )
        .await;
    assert_error(&response, 400, "M_WEAK_PASSWORD");
    server.login_session("alice", "pw").await;
    assert_eq!(
        server.whoami(&other.access_token).await.0,
        200,
        "a refused change signs nobody out"
    );
}

#[tokio::test]
async fn uia_password_must_be_the_senders_own() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw-alice").await;
    server.register("bob", "pw-bob").await;
    let (status, challenge) = server
        .post(PASSWORD, alice.token(), json!({"new_password": "stolen"}))
        .await;
    assert_eq!(status, 401, "{challenge}");
    let session = challenge["session"].as_str().unwrap();
    // Bob's correct credentials do not authorise a change to Alice's account.
    let (status, body) = server
        .post(
            PASSWORD,
            alice.token(),
            json!({"new_password": "stolen", "auth": password_auth("bob", "pw-bob", Some(session))}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    server.login_session("alice", "pw-alice").await;
    server.login_session("bob", "pw-bob").await;
    assert_error(&server.login("alice", "stolen").await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn an_unknown_uia_session_is_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let (status, body) = server
        .post(
            PASSWORD,
            alice.token(),
            json!({"new_password": "new", "auth": password_auth("alice", "pw", Some("no-such-session"))}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN", "{body}");
    assert_error(&server.login("alice", "new").await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn deactivation_ends_the_account_but_keeps_the_name() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let other = server.login_session("alice", "pw").await;

    let (status, challenge) = server
        .post(
            "/_matrix/client/v3/account/deactivate",
            alice.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, 401, "{challenge}");
    let session = challenge["session"].as_str().unwrap();
    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/deactivate",
            alice.token(),
            json!({"auth": password_auth("alice", "wrong", Some(session))}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    assert_eq!(
        server.whoami(&alice.access_token).await.0,
        200,
        "a failed attempt changes nothing"
    );

    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/deactivate",
            alice.token(),
            json!({"auth": password_auth("alice", "pw", Some(session))}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id_server_unbind_result"], "no-support", "{body}");

    for session in [&alice, &other] {
        assert_error(
            &server.whoami(&session.access_token).await,
            401,
            "M_UNKNOWN_TOKEN",
        );
    }
    assert_error(&server.login("alice", "pw").await, 403, "M_FORBIDDEN");
    assert_error(
        &server
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({"username": "alice", "password": "pw2", "auth": {"type": "m.login.dummy"}}),
            )
            .await,
        400,
        "M_USER_IN_USE",
    );
    assert_error(
        &server
            .get("/_matrix/client/v3/register/available?username=alice", None)
            .await,
        400,
        "M_USER_IN_USE",
    );
    assert_error(&server.login("alice", "pw2").await, 403, "M_FORBIDDEN");
}

/// A UIA session belongs to the user and the request that started it: another request (other
/// parameters, another endpoint) or another user cannot complete it; the request it was made
/// for still can.
#[tokio::test]
async fn a_uia_session_is_bound_to_its_user_and_request() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw-alice").await;
    let bob = server.register("bob", "pw-bob").await;
    let second = server.login_session("alice", "pw-alice").await;
    let third = server.login_session("alice", "pw-alice").await;
    const DELETE: &str = "/_matrix/client/v3/delete_devices";
    let just_second = json!({"devices": [second.device_id]});
    let (status, challenge) = server
        .post(DELETE, alice.token(), just_second.clone())
        .await;
    assert_eq!(status, 401, "{challenge}");
    let session = challenge["session"].as_str().unwrap();
    let auth = |user: &str, password: &str| password_auth(user, password, Some(session));

    // Other parameters: both devices instead of one (Synapse's 403 M_UNKNOWN).
    let (status, body) = server
        .post(
            DELETE,
            alice.token(),
            json!({"devices": [second.device_id, third.device_id],
                   "auth": auth("alice", "pw-alice")}),
        )
        .await;
    assert_error(&(status, body), 403, "M_UNKNOWN");
    // Another endpoint.
    let (status, body) = server
        .post(
            PASSWORD,
            alice.token(),
            json!({"new_password": "taken", "auth": auth("alice", "pw-alice")}),
        )
        .await;
    assert_error(&(status, body), 403, "M_UNKNOWN");
    // Another user, with the same request and their own password.
    let mut bobs = just_second.clone();
    bobs["auth"] = auth("bob", "pw-bob");
    let (status, body) = server.post(DELETE, bob.token(), bobs).await;
    assert_error(&(status, body), 403, "M_FORBIDDEN");
    // Nothing happened; the request the session was made for completes it.
    for who in [&second, &third] {
        assert_eq!(server.whoami(who.token().unwrap()).await.0, 200);
    }
    assert_error(&server.login("alice", "taken").await, 403, "M_FORBIDDEN");
    let mut original = just_second;
    original["auth"] = auth("alice", "pw-alice");
    let (status, body) = server.post(DELETE, alice.token(), original).await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &server.whoami(second.token().unwrap()).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(server.whoami(third.token().unwrap()).await.0, 200);

    // A registration's session is nobody's: a signed-in user cannot spend it.
    let (status, challenge) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "carol", "password": "pw-carol"}),
        )
        .await;
    assert_eq!(status, 401, "{challenge}");
    let registration = challenge["session"].as_str().unwrap();
    let (status, body) = server
        .post(
            PASSWORD,
            alice.token(),
            json!({"new_password": "taken",
                   "auth": password_auth("alice", "pw-alice", Some(registration))}),
        )
        .await;
    assert_error(&(status, body), 403, "M_FORBIDDEN");
}

/// No mail, no SMS, no identity server, no bridge: an account lists no 3PIDs, adding or binding
/// one is refused with the errcodes clients show as "not supported here" (Synapse's without an
/// e-mail configuration), unbinding and deleting report `no-support`, and third-party networks
/// have no protocols, so every lookup is the spec's `404`. Each endpoint needs a token.
#[tokio::test]
async fn third_party_identifiers_and_networks_answer_that_none_are_configured() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw-alice").await;
    let token = alice.token();
    const V3: &str = "/_matrix/client/v3";

    let (status, body) = server.get(&format!("{V3}/account/3pid"), token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["threepids"], json!([]), "{body}");
    assert_error(
        &server.get(&format!("{V3}/account/3pid"), None).await,
        401,
        "M_MISSING_TOKEN",
    );

    let email = json!({"client_secret": "secret1", "email": "a@example.org", "send_attempt": 1});
    let answer = server
        .post(
            &format!("{V3}/account/3pid/email/requestToken"),
            None,
            email,
        )
        .await;
    assert_error(&answer, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED");
    let phone = json!({
        "client_secret": "secret1", "country": "GB", "phone_number": "07700900001",
        "send_attempt": 1,
    });
    let answer = server
        .post(
            &format!("{V3}/account/3pid/msisdn/requestToken"),
            None,
            phone,
        )
        .await;
    assert_error(&answer, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED");

    let session = json!({"client_secret": "secret1", "sid": "sid1"});
    let answer = server
        .post(&format!("{V3}/account/3pid/add"), token, session)
        .await;
    assert_error(&answer, 400, "M_THREEPID_AUTH_FAILED");
    let bind = json!({
        "client_secret": "secret1", "sid": "sid1", "id_server": "id.example.org",
        "id_access_token": "abc",
    });
    let answer = server
        .post(&format!("{V3}/account/3pid/bind"), token, bind)
        .await;
    assert_error(&answer, 400, "M_FORBIDDEN");
    for action in ["unbind", "delete"] {
        let address = json!({"medium": "email", "address": "a@example.org"});
        let (status, body) = server
            .post(&format!("{V3}/account/3pid/{action}"), token, address)
            .await;
        assert_eq!(status, 200, "{action}: {body}");
        assert_eq!(body["id_server_unbind_result"], "no-support", "{body}");
    }

    let (status, body) = server
        .get(&format!("{V3}/thirdparty/protocols"), token)
        .await;
    assert_eq!((status.as_u16(), &body), (200, &json!({})));
    for path in [
        "/thirdparty/protocol/irc",
        "/thirdparty/user/irc?nick=bob",
        "/thirdparty/location/irc?channel=%23matrix",
        "/thirdparty/user?userid=%40bob%3Atest.local",
        "/thirdparty/location?alias=%23matrix%3Atest.local",
    ] {
        assert_error(
            &server.get(&format!("{V3}{path}"), token).await,
            404,
            "M_NOT_FOUND",
        );
        assert_error(
            &server.get(&format!("{V3}{path}"), None).await,
            401,
            "M_MISSING_TOKEN",
        );
    }
}
