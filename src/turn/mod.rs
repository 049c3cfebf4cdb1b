//! The built-in TURN relay for voice and video calls, on the webrtc-rs `turn` crate: UDP, TCP
//! and TLS listeners, TURN REST credentials, a peer filter, per-user and per-allocation limits,
//! and a public address that follows the ISP's changes.
//!
//! The crate does the TURN protocol; everything it lacks is added through its traits:
//! [`listeners`] (`Conn` for UDP and for TCP/TLS streams, each message passing the [`gate`]
//! first), [`auth`] (`AuthHandler` for Matrix user names), [`relay_address`]
//! (`RelayAddressGenerator` reading the current public address) and [`allocations`] (the relayed
//! sockets, with caps, counters and a way to end them).

pub mod allocations;
mod auth;
mod gate;
mod listeners;
pub mod peer_filter;
pub mod public_ip;
mod relay_address;
pub mod status;
mod udp_buffers;

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use anyhow::Context;
use tokio::{
    net::{TcpListener, UdpSocket},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use turn::server::{
    Server,
    config::{ConnConfig, ServerConfig},
};

use crate::config::Config;
use allocations::{Caps, Registry};
use gate::Gate;
use peer_filter::PeerFilter;
use public_ip::{PublicAddress, Source};
use relay_address::{Generator, RelayPorts};

/// How often the status file is rewritten.
const STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// The running relay; [`Relay::stop`] ends it cleanly.
pub struct Relay {
    server: Server,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// What the watcher, the status writer and the listeners share.
struct Shared {
    data_dir: PathBuf,
    ports: Arc<RelayPorts>,
    own_bound: Vec<IpAddr>,
    listeners: Vec<String>,
    report: Mutex<Report>,
}

#[derive(Default)]
struct Report {
    source: Option<Source>,
    last_check: Option<status::Check>,
    last_change: Option<status::Change>,
}

/// Starts the relay. `tls` is the certificate the front door serves; without it, TURN over TLS
/// stays off. A port in use is an error naming the port.
pub async fn start(
    config: &Config,
    secret: String,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<Relay> {
    let bind: Vec<IpAddr> = config
        .turn_bind_addresses
        .iter()
        .map(|a| a.parse().context("turn_bind_addresses"))
        .collect::<anyhow::Result<_>>()?;
    let bind_v4 = bind.iter().copied().find(IpAddr::is_ipv4).or_else(|| {
        bind.iter()
            .any(|a| a.is_unspecified())
            .then(|| IpAddr::from([0, 0, 0, 0]))
    });
    let bind_v6 = bind.iter().copied().find(IpAddr::is_ipv6);

    let registry = Arc::new(Registry::default());
    let filter = Arc::new(PeerFilter::new(
        config.turn_allow_private_peers,
        &config.turn_allowed_peer_ips,
    ));
    let public_v4 = Arc::new(PublicAddress::default());
    let public_v6 = Arc::new(PublicAddress::default());
    let ports = Arc::new(RelayPorts {
        min_port: config.turn_min_port,
        max_port: config.turn_max_port,
        bind_v4,
        bind_v6,
        public_v4: public_v4.clone(),
        public_v6: public_v6.clone(),
        registry: registry.clone(),
        filter: filter.clone(),
        caps: Caps {
            max_lifetime: config.turn_max_allocation_lifetime.0,
            bandwidth: config.turn_max_bandwidth.0,
            packet_rate: config.turn_max_packet_rate,
        },
    });
    let stop = CancellationToken::new();
    let tls_acceptor = match (config.turn_tls_port, tls) {
        (Some(_), Some(tls)) => Some(tokio_rustls::TlsAcceptor::from(tls)),
        (Some(port), None) => {
            tracing::warn!(
                "TURN over TLS (port {port}) is off: no certificate (set `tls_certificate_path`)"
            );
            None
        }
        (None, _) => None,
    };

    let mut conn_configs = Vec::new();
    let mut listener_names = Vec::new();
    let auth: Arc<dyn turn::auth::AuthHandler + Send + Sync> =
        Arc::new(auth::RestAuth::new(secret.clone()));
    let gate = || {
        Arc::new(Gate::new(
            filter.clone(),
            registry.clone(),
            config.turn_max_allocations_per_user,
            auth.clone(),
            config.server_name.clone(),
        ))
    };
    let generator = |gate: &Arc<Gate>, listener: SocketAddr| {
        Box::new(Generator {
            ports: ports.clone(),
            gate: gate.clone(),
            listener,
        })
    };
    for &ip in &bind {
        let port = config.turn_listen_port;
        let udp = UdpSocket::bind((ip, port)).await.map_err(|e| {
            anyhow::anyhow!(
                "TURN relay: cannot listen on UDP port {port} of {ip} (`turn_listen_port`): {e}"
            )
        })?;
        udp_buffers::enlarge(&udp);
        let udp_gate = gate();
        let local = udp.local_addr()?;
        listener_names.push(format!("udp {local}"));
        conn_configs.push(ConnConfig {
            conn: Arc::new(listeners::GatedUdp::new(udp, udp_gate.clone())?),
            relay_addr_generator: generator(&udp_gate, local),
        });

        let tcp = TcpListener::bind((ip, port)).await.map_err(|e| {
            anyhow::anyhow!(
                "TURN relay: cannot listen on TCP port {port} of {ip} (`turn_listen_port`): {e}"
            )
        })?;
        let tcp_gate = gate();
        let local = tcp.local_addr()?;
        listener_names.push(format!("tcp {local}"));
        let mux = listeners::StreamMux::start(
            tcp,
            None,
            tcp_gate.clone(),
            registry.clone(),
            stop.clone(),
        )?;
        conn_configs.push(ConnConfig {
            conn: mux,
            relay_addr_generator: generator(&tcp_gate, local),
        });

        if let (Some(tls_port), Some(acceptor)) = (config.turn_tls_port, &tls_acceptor) {
            let tls = TcpListener::bind((ip, tls_port)).await.map_err(|e| {
                anyhow::anyhow!("TURN relay: cannot listen on TCP port {tls_port} of {ip} (`turn_tls_port`): {e}")
            })?;
            let tls_gate = gate();
            let local = tls.local_addr()?;
            listener_names.push(format!("tls {local}"));
            let mux = listeners::StreamMux::start(
                tls,
                Some(acceptor.clone()),
                tls_gate.clone(),
                registry.clone(),
                stop.clone(),
            )?;
            conn_configs.push(ConnConfig {
                conn: mux,
                relay_addr_generator: generator(&tls_gate, local),
            });
        }
    }

    let shared = Arc::new(Shared {
        data_dir: config.data_dir.clone(),
        ports: ports.clone(),
        own_bound: bind
            .iter()
            .copied()
            .filter(|a| !a.is_unspecified())
            .collect(),
        listeners: listener_names,
        report: Mutex::new(Report::default()),
    });
    // The first address before the first allocation.
    match config.turn_external_ip {
        Some(ip) => {
            if ip.is_ipv4() {
                public_v4.set(ip);
            } else {
                public_v6.set(ip);
            }
            shared.lock_report().source = Some(Source::Config);
        }
        None => check_public_address(&shared, &config.turn_stun_servers).await,
    }
    if public_v6.get().is_none()
        && let Some(v6) = bind_v6
            .filter(|a| !a.is_unspecified())
            .or_else(local_route_v6)
    {
        public_v6.set(v6);
    }
    shared.update_own_addresses();

    let server = Server::new(ServerConfig {
        conn_configs,
        realm: config.server_name.clone(),
        auth_handler: auth,
        channel_bind_timeout: Duration::ZERO,
        alloc_close_notify: None,
    })
    .await
    .context("TURN relay")?;

    let mut tasks = Vec::new();
    if config.turn_external_ip.is_none() {
        let (shared, stop) = (shared.clone(), stop.clone());
        let servers = config.turn_stun_servers.clone();
        let interval = config.turn_public_ip_check_interval.0;
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.cancelled() => break,
                }
                check_public_address(&shared, &servers).await;
            }
        }));
    }
    {
        let (shared, stop) = (shared.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                shared.write_status(true);
                tokio::select! {
                    _ = tokio::time::sleep(STATUS_INTERVAL) => {}
                    _ = stop.cancelled() => break,
                }
            }
        }));
    }
    tracing::info!(
        listeners = %shared.listeners.join(", "),
        public_ip = ?public_v4.get(),
        relay_ports = %format!("{}-{}", config.turn_min_port, config.turn_max_port),
        "TURN relay started"
    );
    Ok(Relay {
        server,
        stop,
        tasks,
        shared,
    })
}

