//! Server discovery, as the spec's "Resolving server names": which address to connect to for a
//! server name, with which `Host` header and which TLS name. The lookups (the well-known file,
//! SRV records) sit behind [`Lookups`] so that every branch of the decision is tested with fixed
//! answers; A/AAAA lookups of the result happen in the client, where the IP policy checks them.
//!
//! Well-known answers are cached by their `Cache-Control`: a day when it says nothing, two days at
//! most, and a failure for an hour.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::ServerName;

/// The spec's default port.
const DEFAULT_PORT: u16 = 8448;
/// A well-known answer without `Cache-Control: max-age` is kept a day (the spec's default) and
/// none longer than two days (the spec's cap).
const WELL_KNOWN_DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const WELL_KNOWN_MAX_LIFETIME: Duration = Duration::from_secs(48 * 3600);
/// A failed well-known lookup is remembered an hour (the spec's recommendation).
const WELL_KNOWN_ERROR_LIFETIME: Duration = Duration::from_secs(3600);
/// At most this many host names' well-known results are kept; when full, expired ones go first,
/// then everything (a cache miss only costs a lookup).
const WELL_KNOWN_CACHE_SIZE: usize = 4096;

/// Where to send requests for a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// A host name to look up (A/AAAA) or an IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// The `Host` header of every request.
    pub host_header: String,
    /// The name the TLS certificate must be valid for (an IP address for IP literals: no SNI).
    pub tls_name: String,
    /// How it was found, step by step, for people.
    pub steps: Vec<String>,
}

impl Destination {
    /// Where a plain URL points (a remote media redirect, a push gateway): its host and port
    /// (the scheme's default when it names none), no discovery steps. `None` without a host.
    pub fn of_url(url: &url::Url) -> Option<Self> {
        let host = match url.host()? {
            url::Host::Domain(name) => name.to_owned(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        Some(Self {
            host_header: url[url::Position::BeforeHost..url::Position::BeforePath].to_owned(),
            tls_name: host.clone(),
            port: url.port_or_known_default().unwrap_or(443),
            host,
            steps: Vec::new(),
        })
    }
}

/// A `/.well-known/matrix/server` fetch: the HTTP status, its `Cache-Control` and its body.
pub struct WellKnownResponse {
    pub status: u16,
    pub cache_control: Option<String>,
    pub body: Vec<u8>,
}

/// The network lookups of discovery.
pub trait Lookups {
    /// GET `https://<hostname>/.well-known/matrix/server`; `Err` when no answer came.
    fn well_known(
        &self,
        hostname: &str,
    ) -> impl Future<Output = Result<WellKnownResponse, String>> + Send;
    /// The SRV record of `name` with the lowest priority (then highest weight), as
    /// (target, port); `Ok(None)` when there is none.
    fn srv(&self, name: &str)
    -> impl Future<Output = Result<Option<(String, u16)>, String>> + Send;
}

/// A well-known result: the delegated server name, or why there is none.
type Delegation = Result<String, String>;

/// Well-known results by host name, each with the instant it expires.
#[derive(Default)]
pub struct WellKnownCache(Mutex<HashMap<String, (Instant, Delegation)>>);

impl WellKnownCache {
    fn get(&self, hostname: &str) -> Option<Delegation> {
        let cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(hostname)
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, result)| result.clone())
    }

    fn put(&self, hostname: &str, result: Delegation, lifetime: Duration) {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= WELL_KNOWN_CACHE_SIZE {
            let now = Instant::now();
            cache.retain(|_, (until, _)| now < *until);
            if cache.len() >= WELL_KNOWN_CACHE_SIZE {
                cache.clear();
            }
        }
        cache.insert(hostname.to_owned(), (Instant::now() + lifetime, result));
    }
}

