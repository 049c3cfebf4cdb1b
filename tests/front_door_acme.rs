//! Certificates from a real ACME CA: Debian's Pebble (with pebble-challtestsrv answering every
//! name with 127.0.0.1). The appliance gets a certificate by HTTP-01 and by TLS-ALPN-01, serves
//! it (verified against Pebble's root), renews it without dropping an open HTTP/2 connection,
//! and keeps serving it while the CA is gone, reporting the error; with renewal information
//! (ARI, added in front of Pebble by the harness) it renews inside the CA's window.

use crate::front_door_support as support;

use std::time::{Duration, Instant};

use support::*;

fn acme_config(
    pebble: &Pebble,
    challenge: &str,
    http_port: Option<u16>,
    https_port: u16,
) -> String {
    let http_listener = match http_port {
        Some(port) => format!(
            "  - port: {port}
    bind_addresses: ['127.0.0.1']
    resources: [{{names: [acme, redirect]}}]
"
        ),
        None => String::new(),
    };
    format!(
        "server_name: example.test
public_baseurl: https://matrix.example.test/
acme:
  enabled: true
  url: {directory}
  contact_email: admin@example.test
  accept_terms_of_service: true
  challenge: {challenge}
  directory_ca_path: {ca}
listeners:
{http_listener}  - port: {https_port}
    bind_addresses: ['127.0.0.1']
    tls: true
    resources: [{{names: [client, federation]}}]
",
        directory = pebble.directory,
        ca = pebble.directory_ca.display(),
    )
}

