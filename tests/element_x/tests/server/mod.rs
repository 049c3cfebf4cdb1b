//! Starts the appliance binary the root crate built, on a loopback port of its own, and speaks
//! plain HTTP to it for what the tests do "as another client" (registering, sending as a
//! second user). A small copy of the start logic of tests/common/mod.rs, which needs
//! `CARGO_BIN_EXE_appliance` (only the root crate has it).

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use matrix_sdk::reqwest;
use serde_json::{Value, json};
use tempfile::TempDir;

/// Open registration and rate limits out of the way; `{base}` is the server's own URL, which
/// `/.well-known/matrix/client` gives clients.
const CONFIG: &str = "\
server_name: test.local
public_baseurl: {base}
enable_registration: true
enable_registration_without_verification: true
rc_login:
  address: {per_second: 1000, burst_count: 1000}
  account: {per_second: 1000, burst_count: 1000}
  failed_attempts: {per_second: 1000, burst_count: 1000}
rc_registration: {per_second: 1000, burst_count: 1000}
rc_message: {per_second: 1000, burst_count: 1000}
rc_joins:
  local: {per_second: 1000, burst_count: 1000}
rc_invites:
  per_room: {per_second: 1000, burst_count: 1000}
  per_user: {per_second: 1000, burst_count: 1000}
  per_issuer: {per_second: 1000, burst_count: 1000}
rc_room_creation: {per_second: 1000, burst_count: 1000}
";

/// The appliance binary: `$APPLIANCE_BINARY` (tests/run.sh sets it), else the root crate's
/// debug build.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("APPLIANCE_BINARY") {
        return path.into();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    target.join("debug/appliance")
}

/// A running appliance; stopped (killed) when dropped.
pub struct Server {
    child: Child,
    _dir: TempDir,
    /// `http://127.0.0.1:<port>`
    pub base_url: String,
    /// `127.0.0.1:<port>`, what a client types as the server's name to find it through
    /// `/.well-known/matrix/client` over plain HTTP.
    pub address: String,
    http: reqwest::Client,
}

impl Server {
    pub fn start() -> Self {
        // The port is chosen here so that `public_baseurl` (and so the well-known answer) can
        // name it; the gap between closing and the server binding it is harmless on loopback.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let address = format!("127.0.0.1:{port}");
        let base_url = format!("http://{address}");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, CONFIG.replace("{base}", &format!("{base_url}/")))
            .expect("write config");
        let binary = binary();
        let mut child = Command::new(&binary)
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["serve", "--listen", &address])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {}: {e} (build the root crate first)",
                    binary.display()
                )
            });
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let log_writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on http://") {
                    let _ = ready_tx.send(());
                }
                let mut log = log_writer.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            panic!("server did not start; its log:\n{}", log.lock().unwrap());
        }
        Self {
            child,
            _dir: dir,
            base_url,
            address,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
        }
    }

    /// A JSON request; returns the status and the JSON body (`null` when there is none).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `request`, panicking unless the answer is `200`.
    pub async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, reply) = self.request(method, path, Some(token), body).await;
        assert_eq!(status, 200, "{path}: {reply}");
        reply
    }

    /// Registers `username` (dummy auth) and returns its access token.
    pub async fn register(&self, username: &str, password: &str) -> String {
        let (status, body) = self
            .request(
                reqwest::Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(json!({"username": username, "password": password,
                    "auth": {"type": "m.login.dummy"}})),
            )
            .await;
        assert_eq!(status, 200, "register {username}: {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Creates a room as the token's user; returns its ID.
    pub async fn create_room(&self, token: &str, body: Value) -> String {
        let reply = self
            .ok(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                token,
                Some(body),
            )
            .await;
        reply["room_id"].as_str().expect("room_id").to_owned()
    }

    /// Sends an `m.text` message; returns its event ID.
    pub async fn send_text(&self, token: &str, room: &str, text: &str) -> String {
        let txn = format!("t{}", rand_suffix());
        let reply = self
            .ok(
                reqwest::Method::PUT,
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                    encode(room)
                ),
                token,
                Some(json!({"msgtype": "m.text", "body": text})),
            )
            .await;
        reply["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Joins a room (by ID or alias) as the token's user.
    pub async fn join(&self, token: &str, room: &str) {
        self.ok(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/join/{}", encode(room)),
            token,
            Some(json!({})),
        )
        .await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a path segment (`!`, `#`, `:` and the rest).
pub fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A transaction ID suffix unique within the process.
fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
