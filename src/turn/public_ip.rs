//! The box's public address, which a home ISP changes now and then: asked of several STUN
//! servers (the majority answer wins), else of OpenDNS's `myip.opendns.com` (what coturn users'
//! cron scripts do), unless `turn_external_ip` fixes it. When neither answers and no address
//! is known yet, the relay falls back to the local route's address ([`local_route_address`]).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::RwLock,
    time::Duration,
};

use stun::{
    agent::TransactionId,
    message::{BINDING_REQUEST, BINDING_SUCCESS, Getter, Message, Setter},
    xoraddr::XorMappedAddress,
};
use tokio::net::UdpSocket;

/// How long one STUN server gets to answer (it is asked twice).
const STUN_TIMEOUT: Duration = Duration::from_millis(1500);
const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// OpenDNS answers `myip.opendns.com` with the asker's address.
const OPENDNS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(208, 67, 222, 222)),
    IpAddr::V4(Ipv4Addr::new(208, 67, 220, 220)),
];

/// Where the current address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `turn_external_ip`.
    Config,
    Stun,
    Dns,
    /// No public address could be found: the address of the interface towards the Internet.
    Local,
}

/// The address new allocations advertise, read on every allocation.
#[derive(Default)]
pub struct PublicAddress {
    current: RwLock<Option<IpAddr>>,
}

impl PublicAddress {
    pub fn get(&self) -> Option<IpAddr> {
        *self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `new`; returns the address it replaces.
    pub fn set(&self, new: IpAddr) -> Option<IpAddr> {
        self.current
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(new)
    }
}

/// Finds the public IPv4 address: STUN majority, then DNS, then the local route.
pub async fn detect(stun_servers: &[String]) -> Result<(IpAddr, Source), String> {
    match stun_majority(stun_servers).await {
        Ok(ip) => return Ok((ip, Source::Stun)),
        Err(e) => tracing::debug!("STUN gave no public address: {e}"),
    }
    match dns_lookup().await {
        Ok(ip) => return Ok((ip, Source::Dns)),
        Err(e) => tracing::debug!("DNS gave no public address: {e}"),
    }
    Err("no STUN server agreed on an address and the DNS lookup failed".to_owned())
}

/// The source address the kernel would use towards the Internet (no packet is sent): the best
/// guess for a box without Internet access, which can still relay on its LAN.
pub fn local_route_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

async fn stun_majority(servers: &[String]) -> Result<IpAddr, String> {
    let answers =
        futures_util::future::join_all(servers.iter().map(|server| stun_query(server))).await;
    let mut votes: HashMap<IpAddr, usize> = HashMap::new();
    let mut answered = 0;
    for (server, answer) in servers.iter().zip(answers) {
        match answer {
            Ok(ip) => {
                answered += 1;
                *votes.entry(ip).or_default() += 1;
            }
            Err(e) => tracing::debug!(%server, "STUN server gave no answer: {e}"),
        }
    }
    // More than half of the servers that answered must agree: one broken or lying server cannot
    // move the relay's address.
    votes
        .into_iter()
        .find(|(_, count)| *count * 2 > answered)
        .map(|(ip, _)| ip)
        .ok_or_else(|| {
            format!(
                "{answered} of {} STUN servers answered, without a majority",
                servers.len()
            )
        })
}

/// One STUN binding request over IPv4.
pub async fn stun_query(server: &str) -> Result<IpAddr, String> {
    let address = tokio::net::lookup_host(server)
        .await
        .map_err(|e| format!("cannot resolve {server}: {e}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| format!("{server} has no IPv4 address"))?;
    let socket = UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| e.to_string())?;
    let request = binding_request()?;
    let mut buf = [0u8; 1500];
    for _ in 0..2 {
        socket
            .send_to(&request.raw, address)
            .await
            .map_err(|e| e.to_string())?;
        let Ok(received) = tokio::time::timeout(STUN_TIMEOUT, socket.recv_from(&mut buf)).await
        else {
            continue;
        };
        let (n, from) = received.map_err(|e| e.to_string())?;
        if from != address {
            continue;
        }
        let mut response = Message {
            raw: buf[..n].to_vec(),
            ..Default::default()
        };
        if response.decode().is_err()
            || response.transaction_id != request.transaction_id
            || response.typ != BINDING_SUCCESS
        {
            continue;
        }
        let mut mapped = XorMappedAddress::default();
        mapped
            .get_from(&response)
            .map_err(|e| format!("no XOR-MAPPED-ADDRESS: {e}"))?;
        return Ok(mapped.ip);
    }
    Err(format!("{server} did not answer"))
}

fn binding_request() -> Result<Message, String> {
    let mut request = Message::new();
    let setters: Vec<Box<dyn Setter>> =
        vec![Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)];
    request.build(&setters).map_err(|e| e.to_string())?;
    Ok(request)
}

async fn dns_lookup() -> Result<IpAddr, String> {
    use hickory_resolver::{
        Resolver,
        config::{NameServerConfigGroup, ResolverConfig},
        name_server::TokioConnectionProvider,
    };
    let config = ResolverConfig::from_parts(
        None,
        vec![],
        NameServerConfigGroup::from_ips_clear(&OPENDNS, 53, true),
    );
    let mut builder = Resolver::builder_with_config(config, TokioConnectionProvider::default());
    builder.options_mut().timeout = Duration::from_secs(2);
    builder.options_mut().attempts = 1;
    let resolver = builder.build();
    let lookup = tokio::time::timeout(DNS_TIMEOUT, resolver.ipv4_lookup("myip.opendns.com."))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    lookup
        .iter()
        .next()
        .map(|a| IpAddr::V4(a.0))
        .ok_or_else(|| "empty answer".to_owned())
}
