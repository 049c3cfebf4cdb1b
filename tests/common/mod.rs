//! Starts the real `appliance` binary on an ephemeral loopback port with its own data directory
//! and config, and speaks HTTP to it. Every integration test goes through this.

pub mod js;
pub mod python;

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const BINARY: &str = env!("CARGO_BIN_EXE_appliance");

/// Open registration and rate limits high enough not to get in the way of tests.
pub const OPEN_REGISTRATION: &str = "\
server_name: test.local
enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: test-shared-secret
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
rc_media_create: {per_second: 1000, burst_count: 1000}
";

pub struct TestServer {
    child: Option<Child>,
    pub base_url: String,
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    /// Everything the server wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
    pub http: reqwest::Client,
    /// Environment variables of the server's process (from its next start).
    pub env: Vec<(String, String)>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with_config(OPEN_REGISTRATION).await
    }

    pub async fn start_with_config(yaml: &str) -> Self {
        let mut server = Self::prepare(yaml);
        server.launch();
        server
    }

    /// The config file and a data directory path, without starting the server (for commands
    /// that run before the first start, such as a restore); `relaunch` starts it.
    pub fn prepare(yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, yaml).expect("write config");
        let data_dir = dir.path().join("data");
        Self {
            child: None,
            base_url: String::new(),
            dir,
            config_path,
            data_dir,
            log: Arc::new(Mutex::new(String::new())),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            env: Vec::new(),
        }
    }

    /// Starts the server with no config file yet: setup mode, the wizard on a free port. The
    /// config path is `dir/config.yaml` unless `config_path` names another one.
    pub fn start_setup(config_path: Option<PathBuf>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = config_path.unwrap_or_else(|| dir.path().join("config.yaml"));
        let data_dir = dir.path().join("data");
        let mut server = Self {
            child: None,
            base_url: String::new(),
            dir,
            config_path,
            data_dir,
            log: Arc::new(Mutex::new(String::new())),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            env: Vec::new(),
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let mut child = Command::new(BINARY)
            .args([
                "--config",
                path_str(&self.config_path),
                "--data-dir",
                path_str(&self.data_dir),
            ])
            // A config path that does not exist yet is the wizard's to write; `serve` would
            // refuse it (only the packaged path starts the wizard on its own).
            .args(if self.config_path.exists() {
                &["serve", "--listen", "127.0.0.1:0"][..]
            } else {
                &["setup", "wizard", "--listen", "127.0.0.1:0"][..]
            })
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start appliance");
        let stderr = child.stderr.take().expect("stderr");
        let (address_tx, address_rx) = mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(address) = line.split("listening on http://").nth(1) {
                    let _ = address_tx.send(address.trim().to_owned());
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let address = address_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "server did not start; its log:\n{}",
                    self.log.lock().unwrap()
                );
            });
        self.base_url = format!("http://{address}");
        self.child = Some(child);
    }

    /// Stops the server with SIGTERM and waits for it; returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        child.wait().expect("wait").success()
    }

    /// Kills the server with SIGKILL: nothing is flushed, nothing is cleaned up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("wait");
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Starts the server again on the same config and data after `stop` or `kill9`.
    pub fn relaunch(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        self.launch();
    }

    /// The process ID of the running server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Runs `appliance <args>` against this server's config and data directory.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut all = vec![
            "--config",
            path_str(&self.config_path),
            "--data-dir",
            path_str(&self.data_dir),
        ];
        all.extend_from_slice(args);
        appliance(&all, stdin)
    }

    /// A request to this server, for tests that need their own headers or a raw body.
    pub fn builder(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base_url))
    }

    /// Sends a request; returns the status and the JSON body (`Null` when the body is not JSON).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.builder(method, path);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = send(request).await;
        (reply.status, reply.body)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, token, Some(body)).await
    }

    pub async fn delete(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        self.request(Method::DELETE, path, token, Some(body)).await
    }

    pub async fn whoami(&self, token: &str) -> (StatusCode, Value) {
        self.get("/_matrix/client/v3/account/whoami", Some(token))
            .await
    }

    /// Registers through the client API (dummy auth); returns the session.
    pub async fn register(&self, username: &str, password: &str) -> Session {
        let (status, body) = self
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({"username": username, "password": password, "auth": {"type": "m.login.dummy"}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "register {username}: {body}");
        Session::from_json(&body)
    }

    pub async fn login(&self, user: &str, password: &str) -> (StatusCode, Value) {
        self.post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}),
        )
        .await
    }

    /// Logs in and returns the session; panics unless the login succeeds.
    pub async fn login_session(&self, user: &str, password: &str) -> Session {
        let (status, body) = self.login(user, password).await;
        assert_eq!(status, StatusCode::OK, "login {user}: {body}");
        Session::from_json(&body)
    }

    /// Sends `body` to an endpoint behind user-interactive auth: first without `auth`, which must
    /// be refused with a `401` challenge offering `m.login.password`, then again with the password
    /// in that challenge's session. Returns the second response.
    pub async fn with_password_auth(
        &self,
        method: Method,
        path: &str,
        session: &Session,
        password: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let challenge = self
            .request(method.clone(), path, session.token(), Some(body.clone()))
            .await;
        assert_eq!(challenge.0, StatusCode::UNAUTHORIZED, "{}", challenge.1);
        assert_eq!(
            challenge.1["flows"],
            json!([{"stages": ["m.login.password"]}]),
            "{}",
            challenge.1
        );
        let uia_session = challenge.1["session"].as_str().expect("UIA session");
        let mut body = body;
        body["auth"] = password_auth(&session.user_id, password, Some(uia_session));
        self.request(method, path, session.token(), Some(body))
            .await
    }
}

