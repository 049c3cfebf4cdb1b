//! The outbound federation HTTPS client. Other servers are found as the spec says
//! (`resolve.rs`); every address a name resolves to must pass the IP policy (Synapse's
//! `ip_range_blacklist` / `ip_range_whitelist`), and the connection goes to that checked
//! address (a second lookup could be answered differently); only servers of
//! `federation_domain_whitelist` are contacted when it is set; certificates are verified against
//! the system's roots plus `federation_custom_ca_list` unless `federation_verify_certificates`
//! is off; each request is bounded in time and size.
//!
//! [`FederationClient::send`] signs any ruma federation request (X-Matrix, with `destination`) and
//! reads the answer up to a cap; a failure is a [`FederationError`]: unreachable, a Matrix error, a
//! bad answer, or a request this server could not make. The IP policy is the URL-preview code's
//! `IpPolicy`. Media downloads use the `*_streamed` forms, which hand the answer over with its
//! body unread (the caller streams it to disk and bounds the time); `get_url_streamed` follows
//! another server's redirect under the same IP policy and certificate checks; `post_json_to_url`
//! reaches push gateways (http or https URLs) under the same IP policy; `send_to_service` reaches
//! application services (the URLs the admin configured: no IP policy, the system's roots).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use bytes::Bytes;
use hickory_resolver::TokioResolver;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ruma::{
    OwnedServerName, ServerName,
    api::{
        IncomingResponse, OutgoingRequest, OutgoingRequestExt,
        auth_scheme::{AuthScheme, NoAuthentication},
        error::{Error as MatrixError, ErrorKind},
        federation::authentication::{ServerSignatures, XMatrix, XMatrixSigningInput},
        path_builder::SinglePath,
    },
};
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, UnixTime, pem::PemObject},
};
use tokio::net::TcpStream;

use super::resolve::{self, Destination, Lookups, WellKnownCache, WellKnownResponse};
use crate::{
    config::Config,
    services::media::preview::{
        fetch::{FetchError, read_at_most},
        policy::IpPolicy,
    },
    services::server_key::ServerKey,
};

/// Synapse's limit for a well-known answer.
const WELL_KNOWN_MAX_BYTES: usize = 50 * 1024;
const USER_AGENT: &str = concat!("matrix-appliance/", env!("CARGO_PKG_VERSION"));
/// The most `send` reads of an answer (`send_with_limit` for more or less): bounded memory per
/// request. Synapse allows 100 MiB; the answers that can be that large (`send_join` of a big
/// room, `/state`) are asked for with their own limit.
pub const DEFAULT_RESPONSE_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Why a request to another server failed, for callers to match on.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The server could not be asked: refused by `federation_domain_whitelist` or the IP policy,
    /// no address, no connection, TLS or HTTP failure, no answer in time.
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// The server answered with an error status (and, usually, a Matrix errcode).
    #[error("the server answered HTTP {}: {}", .0.status_code, describe_matrix_error(.0))]
    Matrix(MatrixError),
    /// The server answered something that is not a valid answer to the request (too large, not
    /// the endpoint's JSON).
    #[error("bad answer from the server: {0}")]
    BadResponse(String),
    /// This server could not make the request (a bug, or no signing key in this process).
    #[error("cannot make the request: {0}")]
    Request(String),
}

impl FederationError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Matrix(error) => Some(error.status_code),
            _ => None,
        }
    }

    /// The Matrix errcode of an error answer.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            Self::Matrix(error) => error.error_kind(),
            _ => None,
        }
    }
}

/// A failed query of another server as this server's answer to its client: the remote's
/// `404` as `404 M_NOT_FOUND` with `not_found`, anything else `502`.
pub fn remote_error(error: FederationError, not_found: String) -> crate::error::Error {
    use crate::error::Error;
    if error.status() == Some(StatusCode::NOT_FOUND) {
        return Error::not_found(not_found);
    }
    tracing::info!("federation query failed: {error}");
    Error::new(
        StatusCode::BAD_GATEWAY,
        ErrorKind::Unknown,
        format!("The other server could not be asked: {error}"),
    )
}

fn describe_matrix_error(error: &MatrixError) -> String {
    use ruma::api::error::ErrorBody;
    match &error.body {
        ErrorBody::Standard(body) => format!("{} {}", body.kind.errcode(), body.message),
        ErrorBody::Json(json) => json.to_string().chars().take(200).collect(),
        ErrorBody::NotJson { bytes, .. } => {
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
        }
    }
}

