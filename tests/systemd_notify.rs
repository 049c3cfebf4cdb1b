//! The server speaks systemd's notify protocol the way `Type=notify` and `WatchdogSec=` in
//! `systemd/matrix-appliance.service` expect: a real datagram socket plays systemd's part.

use crate::common;

use std::{
    io::{BufRead, BufReader},
    os::unix::net::UnixDatagram,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{BINARY, path_str};

struct Notified {
    socket: UnixDatagram,
}

impl Notified {
    /// Waits for a datagram that contains `line`, returning every message seen until then.
    fn wait_for(&self, line: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = message.lines().any(|l| l == line);
                seen.push(message);
                if found {
                    return seen;
                }
            }
        }
        panic!("no `{line}` from the server; it sent {seen:?}");
    }
}

fn start(watchdog_usec: Option<u64>) -> (Child, Notified, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "server_name: test.local\n").unwrap();
    let mut command = Command::new(BINARY);
    command
        .args(["--config", path_str(&config), "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(usec) = watchdog_usec {
        command.env("WATCHDOG_USEC", usec.to_string());
    }
    let mut child = command.spawn().unwrap();
    let (address_tx, address_rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(address) = line.split("listening on http://").nth(1) {
                let _ = address_tx.send(address.trim().to_owned());
            }
        }
    });
    let address = address_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    (child, Notified { socket }, dir, address)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn ready_after_the_listeners_reload_on_sighup_and_stopping_at_the_end() {
    let (mut child, notified, _dir, address) = start(None);
    let seen = notified.wait_for("READY=1");
    assert!(
        seen.iter().any(|m| m.contains("STATUS=serving")),
        "{seen:?}"
    );
    // READY means the listener answers already.
    let versions = reqwest::get(format!("http://{address}/_matrix/client/versions"))
        .await
        .unwrap();
    assert_eq!(versions.status(), 200);

    // A reload is announced, then readiness again, and the server keeps serving.
    signal(&child, "HUP");
    let seen = notified.wait_for("READY=1");
    assert!(
        seen.iter().any(|m| m.lines().any(|l| l == "RELOADING=1")
            && m.lines().any(|l| l.starts_with("MONOTONIC_USEC="))),
        "{seen:?}"
    );
    let versions = reqwest::get(format!("http://{address}/_matrix/client/versions"))
        .await
        .unwrap();
    assert_eq!(versions.status(), 200);
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP stopped the server"
    );

    signal(&child, "TERM");
    notified.wait_for("STOPPING=1");
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn the_watchdog_is_pinged_at_half_its_interval() {
    // 400 ms: pings every 200 ms.
    let (mut child, notified, _dir, _address) = start(Some(400_000));
    notified.wait_for("READY=1");
    let first = Instant::now();
    notified.wait_for("WATCHDOG=1");
    notified.wait_for("WATCHDOG=1");
    notified.wait_for("WATCHDOG=1");
    // Three pings cannot come from a single one-off message.
    assert!(first.elapsed() >= Duration::from_millis(200));
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn without_a_watchdog_interval_nothing_is_pinged() {
    let (mut child, notified, _dir, _address) = start(None);
    notified.wait_for("READY=1");
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = notified.socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]);
            assert!(!message.contains("WATCHDOG=1"), "{message}");
        }
    }
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
}
