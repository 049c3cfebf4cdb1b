//! The built-in TURN relay against coturn's own test client (`turnutils_uclient`, relaying to
//! `turnutils_peer`) with credentials from `/voip/turnServer`, over UDP, TCP and TLS; refused
//! credentials and peers; the packet-rate, bandwidth and per-user allocation caps; the public
//! address following a (test) STUN server's answer. (The lifetime cap, at least a minute, has a
//! unit test in `turn::allocations`.)

use crate::common;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine;
use common::{OPEN_REGISTRATION, TestServer, assert_success};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha1::Sha1;

/// A UDP and TCP port free on loopback right now.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

struct Ports {
    turn: u16,
    tls: u16,
    min: u16,
    max: u16,
}

fn ports() -> Ports {
    let min = free_port();
    Ports {
        turn: free_port(),
        tls: free_port(),
        min,
        // A few ports above a free one: enough for the few allocations of a test.
        max: min.saturating_add(30),
    }
}

fn relay_config(ports: &Ports, extra: &str) -> String {
    format!(
        "{OPEN_REGISTRATION}\
turn_relay_enabled: true
turn_listen_port: {}
turn_tls_port: {}
turn_bind_addresses: [\"127.0.0.1\"]
turn_min_port: {}
turn_max_port: {}
{extra}",
        ports.turn, ports.tls, ports.min, ports.max
    )
}

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// coturn's echo peer on loopback.
fn start_peer() -> (Peer, u16) {
    let port = free_port();
    let child = Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnutils_peer (Debian package coturn) must be installed");
    std::thread::sleep(Duration::from_millis(300));
    (Peer(child), port)
}

/// Runs `turnutils_uclient` and returns its output.
fn uclient(flags: &[&str], username: &str, password: &str, peer_port: u16, port: u16) -> String {
    let peer_port = peer_port.to_string();
    let port = port.to_string();
    let mut args: Vec<&str> = flags.to_vec();
    args.extend([
        "-u",
        username,
        "-w",
        password,
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port,
        "-p",
        &port,
        "127.0.0.1",
    ]);
    let output = Command::new("timeout")
        .arg("60")
        .arg("turnutils_uclient")
        .args(&args)
        .output()
        .expect("turnutils_uclient (Debian package coturn) must be installed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The number after `key` in uclient's report.
fn reported(output: &str, key: &str) -> Option<u64> {
    let rest = output.rsplit(key).next().filter(|_| output.contains(key))?;
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

async fn turn_credentials(server: &TestServer, user: &str) -> Value {
    let session = server.register(user, "correct horse battery").await;
    let (status, body) = server
        .get("/_matrix/client/v3/voip/turnServer", session.token())
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn hmac_password(secret: &str, username: &str) -> String {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn self_signed_certificate(dir: &std::path::Path) -> String {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    format!(
        "tls_certificate_path: {}\ntls_private_key_path: {}\n",
        cert_path.display(),
        key_path.display()
    )
}

#[tokio::test]
async fn relays_over_udp_tcp_and_tls_with_credentials_from_the_client_api() {
    let ports = ports();
    let certs = tempfile::tempdir().unwrap();
    let extra = format!(
        "turn_external_ip: 203.0.113.10\nturn_shared_secret: test-turn-secret\n\
         turn_allowed_peer_ips: [\"127.0.0.1\"]\npublic_baseurl: https://matrix.test.local/\n{}",
        self_signed_certificate(certs.path())
    );
    let server = TestServer::start_with_config(&relay_config(&ports, &extra)).await;
    let credentials = turn_credentials(&server, "caller").await;

    let username = credentials["username"].as_str().unwrap();
    let (expiry, user_id) = username.split_once(':').unwrap();
    assert_eq!(user_id, "@caller:test.local");
    let expiry: u64 = expiry.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 3590..=now + 3610).contains(&expiry),
        "{expiry} vs {now}"
    );
    assert_eq!(credentials["ttl"], 3600);
    assert_eq!(
        credentials["password"],
        hmac_password("test-turn-secret", username),
        "coturn's use-auth-secret password"
    );
    assert_eq!(
        credentials["uris"],
        serde_json::json!([
            format!("turn:matrix.test.local:{}?transport=udp", ports.turn),
            format!("turn:matrix.test.local:{}?transport=tcp", ports.turn),
            format!("turns:matrix.test.local:{}?transport=tcp", ports.tls),
        ])
    );
    let password = credentials["password"].as_str().unwrap();

    let (_peer, peer_port) = start_peer();
    for (name, flags, port) in [
        ("udp", vec![], ports.turn),
        ("tcp", vec!["-t"], ports.turn),
        ("tls", vec!["-t", "-S"], ports.tls),
    ] {
        let mut flags = flags;
        flags.extend(["-m", "4", "-n", "300", "-l", "1000", "-z", "5", "-c"]);
        let output = uclient(&flags, username, password, peer_port, port);
        assert_eq!(
            reported(&output, "tot_recv_msgs="),
            Some(1200),
            "{name}: every packet comes back through the relay:\n{output}"
        );
        assert_eq!(
            reported(&output, "Total lost packets "),
            Some(0),
            "{name}:\n{output}"
        );
    }

    // `turn status` shows the relayed traffic (each packet out and back, over three transports);
    // the server rewrites the file every 2 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        let status = assert_success(&server.cli(&["turn", "status", "--json"], None));
        let status: Value = serde_json::from_str(&status).unwrap();
        if status["bytes_relayed"].as_u64().unwrap() >= 3 * 2 * 1200 * 1000 {
            break status;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(status["public_ipv4"], "203.0.113.10");
}

#[tokio::test]
async fn wrong_expired_and_malformed_credentials_are_refused() {
    let ports = ports();
    let extra = "turn_external_ip: 203.0.113.10\nturn_shared_secret: test-turn-secret\n\
                 turn_allowed_peer_ips: [\"127.0.0.1\"]\n";
    let server = TestServer::start_with_config(&relay_config(&ports, extra)).await;
    let credentials = turn_credentials(&server, "caller").await;
    let username = credentials["username"].as_str().unwrap();
    let (_peer, peer_port) = start_peer();
    let flags = ["-n", "20", "-c", "-z", "5"];

    // The right credentials work (so the refusals below are about the credentials).
    let good = uclient(
        &flags,
        username,
        credentials["password"].as_str().unwrap(),
        peer_port,
        ports.turn,
    );
    assert_eq!(reported(&good, "tot_recv_msgs="), Some(20), "{good}");

    let expired_name = "1000000000:@caller:test.local";
    for (what, name, password) in [
        (
            "wrong password",
            username.to_owned(),
            "not-the-password".to_owned(),
        ),
        (
            "expired",
            expired_name.to_owned(),
            hmac_password("test-turn-secret", expired_name),
        ),
        (
            "malformed",
            "@caller:test.local".to_owned(),
            hmac_password("test-turn-secret", "@caller:test.local"),
        ),
        (
            "other secret",
            username.to_owned(),
            hmac_password("another-secret", username),
        ),
    ] {
        let output = uclient(&flags, &name, &password, peer_port, ports.turn);
        assert!(
            reported(&output, "tot_recv_msgs=").unwrap_or(0) == 0,
            "{what} credentials must not relay:\n{output}"
        );
        // The relay answers 401 Unauthorized (RFC 8489 §9.2; the gate's unit test reads the
        // code), after which the client gives up instead of reporting another error.
        assert!(
            output.contains("Cannot complete Allocation") && !output.contains("error 400"),
            "{what}: refused as unauthorized, not as a bad request:\n{output}"
        );
    }
    assert!(
        server
            .log_text()
            .contains("wrong, expired or malformed credentials"),
        "the refusals are logged"
    );
    let status: Value = serde_json::from_str(&assert_success(
        &server.cli(&["turn", "status", "--json"], None),
    ))
    .unwrap();
    let users: Vec<&str> = status["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["user"].as_str().unwrap())
        .collect();
    assert!(users.iter().all(|u| *u == username), "{users:?}");
}

#[tokio::test]
async fn a_loopback_peer_is_refused_unless_allowed() {
    let ports = ports();
    let extra = "turn_external_ip: 203.0.113.10\n";
    let server = TestServer::start_with_config(&relay_config(&ports, extra)).await;
    let credentials = turn_credentials(&server, "caller").await;
    let (_peer, peer_port) = start_peer();
    let output = uclient(
        &["-n", "20", "-c", "-z", "5"],
        credentials["username"].as_str().unwrap(),
        credentials["password"].as_str().unwrap(),
        peer_port,
        ports.turn,
    );
    assert!(output.contains("403"), "{output}");
    assert!(
        reported(&output, "tot_recv_msgs=").unwrap_or(0) == 0,
        "{output}"
    );
    // The generated secret is kept, private, in the data directory.
    let secret = server.data_dir.join("turn_shared_secret");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        !server
            .log_text()
            .contains(std::fs::read_to_string(&secret).unwrap().trim())
    );
}

#[tokio::test]
async fn voip_turn_server_hands_out_credentials_for_an_external_coturn() {
    let server = TestServer::start_with_config(&format!(
        "{OPEN_REGISTRATION}turn_uris: [\"turn:turn.example.org?transport=udp\"]\n\
         turn_shared_secret: coturn-secret\nturn_user_lifetime: 10m\n"
    ))
    .await;
    let credentials = turn_credentials(&server, "caller").await;
    assert_eq!(
        credentials["uris"],
        serde_json::json!(["turn:turn.example.org?transport=udp"])
    );
    assert_eq!(credentials["ttl"], 600);
    let username = credentials["username"].as_str().unwrap();
    assert_eq!(
        credentials["password"],
        hmac_password("coturn-secret", username)
    );

    // Nothing configured: Synapse's empty answer.
    let bare = TestServer::start().await;
    let session = bare.register("caller", "correct horse battery").await;
    let (status, body) = bare
        .get("/_matrix/client/v3/voip/turnServer", session.token())
        .await;
    assert_eq!((status.as_u16(), body), (200, serde_json::json!({})));
    let (status, _) = bare.get("/_matrix/client/v3/voip/turnServer", None).await;
    assert_eq!(status, 401);
}

/// A STUN server answering every binding request with the address in `answer`.
fn fake_stun_server(answer: Arc<Mutex<Ipv4Addr>>) -> SocketAddr {
    use stun::{
        message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter},
        xoraddr::XorMappedAddress,
    };
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let mut request = Message {
                raw: buf[..n].to_vec(),
                ..Default::default()
            };
            if request.decode().is_err() || request.typ != BINDING_REQUEST {
                continue;
            }
            let ip = *answer.lock().unwrap();
            let setters: Vec<Box<dyn Setter>> = vec![
                Box::new(Message {
                    transaction_id: request.transaction_id,
                    ..Default::default()
                }),
                Box::new(BINDING_SUCCESS),
                Box::new(XorMappedAddress {
                    ip: IpAddr::V4(ip),
                    port: from.port(),
                }),
            ];
            let mut response = Message::new();
            response.build(&setters).unwrap();
            let _ = socket.send_to(&response.raw, from);
        }
    });
    address
}

/// Allocates with the `turn` crate's client and returns the relayed address.
async fn allocate(
    turn_port: u16,
    username: &str,
    password: &str,
) -> (turn::client::Client, SocketAddr) {
    use webrtc_util::Conn;
    let conn = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let client = turn::client::Client::new(turn::client::ClientConfig {
        stun_serv_addr: format!("127.0.0.1:{turn_port}"),
        turn_serv_addr: format!("127.0.0.1:{turn_port}"),
        username: username.to_owned(),
        password: password.to_owned(),
        realm: "test.local".to_owned(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await
    .unwrap();
    client.listen().await.unwrap();
    let relay = client.allocate().await.unwrap();
    let address = relay.local_addr().unwrap();
    // The allocation lives as long as the client; the relayed conn handle is not needed.
    std::mem::forget(relay);
    (client, address)
}

#[tokio::test]
async fn the_relay_follows_a_change_of_public_ip() {
    let first = Ipv4Addr::new(198, 51, 100, 1);
    let second = Ipv4Addr::new(198, 51, 100, 2);
    let answer = Arc::new(Mutex::new(first));
    let stun_a = fake_stun_server(answer.clone());
    let stun_b = fake_stun_server(answer.clone());
    let ports = ports();
    let extra = format!(
        "turn_stun_servers: [\"{stun_a}\", \"{stun_b}\"]\nturn_public_ip_check_interval: 1s\n"
    );
    let server = TestServer::start_with_config(&relay_config(&ports, &extra)).await;
    let credentials = turn_credentials(&server, "caller").await;
    let username = credentials["username"].as_str().unwrap();
    let password = credentials["password"].as_str().unwrap();

    let (_old_client, relayed) = allocate(ports.turn, username, password).await;
    assert_eq!(relayed.ip(), IpAddr::V4(first));
    let status = assert_success(&server.cli(&["turn", "status"], None));
    assert!(
        status.contains("public IPv4: 198.51.100.1 (from stun)"),
        "{status}"
    );

    *answer.lock().unwrap() = second;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server
        .log_text()
        .contains("public IP changed from 198.51.100.1 to 198.51.100.2")
    {
        assert!(
            Instant::now() < deadline,
            "no change logged:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_new_client, relayed) = allocate(ports.turn, username, password).await;
    assert_eq!(
        relayed.ip(),
        IpAddr::V4(second),
        "the next allocation uses the new address"
    );

    // The status shows the change, and the allocation on the old address was ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = assert_success(&server.cli(&["turn", "status"], None));
        let shows_change = status.contains("public IP changed from 198.51.100.1 to 198.51.100.2")
            && status.contains("public IPv4: 198.51.100.2");
        // The new allocation may already have timed out of the list on a loaded machine; that
        // it used the new address is checked above.
        if shows_change && !status.contains("relayed at 198.51.100.1") {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn the_packet_rate_cap_and_the_per_user_quota_hold() {
    let ports = ports();
    let extra = "turn_external_ip: 203.0.113.10\nturn_allowed_peer_ips: [\"127.0.0.1\"]\n\
                 turn_max_packet_rate: 50\nturn_max_allocations_per_user: 2\n";
    let server = TestServer::start_with_config(&relay_config(&ports, extra)).await;
    let credentials = turn_credentials(&server, "caller").await;
    let (username, password) = (
        credentials["username"].as_str().unwrap(),
        credentials["password"].as_str().unwrap(),
    );
    let (_peer, peer_port) = start_peer();

    // 300 packets at about a thousand a second, echoed back by the peer: at 50 packets a second
    // (both directions, a second's burst) far fewer come back.
    let flood = ["-n", "300", "-l", "100", "-c", "-z", "1"];
    let output = uclient(&flood, username, password, peer_port, ports.turn);
    let received = reported(&output, "tot_recv_msgs=")
        .unwrap_or_else(|| panic!("no uclient report:\n{output}"));
    assert!(
        received > 0 && received <= 150,
        "packet rate cap: {received} of 300 came back:\n{output}"
    );

    // uclient makes two allocations (its two ends); a second uclient of the same user while the
    // first lives goes over the quota of two: 486 Allocation Quota Reached.
    let mut first = Command::new("turnutils_uclient")
        .args([
            "-n", "1000", "-c", "-z", "20", "-u", username, "-w", password,
        ])
        .args(["-e", "127.0.0.1", "-r", &peer_port.to_string()])
        .args(["-p", &ports.turn.to_string(), "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnutils_uclient");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status: Value = serde_json::from_str(&assert_success(
            &server.cli(&["turn", "status", "--json"], None),
        ))
        .unwrap();
        if status["allocations"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first allocation never showed up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = uclient(
        &["-n", "5", "-c", "-z", "5"],
        username,
        password,
        peer_port,
        ports.turn,
    );
    let _ = first.kill();
    let _ = first.wait();
    assert!(
        reported(&second, "tot_recv_msgs=").unwrap_or(0) == 0
            && second.contains("error 486 (Allocation Quota Reached)"),
        "allocations beyond the quota:\n{second}"
    );
    assert!(
        server.log_text().contains("turn_max_allocations_per_user"),
        "the quota refusal is logged"
    );
}

#[tokio::test]
async fn the_bandwidth_cap_holds() {
    let ports = ports();
    let extra = "turn_external_ip: 203.0.113.10\nturn_allowed_peer_ips: [\"127.0.0.1\"]\n\
                 turn_max_bandwidth: 20K\n";
    let server = TestServer::start_with_config(&relay_config(&ports, extra)).await;
    let credentials = turn_credentials(&server, "caller").await;
    let (_peer, peer_port) = start_peer();
    // 300 KB in about a third of a second, echoed back: at 20 KiB a second (both directions, a
    // second's burst) most of it is dropped.
    let output = uclient(
        &["-n", "300", "-l", "1000", "-c", "-z", "1"],
        credentials["username"].as_str().unwrap(),
        credentials["password"].as_str().unwrap(),
        peer_port,
        ports.turn,
    );
    let received = reported(&output, "tot_recv_msgs=")
        .unwrap_or_else(|| panic!("no uclient report:\n{output}"));
    assert!(
        received > 0 && received <= 150,
        "bandwidth cap: {received} of 300 came back:\n{output}"
    );
}
