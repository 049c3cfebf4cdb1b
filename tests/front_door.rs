//! The front door without an ACME CA: TLS from PEM files (reloaded on SIGHUP) and from the
//! self-signed fallback, HTTP/2 by ALPN, the 308 to HTTPS, `/.well-known/matrix/*`, HSTS, and
//! Element Web hosting (generated config.json, cache and security headers, precompressed files,
//! traversal refusal, `element install` with checksums).

use crate::front_door_support as support;

use std::{io::Write, path::Path};

use support::*;

const MAIN_JS: &str = "console.log('element main bundle');\n";

/// A tiny Element release: index.html, a version file, a hashed bundle and its `.br` twin, a
/// stale config.json (that must never be served) and a secret beside the release.
fn element_tarball(dir: &Path, version: &str) -> std::path::PathBuf {
    let path = dir.join(format!("element-{version}.tar.gz"));
    let file = std::fs::File::create(&path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let top = format!("element-{version}");
    let mut add = |name: &str, body: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("{top}/{name}"), body)
            .unwrap();
    };
    add(
        "index.html",
        format!("<html>Element {version}</html>").as_bytes(),
    );
    add("version", format!("{version}\n").as_bytes());
    add("config.json", b"{\"stale\": true}");
    add("config.element.test.json", b"{\"stale\": true}");
    add("bundles/0123456789abcdef/main.js", MAIN_JS.as_bytes());
    add("bundles/0123456789abcdef/main.js.br", b"BROTLI-BYTES");
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
    path
}

