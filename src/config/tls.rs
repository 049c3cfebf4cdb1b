//! Where the certificate of the TLS listeners comes from: an ACME CA (Let's Encrypt by default),
//! PEM files the operator manages, or a self-signed certificate made at first start.
//!
//! The file keys are Synapse's (`tls_certificate_path`, `tls_private_key_path`); the `acme`
//! section revives the one Synapse had before 1.0, with the same `enabled`, `url`, `domain`-style
//! and `reprovision_threshold` meanings, extended for what a modern ACME client needs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Synapse's (pre-1.0) `acme` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// Get and renew the certificate of the TLS listeners from the ACME CA at `url`.
    pub enabled: bool,
    /// The ACME directory URL: Let's Encrypt production (the default), its staging directory,
    /// or any other ACME CA.
    pub url: String,
    /// Contact e-mail address given to the CA for expiry and policy notices.
    pub contact_email: Option<String>,
    /// The CA's terms of service must be accepted before an account can be made.
    pub accept_terms_of_service: bool,
    /// Names on the certificate. Empty means every name this box serves: the host of
    /// `public_baseurl`, `element.host`, and `server_name` when `serve_server_wellknown` is on.
    pub domains: Vec<String>,
    /// How the CA checks that this box holds the names: `http-01` (port 80 must be reachable)
    /// or `tls-alpn-01` (port 443 only).
    pub challenge: AcmeChallenge,
    /// Renew when less than this is left on the certificate. Unset means when a third of its
    /// lifetime is left (or when the CA's renewal information says).
    pub reprovision_threshold: Option<super::Duration>,
    /// Extra PEM root certificates to trust when talking to the ACME directory over HTTPS
    /// (a private CA, or Pebble in the tests).
    pub directory_ca_path: Option<PathBuf>,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: LETS_ENCRYPT_PRODUCTION.to_owned(),
            contact_email: None,
            accept_terms_of_service: false,
            domains: Vec::new(),
            challenge: AcmeChallenge::Http01,
            reprovision_threshold: None,
            directory_ca_path: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AcmeChallenge {
    #[serde(rename = "http-01")]
    Http01,
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}
