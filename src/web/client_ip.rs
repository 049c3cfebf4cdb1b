//! The address a request came from: the TCP peer, or the first `X-Forwarded-For` hop when the
//! listener is configured (`x_forwarded`) to sit behind a trusted reverse proxy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::ConnectInfo;

/// Put on every request of a listener with `x_forwarded: true`.
#[derive(Clone, Copy)]
pub struct TrustForwardedFor;

pub struct ClientIp;

impl ClientIp {
    pub fn from_parts(parts: &http::request::Parts) -> IpAddr {
        if parts.extensions.get::<TrustForwardedFor>().is_some()
            && let Some(ip) = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|first| first.trim().parse().ok())
        {
            return ip;
        }
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }
}