/// `element status` and the served index.html both name `version`.
#[track_caller]
fn assert_element_version(b: &Box, version: &str, index: &Reply) {
    let status = b.appliance.cli(&["element", "status"]);
    let shown = text(&status);
    assert!(shown.contains(&format!("version: {version}")), "{shown}");
    assert_eq!(
        std::str::from_utf8(&index.body).unwrap(),
        format!("<html>Element {version}</html>")
    );
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

struct Box {
    appliance: Appliance,
    ca: TestCa,
    http_port: u16,
    https_port: u16,
}

impl Box {
    /// A GET over a fresh TLS connection to the HTTPS listener, verified for `host`.
    async fn get(&self, host: &str, path: &str) -> Reply {
        https_get(self.https_port, host, &self.ca.roots(), path, &[]).await
    }
}

/// The appliance with an HTTP (acme + redirect) and an HTTPS (client) listener, a certificate
/// from PEM files signed by a test CA, Element on its own host, and the well-known files on.
async fn start_box() -> Box {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("front door test CA");
    let (chain, key) = ca.leaf(&["matrix.test", "element.test", "example.test"]);
    std::fs::write(dir.path().join("chain.pem"), chain).unwrap();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    std::fs::write(dir.path().join("secret.txt"), "TOP-SECRET").unwrap();
    let (http_port, https_port) = (free_port(), free_port());
    // The release is installed before the server starts, the way an operator would.
    let data_dir = dir.path().join("data");
    let tarball = element_tarball(dir.path(), "v1.0.0");
    let config_path = dir.path().join("config.yaml");
    let yaml = format!(
        "server_name: example.test
public_baseurl: https://matrix.test/
serve_server_wellknown: true
admin_contact: mailto:admin@example.test
extra_well_known_client_content:
  org.example.custom: {{answer: 42}}
tls_certificate_path: {dir}/chain.pem
tls_private_key_path: {dir}/key.pem
element:
  enabled: true
  host: element.test
  brand: Test Chat
  disable_custom_urls: true
listeners:
  - port: {http_port}
    bind_addresses: ['127.0.0.1']
    resources: [{{names: [acme, redirect]}}]
  - port: {https_port}
    bind_addresses: ['::']
    tls: true
    resources: [{{names: [client, federation]}}]
",
        dir = dir.path().display()
    );
    std::fs::write(&config_path, &yaml).unwrap();
    let installed = cli(
        &config_path,
        &data_dir,
        &[
            "element",
            "install",
            tarball.to_str().unwrap(),
            "--sha256",
            &sha256_hex(&tarball),
        ],
    );
    assert!(installed.status.success(), "{}", text(&installed));
    let appliance = Appliance::start(dir, &yaml, 2);
    Box {
        appliance,
        ca,
        http_port,
        https_port,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_from_pem_files_with_http2_hsts_and_redirect() {
    let b = start_box().await;
    let roots = b.ca.roots();

    // HTTP/1.1 over TLS, verified against the CA for the name.
    let versions = b.get("matrix.test", "/_matrix/client/versions").await;
    assert_eq!(versions.status, 200);
    assert!(versions.json()["versions"].is_array());
    assert_eq!(
        versions.header("strict-transport-security"),
        "max-age=63072000"
    );

    // HTTP/2 by ALPN on the same port.
    let mut h2 = H2::connect(b.https_port, "matrix.test", &roots).await;
    assert_eq!(h2.get("/_matrix/client/versions").await.status, 200);

    // A name the certificate does not carry fails verification.
    assert!(
        tls_connect(b.https_port, "other.test", &roots, &[b"h2"])
            .await
            .is_err()
    );

    // `::` takes IPv6 and IPv4 alike.
    let v6 = tokio::net::TcpStream::connect(("::1", b.https_port)).await;
    assert!(v6.is_ok(), "the `::` listener accepts IPv6");

    // Port 80's job: a 308 to the same URL on https (with the TLS port, as it is not 443).
    let redirect = http_get(b.http_port, "matrix.test", "/_matrix/client/versions?x=1").await;
    assert_eq!(redirect.status, 308);
    assert_eq!(
        redirect.header("location"),
        format!(
            "https://matrix.test:{}/_matrix/client/versions?x=1",
            b.https_port
        )
    );
    // ... and no client API in plain text there.
    assert_eq!(
        http_get(
            b.http_port,
            "matrix.test",
            "/.well-known/acme-challenge/nothing"
        )
        .await
        .status,
        404
    );

    // The certificate files change: SIGHUP swaps them in for new connections, and the open
    // HTTP/2 connection goes on.
    let before = served_leaf(b.https_port, "matrix.test", &roots).await;
    let (chain, key) = b.ca.leaf(&["matrix.test", "element.test"]);
    let dir = b.appliance.dir.path();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    std::fs::write(dir.join("chain.pem"), chain).unwrap();
    b.appliance.signal("-HUP");
    b.appliance
        .wait_for_log(|log| log.contains("reloaded the TLS certificate"));
    let after = served_leaf(b.https_port, "matrix.test", &roots).await;
    assert_ne!(before, after, "the new certificate is served");
    assert_eq!(h2.get("/_matrix/client/versions").await.status, 200);

    // A broken pair is refused and the working one kept.
    std::fs::write(dir.join("chain.pem"), "not a certificate").unwrap();
    b.appliance.signal("-HUP");
    b.appliance
        .wait_for_log(|log| log.contains("cannot reload the TLS certificate"));
    assert_eq!(
        served_leaf(b.https_port, "matrix.test", &roots).await,
        after
    );

    let status = b.appliance.cli(&["cert", "status"]);
    assert!(text(&status).contains("PEM files"), "{}", text(&status));
}

#[tokio::test(flavor = "multi_thread")]
async fn well_known_bodies_and_cors() {
    let b = start_box().await;

    let client = b.get("example.test", "/.well-known/matrix/client").await;
    assert_eq!(client.status, 200);
    assert_eq!(client.header("access-control-allow-origin"), "*");
    assert_eq!(client.header("content-type"), "application/json");
    assert_eq!(
        client.json(),
        serde_json::json!({
            "m.homeserver": {"base_url": "https://matrix.test"},
            "org.example.custom": {"answer": 42}
        })
    );

    let server = b.get("example.test", "/.well-known/matrix/server").await;
    assert_eq!(server.status, 200);
    assert_eq!(server.header("access-control-allow-origin"), "*");
    // The port that serves federation here (the TLS listener), as the setup checklist says.
    assert_eq!(
        server.json(),
        serde_json::json!({"m.server": format!("matrix.test:{}", b.https_port)})
    );

    let support = b.get("example.test", "/.well-known/matrix/support").await;
    assert_eq!(support.status, 200);
    assert_eq!(
        support.json()["contacts"],
        serde_json::json!([{"role": "m.role.admin", "email_address": "admin@example.test"}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn element_hosting() {
    let b = start_box().await;
    let roots = b.ca.roots();
    let get = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let roots = roots.clone();
        async move { https_get(b.https_port, "element.test", &roots, path, headers).await }
    };

    let index = get("/", &[]).await;
    assert_eq!(index.status, 200);
    assert_eq!(
        std::str::from_utf8(&index.body).unwrap(),
        "<html>Element v1.0.0</html>"
    );
    assert_eq!(index.header("cache-control"), "no-cache");
    assert_eq!(index.header("x-frame-options"), "SAMEORIGIN");
    assert_eq!(index.header("x-content-type-options"), "nosniff");
    assert_eq!(
        index.header("content-security-policy"),
        "frame-ancestors 'self'"
    );
    assert_eq!(
        index.header("strict-transport-security"),
        "max-age=63072000"
    );

    // config.json comes from the appliance's config, never from the release's file.
    let config = get("/config.json", &[]).await;
    assert_eq!(config.status, 200);
    assert_eq!(config.header("cache-control"), "no-cache");
    let config = config.json();
    assert_eq!(
        config["default_server_config"]["m.homeserver"]["base_url"],
        "https://matrix.test"
    );
    assert_eq!(
        config["default_server_config"]["m.homeserver"]["server_name"],
        "example.test"
    );
    assert_eq!(config["brand"], "Test Chat");
    assert_eq!(config["disable_custom_urls"], true);
    assert_eq!(
        config["room_directory"]["servers"],
        serde_json::json!(["example.test"])
    );
    assert!(config.get("stale").is_none());
    assert_eq!(get("/config.element.test.json", &[]).await.status, 404);

    // Hashed bundles: cached for a year; `.br` when the client accepts it.
    let plain = get("/bundles/0123456789abcdef/main.js", &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.body, MAIN_JS.as_bytes());
    assert_eq!(
        plain.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert!(plain.header("content-type").contains("javascript"));
    let brotli = get(
        "/bundles/0123456789abcdef/main.js",
        &[("accept-encoding", "br, gzip")],
    )
    .await;
    assert_eq!(brotli.status, 200);
    assert_eq!(brotli.header("content-encoding"), "br");
    assert_eq!(&brotli.body[..], b"BROTLI-BYTES");

    // Traversal in any form is refused, and never shows the file beside the release.
    for path in [
        "/../secret.txt",
        "/bundles/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/%2e%2e/secret.txt",
        "/bundles%2f..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "//etc/passwd",
        "/bundles/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/%00",
    ] {
        let reply = get(path, &[]).await;
        assert!(
            reply.status == 400 || reply.status == 404,
            "{path}: {} (must be refused)",
            reply.status
        );
        let body = String::from_utf8_lossy(&reply.body);
        assert!(
            !body.contains("TOP-SECRET") && !body.contains("root:"),
            "{path} leaked a file"
        );
        // A refusal is a Matrix error, like every other 400 of the server.
        if reply.status == 400 {
            assert!(
                body.contains("\"errcode\":\"M_INVALID_PARAM\""),
                "{path}: {body}"
            );
        }
    }

    // The homeserver's host does not serve Element.
    let other = b.get("matrix.test", "/config.json").await;
    assert_eq!(other.status, 404);

    // An upgrade with a wrong checksum is refused and the old release stays.
    let dir = b.appliance.dir.path();
    let tarball = element_tarball(dir, "v2.0.0");
    let refused = b.appliance.cli(&[
        "element",
        "install",
        tarball.to_str().unwrap(),
        "--sha256",
        &"0".repeat(64),
    ]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("checksum mismatch"),
        "{}",
        text(&refused)
    );
    assert_element_version(&b, "v1.0.0", &get("/", &[]).await);

    // The right checksum installs it, and the running server serves it at once.
    let installed = b.appliance.cli(&[
        "element",
        "install",
        tarball.to_str().unwrap(),
        "--sha256",
        &sha256_hex(&tarball),
    ]);
    assert!(installed.status.success(), "{}", text(&installed));
    assert_element_version(&b, "v2.0.0", &get("/", &[]).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn self_signed_certificate_when_nothing_else_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "server_name: lan.test
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    tls: true
    resources: [{{names: [client]}}]
"
    );
    let appliance = Appliance::start(dir, &yaml, 1);
    let pem = std::fs::read_to_string(appliance.data_dir.join("tls/self-signed.pem")).unwrap();
    let roots = roots_from_pem(&pem);
    // The self-signed certificate is its own root: a client that pins it verifies the name.
    let reply = https_get(port, "lan.test", &roots, "/_matrix/client/versions", &[]).await;
    assert_eq!(reply.status, 200);
    let status = appliance.cli(&["cert", "status"]);
    assert!(text(&status).contains("self-signed"), "{}", text(&status));
    assert!(text(&status).contains("lan.test"), "{}", text(&status));
}

#[tokio::test(flavor = "multi_thread")]
async fn element_under_a_path_of_the_homeserver_host() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let tarball = element_tarball(dir.path(), "v3.0.0");
    std::fs::write(dir.path().join("secret.txt"), "TOP-SECRET").unwrap();
    let yaml = format!(
        "server_name: example.test
element:
  enabled: true
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    resources: [{{names: [client]}}]
"
    );
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, &yaml).unwrap();
    let installed = cli(
        &config_path,
        &dir.path().join("data"),
        &["element", "install", tarball.to_str().unwrap()],
    );
    assert!(installed.status.success(), "{}", text(&installed));
    let appliance = Appliance::start(dir, &yaml, 1);

    let bare = http_get(port, "example.test", "/element").await;
    assert_eq!(bare.status, 308);
    assert_eq!(bare.header("location"), "/element/");
    let index = http_get(port, "example.test", "/element/").await;
    assert_eq!(index.status, 200, "{}", appliance.log_text());
    assert_eq!(&index.body[..], b"<html>Element v3.0.0</html>");
    let config = http_get(port, "example.test", "/element/config.json").await;
    assert_eq!(
        config.json()["default_server_config"]["m.homeserver"]["base_url"],
        "https://example.test"
    );
    let bundle = http_get(
        port,
        "example.test",
        "/element/bundles/0123456789abcdef/main.js",
    )
    .await;
    assert_eq!(bundle.body, MAIN_JS.as_bytes());
    for path in [
        "/element/../secret.txt",
        "/element/%2e%2e/secret.txt",
        "/element/..%2fsecret.txt",
    ] {
        let reply = http_get(port, "example.test", path).await;
        assert!(
            reply.status == 400 || reply.status == 404,
            "{path}: {}",
            reply.status
        );
        assert!(!String::from_utf8_lossy(&reply.body).contains("TOP-SECRET"));
    }
    // The API is still there beside it.
    assert_eq!(
        http_get(port, "example.test", "/_matrix/client/versions")
            .await
            .status,
        200
    );
}

/// Listeners serve the resources they name, as Synapse's: the client port answers no federation
/// request and the federation port no client request (both `404 M_UNRECOGNIZED`, as any unknown
/// path); with no listener serving `federation`, federation is off and
/// `/.well-known/matrix/server` is not served even with `serve_server_wellknown`.
#[tokio::test(flavor = "multi_thread")]
async fn listeners_serve_only_their_resources_and_federation_can_be_off() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("front door test CA");
    let (chain, key) = ca.leaf(&["example.test"]);
    std::fs::write(dir.path().join("chain.pem"), &chain).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key).unwrap();
    let (client_port, federation_port) = (free_port(), free_port());
    let listeners = |federation: bool| {
        let mut yaml = format!(
            "  - port: {client_port}
    bind_addresses: ['127.0.0.1']
    tls: true
    resources: [{{names: [client]}}]
"
        );
        if federation {
            yaml.push_str(&format!(
                "  - port: {federation_port}
    bind_addresses: ['127.0.0.1']
    tls: true
    resources: [{{names: [federation]}}]
"
            ));
        }
        yaml
    };
    let dir_path = dir.path().to_owned();
    let config = |federation: bool, dir: &Path| {
        format!(
            "server_name: example.test
public_baseurl: https://example.test/
serve_server_wellknown: true
tls_certificate_path: {dir}/chain.pem
tls_private_key_path: {dir}/key.pem
listeners:
{}",
            listeners(federation),
            dir = dir.display()
        )
    };
    let roots = ca.roots();
    let get = |port: u16, path: &'static str| {
        let roots = roots.clone();
        async move { https_get(port, "example.test", &roots, path, &[]).await }
    };

    let yaml = config(true, &dir_path);
    let appliance = Appliance::start(dir, &yaml, 2);
    let keys = get(federation_port, "/_matrix/key/v2/server").await;
    assert_eq!(keys.status, 200);
    let on_client_port = get(client_port, "/_matrix/key/v2/server").await;
    assert_eq!(on_client_port.status, 404);
    assert_eq!(on_client_port.json()["errcode"], "M_UNRECOGNIZED");
    let versions = get(client_port, "/_matrix/client/versions").await;
    assert_eq!(versions.status, 200);
    let on_federation_port = get(federation_port, "/_matrix/client/versions").await;
    assert_eq!(on_federation_port.status, 404);
    assert_eq!(on_federation_port.json()["errcode"], "M_UNRECOGNIZED");
    let server = get(client_port, "/.well-known/matrix/server").await;
    assert_eq!(server.status, 200);
    assert_eq!(
        server.json(),
        serde_json::json!({"m.server": format!("example.test:{federation_port}")})
    );
    drop(appliance);

    // Federation off: no listener serves it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chain.pem"), &chain).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key).unwrap();
    let yaml = config(false, dir.path());
    let _appliance = Appliance::start(dir, &yaml, 1);
    let server = get(client_port, "/.well-known/matrix/server").await;
    assert_eq!(server.status, 404, "{:?}", server.json());
    assert_eq!(server.json()["errcode"], "M_NOT_FOUND");
    let keys = get(client_port, "/_matrix/key/v2/server").await;
    assert_eq!(keys.status, 404);
    let versions = get(client_port, "/_matrix/client/versions").await;
    assert_eq!(versions.status, 200);
}