/// The authentication schemes of federation endpoints: `ServerSignatures` (X-Matrix, signed
/// as this server for the destination) and `NoAuthentication` (the key endpoints).
pub trait FederationAuth: AuthScheme {
    fn input<'a>(
        client: &'a FederationClient,
        destination: &ServerName,
    ) -> Result<Self::Input<'a>, FederationError>;
}

impl FederationAuth for ServerSignatures {
    fn input<'a>(
        client: &'a FederationClient,
        destination: &ServerName,
    ) -> Result<XMatrixSigningInput<'a>, FederationError> {
        client.signing_input(destination)
    }
}

impl FederationAuth for NoAuthentication {
    fn input(_: &FederationClient, _: &ServerName) -> Result<(), FederationError> {
        Ok(())
    }
}

/// A raw answer of `send_raw`.
#[derive(Debug)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Why one HTTPS exchange failed.
enum Failure {
    Unreachable(String),
    TooLarge(usize),
}

impl From<Failure> for FederationError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Unreachable(reason) => Self::Unreachable(reason),
            Failure::TooLarge(max) => {
                Self::BadResponse(format!("the answer is longer than {max} bytes"))
            }
        }
    }
}

impl From<Failure> for String {
    fn from(failure: Failure) -> Self {
        FederationError::from(failure).to_string()
    }
}

pub struct FederationClient {
    dns: TokioResolver,
    tls: tokio_rustls::TlsConnector,
    ip_policy: IpPolicy,
    /// `None`: every server may be contacted.
    domain_whitelist: Option<Vec<OwnedServerName>>,
    well_known: WellKnownCache,
    /// Signs requests as this server; `None` in processes that only read (`admin federation
    /// check`), whose `send` fails with `FederationError::Request`.
    signer: Option<Arc<ServerKey>>,
    /// `federation.client_timeout`: the most one request may take.
    request_timeout: Duration,
    /// TLS for application services' `https` URLs: the system's roots only (Synapse's
    /// `RegularPolicyForHTTPS`), whatever the federation settings say.
    service_tls: tokio_rustls::TlsConnector,
}

/// Where a connection goes and how it is checked.
#[derive(Clone, Copy)]
enum Route<'a> {
    /// Another server or a URL a remote party chose (push gateways, media redirects): the IP
    /// policy applies; `tls` is `None` for a plain `http` URL.
    Checked {
        tls: Option<&'a tokio_rustls::TlsConnector>,
    },
    /// A URL the admin configured (an application service): no IP policy, the bridge usually
    /// runs on this box.
    Configured {
        tls: Option<&'a tokio_rustls::TlsConnector>,
    },
}

impl<'a> Route<'a> {
    fn tls(self) -> Option<&'a tokio_rustls::TlsConnector> {
        match self {
            Self::Checked { tls } | Self::Configured { tls } => tls,
        }
    }
}

/// An answer of another server.
pub struct Response {
    pub destination: Destination,
    /// The address the request went to.
    pub address: SocketAddr,
    pub status: u16,
    pub body: Vec<u8>,
}