impl Relay {
    /// Ends every allocation and closes every socket.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server.close()).await;
        for task in self.tasks {
            task.abort();
        }
        self.shared.write_status(false);
        tracing::info!("TURN relay stopped");
    }
}

impl Shared {
    fn lock_report(&self) -> std::sync::MutexGuard<'_, Report> {
        self.report.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update_own_addresses(&self) {
        let mut own = self.own_bound.clone();
        own.extend(self.ports.public_v4.get());
        own.extend(self.ports.public_v6.get());
        self.ports.filter.set_own_addresses(own);
    }

    fn write_status(&self, running: bool) {
        let registry = &self.ports.registry;
        let report = self.lock_report();
        let status = status::Status {
            running,
            pid: std::process::id(),
            updated_at: status::now(),
            listeners: self.listeners.clone(),
            relay_ports: format!("{}-{}", self.ports.min_port, self.ports.max_port),
            public_ipv4: self.ports.public_v4.get().map(|ip| ip.to_string()),
            public_ipv6: self.ports.public_v6.get().map(|ip| ip.to_string()),
            source: report.source,
            last_check: report.last_check.clone(),
            last_change: report.last_change.clone(),
            allocations: registry
                .snapshot()
                .into_iter()
                .map(|(user, client, relay, age)| status::Allocation {
                    user,
                    client: client.to_string(),
                    relay: relay.to_string(),
                    age_secs: age.as_secs(),
                })
                .collect(),
            bytes_relayed: registry.bytes_relayed.load(Ordering::Relaxed),
            packets_relayed: registry.packets_relayed.load(Ordering::Relaxed),
            packets_dropped: registry.packets_dropped.load(Ordering::Relaxed),
        };
        drop(report);
        status::write(&self.data_dir, &status);
    }
}