/// Follows the spec's steps for `server_name`.
pub async fn resolve(
    lookups: &impl Lookups,
    cache: &WellKnownCache,
    server_name: &ServerName,
) -> Destination {
    let mut steps = Vec::new();
    let hostname = server_name.host();
    // Step 1: an IP literal, with its port or 8448.
    if server_name.is_ip_literal() {
        let ip = bare_ip(hostname);
        let port = server_name.port().unwrap_or(DEFAULT_PORT);
        steps.push(format!("{server_name} is an IP literal"));
        return Destination {
            host: ip.clone(),
            port,
            host_header: server_name.to_string(),
            tls_name: ip,
            steps,
        };
    }
    // Step 2: a host name with an explicit port.
    if let Some(port) = server_name.port() {
        steps.push(format!("{server_name} has an explicit port"));
        return Destination {
            host: hostname.to_owned(),
            port,
            host_header: server_name.to_string(),
            tls_name: hostname.to_owned(),
            steps,
        };
    }
    // Step 3: delegation by `/.well-known/matrix/server`.
    let delegated = match cache.get(hostname) {
        Some(result) => {
            steps.push(format!("well-known of {hostname} (cached)"));
            result
        }
        None => {
            let (result, lifetime) = match lookups.well_known(hostname).await {
                Ok(response) => parse_well_known(&response),
                Err(e) => (Err(e), WELL_KNOWN_ERROR_LIFETIME),
            };
            steps.push(format!(
                "fetched https://{hostname}/.well-known/matrix/server"
            ));
            cache.put(hostname, result.clone(), lifetime);
            result
        }
    };
    match delegated {
        Ok(delegated) => {
            steps.push(format!("delegated to {delegated}"));
            let delegated =
                <&ServerName>::try_from(delegated.as_str()).expect("checked by parse_well_known");
            let delegated_host = delegated.host();
            // 3.1: an IP literal, with its port or 8448.
            if delegated.is_ip_literal() {
                let ip = bare_ip(delegated_host);
                return Destination {
                    host: ip.clone(),
                    port: delegated.port().unwrap_or(DEFAULT_PORT),
                    host_header: delegated.to_string(),
                    tls_name: ip,
                    steps,
                };
            }
            // 3.2: a host name with an explicit port.
            if let Some(port) = delegated.port() {
                return Destination {
                    host: delegated_host.to_owned(),
                    port,
                    host_header: delegated.to_string(),
                    tls_name: delegated_host.to_owned(),
                    steps,
                };
            }
            // 3.3 to 3.5: SRV of the delegated name, else 8448.
            srv_or_default(lookups, delegated_host, steps).await
        }
        Err(reason) => {
            steps.push(format!("no delegation: {reason}"));
            // Steps 4 to 6: SRV of the name itself, else 8448.
            srv_or_default(lookups, hostname, steps).await
        }
    }
}

/// `_matrix-fed._tcp.<host>`, then the deprecated `_matrix._tcp.<host>`, then `<host>:8448`;
/// the `Host` header and the certificate are always for `host`, not the SRV target.
async fn srv_or_default(lookups: &impl Lookups, host: &str, mut steps: Vec<String>) -> Destination {
    for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
        let name = format!("{service}.{host}");
        match lookups.srv(&name).await {
            Ok(Some((target, port))) => {
                steps.push(format!("SRV {name} -> {target}:{port}"));
                return Destination {
                    host: target.trim_end_matches('.').to_owned(),
                    port,
                    host_header: host.to_owned(),
                    tls_name: host.to_owned(),
                    steps,
                };
            }
            Ok(None) => steps.push(format!("no SRV record {name}")),
            Err(e) => steps.push(format!("SRV {name}: {e}")),
        }
    }
    steps.push(format!("default port {DEFAULT_PORT}"));
    Destination {
        host: host.to_owned(),
        port: DEFAULT_PORT,
        host_header: host.to_owned(),
        tls_name: host.to_owned(),
        steps,
    }
}

