//! The spec's error responses for malformed requests, authentication failures and oversized
//! bodies; CORS; tokens in the query string.
use crate::common;

use common::{TestServer, assert_error, send};
use reqwest::{Method, header};
use serde_json::json;

const LOGIN: &str = "/_matrix/client/v3/login";

#[tokio::test]
async fn unknown_endpoints_are_unrecognized() {
    let server = TestServer::start().await;
    for path in [
        "/_matrix/client/v3/no_such_endpoint",
        "/_matrix/client/v3/account/whoami/extra",
        "/nothing/here",
    ] {
        assert_error(&server.get(path, None).await, 404, "M_UNRECOGNIZED");
        assert_error(
            &server.post(path, None, json!({})).await,
            404,
            "M_UNRECOGNIZED",
        );
    }
}

#[tokio::test]
async fn wrong_methods_are_unrecognized() {
    let server = TestServer::start().await;
    assert_error(
        &server.put(LOGIN, None, json!({})).await,
        405,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &server
            .delete("/_matrix/client/versions", None, json!({}))
            .await,
        405,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &server
            .post("/_matrix/client/v3/account/whoami", None, json!({}))
            .await,
        405,
        "M_UNRECOGNIZED",
    );
}

#[tokio::test]
async fn a_body_that_is_not_json_is_refused() {
    let server = TestServer::start().await;
    for body in ["{not json", "type=m.login.password", "{\"type\": "] {
        let reply = send(
            server
                .builder(Method::POST, LOGIN)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await;
        assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
        assert_eq!(reply.body["errcode"], "M_NOT_JSON", "{body}");
    }
    // Also on an authenticated endpoint, once the token is accepted.
    let alice = server.register("alice", "pw").await;
    let reply = send(
        server
            .builder(
                Method::PUT,
                "/_matrix/client/v3/profile/@alice:test.local/displayname",
            )
            .bearer_auth(&alice.access_token)
            .body("<html>"),
    )
    .await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert_eq!(reply.body["errcode"], "M_NOT_JSON");
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_bad_json() {
    let server = TestServer::start().await;
    for body in [
        json!([]),
        json!(["m.login.password"]),
        json!("a string"),
        json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": 42}),
    ] {
        assert_error(&server.post(LOGIN, None, body).await, 400, "M_BAD_JSON");
    }
    let alice = server.register("alice", "pw").await;
    assert_error(
        &server
            .put(
                "/_matrix/client/v3/profile/@alice:test.local/displayname",
                alice.token(),
                json!([1, 2]),
            )
            .await,
        400,
        "M_BAD_JSON",
    );
}

#[tokio::test]
async fn a_login_without_a_type_is_missing_param_not_a_panic() {
    let server = TestServer::start().await;
    for body in [
        json!({}),
        json!({"identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw"}),
    ] {
        assert_error(
            &server.post(LOGIN, None, body).await,
            400,
            "M_MISSING_PARAM",
        );
    }
    // A type that is not a string is the wrong shape.
    assert_error(
        &server.post(LOGIN, None, json!({"type": 1})).await,
        400,
        "M_BAD_JSON",
    );
    assert!(
        !server.log_text().contains("panicked"),
        "{}",
        server.log_text()
    );
}

#[tokio::test]
async fn missing_and_unknown_tokens() {
    let server = TestServer::start().await;
    let whoami = "/_matrix/client/v3/account/whoami";
    assert_error(&server.get(whoami, None).await, 401, "M_MISSING_TOKEN");
    let response = server.get(whoami, Some("mat_not_a_real_token")).await;
    assert_error(&response, 401, "M_UNKNOWN_TOKEN");
    assert_ne!(response.1["soft_logout"], true, "{}", response.1);
    assert!(
        response.1["soft_logout"].is_null() || response.1["soft_logout"] == false,
        "{}",
        response.1
    );
    assert_error(
        &server
            .get(&format!("{whoami}?access_token=mat_not_a_real_token"), None)
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    // A header that is not a bearer token is no token at all.
    let reply = send(
        server
            .builder(Method::GET, whoami)
            .header(header::AUTHORIZATION, "Basic YWxpY2U6cHc="),
    )
    .await;
    assert_eq!(reply.status, 401, "{:?}", reply.body);
    assert_eq!(reply.body["errcode"], "M_MISSING_TOKEN", "{:?}", reply.body);
}

#[tokio::test]
async fn the_access_token_may_come_in_the_query() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let (status, body) = server
        .get(
            &format!(
                "/_matrix/client/v3/account/whoami?access_token={}",
                alice.access_token
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:test.local");
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/profile/@alice:test.local/displayname?access_token={}",
                alice.access_token
            ),
            None,
            json!({"displayname": "From the query"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = server
        .get(
            "/_matrix/client/v3/profile/@alice:test.local/displayname",
            None,
        )
        .await;
    assert_eq!(body["displayname"], "From the query");
}

const SMALL_UPLOADS: &str = "\
server_name: test.local
enable_registration: true
enable_registration_without_verification: true
max_upload_size: 1M
rc_login:
  address: {per_second: 1000, burst_count: 1000}
  account: {per_second: 1000, burst_count: 1000}
  failed_attempts: {per_second: 1000, burst_count: 1000}
rc_registration: {per_second: 1000, burst_count: 1000}
";

/// A JSON object of about `size` bytes.
fn big_json(size: usize) -> String {
    format!(
        "{{\"type\": \"m.login.password\", \"padding\": \"{}\"}}",
        "x".repeat(size)
    )
}

#[tokio::test]
async fn bodies_over_max_upload_size_are_too_large() {
    let server = TestServer::start_with_config(SMALL_UPLOADS).await;
    let alice = server.register("alice", "pw").await;
    // Far larger than any socket buffer: the client still gets to read the answer.
    let reply = send(
        server
            .builder(Method::POST, LOGIN)
            .header(header::CONTENT_TYPE, "application/json")
            .body(big_json(16 * 1024 * 1024)),
    )
    .await;
    assert_eq!(reply.status, 413, "{:?}", reply.body);
    assert_eq!(reply.body["errcode"], "M_TOO_LARGE", "{:?}", reply.body);

    // Endpoints outside the client API as well.
    let reply = send(
        server
            .builder(Method::POST, "/_synapse/admin/v1/register")
            .header(header::CONTENT_TYPE, "application/json")
            .body(big_json(2 * 1024 * 1024)),
    )
    .await;
    assert_eq!(reply.status, 413, "{:?}", reply.body);
    assert_eq!(reply.body["errcode"], "M_TOO_LARGE", "{:?}", reply.body);

    // The server is still fine.
    let (status, body) = server.whoami(&alice.access_token).await;
    assert_eq!(status, 200, "{body}");
    server.login_session("alice", "pw").await;
}

/// The JSON body limit (`JSON_BODY_LIMIT` in `src/web/ruma.rs`).
const JSON_LIMIT: usize = 256 * 1024;

#[tokio::test]
async fn json_bodies_have_a_small_limit_of_their_own() {
    // The default `max_upload_size` (50M): JSON bodies are held to far less.
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let reply = send(
        server
            .builder(Method::POST, LOGIN)
            .header(header::CONTENT_TYPE, "application/json")
            .body(big_json(1024 * 1024)),
    )
    .await;
    assert_eq!(reply.status, 413, "{:?}", reply.body);
    assert_eq!(reply.body["errcode"], "M_TOO_LARGE", "{:?}", reply.body);

    // Authenticated endpoints too.
    let reply = send(
        server
            .builder(
                Method::PUT,
                "/_matrix/client/v3/profile/@alice:test.local/displayname",
            )
            .bearer_auth(&alice.access_token)
            .header(header::CONTENT_TYPE, "application/json")
            .body(big_json(1024 * 1024)),
    )
    .await;
    assert_eq!(reply.status, 413, "{:?}", reply.body);
    assert_eq!(reply.body["errcode"], "M_TOO_LARGE", "{:?}", reply.body);

    // Without a Content-Length the limit holds while the body is read.
    let answer = chunked_post(&server.base_url, LOGIN, &big_json(1024 * 1024)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("M_TOO_LARGE"), "{answer}");

    // A body just under the limit is read (and refused for what it says, not its size).
    let reply = send(
        server
            .builder(Method::POST, LOGIN)
            .header(header::CONTENT_TYPE, "application/json")
            .body(big_json(JSON_LIMIT - 100)),
    )
    .await;
    assert_ne!(reply.status, 413, "{:?}", reply.body);

    // The bulk end-to-end-encryption requests may be larger: a megabyte of to-device messages.
    let messages: serde_json::Map<String, serde_json::Value> = (0..400)
        .map(|i| {
            (
                format!("DEVICE{i}"),
                json!({"ciphertext": "c".repeat(2500)}),
            )
        })
        .collect();
    let (status, body) = server
        .put(
            "/_matrix/client/v3/sendToDevice/m.room.encrypted/txn1",
            alice.token(),
            json!({"messages": {"@alice:test.local": messages}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = server.whoami(&alice.access_token).await;
    assert_eq!(status, 200, "{body}");
}

/// POSTs `body` to the server at `base_url` with chunked transfer encoding (no `Content-Length`); returns what came back.
async fn chunked_post(base_url: &str, path: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for piece in body.as_bytes().chunks(16 * 1024) {
        let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
        framed.extend_from_slice(piece);
        framed.extend_from_slice(b"\r\n");
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[tokio::test]
async fn a_flood_of_large_json_bodies_does_not_grow_memory() {
    let server = TestServer::start().await;
    let before = peak_rss_kib(server.pid());
    // 32 logins of 16 MB each at once, half with a Content-Length and half chunked: buffered
    // whole (below the 50M `max_upload_size`), they would take over 512 MB.
    let body = std::sync::Arc::new(big_json(16 * 1024 * 1024));
    let mut floods = tokio::task::JoinSet::new();
    for i in 0..32 {
        let body = body.clone();
        let request = server
            .builder(Method::POST, LOGIN)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.as_str().to_owned());
        let address = server.base_url.clone();
        floods.spawn(async move {
            if i % 2 == 0 {
                let reply = send(request).await;
                format!("HTTP/1.1 {} {}", reply.status.as_u16(), reply.body)
            } else {
                chunked_post(&address, LOGIN, &body).await
            }
        });
    }
    while let Some(answer) = floods.join_next().await {
        let answer = answer.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "{}",
            &answer[..answer.len().min(300)]
        );
    }
    let after = peak_rss_kib(server.pid());
    // Generous: the point is "bounded", not a precise figure.
    assert!(
        after < before + 200 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
    let (status, _) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
}
#[tokio::test]
async fn cors_preflight_is_answered() {
    let server = TestServer::start().await;
    let reply = send(
        server
            .builder(Method::OPTIONS, LOGIN)
            .header(header::ORIGIN, "https://app.element.io")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization, content-type, x-requested-with",
            ),
    )
    .await;
    assert!(reply.status.is_success(), "{:?}", reply);
    assert_eq!(reply.header("access-control-allow-origin"), "*");
    let methods = reply.header("access-control-allow-methods").to_uppercase();
    for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(method), "{methods}");
    }
    let headers = reply.header("access-control-allow-headers").to_lowercase();
    for name in ["authorization", "content-type", "x-requested-with"] {
        assert!(headers.contains(name), "{headers}");
    }
}

#[tokio::test]
async fn every_response_carries_cors_headers() {
    let server = TestServer::start().await;
    for (method, path) in [
        (Method::GET, "/_matrix/client/versions"),
        (Method::GET, "/_matrix/client/v3/account/whoami"),
        (Method::GET, "/_matrix/client/v3/unknown"),
    ] {
        let reply = send(
            server
                .builder(method, path)
                .header(header::ORIGIN, "https://app.element.io"),
        )
        .await;
        assert_eq!(
            reply.header("access-control-allow-origin"),
            "*",
            "{path}: {:?}",
            reply.status
        );
    }
}

#[tokio::test]
async fn an_oversized_upload_expecting_100_continue_is_refused_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with_config(SMALL_UPLOADS).await;
    let alice = server.register("alice", "pw").await;
    let address = server.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    // 2 MB announced against a 1M `max_upload_size`; the body waits for `100 Continue`.
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\n\r\n",
        alice.access_token,
        2 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    // Well under the 10 s an oversized body is drained for when the client sends it anyway.
    let n = tokio::time::timeout(std::time::Duration::from_secs(6), stream.read(&mut buf))
        .await
        .expect("no answer before the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "expected 413 without asking for the body, got: {answer}"
    );
}

/// Runs `command`, panicking with its output when it fails.
fn run(command: &str, args: &[&str]) {
    let output = std::process::Command::new(command)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{command} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Fills the file system of `dir` to the last byte.
fn fill_disk(dir: &std::path::Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    let mut small = vec![0u8; 512];
    while !small.is_empty() {
        if file.write_all(&small).is_err() {
            small.truncate(small.len() / 2);
        }
    }
    let _ = file.sync_all();
}

#[tokio::test]
#[ignore = "needs root (mounts a small tmpfs as the data directory); tests/run.sh runs it as root"]
async fn a_full_disk_is_a_clear_507_and_a_log_line() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let (status, room) = server
        .post("/_matrix/client/v3/createRoom", alice.token(), json!({}))
        .await;
    assert_eq!(status, 200, "{room}");
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    // Move the data directory onto a 16 MiB tmpfs.
    server.stop();
    let data = common::path_str(&server.data_dir).to_owned();
    let saved = server.dir.path().join("saved");
    run("cp", &["-a", &data, common::path_str(&saved)]);
    run("mount", &["-t", "tmpfs", "-o", "size=16m", "tmpfs", &data]);
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(data.clone());
    run(
        "cp",
        &["-a", &format!("{}/.", common::path_str(&saved)), &data],
    );
    server.relaunch();
    let (status, _) = server.whoami(&alice.access_token).await;
    assert_eq!(status, 200);

    fill_disk(&server.data_dir);

    // A media upload: its temporary file cannot be written.
    let reply = send(
        server
            .builder(Method::POST, "/_matrix/media/v3/upload")
            .bearer_auth(&alice.access_token)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(vec![7u8; 256 * 1024]),
    )
    .await;
    assert_eq!(reply.status, 507, "{:?}", reply.body);
    assert_eq!(reply.body["errcode"], "M_UNKNOWN", "{:?}", reply.body);
    assert!(
        reply.body["error"]
            .as_str()
            .unwrap()
            .contains("disk is full"),
        "{:?}",
        reply.body
    );

    // Database writes: messages until SQLite finds no room for its log. Each is stored or
    // refused with the same 507, never a 500.
    let mut refused = false;
    for i in 0..500 {
        let (status, body) = server
            .put(
                &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/full{i}"),
                alice.token(),
                json!({"msgtype": "m.text", "body": "x".repeat(4000)}),
            )
            .await;
        if status == 507 {
            assert_eq!(body["errcode"], "M_UNKNOWN", "{body}");
            refused = true;
            break;
        }
        assert_eq!(status, 200, "message {i}: {body}");
    }
    assert!(refused, "500 messages stored on a full disk");
    // Reads still work.
    let (status, _) = server.whoami(&alice.access_token).await;
    assert_eq!(status, 200);
    let log = server.log_text();
    assert!(log.contains("the disk is full"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    // Space comes back: writes work again.
    std::fs::remove_file(server.data_dir.join("filler")).unwrap();
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/after"),
            alice.token(),
            json!({"msgtype": "m.text", "body": "space again"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.stop();
}