/// Waits until the appliance presents a certificate that Pebble's root verifies for `name`.
async fn wait_for_issued(
    port: u16,
    name: &str,
    pebble: &Pebble,
    appliance: &Appliance,
) -> rustls::RootCertStore {
    let roots = pebble.roots().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if tls_connect(port, name, &roots, &[b"h2"]).await.is_ok() {
            return roots;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate from Pebble; the appliance's log:\n{}",
            appliance.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http01_issue_renew_and_survive_a_failing_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, https_port) = (free_port(), free_port());
    let mut pebble = Pebble::start(dir.path(), http_port, https_port);
    let yaml = acme_config(&pebble, "http-01", Some(http_port), https_port);
    let appliance = Appliance::start(dir, &yaml, 2);

    let roots = wait_for_issued(https_port, "matrix.example.test", &pebble, &appliance).await;
    let status = appliance.cli(&["cert", "status"]);
    let shown = text(&status);
    assert!(status.status.success(), "{shown}");
    assert!(shown.contains("matrix.example.test"), "{shown}");
    assert!(shown.contains("Pebble"), "the issuer is Pebble's: {shown}");
    assert!(shown.contains("succeeded"), "{shown}");
    // Debian's Pebble 2.4 has no renewal information (ARI): the lifetime rule schedules.
    assert!(
        shown.contains("renewal window: none from the CA; renewing by lifetime"),
        "{shown}"
    );

    // An open HTTP/2 connection, then a forced renewal.
    let mut h2 = H2::connect(https_port, "matrix.example.test", &roots).await;
    assert_eq!(h2.get("/_matrix/client/versions").await.status, 200);
    let first = h2.leaf.clone();
    let renewed = appliance.cli(&["cert", "renew", "--force"]);
    assert!(
        renewed.status.success(),
        "{}\n{}",
        text(&renewed),
        appliance.log_text()
    );
    let second = served_leaf(https_port, "matrix.example.test", &roots).await;
    assert_ne!(first, second, "new connections get the renewed certificate");
    assert_eq!(
        h2.get("/.well-known/matrix/client").await.status,
        200,
        "the open connection goes on"
    );

    // Without --force nothing is due (Pebble's certificates last for years).
    let unforced = appliance.cli(&["cert", "renew"]);
    assert!(text(&unforced).contains("not due"), "{}", text(&unforced));

    // The CA goes away: the renewal fails, is reported, and the working certificate stays.
    pebble.stop();
    let failed = appliance.cli(&["cert", "renew", "--force"]);
    assert!(!failed.status.success(), "{}", text(&failed));
    assert!(
        text(&failed).contains("renewal failed"),
        "{}",
        text(&failed)
    );
    assert_eq!(
        served_leaf(https_port, "matrix.example.test", &roots).await,
        second
    );
    let status = appliance.cli(&["cert", "status"]);
    let shown = text(&status);
    assert!(!status.status.success());
    assert!(shown.contains("FAILED"), "{shown}");
    assert!(
        shown.contains("matrix.example.test"),
        "the certificate is still shown: {shown}"
    );
    assert!(
        appliance
            .log_text()
            .contains("still serving the previous one")
    );
    assert_eq!(h2.get("/_matrix/client/versions").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_alpn01_without_port_80() {
    let dir = tempfile::tempdir().unwrap();
    let https_port = free_port();
    // Nothing listens on Pebble's httpPort: only TLS-ALPN-01 can succeed.
    let pebble = Pebble::start(dir.path(), free_port(), https_port);
    let yaml = acme_config(&pebble, "tls-alpn-01", None, https_port);
    let appliance = Appliance::start(dir, &yaml, 1);

    let roots = wait_for_issued(https_port, "matrix.example.test", &pebble, &appliance).await;
    let reply = https_get(
        https_port,
        "matrix.example.test",
        &roots,
        "/_matrix/client/versions",
        &[],
    )
    .await;
    assert_eq!(reply.status, 200);
    let status = appliance.cli(&["cert", "status"]);
    assert!(text(&status).contains("Pebble"), "{}", text(&status));
    // The challenge certificate is gone once the order is done.
    assert!(
        tls_connect(https_port, "matrix.example.test", &roots, &[b"acme-tls/1"])
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_information_sets_the_schedule_and_the_order_names_what_it_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, https_port) = (free_port(), free_port());
    let pebble = Pebble::start(dir.path(), http_port, https_port);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Tomorrow, long before a third of Pebble's multi-year lifetime is left.
    let window = (now + 86400, now + 2 * 86400);
    let front = AriFront::start(&pebble, window).await;
    let yaml = acme_config(&pebble, "http-01", Some(http_port), https_port)
        .replace(&pebble.directory, &front.directory);
    let appliance = Appliance::start(dir, &yaml, 2);
    wait_for_issued(https_port, "matrix.example.test", &pebble, &appliance).await;

    // The renewal task asks about the new certificate and schedules inside the window.
    appliance.wait_for_log(|log| log.contains("renewal information (ARI) sets the renewal time"));
    let status_path = appliance.data_dir.join("acme/status.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status: serde_json::Value = std::fs::read(&status_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        if !status["renewal_window"].is_null() {
            break status;
        }
        assert!(Instant::now() < deadline, "no window in {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        status["renewal_window"],
        serde_json::json!([window.0, window.1])
    );
    let next = status["next_attempt_at"].as_i64().unwrap();
    assert!(
        (window.0..=window.1).contains(&next),
        "next attempt {next} outside the CA's window {window:?}"
    );
    assert!(!front.asked.lock().unwrap().is_empty());
    let shown = text(&appliance.cli(&["cert", "status"]));
    assert!(
        shown.contains("renewal window (from the CA, ARI)"),
        "{shown}"
    );

    // A renewal names the certificate it replaces. Pebble 2.4 does not know `replaces` and so
    // does not echo it in the order: instant-acme reports the mismatch, naming the identifier it
    // sent, and the appliance orders again without it; the CA still issues.
    let leaf = served_leaf(https_port, "matrix.example.test", &pebble.roots().await).await;
    let renewed = appliance.cli(&["cert", "renew", "--force"]);
    assert!(
        renewed.status.success(),
        "{}\n{}",
        text(&renewed),
        appliance.log_text()
    );
    let log = appliance.log_text();
    assert!(
        log.contains("the order names the certificate it replaces (ARI)")
            || log.contains("replaces field mismatch: expected Some(CertificateIdentifier"),
        "{log}"
    );
    assert_ne!(
        served_leaf(https_port, "matrix.example.test", &pebble.roots().await).await,
        leaf
    );
}
