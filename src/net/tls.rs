//! The certificate every TLS listener presents, swappable while connections are open: ACME
//! renewals and reloaded PEM files replace it without a restart, and TLS-ALPN-01 challenge
//! certificates are answered beside it.
//!
//! [`LiveCertificate`] is the handle the rest of the process shares (the TURN relay's `turns:`
//! listener too): cheap to clone, and every [`rustls::ServerConfig`] built from it follows
//! each swap.
//!
//! `LiveCertificate::server_config` builds the rustls config of any TLS listener; the facts
//! `appliance cert status` and the renewal task read from a certificate ([`CertificateInfo`])
//! come from x509-parser.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use anyhow::Context;
use rustls::{
    ServerConfig,
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

/// The ALPN protocol of ACME's TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

#[derive(Clone)]
pub struct LiveCertificate {
    resolver: Arc<Resolver>,
}

#[derive(Debug, Default)]
struct Resolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// TLS-ALPN-01 challenge certificates by the name being validated.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let wants_challenge = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if wants_challenge {
            let name = hello.server_name()?.to_ascii_lowercase();
            return read(&self.challenges).get(&name).cloned();
        }
        read(&self.current).clone()
    }
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(|e| e.into_inner()).clone()
}

impl Default for LiveCertificate {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveCertificate {
    /// A handle with no certificate yet: handshakes fail until [`Self::set_pem`] is called.
    pub fn new() -> Self {
        Self {
            resolver: Arc::new(Resolver::default()),
        }
    }

    /// Replaces the certificate for every new handshake; open connections keep theirs.
    pub fn set_pem(&self, chain_pem: &str, key_pem: &str) -> anyhow::Result<()> {
        let key = certified_key(chain_pem, key_pem)?;
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(key));
        Ok(())
    }

    pub fn set_challenge(&self, name: &str, key: CertifiedKey) {
        self.resolver
            .challenges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_ascii_lowercase(), Arc::new(key));
    }

    pub fn clear_challenges(&self) {
        self.resolver
            .challenges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// A TLS 1.2+ server config (rustls' safe defaults, ring) presenting the live certificate and
    /// offering `alpn` (e.g. `[b"h2", b"http/1.1"]`; empty for a protocol without ALPN, like
    /// TURN over TLS).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// Parses a PEM chain (leaf first) and its private key, and checks that they belong together.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> anyhow::Result<CertifiedKey> {
    let chain = parse_chain(chain_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .context("no private key in the PEM key file")?;
    let provider = ring::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider)
        .context("the private key does not match the certificate")?;
    Ok(key)
}

pub fn parse_chain(chain_pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the certificate file is not valid PEM")?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in the PEM file");
    Ok(chain)
}

/// What `cert status` and the renewal schedule need to know about a certificate.
#[derive(Debug, Clone)]
pub struct CertificateInfo {
    pub names: Vec<String>,
    pub issuer: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl CertificateInfo {
    pub fn of(leaf: &CertificateDer<'_>) -> anyhow::Result<Self> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(leaf.as_ref())
            .map_err(|e| anyhow::anyhow!("cannot parse the certificate: {e}"))?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => names.push(match bytes.len() {
                        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*bytes)?).to_string(),
                        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*bytes)?).to_string(),
                        _ => continue,
                    }),
                    _ => {}
                }
            }
        }
        Ok(Self {
            names,
            issuer: cert.issuer().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    pub fn of_pem(chain_pem: &str) -> anyhow::Result<Self> {
        Self::of(&parse_chain(chain_pem)?[0])
    }
}
