//! Setup mode: with no config file, the process serves only the first-run wizard; applying it
//! writes the config and the same process goes on serving the homeserver.
//!
//! After apply, `SwitchableRouter` swaps the homeserver's router in behind the same sockets. Only
//! the packaged config path (or no `--config` at all, or `appliance setup wizard`) opens the wizard
//! when the file is missing. The public IP the wizard shows comes from `turn::public_ip` (the
//! relay's own detection); `dns.rs` checks the names with hickory-resolver.

pub mod answers;
pub mod apply;
pub mod checklist;
mod dns;
pub mod i18n;
pub mod token;
mod web;

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock},
};

use anyhow::Context as _;
use axum::{Router, extract::Request, response::IntoResponse};
use tokio::{net::TcpListener, sync::oneshot};
use tower::ServiceExt;

use crate::config::{Config, Listener};
use apply::Applied;
pub use apply::Target;

/// Where setup mode listens when `--listen` is not given.
pub enum SetupAddresses {
    /// `--listen`: the wizard there, then the homeserver on the same socket.
    Listen(SocketAddr),
    /// Development: the wizard on 127.0.0.1:8080, then the homeserver there too (the config
    /// written has that one plain listener).
    Development,
    /// An installed box: the wizard on ports 80 and 8080 of every interface; after apply these
    /// are closed and the config's listeners opened.
    Installed,
    /// `setup --reconfigure` on an installed box whose server holds port 80: port 8080 only, and
    /// the process ends after apply (the service is restarted to use the new config).
    Reconfigure,
}

/// The development server's one address.
pub const DEVELOPMENT_ADDRESS: &str = "127.0.0.1:8080";

impl SetupAddresses {
    fn sockets(&self) -> Vec<SocketAddr> {
        let parse = |s: &str| s.parse().expect("a literal socket address");
        match self {
            Self::Listen(address) => vec![*address],
            Self::Development => vec![parse(DEVELOPMENT_ADDRESS)],
            Self::Installed => vec![parse("[::]:80"), parse("[::]:8080")],
            Self::Reconfigure => vec![parse("[::]:8080")],
        }
    }

    /// The plain listener the development config gets.
    pub fn development_listener() -> Listener {
        Listener {
            port: 8080,
            bind_addresses: vec!["127.0.0.1".to_owned()],
            ..Listener::default()
        }
    }
}

/// The router the listeners serve, swapped from the wizard to the homeserver after apply.
#[derive(Clone)]
struct SwitchableRouter(Arc<RwLock<Router>>);

impl SwitchableRouter {
    fn set(&self, router: Router) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = router;
    }

    fn current(&self) -> Router {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn as_router(&self) -> Router {
        let this = self.clone();
        Router::new().fallback(move |request: Request| {
            let router = this.current();
            async move {
                match router.oneshot(request).await {
                    Ok(response) => response.into_response(),
                    Err(never) => match never {},
                }
            }
        })
    }
}

