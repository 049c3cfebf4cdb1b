//! Synapse's shared-secret registration (`/_synapse/admin/v1/register`), so that tools such as
//! `register_new_matrix_user` work against the appliance: a one-time nonce, then an HMAC-SHA1 over
//! `nonce NUL username NUL password NUL admin|notadmin` keyed with `registration_shared_secret`.
//!
//! Synapse hands out nonces to anyone without limit and keeps each for a minute, so a client
//! asking in a loop grows its memory without bound. Here nonces are limited per client address
//! (with `rc_registration`'s values, in a bucket of their own) and at most `MAX_NONCES` are
//! kept: past that the oldest is forgotten (a real client spends its nonce within a second).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::{
    config::RateLimit,
    error::{Error, Result},
    services::rate_limit::RateLimiter,
};

const NONCE_LIFETIME: Duration = Duration::from_secs(60);

/// Most nonces kept at once.
const MAX_NONCES: usize = 1024;

pub struct SharedSecretRegistration {
    secret: Option<String>,
    nonces: Mutex<HashMap<String, Instant>>,
    /// Nonces handed out per client address.
    per_address: RateLimiter<IpAddr>,
}

impl SharedSecretRegistration {
    pub fn new(secret: Option<String>, per_address: RateLimit) -> Self {
        Self {
            secret,
            nonces: Mutex::new(HashMap::new()),
            per_address: RateLimiter::new(per_address),
        }
    }

    fn secret(&self) -> Result<&str> {
        self.secret
            .as_deref()
            .ok_or_else(|| Error::bad_json("Shared secret registration is not enabled"))
    }

    /// A new single-use nonce for `client`, valid for a minute; `M_LIMIT_EXCEEDED` when that
    /// address asked too often.
    pub fn new_nonce(&self, client: IpAddr) -> Result<String> {
        self.secret()?;
        self.per_address.take(&client)?;
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        nonces.retain(|_, issued| issued.elapsed() < NONCE_LIFETIME);
        if nonces.len() >= MAX_NONCES
            && let Some(oldest) = nonces
                .iter()
                .min_by_key(|(_, issued)| **issued)
                .map(|(nonce, _)| nonce.clone())
        {
            nonces.remove(&oldest);
        }
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

    const GENEROUS: RateLimit = RateLimit {
        per_second: 1000.0,
        burst_count: 1000.0,
    };

    fn client(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn accepts_synapse_style_mac_once() {
        let registration = SharedSecretRegistration::new(Some("s3cret".into()), GENEROUS);
        let nonce = registration.new_nonce(client(1)).unwrap();
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
        let registration = SharedSecretRegistration::new(Some("s3cret".into()), GENEROUS);
        let nonce = registration.new_nonce(client(1)).unwrap();
        let forged = mac("guess", format!("{nonce}\0alice\0pw\0admin").as_bytes());
        assert!(
            registration
                .verify(&nonce, "alice", "pw", true, &forged)
                .is_err()
        );
    }

    #[test]
    fn nonces_are_limited_per_address() {
        let registration = SharedSecretRegistration::new(
            Some("s3cret".into()),
            RateLimit {
                per_second: 0.01,
                burst_count: 2.0,
            },
        );
        registration.new_nonce(client(1)).unwrap();
        registration.new_nonce(client(1)).unwrap();
        let refused = registration.new_nonce(client(1)).unwrap_err();
        assert!(
            refused.to_string().contains("M_LIMIT_EXCEEDED"),
            "{refused}"
        );
        registration
            .new_nonce(client(2))
            .expect("another address is not affected");
    }

    #[test]
    fn at_most_max_nonces_are_kept_and_the_newest_stay_valid() {
        let registration = SharedSecretRegistration::new(Some("s3cret".into()), GENEROUS);
        let first = registration.new_nonce(client(0)).unwrap();
        let mut last = String::new();
        for n in 1..=(MAX_NONCES as u32 + 10) {
            last = registration.new_nonce(client(n)).unwrap();
        }
        assert_eq!(registration.nonces.lock().unwrap().len(), MAX_NONCES);
        let mac_for =
            |nonce: &str| mac("s3cret", format!("{nonce}\0alice\0pw\0notadmin").as_bytes());
        assert!(
            registration
                .verify(&first, "alice", "pw", false, &mac_for(&first))
                .is_err(),
            "the oldest nonce was forgotten"
        );
        registration
            .verify(&last, "alice", "pw", false, &mac_for(&last))
            .expect("the newest nonce works");
    }
}
