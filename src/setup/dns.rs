//! The wizard's DNS check: does the public host name resolve, and to which addresses?

use std::{net::IpAddr, time::Duration};

use hickory_resolver::TokioResolver;

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(4);

/// What a lookup of the host name found.
pub enum DnsAnswer {
    Addresses(Vec<IpAddr>),
    /// The name does not resolve (or the resolver could not be reached); the reason is shown.
    Failed(String),
}

/// Looks up the A and AAAA records of `host` with the system's resolvers.
pub async fn lookup(host: &str) -> DnsAnswer {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return DnsAnswer::Addresses(vec![ip]);
    }
    let resolver = match TokioResolver::builder_tokio() {
        Ok(builder) => builder.build(),
        Err(e) => return DnsAnswer::Failed(e.to_string()),
    };
    // A trailing dot: the name as typed, never a search domain of this box.
    let fqdn = format!("{}.", host.trim_end_matches('.'));
    match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(fqdn)).await {
        Ok(Ok(found)) => {
            let mut addresses: Vec<IpAddr> = found.iter().collect();
            addresses.sort();
            addresses.dedup();
            DnsAnswer::Addresses(addresses)
        }
        Ok(Err(e)) if e.is_nx_domain() => DnsAnswer::Failed("NXDOMAIN".to_owned()),
        Ok(Err(e)) if e.is_no_records_found() => {
            DnsAnswer::Failed("no A or AAAA record".to_owned())
        }
        Ok(Err(e)) => DnsAnswer::Failed(e.to_string()),
        Err(_) => DnsAnswer::Failed(format!("no answer within {LOOKUP_TIMEOUT:?}")),
    }
}