/// Runs the wizard until it is applied (then serves the homeserver) or the process is stopped.
pub async fn run(target: Target, addresses: SetupAddresses) -> anyhow::Result<()> {
    // Setup mode becomes the server on this data directory, so it holds the lock for the
    // process's life; `--reconfigure` runs beside the server, which holds it.
    let _lock = (!target.reconfigure)
        .then(|| crate::services::data_dir_lock::DataDirLock::acquire(&target.data_dir))
        .transpose()?;
    let token = token::create(&target.data_dir).with_context(|| {
        format!(
            "cannot write the setup token to {}",
            target.data_dir.display()
        )
    })?;
    let listen = match addresses {
        SetupAddresses::Listen(address) => Some(address),
        _ => None,
    };
    let (applied_tx, applied_rx) = oneshot::channel();
    let switch = SwitchableRouter(Arc::new(RwLock::new(Router::new())));
    let in_place = !target.reconfigure
        && matches!(
            addresses,
            SetupAddresses::Listen(_) | SetupAddresses::Development
        );
    // The homeserver's background tasks, when it takes over these sockets.
    let tasks = crate::shutdown::BackgroundTasks::default();
    let on_applied: Box<dyn Fn(Applied) + Send + Sync> = {
        let switch = switch.clone();
        let tasks = tasks.clone();
        let applied_tx = std::sync::Mutex::new(Some(applied_tx));
        Box::new(move |applied: Applied| {
            if in_place {
                switch.set(crate::app::homeserver_router(
                    applied.services.clone(),
                    &tasks,
                ));
            }
            if let Some(tx) = applied_tx.lock().ok().and_then(|mut tx| tx.take()) {
                let _ = tx.send(applied);
            }
        })
    };
    let serve_with: Box<dyn Fn(&mut Config) + Send + Sync> = Box::new(move |config| {
        if let Some(address) = listen {
            config.listeners = vec![Listener {
                port: address.port(),
                bind_addresses: vec![address.ip().to_string()],
                ..Listener::default()
            }];
        }
    });
    // Bind first: a development server on port 0 (`--listen 127.0.0.1:0`) writes the port it
    // really got into its config.
    let mut target = target;
    target.in_place = in_place;
    let mut bound_listeners = Vec::new();
    for socket in addresses.sockets() {
        let listener = TcpListener::bind(socket)
            .await
            .with_context(|| format!("cannot listen on {socket} for the setup wizard"))?;
        let bound = listener.local_addr()?;
        if let Some(plain) = target.plain_listener.as_mut()
            && plain.port == 0
        {
            plain.port = bound.port();
        }
        bound_listeners.push((listener, bound));
    }
    let state = web::SetupState::new(target.clone(), token.clone(), on_applied, serve_with);
    {
        let state = state.clone();
        let stun_servers = target.base.turn_stun_servers.clone();
        tokio::spawn(async move {
            state.set_public_ip(
                crate::turn::public_ip::detect(&stun_servers)
                    .await
                    .ok()
                    .map(|(ip, _)| ip),
            );
        });
    }

    switch.set(web::router(state));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let timeouts = crate::net::Timeouts::from_config(&target.base);
    let admission = crate::net::Admission {
        limits: crate::net::limits::ConnectionLimits::from_config(&target.base),
        trusted_proxies: None,
    };
    for (listener, bound) in bound_listeners {
        tracing::info!("listening on http://{bound}");
        let shown = if bound.ip().is_unspecified() {
            SocketAddr::new([127, 0, 0, 1].into(), bound.port())
        } else {
            bound
        };
        // The one log line with a secret in it, as a link: it works straight from
        // `journalctl -u matrix-appliance`, and the token is void once setup is applied.
        tracing::warn!(
            "setup mode (no config at {}): open http://{shown}/setup/?token={token} (or open \
             http://{shown}/setup/ and enter the token printed by `appliance setup token`)",
            target.config_path.display()
        );
        // The same sockets serve the homeserver after an in-place apply: the same limits on
        // slow and greedy clients as `serve`'s listeners.
        servers.spawn(crate::net::serve(
            listener,
            None,
            switch.as_router(),
            timeouts,
            admission.clone(),
            stop_rx.clone(),
            crate::app::SHUTDOWN_GRACE,
        ));
    }

    crate::systemd::ready("setup wizard: waiting for the setup token");
    let mut watchdog = crate::systemd::spawn_watchdog(None);
    let applied = tokio::select! {
        applied = applied_rx => applied.ok(),
        () = crate::app::wait_for_shutdown_signal() => None,
    };
    if applied.is_some()
        && let Some(setup_watchdog) = watchdog.take()
    {
        setup_watchdog.abort();
    }
    match applied {
        Some(_) if target.reconfigure => {
            // Let the finish page reach the browser before the wizard's sockets close.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let _ = stop_tx.send(true);
            crate::app::drain(servers).await;
            tracing::info!(
                "configuration written; restart the service to use it: systemctl restart matrix-appliance"
            );
            Ok(())
        }
        Some(mut applied) if in_place => {
            tracing::info!(
                "setup applied: serving the homeserver for `{}`",
                applied.config.server_name
            );
            crate::systemd::ready("serving");
            let watchdog = crate::systemd::spawn_watchdog(Some(applied.services.clone()));
            crate::app::wait_for_shutdown_signal().await;
            crate::systemd::stopping();
            let _ = stop_tx.send(true);
            if let Some(relay) = applied.turn_relay.take() {
                relay.stop().await;
            }
            crate::app::drain(servers).await;
            tasks.stop(crate::app::SHUTDOWN_GRACE).await;
            if let Some(watchdog) = watchdog {
                watchdog.abort();
            }
            Ok(())
        }
        Some(applied) => {
            // Let the finish page reach the browser before the wizard's sockets close.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let _ = stop_tx.send(true);
            crate::app::drain(servers).await;
            crate::app::serve_services(applied.services).await
        }
        None => {
            crate::systemd::stopping();
            let _ = stop_tx.send(true);
            crate::app::drain(servers).await;
            Ok(())
        }
    }
}
