//! A real Synapse, installed from PyPI (tests/federation/requirements.txt), started for one test
//! on a free loopback port with TLS from the test CA, and killed (its whole process group) when
//! the test ends.

use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use tempfile::TempDir;

use super::{
    python::Venv,
    support::{TestCa, free_port, tls_connect},
};

/// `extra_yaml` for a Synapse where anyone may register with `m.login.dummy` (test accounts), and
/// whose rate limits do not slow a test down.
pub const OPEN_REGISTRATION: &str = "enable_registration: true
enable_registration_without_verification: true
rc_message: {per_second: 1000, burst_count: 1000}
rc_joins: {local: {per_second: 1000, burst_count: 1000}, remote: {per_second: 1000, burst_count: 1000}}
rc_registration: {per_second: 1000, burst_count: 1000}
rc_login: {address: {per_second: 1000, burst_count: 1000}, account: {per_second: 1000, burst_count: 1000}}
";

/// Synapse's first start creates its SQLite schema: slow on a loaded 2-core machine.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// The interpreter of the Synapse venv, made once per test binary.
fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            Venv {
                env_var: "APPLIANCE_TEST_SYNAPSE_PYTHON",
                dir_name: "synapse-venv",
                requirements: "tests/federation/requirements.txt",
                module: "synapse",
            }
            .python()
        })
        .clone()
        .unwrap_or_else(|e| panic!("no Python with Synapse: {e}"))
}

pub struct Synapse {
    child: Option<Child>,
    /// Its TLS listener on 127.0.0.1 (client and federation resources).
    pub port: u16,
    /// `localhost:<port>`: the explicit port is how other servers find it (no well-known, no SRV).
    pub server_name: String,
    pub dir: TempDir,
}

impl Synapse {
    /// Starts Synapse with a certificate for `localhost` from `ca`, trusting only `ca` for its
    /// outbound federation requests, and waits until its TLS listener accepts. `extra_yaml` is
    /// appended to the generated homeserver.yaml (top-level keys it does not set already).
    pub async fn start(ca: &TestCa, extra_yaml: &str) -> Self {
        Self::start_named(ca, extra_yaml, None).await
    }

    /// `start`, named `localhost:<public_port>` when given (a proxy's port that leads to its
    /// listener) instead of `localhost:<its listener's port>`.
    pub async fn start_named(ca: &TestCa, extra_yaml: &str, public_port: Option<u16>) -> Self {
        let python = tokio::task::spawn_blocking(python).await.expect("venv");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let port = free_port();
        let server_name = format!("localhost:{}", public_port.unwrap_or(port));
        let (chain, key) = ca.leaf(&["localhost"]);
        std::fs::write(path("tls.crt"), chain).unwrap();
        std::fs::write(path("tls.key"), key).unwrap();
        std::fs::write(path("ca.pem"), &ca.cert_pem).unwrap();
        // Synapse's format for a signing key: `ed25519 <version> <unpadded base64 seed>`.
        let seed = STANDARD_NO_PAD.encode(rand::random::<[u8; 32]>());
        // Logs go to stderr (redirected to synapse.log below, shown when a test fails); SQL
        // statements are left out.
        std::fs::write(
            path("log.yaml"),
            "version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  console: {class: logging.StreamHandler, formatter: precise}
loggers:
  synapse.storage.SQL: {level: WARNING}
root: {level: INFO, handlers: [console]}
disable_existing_loggers: false
",
        )
        .unwrap();
        let config = format!(
            "server_name: '{server_name}'
signing_key: 'ed25519 a_test {seed}'
report_stats: false
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: true
    x_forwarded: false
    resources: [{{names: [client, federation], compress: false}}]
tls_certificate_path: '{cert}'
tls_private_key_path: '{key}'
# Outbound federation trusts the test CA alone, and may reach loopback (refused by default).
federation_custom_ca_list: ['{ca}']
ip_range_whitelist: ['127.0.0.1/8', '::1/128']
# No notary: keys come from the servers themselves (matrix.org is not reachable in a test).
trusted_key_servers: []
suppress_key_server_warning: true
database:
  name: sqlite3
  args: {{database: '{db}'}}
media_store_path: '{media}'
log_config: '{log}'
{extra_yaml}",
            cert = path("tls.crt"),
            key = path("tls.key"),
            ca = path("ca.pem"),
            db = path("homeserver.db"),
            media = path("media_store"),
            log = path("log.yaml"),
        );
        std::fs::write(path("homeserver.yaml"), config).unwrap();
        let mut synapse = Self {
            child: None,
            port,
            server_name,
            dir,
        };
        synapse.spawn(&python);
        synapse.wait_until_listening(ca).await;
        synapse
    }

    /// Starts the Synapse of `self.dir` (its config, database and log, which it appends to).
    fn spawn(&mut self, python: &std::path::Path) {
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        let log = File::options()
            .create(true)
            .append(true)
            .open(path("synapse.log"))
            .unwrap();
        let mut command = Command::new(python);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            // Killed with the test binary too (Ctrl-C, a timeout), which skips Drop: the signal
            // comes when the thread that started it ends, and a test's runtime threads outlive
            // the Synapse it starts.
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .args(["-m", "synapse.app.homeserver", "--no-redirect-stdio"])
            .arg("--config-path")
            .arg(path("homeserver.yaml"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group, so that Drop ends it with anything it started.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        self.child = Some(child);
    }

    /// Kills Synapse (its whole process group, as a crash or a power cut would) and waits for
    /// it to be gone; `restart` starts it again.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The negative PID names the process group `spawn` made.
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
        }
    }

    /// Starts a stopped Synapse again: same directory, database, name and port.
    pub async fn restart(&mut self, ca: &TestCa) {
        assert!(self.child.is_none(), "Synapse is running");
        let python = tokio::task::spawn_blocking(python).await.expect("venv");
        self.spawn(&python);
        self.wait_until_listening(ca).await;
    }

    async fn wait_until_listening(&mut self, ca: &TestCa) {
        let roots = ca.roots();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "Synapse exited ({status}) while starting:\n{}",
                    self.log_tail()
                );
            }
            if tls_connect(self.port, "localhost", &roots, &[b"http/1.1"])
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Synapse did not listen within {STARTUP_TIMEOUT:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The end of Synapse's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("synapse.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(150)..].join("\n")
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        self.stop();
    }
}
