//! The HTTP client of URL previews. Users choose what it fetches, so: every address the host
//! name resolves to must pass the IP policy, and the connection goes to that checked address
//! (a second lookup could be answered differently: DNS rebinding); redirects are followed by
//! hand and each checked again; the body is cut at a size limit. The caller bounds the time.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use bytes::Bytes;
use hickory_resolver::TokioResolver;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_util::either::Either;
use url::{Host, Position, Url};

use super::policy::{IpPolicy, UrlBlacklist};

const MAX_REDIRECTS: usize = 5;
const USER_AGENT: &str = concat!(
    "matrix-appliance/",
    env!("CARGO_PKG_VERSION"),
    " (URL preview bot)"
);
const ACCEPT: &str = "text/html,application/xhtml+xml,image/*;q=0.9,*/*;q=0.5";

pub struct Fetcher {
    resolver: TokioResolver,
    tls: tokio_rustls::TlsConnector,
    ip_policy: IpPolicy,
    url_blacklist: UrlBlacklist,
    accept_language: String,
}

pub struct Fetched {
    /// Where the content came from, after redirects.
    pub url: Url,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// The body was longer than the limit and was cut there.
    pub truncated: bool,
}

#[derive(Debug)]
pub enum FetchError {
    /// The URL, or an address it resolves to, may not be fetched.
    Blocked(&'static str),
    Failed(String),
}

impl Fetcher {
    pub fn new(
        resolver: TokioResolver,
        tls: Arc<rustls::ClientConfig>,
        ip_policy: IpPolicy,
        url_blacklist: UrlBlacklist,
        accept_language: String,
    ) -> Self {
        Self {
            resolver,
            tls: tokio_rustls::TlsConnector::from(tls),
            ip_policy,
            url_blacklist,
            accept_language,
        }
    }

    pub fn blocks_url(&self, url: &Url) -> bool {
        self.url_blacklist.blocks(url)
    }

    /// GETs `url`, following redirects, and reads at most `max_bytes` of the body.
    pub async fn get(&self, url: Url, max_bytes: usize) -> Result<Fetched, FetchError> {
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(FetchError::Blocked("only http and https URLs are fetched"));
            }
            if self.url_blacklist.blocks(&url) {
                return Err(FetchError::Blocked(
                    "URL blocked by url pattern blacklist entry",
                ));
            }
            let address = self.resolve(&url).await?;
            let response = self.send(address, &url).await?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| failed("a redirect without a Location"))?;
                url = url
                    .join(location)
                    .map_err(|e| failed(format!("a redirect to a bad URL: {e}")))?;
                continue;
            }
            if !status.is_success() {
                return Err(failed(format!("the server answered {status}")));
            }
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let (body, truncated) = read_at_most(response.into_body(), max_bytes).await?;
            return Ok(Fetched {
                url,
                content_type,
                body,
                truncated,
            });
        }
        Err(failed("too many redirects"))
    }

    /// The address to connect to, once every address of the host has passed the IP policy.
    async fn resolve(&self, url: &Url) -> Result<SocketAddr, FetchError> {
        let port = url
            .port_or_known_default()
            .ok_or_else(|| failed("the URL has no port"))?;
        let addresses: Vec<IpAddr> = match url.host() {
            Some(Host::Ipv4(ip)) => vec![ip.into()],
            Some(Host::Ipv6(ip)) => vec![ip.into()],
            Some(Host::Domain(name)) => self
                .resolver
                .lookup_ip(name)
                .await
                .map_err(|e| failed(format!("cannot resolve {name}: {e}")))?
                .iter()
                .collect(),
            None => return Err(failed("the URL has no host")),
        };
        // All of them: a name that resolves to a public and a private address must not reach
        // the private one.
        if addresses.iter().any(|ip| !self.ip_policy.allows(*ip)) {
            return Err(FetchError::Blocked(
                "IP address blocked by IP blacklist entry",
            ));
        }
        let first = addresses
            .first()
            .ok_or_else(|| failed("the host has no address"))?;
        Ok(SocketAddr::new(*first, port))
    }

    async fn send(
        &self,
        address: SocketAddr,
        url: &Url,
    ) -> Result<http::Response<Incoming>, FetchError> {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| failed(format!("cannot connect: {e}")))?;
        let stream = if url.scheme() == "https" {
            let name = match url.host() {
                Some(Host::Domain(name)) => ServerName::try_from(name.to_owned())
                    .map_err(|e| failed(format!("not a TLS server name: {e}")))?,
                Some(Host::Ipv4(ip)) => ServerName::IpAddress(IpAddr::from(ip).into()),
                Some(Host::Ipv6(ip)) => ServerName::IpAddress(IpAddr::from(ip).into()),
                None => return Err(failed("the URL has no host")),
            };
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| failed(format!("TLS: {e}")))?;
            Either::Right(tls)
        } else {
            Either::Left(tcp)
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(format!("HTTP: {e}")))?;
        tokio::spawn(connection);
        let request = Request::get(&url[Position::BeforePath..Position::AfterQuery])
            .header(
                header::HOST,
                &url[Position::BeforeHost..Position::BeforePath],
            )
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::ACCEPT, ACCEPT)
            .header(header::ACCEPT_LANGUAGE, &self.accept_language)
            .body(Empty::<Bytes>::new())
            .map_err(|e| failed(format!("cannot make the request: {e}")))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| failed(format!("HTTP: {e}")))
    }
}

/// The body up to `max_bytes`, and whether it went on beyond (the federation client's too).
pub(crate) async fn read_at_most(
    mut body: Incoming,
    max_bytes: usize,
) -> Result<(Vec<u8>, bool), FetchError> {
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| failed(format!("reading the body: {e}")))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        let room = max_bytes - data.len();
        if chunk.len() > room {
            data.extend_from_slice(&chunk[..room]);
            return Ok((data, true));
        }
        data.extend_from_slice(&chunk);
    }
    Ok((data, false))
}

fn failed(reason: impl Into<String>) -> FetchError {
    FetchError::Failed(reason.into())
}
