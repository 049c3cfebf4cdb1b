//! Slow clients (slowloris) cannot hold connections: headers that never finish, a body that
//! stops arriving, a connection that sends nothing at all and an idle keep-alive connection are
//! all closed once `client_header_timeout` / `client_body_timeout` have passed. Raw TCP sockets,
//! so the client can dribble bytes the way an attacker would.
mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const LIMIT: Duration = Duration::from_secs(2);
/// Generous: the machine may be busy; the point is "closed", not "closed fast".
const SLACK: Duration = Duration::from_secs(8);

async fn server() -> TestServer {
    let yaml = format!(
        "{}client_header_timeout: {}s\nclient_body_timeout: {}s\n",
        common::OPEN_REGISTRATION,
        LIMIT.as_secs(),
        LIMIT.as_secs()
    );
    TestServer::start_with_config(&yaml).await
}

async fn connect(server: &TestServer) -> TcpStream {
    let address = server.base_url.trim_start_matches("http://");
    TcpStream::connect(address).await.unwrap()
}

/// What the server sent until it closed the connection; `None` if it was still open after
/// `LIMIT + SLACK` from `since`.
async fn read_until_closed(
    stream: &mut (impl AsyncReadExt + Unpin),
    since: Instant,
) -> Option<String> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = (since + LIMIT + SLACK).checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&received).into()),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn headers_dribbled_byte_by_byte_are_cut_off() {
    let server = server().await;
    let mut stream = connect(&server).await;
    let started = Instant::now();
    stream
        .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One header byte every 300 ms for longer than the limit: never a whole header block.
    let (mut reader, mut writer) = stream.into_split();
    let dribble = tokio::spawn(async move {
        for byte in b"X-Slow: ".iter().cycle() {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let received = read_until_closed(&mut reader, started).await;
    dribble.abort();
    let received = received.expect("a client dribbling headers still holds its connection");
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 408"),
        "unexpected answer to unfinished headers: {received}"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let server = server().await;
    let mut stream = connect(&server).await;
    let received = read_until_closed(&mut stream, Instant::now()).await;
    assert_eq!(
        received.as_deref(),
        Some(""),
        "a silent connection stays open"
    );

    // A few bytes of the HTTP/2 preface, then silence: still closed.
    let mut stream = connect(&server).await;
    stream.write_all(b"PRI * HT").await.unwrap();
    let received = read_until_closed(&mut stream, Instant::now()).await;
    assert!(
        received.is_some(),
        "a stalled HTTP/2 preface keeps the connection"
    );
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408() {
    let server = server().await;
    let body = br#"{"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nobody"}, "password": "pw"}"#;
    let head = format!(
        "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );

    // Within the limit: a body sent in two pieces with a short pause is answered normally.
    let mut stream = connect(&server).await;
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(&body[10..]).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(LIMIT + SLACK, stream.read(&mut buf))
        .await
        .expect("no answer to a complete request")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

    // Part of the body, then a pause longer than the limit, one byte, another pause.
    let mut stream = connect(&server).await;
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let dribble = tokio::spawn(async move {
        for byte in &body[10..] {
            tokio::time::sleep(LIMIT + Duration::from_secs(1)).await;
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
        }
    });
    let received = read_until_closed(&mut reader, started).await;
    dribble.abort();
    let received =
        received.expect("a client that stopped sending its body still holds the connection");
    assert!(
        received.starts_with("HTTP/1.1 408"),
        "expected a 408 before the close, got: {received}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = server().await;
    let mut stream = connect(&server).await;
    stream
        .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(LIMIT + SLACK, stream.read(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The whole response has arrived when the server closes; what follows it does not matter.
    let closed = read_until_closed(&mut stream, Instant::now()).await;
    assert!(closed.is_some(), "an idle keep-alive connection stays open");
}

#[tokio::test]
async fn a_media_upload_that_stops_arriving_gets_408() {
    let server = server().await;
    let alice = server.register("alice", "pw").await;
    let mut stream = connect(&server).await;
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n",
        alice.access_token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[7u8; 1000]).await.unwrap();
    let received = read_until_closed(&mut stream, Instant::now())
        .await
        .expect("a stalled upload still holds the connection");
    assert!(
        received.starts_with("HTTP/1.1 408"),
        "expected a 408 before the close, got: {received}"
    );
}
