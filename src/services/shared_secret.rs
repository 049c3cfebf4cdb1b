//! Synapse's shared-secret registration (`/_synapse/admin/v1/register`), so that tools such as
//! `register_new_matrix_user` work against the appliance: a one-time nonce, then an HMAC-SHA1 over
//! `nonce NUL username NUL password NUL admin|notadmin` keyed with `registration_shared_secret`.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::error::{Error, Result};

const NONCE_LIFETIME: Duration = Duration::from_secs(60);

pub struct SharedSecretRegistration {
    secret: Option<String>,
    nonces: Mutex<HashMap<String, Instant>>,
}

impl SharedSecretRegistration {
    pub fn new(secret: Option<String>) -> Self {
        Self {
            secret,
            nonces: Mutex::new(HashMap::new()),
        }
    }

    fn secret(&self) -> Result<&str> {
        self.secret
            .as_deref()
            .ok_or_else(|| Error::bad_json("Shared secret registration is not enabled"))
    }

    pub fn new_nonce(&self) -> Result<String> {
        self.secret()?;
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        nonces.retain(|_, issued| issued.elapsed() < NONCE_LIFETIME);
        nonces.insert(nonce.clone(), Instant::now());
        Ok(nonce)
    }

    /// Spends the nonce and checks the MAC in constant time.
    pub fn verify(
        &self,
        nonce: &str,
        username: &str,
        password: &str,
        admin: bool,
        mac_hex: &str,
    ) -> Result<()> {
        let secret = self.secret()?;
        let issued = self
            .nonces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(nonce);
        if issued.is_none_or(|issued| issued.elapsed() >= NONCE_LIFETIME) {
            return Err(Error::invalid_param("Unrecognised nonce"));
        }
        let mac =
            hex::decode(mac_hex).map_err(|_| Error::invalid_param("The mac is not hexadecimal"))?;
        let mut expected =
            Hmac::<Sha1>::new_from_slice(secret.as_bytes()).map_err(Error::internal)?;
        for (i, part) in [
            nonce,
            username,
            password,
            if admin { "admin" } else { "notadmin" },
        ]
        .iter()
        .enumerate()
        {
            if i > 0 {
                expected.update(b"\x00");
            }
            expected.update(part.as_bytes());
        }
        expected
            .verify_slice(&mac)
            .map_err(|_| Error::forbidden("HMAC incorrect"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(secret: &str, message: &[u8]) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(message);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn accepts_synapse_style_mac_once() {
        let registration = SharedSecretRegistration::new(Some("s3cret".into()));
        let nonce = registration.new_nonce().unwrap();
        let good = mac("s3cret", format!("{nonce}\0alice\0pw\0admin").as_bytes());
        registration
            .verify(&nonce, "alice", "pw", true, &good)
            .unwrap();
        assert!(
            registration
                .verify(&nonce, "alice", "pw", true, &good)
                .is_err(),
            "a nonce is single-use"
        );
    }

    #[test]
    fn refuses_a_wrong_mac() {
        let registration = SharedSecretRegistration::new(Some("s3cret".into()));
        let nonce = registration.new_nonce().unwrap();
        let forged = mac("guess", format!("{nonce}\0alice\0pw\0admin").as_bytes());
        assert!(
            registration
                .verify(&nonce, "alice", "pw", true, &forged)
                .is_err()
        );
    }
}