/// One check of the public IPv4 address; on a change, allocations advertising the old address
/// are ended (their peers could not reach them any more) and new ones use the new address.
async fn check_public_address(shared: &Shared, stun_servers: &[String]) {
    let detected = public_ip::detect(stun_servers).await;
    let (ip, source) = match detected {
        Ok(found) => found,
        Err(e) => {
            let fallback = shared
                .ports
                .public_v4
                .get()
                .is_none()
                .then(public_ip::local_route_address)
                .flatten();
            shared.lock_report().last_check = Some(status::Check {
                at: status::now(),
                result: e.clone(),
                ok: false,
            });
            match fallback {
                Some(local) => {
                    tracing::warn!(
                        "public IP not found ({e}); relaying on the local address {local} for now"
                    );
                    (local, Source::Local)
                }
                None => {
                    tracing::warn!("public IP check failed ({e}); keeping the current address");
                    return;
                }
            }
        }
    };
    if source != Source::Local {
        shared.lock_report().last_check = Some(status::Check {
            at: status::now(),
            result: ip.to_string(),
            ok: true,
        });
    }
    let old = shared.ports.public_v4.set(ip);
    shared.lock_report().source = Some(source);
    match old {
        Some(old) if old != ip => {
            let ended = shared.ports.registry.end_where(|e| e.relay.ip() == old);
            tracing::warn!(
                ended_allocations = ended,
                "public IP changed from {old} to {ip}"
            );
            shared.lock_report().last_change = Some(status::Change {
                at: status::now(),
                from: old.to_string(),
                to: ip.to_string(),
                ended_allocations: ended,
            });
            shared.update_own_addresses();
            shared.write_status(true);
        }
        Some(_) => {}
        None => {
            tracing::info!(%ip, ?source, "public IP");
            shared.update_own_addresses();
        }
    }
}

/// The global IPv6 address the kernel would use towards the Internet (home IPv6 has no NAT).
fn local_route_v6() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect("[2001:db8::1]:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}
