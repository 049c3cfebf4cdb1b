//! Start-up and shutdown of the server: opens the services, binds every listener, serves until
//! SIGTERM or SIGINT, then lets in-flight requests finish.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use axum::Extension;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use crate::{config::Config, services::Services, web};

/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let services = Services::open(config)?;
    crate::services::presence::spawn_timeouts(&services);
    let router = web::router(services.clone());

    // Before the HTTP listeners: once `/voip/turnServer` answers, the relay is there.
    let turn_relay = start_turn_relay(&services.config, &services).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = JoinSet::new();
    if let Some(tls) = services.config.listeners.iter().find(|l| l.tls) {
        anyhow::bail!(
            "listener on port {}: TLS listeners are not built yet; use a reverse proxy for TLS",
            tls.port
        );
    }
    for listener_config in &services.config.listeners {
        let router = if listener_config.x_forwarded {
            router
                .clone()
                .layer(Extension(web::client_ip::TrustForwardedFor))
        } else {
            router.clone()
        };
        for address in &listener_config.bind_addresses {
            let ip: std::net::IpAddr = address.parse().context("bind address")?;
            let socket = SocketAddr::new(ip, listener_config.port);
            let listener = TcpListener::bind(socket)
                .await
                .with_context(|| format!("cannot listen on {socket}"))?;
            let bound = listener.local_addr()?;
            tracing::info!("listening on http://{bound}");
            let mut stop = stop_rx.clone();
            let service = router
                .clone()
                .into_make_service_with_connect_info::<SocketAddr>();
            servers.spawn(async move {
                axum::serve(listener, service)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|stopping| *stopping).await;
                    })
                    .await
            });
        }
    }

    wait_for_shutdown_signal().await;
    tracing::info!("shutting down; letting requests in flight finish");
    let _ = stop_tx.send(true);
    if let Some(relay) = turn_relay {
        relay.stop().await;
    }
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(result) = servers.join_next().await {
            if let Ok(Err(e)) = result {
                tracing::warn!(error = %e, "listener ended with an error");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The built-in TURN relay, when `turn_relay_enabled`. TURN over TLS gets the certificate from
/// `tls_certificate_path`; the front door will hand over its live resolver here instead.
async fn start_turn_relay(
    config: &Config,
    services: &Services,
) -> anyhow::Result<Option<crate::turn::Relay>> {
    if !config.turn_relay_enabled {
        return Ok(None);
    }
    let secret = services
        .voip
        .secret()
        .context("the TURN relay needs a shared secret")?
        .to_owned();
    let tls = match (&config.tls_certificate_path, &config.tls_private_key_path) {
        (Some(cert), Some(key)) => Some(tls_server_config(cert, key)?),
        _ => None,
    };
    Ok(Some(crate::turn::start(config, secret, tls).await?))
}

/// A rustls server config (ring provider) from PEM certificate chain and key files.
fn tls_server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<rustls::ServerConfig>> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the certificate {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read the private key {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("the TLS certificate and key do not fit together")?;
    Ok(std::sync::Arc::new(config))
}

async fn wait_for_shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("can install a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
