//! Synapse's shared-secret registration (`register_new_matrix_user`).
use crate::common;

use common::{TestServer, assert_error, assert_success};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

const ENDPOINT: &str = "/_synapse/admin/v1/register";
/// `registration_shared_secret` of the harness's default config.
const SECRET: &str = "test-shared-secret";

fn mac(secret: &str, nonce: &str, username: &str, password: &str, admin: bool) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(nonce.as_bytes());
    mac.update(b"\x00");
    mac.update(username.as_bytes());
    mac.update(b"\x00");
    mac.update(password.as_bytes());
    mac.update(b"\x00");
    mac.update(if admin { b"admin" } else { b"notadmin" });
    hex::encode(mac.finalize().into_bytes())
}

async fn nonce(server: &TestServer) -> String {
    let (status, body) = server.get(ENDPOINT, None).await;
    assert_eq!(status, 200, "{body}");
    let nonce = body["nonce"].as_str().expect("nonce").to_owned();
    assert!(nonce.len() >= 16, "{nonce}");
    nonce
}

fn request(nonce: &str, username: &str, password: &str, admin: bool, mac: &str) -> Value {
    json!({"nonce": nonce, "username": username, "password": password, "admin": admin, "mac": mac})
}

fn admin_column(server: &TestServer, user_id: &str) -> String {
    let listing = assert_success(&server.cli(&["admin", "list-users"], None));
    listing
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|c| c.first() == Some(&user_id))
        .unwrap_or_else(|| panic!("{user_id} not listed: {listing}"))[1]
        .to_owned()
}

#[tokio::test]
async fn a_correct_mac_registers_the_user() {
    let server = TestServer::start().await;
    let first = nonce(&server).await;
    let second = nonce(&server).await;
    assert_ne!(first, second, "every nonce is fresh");

    let mac = mac(SECRET, &first, "alice", "pw-alice", false);
    let (status, body) = server
        .post(
            ENDPOINT,
            None,
            request(&first, "alice", "pw-alice", false, &mac),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:test.local");
    assert_eq!(body["home_server"], "test.local");
    assert!(body["device_id"].is_string(), "{body}");
    let token = body["access_token"].as_str().expect("access_token");
    let (status, who) = server.whoami(token).await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["user_id"], "@alice:test.local");
    server.login_session("alice", "pw-alice").await;
    assert_eq!(admin_column(&server, "@alice:test.local"), "no");
}

#[tokio::test]
async fn admins_and_display_names_can_be_set() {
    let server = TestServer::start().await;
    let nonce = nonce(&server).await;
    let mut body = request(
        &nonce,
        "root",
        "pw",
        true,
        &mac(SECRET, &nonce, "root", "pw", true),
    );
    body["displayname"] = "The Admin".into();
    let (status, response) = server.post(ENDPOINT, None, body).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(admin_column(&server, "@root:test.local"), "yes");
    let (_, profile) = server
        .get("/_matrix/client/v3/profile/@root:test.local", None)
        .await;
    assert_eq!(profile["displayname"], "The Admin");
}

#[tokio::test]
async fn a_wrong_mac_is_forbidden() {
    let server = TestServer::start().await;
    // A guessed secret; and the right secret, but the admin flag flipped after signing.
    for (secret, signed_admin) in [("guessed-secret", true), (SECRET, false)] {
        let nonce = nonce(&server).await;
        let forged = mac(secret, &nonce, "mallory", "pw", signed_admin);
        let (status, body) = server
            .post(
                ENDPOINT,
                None,
                request(&nonce, "mallory", "pw", true, &forged),
            )
            .await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    }
    // Signed with the right secret over another nonce.
    let nonce_a = nonce(&server).await;
    let nonce_b = nonce(&server).await;
    let response = server
        .post(
            ENDPOINT,
            None,
            request(
                &nonce_a,
                "mallory",
                "pw",
                false,
                &mac(SECRET, &nonce_b, "mallory", "pw", false),
            ),
        )
        .await;
    assert_error(&response, 403, "M_FORBIDDEN");
    assert_error(&server.login("mallory", "pw").await, 403, "M_FORBIDDEN");
    let (status, _) = server
        .get(
            "/_matrix/client/v3/register/available?username=mallory",
            None,
        )
        .await;
    assert_eq!(status, 200, "no account was created");
}

