//! Slow clients (slowloris) cannot hold connections: headers that never finish, a body that
//! stops arriving or trickles in for too long, a connection that sends nothing at all and an
//! idle keep-alive connection are all closed once `client_header_timeout` /
//! `client_body_timeout` / `client_body_deadline` have passed; crowds of connections from one
//! address are capped, and the server keeps file descriptors for itself. Raw TCP sockets, so the
//! client can dribble bytes the way an attacker would.
use crate::common;

use std::time::{Duration, Instant};

use common::TestServer;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const LIMIT: Duration = Duration::from_secs(2);
/// `client_body_deadline` of these tests.
const DEADLINE: Duration = Duration::from_secs(3);
/// Generous: the machine may be busy; the point is "closed", not "closed fast".
const SLACK: Duration = Duration::from_secs(8);

async fn server() -> TestServer {
    let yaml = format!(
        "{}client_header_timeout: {}s\nclient_body_timeout: {}s\nclient_body_deadline: {}s\n\
         client_upload_deadline: 60s\n",
        common::OPEN_REGISTRATION,
        LIMIT.as_secs(),
        LIMIT.as_secs(),
        DEADLINE.as_secs(),
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

#[tokio::test]
async fn a_body_that_trickles_in_steadily_is_cut_off_at_the_deadline() {
    let server = server().await;
    let mut stream = connect(&server).await;
    // 200 bytes announced, one every 500 ms: never a pause of `client_body_timeout`, but 100 s
    // in all.
    stream
        .write_all(
            b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..199 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let received = read_until_closed(&mut reader, started).await;
    trickle.abort();
    let received = received.expect("a trickled body still holds the connection");
    assert!(
        received.starts_with("HTTP/1.1 408"),
        "expected a 408 at the deadline, got: {received}"
    );
}

#[tokio::test]
async fn a_media_upload_may_take_longer_than_the_body_deadline() {
    let server = server().await;
    let alice = server.register("alice", "pw").await;
    let mut stream = connect(&server).await;
    let pieces = 8;
    let piece = [7u8; 500];
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        alice.access_token,
        pieces * piece.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    for _ in 0..pieces {
        stream.write_all(&piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert!(started.elapsed() > DEADLINE);
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(LIMIT + SLACK, stream.read(&mut buf))
        .await
        .expect("no answer to a complete upload")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("content_uri"), "{answer}");
}

/// A server whose timeouts hold slow connections for a minute, so only the caps act.
async fn patient_server(extra: &str) -> TestServer {
    let yaml = format!(
        "{}client_header_timeout: 60s\nclient_body_timeout: 60s\nclient_body_deadline: 120s\n{extra}",
        common::OPEN_REGISTRATION
    );
    TestServer::start_with_config(&yaml).await
}

/// A connection to `server` from the loopback address `from`.
async fn connect_from(server: &TestServer, from: &str) -> std::io::Result<TcpStream> {
    let address: std::net::SocketAddr = server
        .base_url
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(address).await
}

/// An HTTP client whose connections come from the loopback address `from`.
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Whether the server closed `stream` within two seconds without answering anything.
async fn closed_at_once(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn trickling_connections_from_one_address_do_not_lock_out_another() {
    let server = patient_server("client_max_connections_per_address: 20\n").await;
    // 60 connections from 127.0.0.1, each trickling a login body one byte a second.
    let mut trickling = Vec::new();
    for _ in 0..60 {
        let mut stream = connect_from(&server, "127.0.0.1").await.unwrap();
        let _ = stream
            .write_all(
                b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\n\
                  Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
            )
            .await;
        trickling.push(stream);
    }
    for stream in &mut trickling {
        let _ = stream.write_all(b" ").await;
    }
    let closed = futures_util::future::join_all(trickling.iter_mut().map(closed_at_once))
        .await
        .into_iter()
        .filter(|closed| *closed)
        .count();
    assert!(
        closed >= 40,
        "only {closed} of 60 connections from one address were closed (cap 20)"
    );

    // Another address is served while the 20 still trickle.
    let other = client_from("127.0.0.2");
    let response = other
        .get(format!("{}/_matrix/client/versions", server.base_url))
        .send()
        .await
        .expect("another client is locked out");
    assert_eq!(response.status(), 200);
    let log = server.log_text();
    assert!(
        log.contains("connections closed at accept"),
        "no warning about refused connections in the log:\n{log}"
    );
    drop(trickling);
}

#[tokio::test]
async fn connections_over_the_overall_cap_are_closed() {
    let server = patient_server("client_max_connections: 10\n").await;
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut stream = connect_from(&server, "127.0.0.1").await.unwrap();
        stream
            .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    // Give the server the time to accept them all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut extra = connect_from(&server, "127.0.0.2").await.unwrap();
    let _ = extra
        .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(
        closed_at_once(&mut extra).await,
        "an eleventh connection was served"
    );
    // Once they are gone, new connections are served again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let response = client_from("127.0.0.2")
        .get(format!("{}/_matrix/client/versions", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Sets the `RLIMIT_NOFILE` of process `pid` (0: this one) to `limit`, or its soft limit to its
/// hard one when `limit` is `None`.
fn set_fd_limit(pid: u32, limit: Option<u64>) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to rlimits.
    unsafe {
        assert_eq!(
            libc::prlimit(
                pid as libc::pid_t,
                libc::RLIMIT_NOFILE,
                std::ptr::null(),
                &mut old
            ),
            0
        );
        let new = match limit {
            Some(limit) => libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            },
            None => libc::rlimit {
                rlim_cur: old.rlim_max,
                rlim_max: old.rlim_max,
            },
        };
        assert_eq!(
            libc::prlimit(
                pid as libc::pid_t,
                libc::RLIMIT_NOFILE,
                &new,
                std::ptr::null_mut()
            ),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
    }
}

#[tokio::test]
async fn the_server_keeps_file_descriptors_for_itself() {
    let server =
        patient_server("client_max_connections: 5000\nclient_max_connections_per_address: 5000\n")
            .await;
    set_fd_limit(0, None);
    // A keep-alive connection opened before the flood, from another address.
    let other = client_from("127.0.0.2");
    let register = other
        .post(format!("{}/_matrix/client/v3/register", server.base_url))
        .json(&serde_json::json!({
            "username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 200);
    let token = register.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // 300 descriptors for the whole server, and 400 connections that send nothing.
    set_fd_limit(server.pid(), Some(300));
    let mut flood = Vec::new();
    for _ in 0..400 {
        match connect_from(&server, "127.0.0.1").await {
            Ok(stream) => flood.push(stream),
            Err(e) => panic!("cannot open a flood connection: {e}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The database and media files still work: an upload (a temp file, then the content file)
    // and its download, over the connection opened before.
    let upload = other
        .post(format!("{}/_matrix/media/v3/upload", server.base_url))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body(vec![1u8; 10_000])
        .send()
        .await
        .unwrap();
    let status = upload.status();
    let body = upload.json::<serde_json::Value>().await.unwrap_or_default();
    assert_eq!(status, 200, "{body}");
    let media_id = body["content_uri"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let download = other
        .get(format!(
            "{}/_matrix/client/v1/media/download/test.local/{media_id}",
            server.base_url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().await.unwrap().len(), 10_000);
    drop(flood);
}
