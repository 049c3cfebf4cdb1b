//! Harness for the front-door tests: the appliance on its real listeners (free loopback ports,
//! TLS included), a test CA made with rcgen, an HTTPS/HTTP2 client that verifies chains and
//! names with rustls, and Debian's Pebble ACME server with its DNS stub.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener as StdListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::{
    ClientConfig, RootCertStore,
    crypto::ring,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

pub const BINARY: &str = env!("CARGO_BIN_EXE_appliance");

/// A port nobody listens on now (the tests run in parallel, so never a fixed one).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A CA and leaf certificates signed by it.
pub struct TestCa {
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (IP literals become IP SANs): (chain PEM, key PEM).
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub fn roots(&self) -> RootCertStore {
        roots_from_pem(&self.cert_pem)
    }
}

pub fn roots_from_pem(pem: &str) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// A TLS connection to `127.0.0.1:port` for `name` (SNI), verified against `roots`.
pub async fn tls_connect(
    port: u16,
    name: &str,
    roots: &RootCertStore,
    alpn: &[&[u8]],
) -> Result<TlsStream<TcpStream>, std::io::Error> {
    let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
}

/// The leaf certificate the server presents for `name`.
pub async fn served_leaf(port: u16, name: &str, roots: &RootCertStore) -> CertificateDer<'static> {
    let stream = tls_connect(port, name, roots, &[b"http/1.1"])
        .await
        .expect("a verified TLS handshake");
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

fn request(host: &str, path: &str, headers: &[(&str, &str)]) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::get(path).header(http::header::HOST, host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).unwrap()
}

