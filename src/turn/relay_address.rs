//! Makes each allocation's relayed socket: a free port of `turn_min_port..=turn_max_port`,
//! advertised with the public address as it is at that moment, so that allocations made after an
//! ISP's change use the new address at once.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use async_trait::async_trait;
use tokio::net::UdpSocket;
use turn::relay::RelayAddressGenerator;
use webrtc_util::Conn;

use super::{
    allocations::{Caps, Owner, Registry, RelayConn},
    gate::Gate,
    peer_filter::PeerFilter,
    public_ip::PublicAddress,
};

/// What every listener's generator shares.
pub struct RelayPorts {
    pub min_port: u16,
    pub max_port: u16,
    /// Where IPv4 relayed sockets bind (a configured address or `0.0.0.0`).
    pub bind_v4: Option<IpAddr>,
    /// Where IPv6 relayed sockets bind; `None` without an IPv6 bind address.
    pub bind_v6: Option<IpAddr>,
    pub public_v4: Arc<PublicAddress>,
    pub public_v6: Arc<PublicAddress>,
    pub registry: Arc<Registry>,
    pub filter: Arc<PeerFilter>,
    pub caps: Caps,
}

/// One per listener, as the crate wants; `gate` is that listener's.
pub struct Generator {
    pub ports: Arc<RelayPorts>,
    pub gate: Arc<Gate>,
    pub listener: SocketAddr,
}

fn error(message: &str) -> turn::Error {
    turn::Error::Other(message.to_owned())
}

#[async_trait]
impl RelayAddressGenerator for Generator {
    fn validate(&self) -> Result<(), turn::Error> {
        if self.ports.min_port == 0 || self.ports.min_port > self.ports.max_port {
            return Err(error("bad relay port range"));
        }
        Ok(())
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        let ports = &self.ports;
        let pending = self.gate.pending();
        let (bind, public) = if use_ipv4 {
            (ports.bind_v4, &ports.public_v4)
        } else {
            (ports.bind_v6, &ports.public_v6)
        };
        let bind = bind.ok_or_else(|| error("address family not served"))?;
        let public = public
            .get()
            .ok_or_else(|| error("the public address is not known yet"))?;
        let socket = if requested_port != 0 {
            if !(ports.min_port..=ports.max_port).contains(&requested_port) {
                return Err(error("requested port outside the relay range"));
            }
            UdpSocket::bind((bind, requested_port)).await?
        } else {
            bind_in_range(bind, ports.min_port, ports.max_port)
                .await
                .ok_or_else(|| error("no free port in the relay range"))?
        };
        super::udp_buffers::enlarge(&socket);
        let port = socket.local_addr()?.port();
        let advertised = SocketAddr::new(public, port);
        let (username, client) = pending.map_or_else(
            || {
                (
                    String::new(),
                    SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0),
                )
            },
            |p| (p.username, p.client),
        );
        tracing::debug!(%client, relay = %advertised, "TURN allocation");
        let conn = RelayConn::new(
            socket,
            advertised,
            Owner {
                username,
                listener: self.listener,
                client,
            },
            ports.registry.clone(),
            ports.filter.clone(),
            ports.caps,
        );
        Ok((conn, advertised))
    }
}

/// Tries every port of the range once, from a random start.
async fn bind_in_range(bind: IpAddr, min: u16, max: u16) -> Option<UdpSocket> {
    let span = u32::from(max - min) + 1;
    let start = rand::random::<u32>() % span;
    for offset in 0..span {
        let port = min + ((start + offset) % span) as u16;
        if let Ok(socket) = UdpSocket::bind((bind, port)).await {
            return Some(socket);
        }
    }
    None
}