impl FederationClient {
    /// `signer`: this server's key, for the X-Matrix signature of `send`/`send_raw`.
    pub fn new(config: &Config, signer: Option<Arc<ServerKey>>) -> anyhow::Result<Self> {
        let ip_policy = IpPolicy::replacing_defaults(
            config.ip_range_blacklist.as_deref(),
            &config.ip_range_whitelist,
        )
        .map_err(anyhow::Error::msg)
        .context("ip_range_blacklist / ip_range_whitelist")?;
        let domain_whitelist = config
            .federation_domain_whitelist
            .as_ref()
            .map(|names| {
                names
                    .iter()
                    .map(|name| {
                        OwnedServerName::try_from(name.as_str()).with_context(|| {
                            format!("federation_domain_whitelist: `{name}` is not a server name")
                        })
                    })
                    .collect::<anyhow::Result<_>>()
            })
            .transpose()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        // The system's roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` name others, as for OpenSSL).
        let system_roots = || {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(certificate);
            }
            roots
        };
        let service_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(system_roots())
            .with_no_client_auth();
        let tls = if config.federation_verify_certificates {
            let mut roots = system_roots();
            for path in &config.federation_custom_ca_list {
                let context = || format!("federation_custom_ca_list: {}", path.display());
                let pem = std::fs::read(path).with_context(context)?;
                for certificate in CertificateDer::pem_slice_iter(&pem) {
                    roots
                        .add(certificate.with_context(context)?)
                        .with_context(context)?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        };
        Ok(Self {
            dns: TokioResolver::builder_tokio()?.build(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            ip_policy,
            domain_whitelist,
            well_known: WellKnownCache::default(),
            signer,
            request_timeout: config.federation.client_timeout.0,
            service_tls: tokio_rustls::TlsConnector::from(Arc::new(service_tls)),
        })
    }

    /// GETs `path` from `server_name`, unsigned, reading at most `max_bytes` of the answer.
    pub async fn get(
        &self,
        server_name: &ServerName,
        path: &str,
        max_bytes: usize,
    ) -> Result<Response, String> {
        self.check_whitelist(server_name)
            .map_err(|e| e.to_string())?;
        let destination = resolve::resolve(self, &self.well_known, server_name).await;
        let request = Request::get(path)
            .body(Vec::new())
            .map_err(|e| format!("cannot make the request: {e}"))?;
        let (address, response) = self.https(&destination, request, max_bytes).await?;
        Ok(Response {
            destination,
            address,
            status: response.status.as_u16(),
            body: response.body,
        })
    }

    /// Sends a ruma federation request to `destination`, signed with X-Matrix (with
    /// `destination`), and parses the answer (at most `DEFAULT_RESPONSE_MAX_BYTES`).
    pub async fn send<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, FederationError>
    where
        R: OutgoingRequest<PathBuilder = SinglePath, EndpointError = MatrixError>,
        R::Authentication: FederationAuth,
    {
        self.send_with_limit(destination, request, DEFAULT_RESPONSE_MAX_BYTES)
            .await
    }

    /// `send`, reading at most `max_bytes` of the answer.
    pub async fn send_with_limit<R>(
        &self,
        destination: &ServerName,
        request: R,
        max_bytes: usize,
    ) -> Result<R::IncomingResponse, FederationError>
    where
        R: OutgoingRequest<PathBuilder = SinglePath, EndpointError = MatrixError>,
        R::Authentication: FederationAuth,
    {
        let request = self.signed_request(destination, request)?;
        let response = self.send_http(destination, request, max_bytes).await?;
        parse_response::<R::IncomingResponse>(response)
    }

    /// Sends a signed request built by hand: `path_and_query` (e.g.
    /// `/_matrix/federation/v1/send/1`), `body` JSON (`None` for none). The answer is returned
    /// whatever its status.
    #[allow(dead_code)] // for the transaction sender
    pub async fn send_raw(
        &self,
        destination: &ServerName,
        method: Method,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
        max_bytes: usize,
    ) -> Result<RawResponse, FederationError> {
        let body = match body {
            Some(json) => {
                serde_json::to_vec(json).map_err(|e| FederationError::Request(e.to_string()))?
            }
            None => Vec::new(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("https://{destination}{path_and_query}"));
        if !body.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let mut request = builder
            .body(body)
            .map_err(|e| FederationError::Request(e.to_string()))?;
        let x_matrix = XMatrix::sign_http_request(&request, self.signing_input(destination)?)
            .map_err(|e| FederationError::Request(e.to_string()))?;
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, (&x_matrix).into());
        self.send_http(destination, request, max_bytes).await
    }

    fn signing_input(
        &self,
        destination: &ServerName,
    ) -> Result<XMatrixSigningInput<'_>, FederationError> {
        let signer = self.signer.as_ref().ok_or_else(|| {
            FederationError::Request("this process has no signing key".to_owned())
        })?;
        Ok(XMatrixSigningInput::new(
            signer.server_name().to_owned(),
            destination.to_owned(),
            signer.key_pair(),
        ))
    }

    /// The `http::Request` of a ruma request, with its X-Matrix authorization.
    pub(crate) fn signed_request<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<Request<Vec<u8>>, FederationError>
    where
        R: OutgoingRequest<PathBuilder = SinglePath>,
        R::Authentication: FederationAuth,
    {
        request
            .try_into_http_request::<Vec<u8>>(
                &format!("https://{destination}"),
                R::Authentication::input(self, destination)?,
                (),
            )
            .map_err(|e| FederationError::Request(e.to_string()))
    }

    /// Resolves `destination` and sends it `request` (whose URI may be absolute: only its path
    /// and query are sent).
    async fn send_http(
        &self,
        destination: &ServerName,
        request: Request<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<RawResponse, FederationError> {
        self.check_whitelist(destination)?;
        let resolved = resolve::resolve(self, &self.well_known, destination).await;
        let (_, response) = self.https(&resolved, request, max_bytes).await?;
        Ok(response)
    }

    /// Whether `federation_domain_whitelist` (when set) lets this server contact `server_name`.
    pub fn may_contact(&self, server_name: &ServerName) -> bool {
        self.domain_whitelist
            .as_ref()
            .is_none_or(|whitelist| whitelist.iter().any(|allowed| allowed == server_name))
    }

    fn check_whitelist(&self, server_name: &ServerName) -> Result<(), FederationError> {
        if !self.may_contact(server_name) {
            return Err(FederationError::Unreachable(format!(
                "{server_name} is not in federation_domain_whitelist"
            )));
        }
        Ok(())
    }

    /// One request over TLS to a checked address of `destination`, within the request timeout.
    async fn https(
        &self,
        destination: &Destination,
        request: Request<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<(SocketAddr, RawResponse), Failure> {
        let timeout = self.request_timeout;
        tokio::time::timeout(timeout, self.https_untimed(destination, request, max_bytes))
            .await
            .unwrap_or_else(|_| {
                Err(Failure::Unreachable(format!(
                    "no answer within {timeout:?} (federation.client_timeout)"
                )))
            })
    }

    async fn https_untimed(
        &self,
        destination: &Destination,
        request: Request<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<(SocketAddr, RawResponse), Failure> {
        let (address, response) = self.exchange(destination, request).await?;
        Ok((address, read_answer(response, max_bytes).await?))
    }

    /// One request over TLS to a checked address of `destination`: the answer with its body
    /// still to be read. No time limit of its own.
    async fn exchange(
        &self,
        destination: &Destination,
        request: Request<Vec<u8>>,
    ) -> Result<(SocketAddr, http::Response<Incoming>), Failure> {
        let route = Route::Checked {
            tls: Some(&self.tls),
        };
        self.exchange_over(destination, request, route).await
    }

    /// [`Self::exchange`] over a [`Route`]: with or without TLS (a push gateway's or a
    /// service's `http` URL), with or without the IP policy.
    async fn exchange_over(
        &self,
        destination: &Destination,
        request: Request<Vec<u8>>,
        route: Route<'_>,
    ) -> Result<(SocketAddr, http::Response<Incoming>), Failure> {
        let unreachable = Failure::Unreachable;
        let checked = matches!(route, Route::Checked { .. });
        let address = self
            .address_of(destination, checked)
            .await
            .map_err(unreachable)?;
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| unreachable(format!("cannot connect to {address}: {e}")))?;
        let stream = if let Some(connector) = route.tls() {
            let tls_name = rustls::pki_types::ServerName::try_from(destination.tls_name.clone())
                .map_err(|e| {
                    unreachable(format!("`{}` is not a TLS name: {e}", destination.tls_name))
                })?;
            let tls = connector.connect(tls_name, tcp).await.map_err(|e| {
                unreachable(format!(
                    "TLS with {address} ({}): {e}",
                    destination.tls_name
                ))
            })?;
            tokio_util::either::Either::Left(tls)
        } else {
            tokio_util::either::Either::Right(tcp)
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(format!("HTTP: {e}")))?;
        tokio::spawn(connection);
        let (mut parts, body) = request.into_parts();
        // Origin form: the path and query only, the server in `Host`.
        parts.uri = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e| unreachable(format!("bad request URI: {e}")))?;
        parts.headers.insert(
            header::HOST,
            destination
                .host_header
                .parse()
                .map_err(|e| unreachable(format!("bad Host header: {e}")))?,
        );
        parts.headers.insert(
            header::USER_AGENT,
            http::HeaderValue::from_static(USER_AGENT),
        );
        let request = Request::from_parts(parts, Full::new(Bytes::from(body)));
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(format!("HTTP: {e}")))?;
        Ok((address, response))
    }

    /// Sends a signed ruma request to `destination` and returns the answer with its body unread,
    /// whatever its status: media downloads stream the body to disk. The caller bounds the time
    /// the whole exchange may take.
    pub async fn send_streamed<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<http::Response<Incoming>, FederationError>
    where
        R: OutgoingRequest<PathBuilder = SinglePath, EndpointError = MatrixError>,
        R::Authentication: FederationAuth,
    {
        let request = self.signed_request(destination, request)?;
        self.check_whitelist(destination)?;
        let resolved = resolve::resolve(self, &self.well_known, destination).await;
        Ok(self.exchange(&resolved, request).await?.1)
    }

    /// GETs `path_and_query` from `destination`, unsigned (an unauthenticated endpoint such as
    /// the legacy media download), with the body unread; the caller bounds the time.
    pub async fn get_streamed(
        &self,
        destination: &ServerName,
        path_and_query: &str,
    ) -> Result<http::Response<Incoming>, FederationError> {
        self.check_whitelist(destination)?;
        let resolved = resolve::resolve(self, &self.well_known, destination).await;
        let request = Request::get(path_and_query)
            .body(Vec::new())
            .map_err(|e| FederationError::Request(e.to_string()))?;
        Ok(self.exchange(&resolved, request).await?.1)
    }

    /// GETs an `https` URL another server pointed at (a media redirect), unsigned, with the body
    /// unread: its host must pass the same IP policy as any server's, and its certificate the
    /// same checks. The caller bounds the time.
    pub async fn get_url_streamed(
        &self,
        url: &url::Url,
    ) -> Result<http::Response<Incoming>, FederationError> {
        if url.scheme() != "https" {
            return Err(FederationError::Unreachable(format!(
                "{url}: only https URLs are followed"
            )));
        }
        let destination = Destination::of_url(url)
            .ok_or_else(|| FederationError::Unreachable(format!("{url}: no host")))?;
        let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let request = Request::get(path)
            .body(Vec::new())
            .map_err(|e| FederationError::Request(e.to_string()))?;
        Ok(self.exchange(&destination, request).await?.1)
    }

    /// POSTs a JSON body to an `http` or `https` URL that is not another homeserver (a push
    /// gateway, `services/pushers/delivery.rs`): its host must pass the same IP policy as any
    /// server's (`ip_range_blacklist` / `ip_range_whitelist`, checked after DNS, the connection
    /// going to the checked address), an `https` certificate the same checks. Redirects are not
    /// followed; at most `max_bytes` of the answer are read, within `federation.client_timeout`.
    pub async fn post_json_to_url(
        &self,
        url: &url::Url,
        body: Vec<u8>,
        max_bytes: usize,
    ) -> Result<RawResponse, FederationError> {
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => {
                return Err(FederationError::Request(format!(
                    "{url}: only http and https URLs are supported"
                )));
            }
        };
        let destination = Destination::of_url(url)
            .ok_or_else(|| FederationError::Request(format!("{url}: no host")))?;
        let request = Request::post(&url[url::Position::BeforePath..url::Position::AfterQuery])
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| FederationError::Request(e.to_string()))?;
        let route = Route::Checked {
            tls: tls.then_some(&self.tls),
        };
        let exchange = async {
            let (_, response) = self.exchange_over(&destination, request, route).await?;
            read_answer(response, max_bytes).await
        };
        let timeout = self.request_timeout;
        Ok(tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(Failure::Unreachable(format!(
                    "no answer within {timeout:?} (federation.client_timeout)"
                )))
            })?)
    }

    /// Sends `request`, whose URI is an application service's absolute `http` or `https` URL
    /// (`url` of its registration). No IP policy: the admin configured the URL, and a bridge
    /// usually listens on this box. `https` certificates are verified against the system's roots
    /// (as Synapse does for services; `SSL_CERT_FILE` names other ones), not the federation
    /// settings. Redirects are not followed; at most `max_bytes` of the answer are read (a
    /// longer one is an error). The caller bounds the time.
    pub async fn send_to_service(
        &self,
        request: Request<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<RawResponse, FederationError> {
        let url = url::Url::parse(&request.uri().to_string())
            .map_err(|e| FederationError::Request(format!("{}: {e}", request.uri())))?;
        let tls = match url.scheme() {
            "https" => Some(&self.service_tls),
            "http" => None,
            _ => {
                return Err(FederationError::Request(format!(
                    "{url}: only http and https URLs are supported"
                )));
            }
        };
        let destination = Destination::of_url(&url)
            .ok_or_else(|| FederationError::Request(format!("{url}: no host")))?;
        let (_, response) = self
            .exchange_over(&destination, request, Route::Configured { tls })
            .await?;
        Ok(read_answer(response, max_bytes).await?)
    }

    /// The address to connect to, once every address of the host has passed the IP policy
    /// (a name that resolves to a public and a private address must not reach the private one)
    /// when `checked`.
    async fn address_of(
        &self,
        destination: &Destination,
        checked: bool,
    ) -> Result<SocketAddr, String> {
        let addresses: Vec<IpAddr> = match destination.host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => {
                // A trailing dot: the name as given, never a search domain of this box.
                let fqdn = format!("{}.", destination.host.trim_end_matches('.'));
                self.dns
                    .lookup_ip(fqdn)
                    .await
                    .map_err(|e| format!("cannot resolve {}: {e}", destination.host))?
                    .iter()
                    .collect()
            }
        };
        if let Some(refused) = addresses
            .iter()
            .find(|ip| checked && !self.ip_policy.allows(**ip))
        {
            return Err(format!(
                "{} resolves to {refused}, a refused address (ip_range_blacklist; \
                 ip_range_whitelist allows one)",
                destination.host
            ));
        }
        let first = addresses
            .first()
            .ok_or_else(|| format!("{} has no address", destination.host))?;
        Ok(SocketAddr::new(*first, destination.port))
    }
}

