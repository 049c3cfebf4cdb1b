//! Start-up and shutdown of the server: opens the services, binds every listener, tells systemd
//! it is ready, serves until SIGTERM or SIGINT, then lets in-flight requests finish. SIGHUP asks
//! the parts that can change live (certificates) to reload; it is announced to systemd and never
//! stops the server.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Extension;
use tokio::{sync::watch, task::JoinSet};

use crate::{
    acme::{self, challenges::Http01Answers},
    config::Config,
    net::{
        self,
        certificates::{self, Source},
        tls::{ACME_TLS_ALPN, LiveCertificate},
    },
    services::Services,
    shutdown::BackgroundTasks,
    web,
};

/// How long in-flight requests get to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub async fn serve(config: Config) -> anyhow::Result<()> {
    // Held until the process ends: a second server on this data directory refuses to start.
    let _lock = crate::services::data_dir_lock::DataDirLock::acquire(&config.data_dir)?;
    serve_services(Services::open(config)?).await
}

/// The homeserver's router with its background tasks started (also used by setup mode, which
/// swaps it in after apply).
pub fn homeserver_router(services: Arc<Services>, tasks: &BackgroundTasks) -> axum::Router {
    crate::services::presence::spawn_timeouts(&services, tasks);
    crate::services::media::spawn_retention(&services, tasks);
    crate::services::backup::spawn_schedule(&services, tasks);
    crate::services::rooms::spawn_profile_updates(&services, tasks);
    crate::services::pushers::delivery::spawn(&services, tasks);
    services
        .federation_sender
        .spawn(tasks, services.rooms.subscribe());
    crate::services::appservice::sender::spawn(&services, tasks);
    crate::services::delayed_events::spawn(&services, tasks);
    spawn_memory_release(tasks);
    web::router(services)
}

/// Gives memory freed by bursts of requests back to the system now and then.
fn spawn_memory_release(tasks: &BackgroundTasks) {
    tasks.spawn(|shutdown| async move {
        let mut every = tokio::time::interval(crate::allocator::RELEASE_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = shutdown.stopping() => break,
            }
            let _ = tokio::task::spawn_blocking(crate::allocator::release_free_memory).await;
        }
    });
}

/// Binds the config's listeners and serves `services` until a shutdown signal.
pub async fn serve_services(services: Arc<Services>) -> anyhow::Result<()> {
    let tasks = BackgroundTasks::default();
    let router = homeserver_router(services.clone(), &tasks);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = JoinSet::new();
    // The certificate of every TLS listener, swapped live by ACME renewals and PEM reloads. The
    // TURN relay's `turns:` listener shares it.
    let certificate = LiveCertificate::new();
    let http01 = Http01Answers::default();
    let turns = services.config.turn_relay_enabled && services.config.turn_tls_port.is_some();
    if turns || services.config.listeners.iter().any(|l| l.tls) {
        start_certificates(&services.config, &certificate, &http01)?;
    }

    // Before the HTTP listeners: once `/voip/turnServer` answers, the relay is there.
    let turn_relay = start_turn_relay(&services, &certificate).await?;
    let https_port = services
        .config
        .listeners
        .iter()
        .find(|l| l.tls && l.serves("client"))
        .map(|l| l.port);
    let timeouts = net::Timeouts::from_config(&services.config);
    let connection_limits = net::limits::ConnectionLimits::from_config(&services.config);
    for listener_config in &services.config.listeners {
        let router =
            web::front_door::listener_router(&router, listener_config, &http01, https_port);
        let trusted_proxies = listener_config
            .x_forwarded
            .then(|| web::client_ip::TrustForwardedFor::new(&listener_config.trusted_proxies));
        let router = match &trusted_proxies {
            Some(trust) => router.layer(Extension(trust.clone())),
            None => router,
        };
        let admission = net::Admission {
            limits: connection_limits.clone(),
            trusted_proxies,
        };
        let tls = listener_config
            .tls
            .then(|| certificate.server_config(&[b"h2", b"http/1.1", ACME_TLS_ALPN]));
        for address in &listener_config.bind_addresses {
            let ip: std::net::IpAddr = address.parse().context("bind address")?;
            let listener = net::bind(SocketAddr::new(ip, listener_config.port))?;
            let bound = listener.local_addr()?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            let resources = listener_config
                .resources
                .iter()
                .flat_map(|r| r.names.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(",");
            // The address ends the line: tests and scripts read it from there.
            tracing::debug!(%bound, resources, "listener resources");
            tracing::info!("listening on {scheme}://{bound}");
            servers.spawn(net::serve(
                listener,
                tls.clone(),
                router.clone(),
                timeouts,
                admission.clone(),
                stop_rx.clone(),
                SHUTDOWN_GRACE,
            ));
        }
    }

    crate::systemd::ready("serving");
    let watchdog = crate::systemd::spawn_watchdog(Some(services.clone()));
    wait_for_shutdown_signal().await;
    crate::systemd::stopping();
    tracing::info!("shutting down; letting requests in flight finish");
    let _ = stop_tx.send(true);
    if let Some(relay) = turn_relay {
        relay.stop().await;
    }
    drain(servers).await;
    tasks.stop(SHUTDOWN_GRACE).await;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Waits (a bounded time) for stopped listeners to finish their in-flight requests.
pub async fn drain<T: 'static>(mut servers: JoinSet<T>) {
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
    }
}

/// Puts the first certificate in place and starts whatever keeps it fresh.
fn start_certificates(
    config: &Config,
    certificate: &LiveCertificate,
    http01: &Http01Answers,
) -> anyhow::Result<()> {
    let source = Source::of(config);
    tracing::info!("TLS certificate from {}", source.describe());
    match source {
        Source::Acme => acme::start(config, certificate, http01.clone()),
        Source::Files { chain, key } => certificates::use_files(chain, key, certificate),
        Source::SelfSigned => certificates::use_self_signed(config, certificate),
    }
}

/// The built-in TURN relay, when `turn_relay_enabled`; `turns:` gets the front door's live
/// certificate.
async fn start_turn_relay(
    services: &Services,
    certificate: &LiveCertificate,
) -> anyhow::Result<Option<crate::turn::Relay>> {
    let config = &services.config;
    if !config.turn_relay_enabled {
        return Ok(None);
    }
    let secret = services
        .voip
        .secret()
        .context("the TURN relay needs a shared secret")?
        .to_owned();
    let tls = config
        .turn_tls_port
        .is_some()
        .then(|| certificate.server_config(&[]));
    Ok(Some(crate::turn::start(config, secret, tls).await?))
}

/// The TURN relay for a homeserver that the setup wizard swapped in behind its own sockets
/// (no TLS listener, so no `turns:`); `None`, with a warning, when it could not start (a port
/// taken, no permission), so that the wizard's finish page can say so.
pub async fn start_turn_relay_in_place(services: &Services) -> Option<crate::turn::Relay> {
    let mut config = services.config.clone();
    config.turn_tls_port = None;
    if !config.turn_relay_enabled {
        return None;
    }
    let secret = services.voip.secret()?.to_owned();
    match crate::turn::start(&config, secret, None).await {
        Ok(relay) => Some(relay),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "the TURN relay did not start");
            None
        }
    }
}

/// Waits for SIGTERM or SIGINT. A SIGHUP (`systemctl reload`) in the meantime does not stop the
/// server: it is announced to systemd, and the parts that reload live (the certificate files)
/// listen for it themselves.
pub async fn wait_for_shutdown_signal() {
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
                tracing::info!("reload requested (SIGHUP)");
                crate::systemd::ready("serving");
            }
        }
    }
}