#[tokio::test]
async fn a_nonce_is_single_use() {
    let server = TestServer::start().await;
    let nonce = nonce(&server).await;
    let body = request(
        &nonce,
        "alice",
        "pw",
        false,
        &mac(SECRET, &nonce, "alice", "pw", false),
    );
    let (status, response) = server.post(ENDPOINT, None, body).await;
    assert_eq!(status, 200, "{response}");

    let replay = request(
        &nonce,
        "bob",
        "pw",
        false,
        &mac(SECRET, &nonce, "bob", "pw", false),
    );
    let (status, response) = server.post(ENDPOINT, None, replay).await;
    assert_eq!(status, 400, "{response}");
    assert!(response["errcode"].is_string(), "{response}");
    assert_error(&server.login("bob", "pw").await, 403, "M_FORBIDDEN");

    // A nonce refused for its mac is spent too: no second guess with it.
    let nonce = self::nonce(&server).await;
    let (status, _) = server
        .post(
            ENDPOINT,
            None,
            request(&nonce, "carol", "pw", false, &"00".repeat(20)),
        )
        .await;
    assert_eq!(status, 403);
    let (status, response) = server
        .post(
            ENDPOINT,
            None,
            request(
                &nonce,
                "carol",
                "pw",
                false,
                &mac(SECRET, &nonce, "carol", "pw", false),
            ),
        )
        .await;
    assert_eq!(status, 400, "{response}");
    assert_error(&server.login("carol", "pw").await, 403, "M_FORBIDDEN");

    // A nonce never issued.
    let made_up = "0123456789abcdef0123456789abcdef";
    let (status, _) = server
        .post(
            ENDPOINT,
            None,
            request(
                made_up,
                "dave",
                "pw",
                false,
                &mac(SECRET, made_up, "dave", "pw", false),
            ),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn taken_and_invalid_names_are_refused() {
    let server = TestServer::start().await;
    server.register("alice", "original").await;
    let nonce_a = nonce(&server).await;
    let response = server
        .post(
            ENDPOINT,
            None,
            request(
                &nonce_a,
                "alice",
                "pw",
                true,
                &mac(SECRET, &nonce_a, "alice", "pw", true),
            ),
        )
        .await;
    assert_error(&response, 400, "M_USER_IN_USE");
    server.login_session("alice", "original").await;
    assert_eq!(admin_column(&server, "@alice:test.local"), "no");

    let nonce_b = nonce(&server).await;
    let response = server
        .post(
            ENDPOINT,
            None,
            request(
                &nonce_b,
                "bad name",
                "pw",
                false,
                &mac(SECRET, &nonce_b, "bad name", "pw", false),
            ),
        )
        .await;
    assert_error(&response, 400, "M_INVALID_USERNAME");
}

#[tokio::test]
async fn disabled_without_a_secret() {
    let server = TestServer::start_with_config(
        "server_name: test.local\nenable_registration: true\nenable_registration_without_verification: true\n",
    )
    .await;
    let (status, body) = server.get(ENDPOINT, None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.get("nonce").is_none(), "{body}");
    let (status, body) = server
        .post(
            ENDPOINT,
            None,
            request("x", "alice", "pw", false, &"00".repeat(20)),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_error(&server.login("alice", "pw").await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn malformed_requests_are_bad_json() {
    let server = TestServer::start().await;
    let nonce = nonce(&server).await;
    assert_error(
        &server
            .post(ENDPOINT, None, json!({"nonce": nonce, "username": "alice"}))
            .await,
        400,
        "M_BAD_JSON",
    );
    let reply = common::send(
        server
            .builder(reqwest::Method::POST, ENDPOINT)
            .body("{not json"),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body["errcode"], "M_NOT_JSON");
}