/// An `auth` object for the `m.login.password` stage of user-interactive auth.
pub fn password_auth(user: &str, password: &str, session: Option<&str>) -> Value {
    let mut auth = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    });
    if let Some(session) = session {
        auth["session"] = session.into();
    }
    auth
}

/// What a request sent with [`TestServer::builder`] got back.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The JSON body, `Null` when the body is not JSON.
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    Reply {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// Runs `appliance <args>` with nothing from the environment choosing its config.
pub fn appliance(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BINARY)
        .args(args)
        .env_remove("APPLIANCE_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run appliance");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(pipe);
    child.wait_with_output().expect("wait")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that a command succeeded and returns its stdout.
#[track_caller]
pub fn assert_success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed ({}); stdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

/// Asserts that a command failed and returns its stderr.
#[track_caller]
pub fn assert_failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "command should have failed; stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
    stderr(output)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub access_token: String,
    pub device_id: String,
}

impl Session {
    pub fn from_json(body: &Value) -> Self {
        Self {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            access_token: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
        }
    }

    pub fn token(&self) -> Option<&str> {
        Some(&self.access_token)
    }
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Asserts a Matrix error response.
#[track_caller]
pub fn assert_error(response: &(StatusCode, Value), status: u16, errcode: &str) {
    assert_eq!(
        response.0.as_u16(),
        status,
        "unexpected status; body: {}",
        response.1
    );
    assert_eq!(
        response.1["errcode"], errcode,
        "unexpected errcode; body: {}",
        response.1
    );
}

/// `clients` tasks sending `m.room.message` events to `room` as fast as the server answers,
/// until stopped or the server goes away; every event ID acknowledged with 200 is recorded at
/// the moment it is acknowledged.
pub struct MessageLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    acknowledged: Arc<Mutex<Vec<String>>>,
}

impl MessageLoad {
    /// `tag` keeps the transaction IDs of different loads apart.
    pub fn start(server: &TestServer, token: &str, room: &str, clients: usize, tag: &str) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|client| {
                let (http, stop, acknowledged) =
                    (server.http.clone(), stop.clone(), acknowledged.clone());
                let url = format!(
                    "{}/_matrix/client/v3/rooms/{room}/send/m.room.message",
                    server.base_url
                );
                let (token, tag) = (token.to_owned(), tag.to_owned());
                tokio::spawn(async move {
                    for n in 0.. {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let body =
                            json!({"msgtype": "m.text", "body": format!("{tag} {client} {n}")});
                        let reply = http
                            .put(format!("{url}/{tag}-{client}-{n}"))
                            .bearer_auth(&token)
                            .json(&body)
                            .send()
                            .await;
                        let Ok(reply) = reply else {
                            break; // the server is gone
                        };
                        let status = reply.status();
                        let Ok(body) = reply.json::<Value>().await else {
                            break;
                        };
                        match status.as_u16() {
                            200 => acknowledged
                                .lock()
                                .unwrap()
                                .push(body["event_id"].as_str().expect("event_id").to_owned()),
                            429 => tokio::time::sleep(Duration::from_millis(50)).await,
                            _ => panic!("send answered {status}: {body}"),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            tasks,
            acknowledged,
        }
    }

    /// The event IDs acknowledged so far.
    pub fn acknowledged(&self) -> Vec<String> {
        self.acknowledged.lock().unwrap().clone()
    }

    /// Stops the clients; returns every event ID acknowledged.
    pub async fn finish(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a sender failed");
        }
        self.acknowledged.lock().unwrap().clone()
    }
}

/// The IDs of every event of `room`, oldest first, read with `/messages`.
pub async fn room_event_ids(server: &TestServer, token: &str, room: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1000");
        if let Some(from) = &from {
            path.push_str(&format!("&from={from}"));
        }
        let (status, body) = server.get(&path, Some(token)).await;
        assert_eq!(status, 200, "{body}");
        let chunk = body["chunk"].as_array().expect("chunk");
        ids.extend(
            chunk
                .iter()
                .map(|event| event["event_id"].as_str().expect("event_id").to_owned()),
        );
        match body["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    ids.reverse();
    ids
}
