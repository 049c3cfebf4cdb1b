//! `/register` and its relatives: user-interactive auth, user names, disabled registration,
//! registration tokens (with the admin CLI that manages them) and guests.
use crate::common;

use common::{Session, TestServer, assert_error, assert_failure, assert_success};
use serde_json::{Value, json};

const REGISTER: &str = "/_matrix/client/v3/register";
const TOKEN_VALIDITY: &str = "/_matrix/client/v1/register/m.login.registration_token/validity";

const TOKEN_REGISTRATION: &str = "\
server_name: test.local
enable_registration: true
registration_requires_token: true
rc_registration: {per_second: 1000, burst_count: 1000}
";

#[tokio::test]
async fn registration_goes_through_the_dummy_stage() {
    let server = TestServer::start().await;
    let (status, challenge) = server
        .post(
            REGISTER,
            None,
            json!({"username": "alice", "password": "pw-alice"}),
        )
        .await;
    assert_eq!(status, 401, "{challenge}");
    assert_eq!(
        challenge["flows"],
        json!([{"stages": ["m.login.dummy"]}]),
        "{challenge}"
    );
    let session = challenge["session"].as_str().expect("a UIA session");
    assert!(!session.is_empty());
    assert!(
        challenge["completed"]
            .as_array()
            .is_none_or(|c| c.is_empty()),
        "{challenge}"
    );
    // The challenge alone created nothing.
    let (status, body) = server
        .get("/_matrix/client/v3/register/available?username=alice", None)
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = server
        .post(
            REGISTER,
            None,
            json!({
                "username": "alice",
                "password": "pw-alice",
                "initial_device_display_name": "Alice's laptop",
                "auth": {"type": "m.login.dummy", "session": session},
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:test.local");
    let alice = Session::from_json(&body);
    let (status, body) = server.whoami(&alice.access_token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:test.local");
    assert_eq!(body["device_id"], alice.device_id.as_str());

    // The session is spent once the flow is complete.
    let reused = server
        .post(
            REGISTER,
            None,
            json!({"username": "alice2", "password": "pw", "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_eq!(reused.0, 400, "{}", reused.1);
    let (status, _) = server
        .get(
            "/_matrix/client/v3/register/available?username=alice2",
            None,
        )
        .await;
    assert_eq!(status, 200, "a refused session must not create the account");

    // The password works for a fresh login too.
    server.login_session("alice", "pw-alice").await;
}

#[tokio::test]
async fn user_names_are_lowercased_and_checked() {
    let server = TestServer::start().await;
    let carol = server.register("Carol", "pw").await;
    assert_eq!(carol.user_id, "@carol:test.local");

    for bad in [
        "bad name",
        "émile",
        "_bridge",
        "12345",
        "a:b",
        "@x:test.local",
        "",
    ] {
        let response = server
            .post(
                REGISTER,
                None,
                json!({"username": bad, "password": "pw", "auth": {"type": "m.login.dummy"}}),
            )
            .await;
        assert_error(&response, 400, "M_INVALID_USERNAME");
    }
    let too_long = "a".repeat(250);
    assert_error(
        &server
            .post(
                REGISTER,
                None,
                json!({"username": too_long, "password": "pw", "auth": {"type": "m.login.dummy"}}),
            )
            .await,
        400,
        "M_INVALID_USERNAME",
    );
}

#[tokio::test]
async fn a_taken_user_name_is_refused_before_auth() {
    let server = TestServer::start().await;
    server.register("alice", "pw").await;
    // Without auth: the name is checked before the client is sent through the stages.
    assert_error(
        &server
            .post(
                REGISTER,
                None,
                json!({"username": "alice", "password": "x"}),
            )
            .await,
        400,
        "M_USER_IN_USE",
    );
    assert_error(
        &server
            .post(
                REGISTER,
                None,
                json!({"username": "ALICE", "password": "x", "auth": {"type": "m.login.dummy"}}),
            )
            .await,
        400,
        "M_USER_IN_USE",
    );
    // The original password still works: nothing was overwritten.
    server.login_session("alice", "pw").await;
    assert_error(&server.login("alice", "x").await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn username_availability() {
    let server = TestServer::start().await;
    let available = "/_matrix/client/v3/register/available?username=";
    let (status, body) = server.get(&format!("{available}dave"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["available"], true);
    server.register("dave", "pw").await;
    assert_error(
        &server.get(&format!("{available}dave"), None).await,
        400,
        "M_USER_IN_USE",
    );
    assert_error(
        &server.get(&format!("{available}Dave"), None).await,
        400,
        "M_USER_IN_USE",
    );
    assert_error(
        &server.get(&format!("{available}bad%20name"), None).await,
        400,
        "M_INVALID_USERNAME",
    );
}

#[tokio::test]
async fn registration_without_a_user_name_picks_one() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            REGISTER,
            None,
            json!({"password": "pw", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let session = Session::from_json(&body);
    assert!(
        session.user_id.ends_with(":test.local") && session.user_id.len() > "@:test.local".len(),
        "{}",
        session.user_id
    );
    let (status, body) = server.whoami(&session.access_token).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn inhibit_login_creates_the_account_without_a_session() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            REGISTER,
            None,
            json!({"username": "erin", "password": "pw", "inhibit_login": true, "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@erin:test.local");
    assert!(body.get("access_token").is_none(), "{body}");
    assert!(body["device_id"].is_null(), "{body}");
    server.login_session("erin", "pw").await;
}

#[tokio::test]
async fn registration_needs_a_password() {
    let server = TestServer::start().await;
    assert_error(
        &server
            .post(
                REGISTER,
                None,
                json!({"username": "frank", "auth": {"type": "m.login.dummy"}}),
            )
            .await,
        400,
        "M_MISSING_PARAM",
    );
    assert_error(
        &server
            .post(
                REGISTER,
                None,
                json!({"username": "frank", "password": "", "auth": {"type": "m.login.dummy"}}),
            )
            .await,
        400,
        "M_WEAK_PASSWORD",
    );
    let (status, _) = server
        .get("/_matrix/client/v3/register/available?username=frank", None)
        .await;
    assert_eq!(status, 200, "no account without a password");
}

#[tokio::test]
async fn disabled_registration_is_forbidden() {
    let server =
        TestServer::start_with_config("server_name: test.local\nenable_registration: false\n")
            .await;
    assert_error(
        &server
            .post(
                REGISTER,
                None,
                json!({"username": "alice", "password": "pw"}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .post(
                REGISTER,
                None,
                json!({"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(&server.login("alice", "pw").await, 403, "M_FORBIDDEN");
}

/// Guests, as Synapse: refused while `allow_guest_access` is off (the default). When on, a guest
/// gets a numeric user ID and a device the server picks, may call only the spec's guest
/// endpoints, joins only rooms whose `m.room.guest_access` is `can_join`, and upgrades to a full
/// account with its access token: same user ID, same rooms, a password from then on. Nobody
/// else can take over a guest account, and numeric names stay the guests'.
#[tokio::test]
async fn guests_join_open_rooms_and_upgrade_to_full_accounts() {
    let server = TestServer::start().await;
    let guest_registration = format!("{REGISTER}?kind=guest");
    assert_error(
        &server.post(&guest_registration, None, json!({})).await,
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
    drop(server);

    let config = format!("{}allow_guest_access: true\n", common::OPEN_REGISTRATION);
    let server = TestServer::start_with_config(&config).await;
    let alice = server.register("alice", "pw-alice").await;
    let (status, body) = server
        .post(
            &guest_registration,
            None,
            json!({"device_id": "CHOSEN", "initial_device_display_name": "Guest phone",
                   "username": "someone"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let guest = Session::from_json(&body);
    let localpart = guest
        .user_id
        .trim_start_matches('@')
        .trim_end_matches(":test.local");
    assert!(localpart.bytes().all(|b| b.is_ascii_digit()), "{body}");
    assert_ne!(
        guest.device_id, "CHOSEN",
        "the server picks a guest's device"
    );
    let (status, body) = server.whoami(&guest.access_token).await;
    assert_eq!(
        (status.as_u16(), &body["is_guest"]),
        (200, &json!(true)),
        "{body}"
    );
    let (status, body) = server
        .get("/_matrix/client/v3/devices", guest.token())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["devices"][0]["display_name"], "Guest phone", "{body}");

    // What guests may not do is refused before any handler runs, raw handlers included.
    let forbidden = [
        ("/_matrix/client/v3/createRoom", json!({})),
        (
            "/_matrix/client/v3/account/password",
            json!({"new_password": "x-Y-1-z-w-v"}),
        ),
        (
            "/_matrix/client/v3/user/{guest}/openid/request_token",
            json!({}),
        ),
    ];
    for (path, body) in forbidden {
        let path = path.replace("{guest}", &guest.user_id);
        let answer = server.post(&path, guest.token(), body).await;
        assert_error(&answer, 403, "M_GUEST_ACCESS_FORBIDDEN");
    }
    let upload = server
        .builder(reqwest::Method::POST, "/_matrix/media/v3/upload")
        .bearer_auth(&guest.access_token)
        .header("content-type", "text/plain")
        .body("hello");
    let reply = common::send(upload).await;
    assert_error(&(reply.status, reply.body), 403, "M_GUEST_ACCESS_FORBIDDEN");

    // Rooms: only where `m.room.guest_access` is `can_join`.
    let create = |guests: bool| {
        let mut initial_state = vec![];
        if guests {
            initial_state.push(json!({"type": "m.room.guest_access", "state_key": "",
                                      "content": {"guest_access": "can_join"}}));
        }
        json!({"preset": "public_chat", "initial_state": initial_state})
    };
    let (_, closed) = server
        .post(
            "/_matrix/client/v3/createRoom",
            alice.token(),
            create(false),
        )
        .await;
    let (_, open) = server
        .post("/_matrix/client/v3/createRoom", alice.token(), create(true))
        .await;
    let (closed, open) = (
        closed["room_id"].as_str().unwrap(),
        open["room_id"].as_str().unwrap(),
    );
    let join = |room: &str| format!("/_matrix/client/v3/join/{room}");
    let answer = server.post(&join(closed), guest.token(), json!({})).await;
    assert_error(&answer, 403, "M_GUEST_ACCESS_FORBIDDEN");
    let answer = server
        .post(
            &join("!unknown:elsewhere.example"),
            guest.token(),
            json!({}),
        )
        .await;
    assert_error(&answer, 403, "M_GUEST_ACCESS_FORBIDDEN");
    let (status, body) = server.post(&join(open), guest.token(), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{open}/send/m.room.message/g1"),
            guest.token(),
            json!({"msgtype": "m.text", "body": "hello from a guest"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{open}/messages?dir=b&limit=5"),
            alice.token(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunk"][0]["sender"], guest.user_id.as_str(), "{body}");
    let (status, body) = server.get("/_matrix/client/v3/sync", guest.token()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["rooms"]["join"].get(open).is_some(), "{body}");
    // The deprecated reads: the room's `initialSync` and `/events` are in the spec's guest
    // list, the global `initialSync` is not.
    let room_initial_sync = format!("/_matrix/client/v3/rooms/{open}/initialSync");
    let (status, body) = server.get(&room_initial_sync, guest.token()).await;
    assert_eq!(
        (status.as_u16(), &body["membership"]),
        (200, &json!("join")),
        "{body}"
    );
    let (status, body) = server
        .get("/_matrix/client/v3/events?timeout=0", guest.token())
        .await;
    assert_eq!(status, 200, "{body}");
    let answer = server
        .get("/_matrix/client/v3/initialSync", guest.token())
        .await;
    assert_error(&answer, 403, "M_GUEST_ACCESS_FORBIDDEN");
    // A room closed to guests: the guests in it leave, and cannot come back.
    let guest_access = format!("/_matrix/client/v3/rooms/{open}/state/m.room.guest_access/");
    let (status, body) = server
        .put(
            &guest_access,
            alice.token(),
            json!({"guest_access": "forbidden"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let member = format!(
        "/_matrix/client/v3/rooms/{open}/state/m.room.member/{}",
        guest.user_id
    );
    let (status, body) = server.get(&member, alice.token()).await;
    assert_eq!(
        (status.as_u16(), &body["membership"]),
        (200, &json!("leave")),
        "{body}"
    );
    let answer = server.post(&join(open), guest.token(), json!({})).await;
    assert_error(&answer, 403, "M_GUEST_ACCESS_FORBIDDEN");
    let (status, body) = server
        .put(
            &guest_access,
            alice.token(),
            json!({"guest_access": "can_join"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.post(&join(open), guest.token(), json!({})).await;
    assert_eq!(status, 200, "{body}");

    // Numeric names are the guests': nobody registers one, nor takes a guest's over.
    let upgrade = |username: &str, token: &str| {
        json!({"username": username, "password": "pw-upgraded", "guest_access_token": token,
               "auth": {"type": "m.login.dummy"}})
    };
    let plain = json!({"username": localpart, "password": "pw", "auth": {"type": "m.login.dummy"}});
    assert_error(
        &server.post(REGISTER, None, plain).await,
        400,
        "M_INVALID_USERNAME",
    );
    for body in [
        upgrade("someoneelse", &guest.access_token),
        upgrade(localpart, &alice.access_token),
        upgrade(localpart, "not-a-token"),
    ] {
        let (status, answer) = server.post(REGISTER, None, body).await;
        assert!(matches!(status.as_u16(), 401 | 403), "{status} {answer}");
    }
    let (status, body) = server
        .post(REGISTER, None, upgrade(localpart, &guest.access_token))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], guest.user_id.as_str(), "{body}");
    let upgraded = server.login_session(localpart, "pw-upgraded").await;
    let (_, whoami) = server.whoami(&upgraded.access_token).await;
    // `false` is left out.
    assert_ne!(whoami["is_guest"], true, "{whoami}");
    assert_eq!(whoami["user_id"], guest.user_id.as_str(), "{whoami}");
    let (status, rooms) = server
        .get("/_matrix/client/v3/joined_rooms", upgraded.token())
        .await;
    assert_eq!(status, 200, "{rooms}");
    assert_eq!(
        rooms["joined_rooms"],
        json!([open]),
        "the guest's rooms stay"
    );
    // The guest's own token now belongs to a full account; it cannot upgrade twice.
    let (status, body) = server
        .post("/_matrix/client/v3/createRoom", guest.token(), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let again = server
        .post(REGISTER, None, upgrade(localpart, &guest.access_token))
        .await;
    assert_error(&again, 403, "M_FORBIDDEN");
}

/// Starts token registration for `username`: returns the UIA session after checking the flows.
async fn token_challenge(server: &TestServer, username: &str) -> String {
    let (status, challenge) = server
        .post(
            REGISTER,
            None,
            json!({"username": username, "password": "pw"}),
        )
        .await;
    assert_eq!(status, 401, "{challenge}");
    assert_eq!(
        challenge["flows"],
        json!([{"stages": ["m.login.registration_token"]}]),
        "{challenge}"
    );
    challenge["session"]
        .as_str()
        .expect("UIA session")
        .to_owned()
}

async fn register_with_token(server: &TestServer, username: &str, token: &str) -> (u16, Value) {
    let session = token_challenge(server, username).await;
    let (status, body) = server
        .post(
            REGISTER,
            None,
            json!({
                "username": username,
                "password": "pw",
                "auth": {"type": "m.login.registration_token", "token": token, "session": session},
            }),
        )
        .await;
    (status.as_u16(), body)
}

async fn token_is_valid(server: &TestServer, token: &str) -> bool {
    let (status, body) = server
        .get(&format!("{TOKEN_VALIDITY}?token={token}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["valid"].as_bool().expect("valid flag")
}

/// The row of `registration-token list` for `token`, split into columns.
fn token_row(server: &TestServer, token: &str) -> Option<Vec<String>> {
    let listing = assert_success(&server.cli(&["admin", "registration-token", "list"], None));
    let mut lines = listing.lines();
    let header = lines.next().expect("a header line");
    assert!(header.starts_with("TOKEN"), "{listing}");
    lines
        .map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|columns| columns.first().map(String::as_str) == Some(token))
}

#[tokio::test]
async fn a_single_use_token_registers_once() {
    let server = TestServer::start_with_config(TOKEN_REGISTRATION).await;
    let output = server.cli(
        &[
            "admin",
            "registration-token",
            "create",
            "--uses-allowed",
            "1",
        ],
        None,
    );
    let token = assert_success(&output).trim().to_owned();
    assert!(
        !token.is_empty()
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)),
        "{token:?}"
    );
    assert!(token_is_valid(&server, &token).await);
    assert_eq!(
        token_row(&server, &token).expect("the new token is listed")[1..3],
        ["1", "0"]
    );

    // Dummy auth is not a way around the token.
    let session = token_challenge(&server, "mallory").await;
    let (status, body) = server
        .post(
            REGISTER,
            None,
            json!({"username": "mallory", "password": "pw", "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_error(&server.login("mallory", "pw").await, 403, "M_FORBIDDEN");

    let (status, body) = register_with_token(&server, "alice", &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:test.local");
    let alice = Session::from_json(&body);
    assert_eq!(server.whoami(&alice.access_token).await.0, 200);

    assert!(
        !token_is_valid(&server, &token).await,
        "the token is used up"
    );
    assert_eq!(
        token_row(&server, &token).expect("still listed")[1..3],
        ["1", "1"]
    );

    let (status, body) = register_with_token(&server, "bob", &token).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{body}");
    assert_eq!(
        body["flows"],
        json!([{"stages": ["m.login.registration_token"]}])
    );
    assert_error(&server.login("bob", "pw").await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn unknown_tokens_are_refused() {
    let server = TestServer::start_with_config(TOKEN_REGISTRATION).await;
    assert!(!token_is_valid(&server, "no-such-token").await);
    let (status, body) = register_with_token(&server, "alice", "no-such-token").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{body}");
    let session = body["session"].as_str().expect("the session goes on");
    // The same session accepts a valid token afterwards.
    assert_success(&server.cli(
        &[
            "admin",
            "registration-token",
            "create",
            "--token",
            "good-token",
        ],
        None,
    ));
    let (status, body) = server
        .post(
            REGISTER,
            None,
            json!({"username": "alice", "password": "pw",
                   "auth": {"type": "m.login.registration_token", "token": "good-token", "session": session}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn tokens_are_listed_and_deleted() {
    let server = TestServer::start_with_config(TOKEN_REGISTRATION).await;
    let created = assert_success(&server.cli(
        &[
            "admin",
            "registration-token",
            "create",
            "--token",
            "team-2024",
        ],
        None,
    ));
    assert_eq!(created.trim(), "team-2024");
    // Unlimited: two registrations work, and the list counts them.
    for name in ["alice", "bob"] {
        let (status, body) = register_with_token(&server, name, "team-2024").await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        token_row(&server, "team-2024").expect("listed")[1..3],
        ["-", "2"]
    );
    assert!(token_is_valid(&server, "team-2024").await);

    let stderr = assert_failure(&server.cli(
        &[
            "admin",
            "registration-token",
            "create",
            "--token",
            "team-2024",
        ],
        None,
    ));
    assert!(stderr.contains("already exists"), "{stderr}");
    let stderr = assert_failure(&server.cli(
        &[
            "admin",
            "registration-token",
            "create",
            "--token",
            "no spaces!",
        ],
        None,
    ));
    assert!(stderr.contains("token"), "{stderr}");

    let deleted = assert_success(&server.cli(
        &["admin", "registration-token", "delete", "team-2024"],
        None,
    ));
    assert!(deleted.contains("team-2024"), "{deleted}");
    assert!(token_row(&server, "team-2024").is_none());
    assert!(!token_is_valid(&server, "team-2024").await);
    let (status, body) = register_with_token(&server, "carol", "team-2024").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{body}");

    let stderr = assert_failure(&server.cli(
        &["admin", "registration-token", "delete", "team-2024"],
        None,
    ));
    assert!(stderr.contains("team-2024"), "{stderr}");
}

#[tokio::test]
async fn tokens_expire() {
    let server = TestServer::start_with_config(TOKEN_REGISTRATION).await;
    assert_success(&server.cli(
        &[
            "admin",
            "registration-token",
            "create",
            "--token",
            "short-lived",
            "--expires-in",
            "1s",
        ],
        None,
    ));
    let row = token_row(&server, "short-lived").expect("listed");
    assert_ne!(row[4], "-", "the expiry is shown: {row:?}");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(!token_is_valid(&server, "short-lived").await);
    let (status, body) = register_with_token(&server, "alice", "short-lived").await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn token_validity_is_forbidden_without_token_registration() {
    let server = TestServer::start().await;
    assert_error(
        &server
            .get(&format!("{TOKEN_VALIDITY}?token=anything"), None)
            .await,
        403,
        "M_FORBIDDEN",
    );
}

/// Synapse's `password_config.policy`, one check for every way a password is set: registration
/// (before the auth stages, with Synapse's errcodes), password change, shared-secret
/// registration's admin CLI twin (`admin add-user`) and `admin reset-password`.
#[tokio::test]
async fn the_password_policy_applies_to_registration_password_change_and_the_cli() {
    let server = TestServer::start_with_config(&format!(
        "{}password_config:\n  policy:\n    enabled: true\n    minimum_length: 10\n    \
         require_digit: true\n    require_symbol: true\n    require_uppercase: true\n    \
         require_lowercase: true\n",
        common::OPEN_REGISTRATION
    ))
    .await;
    for (password, errcode) in [
        ("Sh0rt!", "M_PASSWORD_TOO_SHORT"),
        ("Long-enough-but-no-digit", "M_PASSWORD_NO_DIGIT"),
        ("Long3nough0rNoSymbol", "M_PASSWORD_NO_SYMBOL"),
        ("long-3nough-no-upper", "M_PASSWORD_NO_UPPERCASE"),
        ("LONG-3NOUGH-NO-LOWER", "M_PASSWORD_NO_LOWERCASE"),
    ] {
        // Refused before the auth stages: no UIA session is opened for it.
        let response = server
            .post(
                REGISTER,
                None,
                json!({"username": "grace", "password": password}),
            )
            .await;
        assert_error(&response, 400, errcode);
        let response = server
            .post(
                REGISTER,
                None,
                json!({"username": "grace", "password": password, "auth": {"type": "m.login.dummy"}}),
            )
            .await;
        assert_error(&response, 400, errcode);
    }
    let strong = "Str0ng-enough!";
    let grace = server.register("Grace", strong).await;
    assert_eq!(grace.user_id, "@grace:test.local");

    // Password change.
    let response = server
        .with_password_auth(
            reqwest::Method::POST,
            "/_matrix/client/v3/account/password",
            &grace,
            strong,
            json!({"new_password": "weak"}),
        )
        .await;
    assert_error(&response, 400, "M_PASSWORD_TOO_SHORT");
    assert_eq!(server.login("grace", strong).await.0, 200, "unchanged");

    // The admin CLI: the same rule and the same words, and user names normalised as at
    // registration (`Heidi` and `@Heidi:test.local` are `heidi`).
    let refused = assert_failure(&server.cli(
        &["admin", "add-user", "heidi", "--password-stdin"],
        Some("no-digits-Here!\n"),
    ));
    assert!(refused.contains("at least one digit"), "{refused}");
    let created = assert_success(&server.cli(
        &["admin", "add-user", "@Heidi:test.local", "--password-stdin"],
        Some("Str0ng-enough!\n"),
    ));
    assert!(created.contains("@heidi:test.local"), "{created}");
    let refused = assert_failure(&server.cli(
        &["admin", "reset-password", "heidi", "--password-stdin"],
        Some("Sh0rt!\n"),
    ));
    assert!(refused.contains("at least 10 characters"), "{refused}");
}

/// `password_config.enabled: false`: no password login is offered or accepted.
#[tokio::test]
async fn password_login_can_be_turned_off() {
    let server = TestServer::start_with_config(&format!(
        "{}password_config: {{enabled: false}}\n",
        common::OPEN_REGISTRATION
    ))
    .await;
    assert_success(&server.cli(
        &["admin", "add-user", "ivan", "--password-stdin"],
        Some("ivan-password\n"),
    ));
    let (status, body) = server.get("/_matrix/client/v3/login", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["flows"], json!([]), "{body}");
    assert_error(
        &server.login("ivan", "ivan-password").await,
        400,
        "M_UNKNOWN",
    );
}
