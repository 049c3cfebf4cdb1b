//! Answers to the CA's challenges while an order is open: HTTP-01 key authorizations served
//! under `/.well-known/acme-challenge/` on the plain-HTTP listener, and TLS-ALPN-01 certificates
//! presented to `acme-tls/1` handshakes by the TLS resolver.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use rustls::{crypto::ring, pki_types::PrivateKeyDer, sign::CertifiedKey};

/// HTTP-01 tokens and their key authorizations; shared with the `acme` listeners' router.
#[derive(Clone, Default)]
pub struct Http01Answers(Arc<RwLock<HashMap<String, String>>>);

impl Http01Answers {
    pub fn get(&self, token: &str) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    pub fn insert(&self, token: String, key_authorization: String) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, key_authorization);
    }

    pub fn clear(&self) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The self-signed certificate for `name` carrying the `acmeIdentifier` extension (RFC 8737).
pub fn tls_alpn_certificate(name: &str, digest: &[u8]) -> anyhow::Result<CertifiedKey> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let certificate = params.self_signed(&key)?;
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(anyhow::Error::msg)?;
    // Not `CertifiedKey::from_der`: its key check parses the certificate with webpki, which
    // refuses the critical `acmeIdentifier` extension. The pair is ours, made just above.
    let signing_key = ring::default_provider()
        .key_provider
        .load_private_key(key_der)?;
    Ok(CertifiedKey::new(
        vec![certificate.der().clone()],
        signing_key,
    ))
}
