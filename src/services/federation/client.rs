//! The outbound federation HTTPS client. Other servers are found as the spec says
//! (`resolve.rs`); every address a name resolves to must pass the IP policy (Synapse's
//! `ip_range_blacklist` / `ip_range_whitelist`), and the connection goes to that checked
//! address (a second lookup could be answered differently); only servers of
//! `federation_domain_whitelist` are contacted when it is set; certificates are verified against
//! the system's roots plus `federation_custom_ca_list` unless `federation_verify_certificates`
//! is off; each request is bounded in time and size.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use bytes::Bytes;
use hickory_resolver::TokioResolver;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use ruma::{OwnedServerName, ServerName};
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
};

/// Synapse's default `federation.client_timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Synapse's limit for a well-known answer.
const WELL_KNOWN_MAX_BYTES: usize = 50 * 1024;
const USER_AGENT: &str = concat!("matrix-appliance/", env!("CARGO_PKG_VERSION"));

pub struct FederationClient {
    dns: TokioResolver,
    tls: tokio_rustls::TlsConnector,
    ip_policy: IpPolicy,
    /// `None`: every server may be contacted.
    domain_whitelist: Option<Vec<OwnedServerName>>,
    well_known: WellKnownCache,
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
    pub fn new(config: &Config) -> anyhow::Result<Self> {
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
        let tls = if config.federation_verify_certificates {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(certificate);
            }
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
        })
    }

    /// GETs `path` from `server_name`, reading at most `max_bytes` of the answer.
    pub async fn get(
        &self,
        server_name: &ServerName,
        path: &str,
        max_bytes: usize,
    ) -> Result<Response, String> {
        if let Some(whitelist) = &self.domain_whitelist
            && !whitelist.iter().any(|allowed| allowed == server_name)
        {
            return Err(format!(
                "{server_name} is not in federation_domain_whitelist"
            ));
        }
        let destination = resolve::resolve(self, &self.well_known, server_name).await;
        let (address, status, _, body) = self.https_get(&destination, path, max_bytes).await?;
        Ok(Response {
            destination,
            address,
            status,
            body,
        })
    }

    /// One GET over TLS to a checked address of `destination`, within the request timeout:
    /// (address, status, `Cache-Control`, body).
    async fn https_get(
        &self,
        destination: &Destination,
        path: &str,
        max_bytes: usize,
    ) -> Result<(SocketAddr, u16, Option<String>, Vec<u8>), String> {
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.https_get_untimed(destination, path, max_bytes),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")))
    }

    async fn https_get_untimed(
        &self,
        destination: &Destination,
        path: &str,
        max_bytes: usize,
    ) -> Result<(SocketAddr, u16, Option<String>, Vec<u8>), String> {
        let address = self.address_of(destination).await?;
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        let tls_name = rustls::pki_types::ServerName::try_from(destination.tls_name.clone())
            .map_err(|e| format!("`{}` is not a TLS name: {e}", destination.tls_name))?;
        let tls = self
            .tls
            .connect(tls_name, tcp)
            .await
            .map_err(|e| format!("TLS with {address} ({}): {e}", destination.tls_name))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(header::HOST, &destination.host_header)
            .header(header::USER_AGENT, USER_AGENT)
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot make the request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status().as_u16();
        let cache_control = response
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (body, truncated) = read_at_most(response.into_body(), max_bytes)
            .await
            .map_err(|e| match e {
                FetchError::Failed(reason) => reason,
                FetchError::Blocked(reason) => reason.to_owned(),
            })?;
        if truncated {
            return Err(format!("the answer is longer than {max_bytes} bytes"));
        }
        Ok((address, status, cache_control, body))
    }

    /// The address to connect to, once every address of the host has passed the IP policy
    /// (a name that resolves to a public and a private address must not reach the private one).
    async fn address_of(&self, destination: &Destination) -> Result<SocketAddr, String> {
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
        if let Some(refused) = addresses.iter().find(|ip| !self.ip_policy.allows(**ip)) {
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

impl Lookups for FederationClient {
    async fn well_known(&self, hostname: &str) -> Result<WellKnownResponse, String> {
        let destination = Destination {
            host: hostname.to_owned(),
            port: 443,
            host_header: hostname.to_owned(),
            tls_name: hostname.to_owned(),
            steps: Vec::new(),
        };
        let (_, status, cache_control, body) = self
            .https_get(
                &destination,
                "/.well-known/matrix/server",
                WELL_KNOWN_MAX_BYTES,
            )
            .await?;
        Ok(WellKnownResponse {
            status,
            cache_control,
            body,
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