async fn read(response: http::Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// One HTTP/1.1 GET over TLS (a fresh, verified connection), with the raw `path`.
pub async fn https_get(
    port: u16,
    host: &str,
    roots: &RootCertStore,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    https_send(port, host, roots, request(host, path, headers)).await
}

/// One JSON POST over TLS (a fresh, verified connection).
pub async fn https_post_json(
    port: u16,
    host: &str,
    roots: &RootCertStore,
    path: &str,
    body: &serde_json::Value,
) -> Reply {
    let request = http::Request::post(path)
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    https_send(port, host, roots, request).await
}

async fn https_send(
    port: u16,
    host: &str,
    roots: &RootCertStore,
    request: http::Request<Full<Bytes>>,
) -> Reply {
    let stream = tls_connect(port, host, roots, &[b"http/1.1"])
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    read(sender.send_request(request).await.unwrap()).await
}

/// One plain HTTP/1.1 GET.
pub async fn http_get(port: u16, host: &str, path: &str) -> Reply {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    read(sender.send_request(request(host, path, &[])).await.unwrap()).await
}

/// An HTTP/2 connection (ALPN `h2`) kept open across requests.
pub struct H2 {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    host: String,
    pub leaf: CertificateDer<'static>,
}

impl H2 {
    pub async fn connect(port: u16, host: &str, roots: &RootCertStore) -> Self {
        let stream = tls_connect(port, host, roots, &[b"h2"]).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        Self {
            sender,
            host: host.to_owned(),
            leaf,
        }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        let uri = format!("https://{}{path}", self.host);
        let request = http::Request::get(uri)
            .body(Full::new(Bytes::new()))
            .unwrap();
        read(self.sender.send_request(request).await.unwrap()).await
    }
}

/// The appliance on the listeners of its config file.
pub struct Appliance {
    child: Option<Child>,
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub log: Arc<Mutex<String>>,
    listeners: usize,
}

impl Appliance {
    /// Starts `appliance serve` and waits until `listeners` addresses are bound.
    pub fn start(dir: TempDir, yaml: &str, listeners: usize) -> Self {
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, yaml).unwrap();
        let data_dir = dir.path().join("data");
        let (child, log) = Self::spawn(&config_path, &data_dir);
        let appliance = Self {
            child: Some(child),
            dir,
            config_path,
            data_dir,
            log,
            listeners,
        };
        appliance.wait_for_log(|log| log.matches("listening on").count() >= listeners);
        appliance
    }

    fn spawn(config_path: &Path, data_dir: &Path) -> (Child, Arc<Mutex<String>>) {
        let mut child = Command::new(BINARY)
            .arg("--config")
            .arg(config_path)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("serve")
            .env("RUST_LOG", "info,matrix_appliance=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        (child, log)
    }

    /// `kill -9`, then `serve` again with the same config and data (a crash and a restart);
    /// `log_text` shows the new process only.
    pub fn kill9_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let (child, log) = Self::spawn(&self.config_path, &self.data_dir);
        self.child = Some(child);
        self.log = log;
        let listeners = self.listeners;
        self.wait_for_log(|log| log.matches("listening on").count() >= listeners);
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_for_log(&self, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if done(&self.log_text()) {
                return;
            }
            if self.log_text().contains("error:") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the appliance did not get there; its log:\n{}",
            self.log_text()
        );
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.config_path, &self.data_dir, args)
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        Command::new("kill").args([signal, &pid]).status().unwrap();
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn cli(config: &Path, data_dir: &Path, args: &[&str]) -> Output {
    Command::new(BINARY)
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Pebble and its DNS stub (every name is 127.0.0.1), validating on the appliance's ports.
pub struct Pebble {
    pebble: Option<Child>,
    dns: Child,
    pub directory: String,
    pub management_port: u16,
    /// The PEM of the CA that signed Pebble's own HTTPS certificate (`acme.directory_ca_path`).
    pub directory_ca: PathBuf,
    dir: PathBuf,
}

impl Pebble {
    pub fn start(dir: &Path, http_port: u16, tls_port: u16) -> Self {
        let ca = TestCa::new("pebble directory test CA");
        let (cert, key) = ca.leaf(&["127.0.0.1", "localhost"]);
        std::fs::write(dir.join("pebble-ca.pem"), &ca.cert_pem).unwrap();
        std::fs::write(dir.join("pebble-cert.pem"), cert).unwrap();
        std::fs::write(dir.join("pebble-key.pem"), key).unwrap();
        let (listen, management, dns_port) = (free_port(), free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": dir.join("pebble-cert.pem"),
                "privateKey": dir.join("pebble-key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let dns = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (apt install pebble)");
        let mut pebble = Self {
            pebble: None,
            dns,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management_port: management,
            directory_ca: dir.join("pebble-ca.pem"),
            dir: dir.to_owned(),
        };
        pebble.resume(dns_port);
        pebble
    }

    fn resume(&mut self, dns: u16) {
        let child = Command::new("pebble")
            .arg("-config")
            .arg(self.dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble (apt install pebble)");
        self.pebble = Some(child);
        let port: u16 = self
            .directory
            .split(':')
            .nth(2)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "pebble did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the CA: every request to it fails from now on.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Pebble's issuing roots (made at its start), from its management interface.
    pub async fn roots(&self) -> RootCertStore {
        let ca = std::fs::read_to_string(&self.directory_ca).unwrap();
        let reply = https_get(
            self.management_port,
            "127.0.0.1",
            &roots_from_pem(&ca),
            "/roots/0",
            &[],
        )
        .await;
        assert_eq!(reply.status, 200, "pebble's /roots/0");
        roots_from_pem(std::str::from_utf8(&reply.body).unwrap())
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}

/// Debian's Pebble (2.4) has no ACME Renewal Information (RFC 9773). This stands in front of
/// its directory and adds exactly that: the directory gets a `renewalInfo` URL, which answers
/// with `window` (Unix seconds) for any certificate and records the identifiers it was asked
/// about. Everything else (accounts, orders, challenges) still goes to Pebble itself.
pub struct AriFront {
    pub directory: String,
    pub asked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AriFront {
    pub async fn start(pebble: &Pebble, window: (i64, i64)) -> Self {
        let read = |name: &str| std::fs::read(pebble.dir.join(name)).unwrap();
        let chain = CertificateDer::pem_slice_iter(&read("pebble-cert.pem"))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(&read("pebble-key.pem")).unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let pebble_directory = pebble.directory.clone();
        let pebble_ca = std::fs::read_to_string(&pebble.directory_ca).unwrap();
        let rfc3339 = |t: i64| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(t as u64))
                .to_string()
        };
        let renewal_info = serde_json::json!({
            "suggestedWindow": {"start": rfc3339(window.0), "end": rfc3339(window.1)}
        })
        .to_string();
        let state = (asked.clone(), pebble_directory, pebble_ca, renewal_info);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let Ok(tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let (asked, directory, ca, renewal_info) = state.clone();
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let (asked, directory, ca, renewal_info) = (
                            asked.clone(),
                            directory.clone(),
                            ca.clone(),
                            renewal_info.clone(),
                        );
                        async move {
                            let path = request.uri().path().to_owned();
                            let body = if let Some(id) = path.strip_prefix("/renewal-info/") {
                                asked.lock().unwrap().push(id.to_owned());
                                renewal_info
                            } else {
                                // Pebble's own directory plus the renewalInfo URL.
                                let pebble_port: u16 = directory
                                    .split(':')
                                    .nth(2)
                                    .and_then(|rest| rest.split('/').next())
                                    .and_then(|p| p.parse().ok())
                                    .unwrap();
                                let reply = https_get(
                                    pebble_port,
                                    "127.0.0.1",
                                    &roots_from_pem(&ca),
                                    "/dir",
                                    &[],
                                )
                                .await;
                                // Pebble builds its URLs from the Host header, which had no port.
                                let text = String::from_utf8_lossy(&reply.body).replace(
                                    "https://127.0.0.1/",
                                    &format!("https://127.0.0.1:{pebble_port}/"),
                                );
                                let mut json: serde_json::Value =
                                    serde_json::from_str(&text).unwrap();
                                json["renewalInfo"] =
                                    format!("https://127.0.0.1:{port}/renewal-info").into();
                                json.to_string()
                            };
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .header("content-type", "application/json")
                                    .header("retry-after", "3600")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service),
                );
            }
        });
        Self {
            directory: format!("https://127.0.0.1:{port}/dir"),
            asked,
            task,
        }
    }
}

impl Drop for AriFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}
