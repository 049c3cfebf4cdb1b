//! Start-up and shutdown of the server: opens the services, binds every listener, tells systemd
//! it is ready, serves until SIGTERM or SIGINT, then lets in-flight requests finish. SIGHUP asks
//! the parts that can change live (certificates) to reload.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Extension;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use crate::{config::Config, services::Services, web};

/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub async fn serve(config: Config) -> anyhow::Result<()> {
    serve_services(Services::open(config)?).await
}

/// The homeserver's router with its background tasks started (also used by setup mode, which
/// swaps it in after apply).
pub fn homeserver_router(services: Arc<Services>) -> axum::Router {
    crate::services::presence::spawn_timeouts(&services);
    crate::services::media::spawn_retention(&services);
    web::router(services)
}

/// Binds the config's listeners and serves `services` until a shutdown signal.
pub async fn serve_services(services: Arc<Services>) -> anyhow::Result<()> {
    let router = homeserver_router(services.clone());

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

    crate::systemd::ready("serving");
    let watchdog = crate::systemd::spawn_watchdog(Some(services.clone()));
    let (reload_tx, _) = watch::channel(0u64);
    wait_for_shutdown_signal(&reload_tx).await;
    crate::systemd::stopping();
    tracing::info!("shutting down; letting requests in flight finish");
    let _ = stop_tx.send(true);
    drain(servers).await;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Waits (a bounded time) for stopped listeners to finish their in-flight requests.
pub async fn drain(mut servers: JoinSet<std::io::Result<()>>) {
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
}

/// Waits for SIGTERM or SIGINT. Each SIGHUP in the meantime bumps the reload generation that
/// live-reloadable parts watch (`systemctl reload` sends it).
pub async fn wait_for_shutdown_signal(reload: &watch::Sender<u64>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("can install a SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("can install a SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                crate::systemd::reloading();
                reload.send_modify(|generation| *generation += 1);
                tracing::info!(watchers = reload.receiver_count(), "reload requested (SIGHUP)");
                crate::systemd::ready("serving");
            }
        }
    }
}