/// Reads an answer's body, at most `max_bytes` of it.
async fn read_answer(
    response: http::Response<Incoming>,
    max_bytes: usize,
) -> Result<RawResponse, Failure> {
    let (parts, body) = response.into_parts();
    let (body, truncated) = read_at_most(body, max_bytes).await.map_err(|e| match e {
        FetchError::Failed(reason) => Failure::Unreachable(reason),
        FetchError::Blocked(reason) => Failure::Unreachable(reason.to_owned()),
    })?;
    if truncated {
        return Err(Failure::TooLarge(max_bytes));
    }
    Ok(RawResponse {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

impl Lookups for FederationClient {
    async fn well_known(&self, hostname: &str) -> Result<WellKnownResponse, String> {
        let destination = Destination {
            host: hostname.to_owned(),
            port: 443,
            host_header: hostname.to_owned(),
            tls_name: hostname.to_owned(),
            steps: Vec::new(),
        };
        let request = Request::get("/.well-known/matrix/server")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let (_, response) = self
            .https(&destination, request, WELL_KNOWN_MAX_BYTES)
            .await?;
        Ok(WellKnownResponse {
            status: response.status.as_u16(),
            cache_control: response
                .headers
                .get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: response.body,
        })
    }

    async fn srv(&self, name: &str) -> Result<Option<(String, u16)>, String> {
        match self.dns.srv_lookup(format!("{name}.")).await {
            // The most preferred record: lowest priority, then highest weight.
            Ok(found) => Ok(found
                .iter()
                .min_by_key(|record| (record.priority(), u16::MAX - record.weight()))
                .map(|record| (record.target().to_utf8(), record.port()))),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// `federation_verify_certificates: false` (test setups): any certificate is accepted, but the
/// handshake signatures are still checked so that the connection itself is sound.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A ruma response from a raw answer: error statuses as `FederationError::Matrix`.
fn parse_response<T>(response: RawResponse) -> Result<T, FederationError>
where
    T: IncomingResponse<EndpointError = MatrixError>,
{
    use ruma::api::{IncomingResponseExt, error::FromHttpResponseError};
    let mut http_response = http::Response::new(response.body.as_slice());
    *http_response.status_mut() = response.status;
    *http_response.headers_mut() = response.headers;
    T::try_from_http_response(http_response).map_err(|e| match e {
        FromHttpResponseError::Server(error) => FederationError::Matrix(error),
        FromHttpResponseError::Deserialization(e) => FederationError::BadResponse(e.to_string()),
        other => FederationError::BadResponse(format!("{other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ruma::{
        api::federation::query::get_profile_information::v1 as get_profile, owned_user_id,
        serde::Base64, server_name,
    };

    use super::*;

    fn client(dir: &std::path::Path) -> (FederationClient, Arc<ServerKey>) {
        let name = OwnedServerName::try_from("origin.test").unwrap();
        let key = Arc::new(ServerKey::load_or_create(dir, &name).unwrap());
        let config = Config::parse(
            "server_name: origin.test\n",
            std::path::Path::new("config.yaml"),
        )
        .unwrap();
        (
            FederationClient::new(&config, Some(key.clone())).unwrap(),
            key,
        )
    }

    /// With `federation_domain_whitelist` set, only the servers it names may be contacted.
    #[test]
    fn the_domain_whitelist_names_who_may_be_contacted() {
        let (client, _) = client(tempfile::tempdir().unwrap().path());
        assert!(client.may_contact(server_name!("anyone.test")));
        let config = Config::parse(
            "server_name: origin.test\nfederation_domain_whitelist: [friend.test]\n",
            std::path::Path::new("config.yaml"),
        )
        .unwrap();
        let client = FederationClient::new(&config, None).unwrap();
        assert!(client.may_contact(server_name!("friend.test")));
        assert!(!client.may_contact(server_name!("stranger.test")));
    }

    /// A ruma request signed by `send`'s code verifies with ruma's X-Matrix check for its
    /// destination and no other, and not once its path changed.
    #[test]
    fn outbound_requests_are_signed_for_their_destination() {
        let dir = tempfile::tempdir().unwrap();
        let (client, key) = client(dir.path());
        let request = get_profile::Request::new(owned_user_id!("@alice:remote.test"));
        let http = client
            .signed_request(server_name!("remote.test"), request)
            .unwrap();
        assert_eq!(http.uri().path(), "/_matrix/federation/v1/query/profile");
        let x_matrix = XMatrix::extract_from_http_headers(http.headers()).unwrap();
        assert_eq!(x_matrix.origin, "origin.test");
        assert_eq!(x_matrix.destination.as_deref().unwrap(), "remote.test");
        let keys = BTreeMap::from([(
            "origin.test".to_owned(),
            BTreeMap::from([(
                key.key_id(),
                Base64::new(key.key_pair().public_key().to_vec()),
            )]),
        )]);
        x_matrix
            .verify_http_request(&http, server_name!("remote.test"), &keys)
            .unwrap();
        assert!(
            x_matrix
                .verify_http_request(&http, server_name!("other.test"), &keys)
                .is_err()
        );
        let (mut parts, body) = http.into_parts();
        parts.uri =
            "https://remote.test/_matrix/federation/v1/query/profile?user_id=%40eve%3Aremote.test"
                .parse()
                .unwrap();
        let changed = Request::from_parts(parts, body);
        assert!(
            x_matrix
                .verify_http_request(&changed, server_name!("remote.test"), &keys)
                .is_err()
        );
    }

    /// A request with a JSON body is signed over the body too.
    #[test]
    fn raw_signing_covers_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let (client, key) = client(dir.path());
        let mut request = Request::put("https://remote.test/_matrix/federation/v1/send/1")
            .body(br#"{"pdus":[]}"#.to_vec())
            .unwrap();
        let x_matrix = XMatrix::sign_http_request(
            &request,
            client.signing_input(server_name!("remote.test")).unwrap(),
        )
        .unwrap();
        let keys = BTreeMap::from([(
            "origin.test".to_owned(),
            BTreeMap::from([(
                key.key_id(),
                Base64::new(key.key_pair().public_key().to_vec()),
            )]),
        )]);
        x_matrix
            .verify_http_request(&request, server_name!("remote.test"), &keys)
            .unwrap();
        *request.body_mut() = br#"{"pdus":[{}]}"#.to_vec();
        assert!(
            x_matrix
                .verify_http_request(&request, server_name!("remote.test"), &keys)
                .is_err()
        );
    }

    /// Error answers keep their status and errcode; success bodies that are not the endpoint's
    /// JSON are bad answers.
    #[test]
    fn answers_are_parsed_into_typed_errors() {
        let error = parse_response::<get_profile::Response>(RawResponse {
            status: StatusCode::NOT_FOUND,
            headers: HeaderMap::new(),
            body: br#"{"errcode":"M_NOT_FOUND","error":"no such user"}"#.to_vec(),
        })
        .unwrap_err();
        assert_eq!(error.status(), Some(StatusCode::NOT_FOUND));
        assert_eq!(error.kind(), Some(&ErrorKind::NotFound));
        let bad = parse_response::<get_profile::Response>(RawResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: b"not json".to_vec(),
        })
        .unwrap_err();
        assert!(matches!(bad, FederationError::BadResponse(_)), "{bad:?}");
        let profile = parse_response::<get_profile::Response>(RawResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: br#"{"displayname":"Alice"}"#.to_vec(),
        })
        .unwrap();
        assert_eq!(
            profile.get("displayname"),
            Some(&serde_json::json!("Alice"))
        );
    }
}
