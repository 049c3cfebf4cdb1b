//! The address a request came from: the TCP peer, or, on a listener with `x_forwarded` whose
//! peer is one of its `trusted_proxies`, the client named by `X-Forwarded-For` (or RFC 7239
//! `Forwarded`). From any other peer those headers are ignored: anyone can write them.
//!
//! `TrustForwardedFor` is what a listener with `x_forwarded` carries: walking the hops from the
//! nearest, trusted proxies are skipped and the first other hop is the client.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use axum::extract::ConnectInfo;
use ipnet::IpNet;

/// Put on every request of a listener with `x_forwarded: true`: the proxies it believes.
#[derive(Clone)]
pub struct TrustForwardedFor {
    proxies: Arc<[IpNet]>,
}

impl TrustForwardedFor {
    /// `entries` are addresses or CIDR ranges (checked when the config was loaded).
    pub fn new(entries: &[String]) -> Self {
        Self {
            proxies: entries
                .iter()
                .filter_map(|e| crate::turn::peer_filter::parse_network(e))
                .collect(),
        }
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client behind a trusted `peer`: walking the hops from the nearest, the first one
    /// that is not itself a trusted proxy (a client can put anything at the far end of the
    /// list, so the first entry is not believed). `None` without a usable header.
    fn client_behind(&self, headers: &http::HeaderMap) -> Option<IpAddr> {
        let hops = forwarded_for(headers).or_else(|| forwarded(headers))?;
        let mut client = None;
        for hop in hops.iter().rev() {
            let ip = hop.as_ref()?.to_canonical();
            client = Some(ip);
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// The hops of every `X-Forwarded-For` header, nearest last; `None` for a hop that is not an
/// address (`unknown`, garbage).
fn forwarded_for(headers: &http::HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let hops: Vec<_> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("").split(','))
        .map(|hop| parse_hop(hop.trim()))
        .collect();
    (!hops.is_empty()).then_some(hops)
}

/// The `for=` of every element of every `Forwarded` header (RFC 7239), nearest last.
fn forwarded(headers: &http::HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let hops: Vec<_> = headers
        .get_all(http::header::FORWARDED)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("").split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                name.eq_ignore_ascii_case("for")
                    .then(|| parse_hop(value.trim().trim_matches('"')))
            })
        })
        .collect();
    (!hops.is_empty()).then_some(hops)
}

/// `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(address) = hop.parse::<SocketAddr>() {
        return Some(address.ip());
    }
    hop.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse().ok())
}

pub struct ClientIp;

impl ClientIp {
    pub fn from_parts(parts: &http::request::Parts) -> IpAddr {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_canonical())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        match parts.extensions.get::<TrustForwardedFor>() {
            Some(trust) if trust.trusts(peer) => {
                trust.client_behind(&parts.headers).unwrap_or(peer)
            }
            _ => peer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(peer: &str, headers: &[(&str, &str)]) -> IpAddr {
        let mut request = http::Request::builder();
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        parts
            .extensions
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        parts.extensions.insert(TrustForwardedFor::new(&[
            "127.0.0.0/8".to_owned(),
            "10.0.0.5".to_owned(),
        ]));
        ClientIp::from_parts(&parts)
    }

    #[test]
    fn header_from_an_untrusted_peer_is_ignored() {
        let ip = client("198.51.100.7:5000", &[("x-forwarded-for", "203.0.113.1")]);
        assert_eq!(ip, "198.51.100.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn trusted_hops_are_skipped_and_the_far_end_is_not_believed() {
        let ip = client(
            "127.0.0.1:5000",
            &[("x-forwarded-for", "6.6.6.6, 203.0.113.1, 10.0.0.5")],
        );
        assert_eq!(ip, "203.0.113.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn forwarded_header_with_ipv6_and_port() {
        let ip = client(
            "127.0.0.1:5000",
            &[("forwarded", "for=\"[2001:db8::1]:4711\";proto=https")],
        );
        assert_eq!(ip, "2001:db8::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn garbage_hop_falls_back_to_the_peer() {
        let ip = client("127.0.0.1:5000", &[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(ip, "127.0.0.1".parse::<IpAddr>().unwrap());
    }
}