/// `[::1]` → `::1`; an IPv4 address as it is.
fn bare_ip(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// The delegated server name of a well-known answer and how long to keep the result.
fn parse_well_known(response: &WellKnownResponse) -> (Delegation, Duration) {
    if response.status != 200 {
        return (
            Err(format!("the server answered {}", response.status)),
            WELL_KNOWN_ERROR_LIFETIME,
        );
    }
    let delegated = serde_json::from_slice::<serde_json::Value>(&response.body)
        .ok()
        .and_then(|body| body.get("m.server")?.as_str().map(str::to_owned));
    let Some(delegated) = delegated else {
        return (
            Err("the answer is not JSON with an `m.server` string".to_owned()),
            WELL_KNOWN_ERROR_LIFETIME,
        );
    };
    if <&ServerName>::try_from(delegated.as_str()).is_err() {
        return (
            Err(format!("`{delegated}` is not a server name")),
            WELL_KNOWN_ERROR_LIFETIME,
        );
    }
    let lifetime = response
        .cache_control
        .as_deref()
        .and_then(max_age)
        .unwrap_or(WELL_KNOWN_DEFAULT_LIFETIME)
        .min(WELL_KNOWN_MAX_LIFETIME);
    (Ok(delegated), lifetime)
}

/// `max-age` of a `Cache-Control` header (`no-store` and `no-cache` count as 0).
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|directive| {
        let directive = directive.trim().to_ascii_lowercase();
        if directive == "no-store" || directive == "no-cache" {
            return Some(Duration::ZERO);
        }
        directive
            .strip_prefix("max-age=")
            .and_then(|seconds| seconds.trim_matches('"').parse().ok())
            .map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Fixed answers: the well-known answer (`None`: no answer at all) and SRV records by name.
    struct Fixed {
        well_known: Option<(u16, Option<&'static str>, &'static str)>,
        srv: Vec<(&'static str, &'static str, u16)>,
        well_known_fetches: AtomicUsize,
    }

    impl Lookups for Fixed {
        async fn well_known(&self, _: &str) -> Result<WellKnownResponse, String> {
            self.well_known_fetches.fetch_add(1, Ordering::SeqCst);
            let (status, cache_control, body) = self.well_known.ok_or("connection refused")?;
            Ok(WellKnownResponse {
                status,
                cache_control: cache_control.map(str::to_owned),
                body: body.as_bytes().to_vec(),
            })
        }

        async fn srv(&self, name: &str) -> Result<Option<(String, u16)>, String> {
            Ok(self
                .srv
                .iter()
                .find(|(record, _, _)| *record == name)
                .map(|(_, target, port)| ((*target).to_owned(), *port)))
        }
    }

    #[tokio::test]
    async fn every_branch_of_the_spec() {
        type Case = (
            &'static str,
            Option<(u16, Option<&'static str>, &'static str)>,
            Vec<(&'static str, &'static str, u16)>,
            (&'static str, u16, &'static str, &'static str),
        );
        let delegated = |to| Some((200, None, to));
        let cases: Vec<Case> = vec![
            // 1: IP literals, with and without a port; IPv6 without its brackets.
            (
                "1.2.3.4",
                None,
                vec![],
                ("1.2.3.4", 8448, "1.2.3.4", "1.2.3.4"),
            ),
            (
                "1.2.3.4:99",
                None,
                vec![],
                ("1.2.3.4", 99, "1.2.3.4:99", "1.2.3.4"),
            ),
            ("[::1]:99", None, vec![], ("::1", 99, "[::1]:99", "::1")),
            // 2: an explicit port: no well-known, no SRV.
            (
                "a.test:99",
                delegated(r#"{"m.server": "b.test"}"#),
                vec![("_matrix-fed._tcp.a.test", "c.test", 1)],
                ("a.test", 99, "a.test:99", "a.test"),
            ),
            // 3.1: delegated to an IP literal, with and without a port.
            (
                "a.test",
                delegated(r#"{"m.server": "5.6.7.8:77"}"#),
                vec![],
                ("5.6.7.8", 77, "5.6.7.8:77", "5.6.7.8"),
            ),
            (
                "a.test",
                delegated(r#"{"m.server": "5.6.7.8"}"#),
                vec![],
                ("5.6.7.8", 8448, "5.6.7.8", "5.6.7.8"),
            ),
            // 3.2: delegated with a port: no SRV.
            (
                "a.test",
                delegated(r#"{"m.server": "b.test:443"}"#),
                vec![("_matrix-fed._tcp.b.test", "c.test", 1)],
                ("b.test", 443, "b.test:443", "b.test"),
            ),
            // 3.3: SRV of the delegated name; Host and TLS name stay the delegated name.
            (
                "a.test",
                delegated(r#"{"m.server": "b.test"}"#),
                vec![
                    ("_matrix-fed._tcp.b.test", "c.test.", 1),
                    ("_matrix._tcp.b.test", "d.test", 2),
                    ("_matrix-fed._tcp.a.test", "e.test", 3),
                ],
                ("c.test", 1, "b.test", "b.test"),
            ),
            // 3.4: the deprecated SRV of the delegated name.
            (
                "a.test",
                delegated(r#"{"m.server": "b.test"}"#),
                vec![("_matrix._tcp.b.test", "d.test", 2)],
                ("d.test", 2, "b.test", "b.test"),
            ),
            // 3.5: the delegated name on 8448.
            (
                "a.test",
                delegated(r#"{"m.server": "b.test"}"#),
                vec![("_matrix-fed._tcp.a.test", "e.test", 3)],
                ("b.test", 8448, "b.test", "b.test"),
            ),
            // 4: no well-known (no answer, an error status, bad JSON, a bad name): SRV.
            (
                "a.test",
                None,
                vec![("_matrix-fed._tcp.a.test", "e.test", 3)],
                ("e.test", 3, "a.test", "a.test"),
            ),
            (
                "a.test",
                Some((404, None, r#"{"m.server": "b.test"}"#)),
                vec![("_matrix-fed._tcp.a.test", "e.test", 3)],
                ("e.test", 3, "a.test", "a.test"),
            ),
            (
                "a.test",
                delegated("not json"),
                vec![("_matrix-fed._tcp.a.test", "e.test", 3)],
                ("e.test", 3, "a.test", "a.test"),
            ),
            (
                "a.test",
                delegated(r#"{"m.server": "b test"}"#),
                vec![("_matrix-fed._tcp.a.test", "e.test", 3)],
                ("e.test", 3, "a.test", "a.test"),
            ),
            // 5: the deprecated SRV.
            (
                "a.test",
                None,
                vec![("_matrix._tcp.a.test", "f.test", 4)],
                ("f.test", 4, "a.test", "a.test"),
            ),
            // 6: the name itself on 8448.
            ("a.test", None, vec![], ("a.test", 8448, "a.test", "a.test")),
        ];
        for (name, well_known, srv, (host, port, host_header, tls_name)) in cases {
            let lookups = Fixed {
                well_known,
                srv,
                well_known_fetches: AtomicUsize::new(0),
            };
            let server_name = <&ServerName>::try_from(name).unwrap();
            let found = resolve(&lookups, &WellKnownCache::default(), server_name).await;
            let context = format!("{name} with {:?}", found.steps);
            assert_eq!(found.host, host, "{context}");
            assert_eq!(found.port, port, "{context}");
            assert_eq!(found.host_header, host_header, "{context}");
            assert_eq!(found.tls_name, tls_name, "{context}");
        }
    }

    #[tokio::test]
    async fn well_known_results_and_errors_are_cached() {
        let cache = WellKnownCache::default();
        let name = <&ServerName>::try_from("a.test").unwrap();
        let lookups = Fixed {
            well_known: Some((200, Some("max-age=600"), r#"{"m.server": "b.test:1"}"#)),
            srv: vec![],
            well_known_fetches: AtomicUsize::new(0),
        };
        resolve(&lookups, &cache, name).await;
        let again = resolve(&lookups, &cache, name).await;
        assert_eq!(lookups.well_known_fetches.load(Ordering::SeqCst), 1);
        assert_eq!((again.host.as_str(), again.port), ("b.test", 1));

        let failing = Fixed {
            well_known: None,
            srv: vec![],
            well_known_fetches: AtomicUsize::new(0),
        };
        let other = <&ServerName>::try_from("c.test").unwrap();
        resolve(&failing, &cache, other).await;
        resolve(&failing, &cache, other).await;
        assert_eq!(failing.well_known_fetches.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn well_known_lifetimes_follow_cache_control() {
        let lifetime = |cache_control: Option<&str>| {
            parse_well_known(&WellKnownResponse {
                status: 200,
                cache_control: cache_control.map(str::to_owned),
                body: br#"{"m.server": "b.test"}"#.to_vec(),
            })
            .1
        };
        assert_eq!(lifetime(None), WELL_KNOWN_DEFAULT_LIFETIME);
        assert_eq!(
            lifetime(Some("public, max-age=600")),
            Duration::from_secs(600)
        );
        assert_eq!(lifetime(Some("max-age=9999999")), WELL_KNOWN_MAX_LIFETIME);
        assert_eq!(lifetime(Some("no-store")), Duration::ZERO);
        let error = parse_well_known(&WellKnownResponse {
            status: 500,
            cache_control: Some("max-age=5".to_owned()),
            body: Vec::new(),
        });
        assert!(error.0.is_err());
        assert_eq!(error.1, WELL_KNOWN_ERROR_LIFETIME);
    }
}
