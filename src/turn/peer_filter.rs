//! Which peers the relay may reach. A relay open to every address would let anyone with an
//! account reach the box's LAN, its loopback services and the box itself; the denied set is the
//! one Synapse's TURN how-to gives coturn as `denied-peer-ip`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::RwLock,
};

use ipnet::IpNet;

/// Parses `turn_allowed_peer_ips` entries: an address or a CIDR range.
pub fn parse_network(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .ok()
        .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
}

pub struct PeerFilter {
    allow_private: bool,
    allowed: Vec<IpNet>,
    /// The box's own addresses (public and bound ones); they change with the public IP.
    own: RwLock<Vec<IpAddr>>,
}

impl PeerFilter {
    pub fn new(allow_private: bool, allowed: &[String]) -> Self {
        Self {
            allow_private,
            allowed: allowed.iter().filter_map(|e| parse_network(e)).collect(),
            own: RwLock::new(Vec::new()),
        }
    }

    pub fn set_own_addresses(&self, addresses: Vec<IpAddr>) {
        let mut own = self.own.write().unwrap_or_else(|e| e.into_inner());
        *own = addresses.into_iter().map(|a| a.to_canonical()).collect();
    }

    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        if self.allowed.iter().any(|net| net.contains(&peer)) {
            return true;
        }
        // Never relay to nowhere or to everyone, whatever the other settings say.
        if peer.is_unspecified() || peer.is_multicast() || is_broadcast(peer) {
            return false;
        }
        let own = self.own.read().unwrap_or_else(|e| e.into_inner());
        if own.contains(&peer) {
            return false;
        }
        self.allow_private || !is_private(peer)
    }
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// Loopback, RFC 1918, CGNAT, link-local, "this network", reserved and documentation ranges,
/// IPv6 ULA and link-local, and the IPv6 forms that embed such IPv4 addresses.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT, RFC 6598
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 240 // reserved and broadcast
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_private_v4(v4);
    }
    ip.is_loopback()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local, RFC 4193
        || (segments[0] & 0xffc0) == 0xfe80 // link-local
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || segments[0] == 0x0064 && segments[1] == 0xff9b // NAT64 may embed a private IPv4
        || segments[0] == 0x2002 // 6to4 embeds any IPv4
        || (segments[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_and_special_peers_are_refused_by_default() {
        let filter = PeerFilter::new(false, &[]);
        for denied in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.10",
            "100.64.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:192.168.0.1",
        ] {
            assert!(!filter.allows(ip(denied)), "{denied} must be refused");
        }
        for allowed in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "100.128.0.1"] {
            assert!(filter.allows(ip(allowed)), "{allowed} must be allowed");
        }
    }

    #[test]
    fn allow_lists_and_the_private_switch_open_the_lan() {
        let filter = PeerFilter::new(
            false,
            &["192.168.1.0/24".to_owned(), "127.0.0.1".to_owned()],
        );
        assert!(filter.allows(ip("192.168.1.20")));
        assert!(filter.allows(ip("127.0.0.1")));
        assert!(!filter.allows(ip("192.168.2.20")));
        let open = PeerFilter::new(true, &[]);
        assert!(open.allows(ip("10.0.0.1")));
        assert!(!open.allows(ip("224.0.0.1")), "multicast stays refused");
    }

    #[test]
    fn the_box_itself_is_refused() {
        let filter = PeerFilter::new(true, &[]);
        filter.set_own_addresses(vec![ip("198.51.100.7"), ip("8.8.4.4")]);
        assert!(!filter.allows(ip("8.8.4.4")));
        assert!(filter.allows(ip("8.8.8.8")));
    }
}
