//! TURN credentials for voice and video calls, in the "TURN REST API" scheme that Synapse and
//! coturn share: user name `<expiry>:<user ID>`, password `base64(HMAC-SHA1(secret, user name))`.
//! The built-in relay checks them with [`password_for`]; an external coturn with
//! `use-auth-secret` and the same secret checks them the same way.
//! `/voip/turnServer` hands out these credentials; the secret is `turn_shared_secret`, or one
//! generated into the data directory ([`SECRET_FILE`]) when the relay is on and the config has
//! none.

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::config::Config;

/// The generated secret's file in the data directory, when the relay is on and the config has
/// no `turn_shared_secret`.
pub const SECRET_FILE: &str = "turn_shared_secret";

/// What `/voip/turnServer` hands out.
pub struct TurnCredentials {
    pub username: String,
    pub password: String,
    pub uris: Vec<String>,
    pub ttl: Duration,
}

pub struct Voip {
    uris: Vec<String>,
    secret: Option<String>,
    lifetime: Duration,
    allow_guests: bool,
}

impl Voip {
    /// Reads (or, for the built-in relay, makes) the shared secret and works out the URIs.
    pub fn new(config: &Config, data_dir: &Path) -> anyhow::Result<Self> {
        let secret = match &config.turn_shared_secret {
            Some(secret) => Some(secret.clone()),
            None if config.turn_relay_enabled => Some(load_or_create_secret(data_dir)?),
            None => None,
        };
        let uris = if config.turn_uris.is_empty() && config.turn_relay_enabled {
            relay_uris(config)
        } else {
            config.turn_uris.clone()
        };
        Ok(Self {
            uris,
            secret,
            lifetime: config.turn_user_lifetime.0,
            allow_guests: config.turn_allow_guests,
        })
    }

    /// The secret the built-in relay checks passwords with.
    pub fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    /// Credentials for `user_id`, or `None` when no TURN server is configured (Synapse then
    /// answers `{}`). `Err` means the user may not have any (a guest, with `turn_allow_guests`
    /// off).
    pub fn credentials(
        &self,
        user_id: &str,
        is_guest: bool,
    ) -> Result<Option<TurnCredentials>, GuestRefused> {
        if is_guest && !self.allow_guests {
            return Err(GuestRefused);
        }
        let Some(secret) = &self.secret else {
            return Ok(None);
        };
        if self.uris.is_empty() {
            return Ok(None);
        }
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(self.lifetime)
            .as_secs();
        let username = format!("{expiry}:{user_id}");
        let password = password_for(secret, &username);
        Ok(Some(TurnCredentials {
            username,
            password,
            uris: self.uris.clone(),
            ttl: self.lifetime,
        }))
    }
}

#[derive(Debug)]
pub struct GuestRefused;

/// `base64(HMAC-SHA1(secret, username))`, as coturn's `use-auth-secret` computes it.
pub fn password_for(secret: &str, username: &str) -> String {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The expiry (Unix seconds) a TURN REST user name carries: the part before the first `:`, or
/// the whole name.
pub fn expiry_of(username: &str) -> Option<u64> {
    let stamp = username
        .split_once(':')
        .map_or(username, |(stamp, _)| stamp);
    stamp.parse().ok()
}

/// `turn:`, `turn:?transport=tcp` and `turns:` URIs on the host of `public_baseurl`.
fn relay_uris(config: &Config) -> Vec<String> {
    let host = public_host(config);
    let port = config.turn_listen_port;
    let mut uris = vec![
        format!("turn:{host}:{port}?transport=udp"),
        format!("turn:{host}:{port}?transport=tcp"),
    ];
    if let Some(tls_port) = config.turn_tls_port {
        uris.push(format!("turns:{host}:{tls_port}?transport=tcp"));
    }
    uris
}

/// The host name of `public_baseurl` (without port), or of `server_name`.
fn public_host(config: &Config) -> String {
    let authority = match &config.public_baseurl {
        Some(url) => url
            .split_once("://")
            .map_or(url.as_str(), |(_, rest)| rest)
            .split(['/', '?', '#'])
            .next()
            .unwrap_or_default()
            .to_owned(),
        None => config.server_name.clone(),
    };
    strip_port(&authority).to_owned()
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        // An IPv6 literal keeps its brackets, as URIs need them.
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(authority, |(host, _)| host)
}

fn load_or_create_secret(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok(secret.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    crate::config::write::write_atomically(&path, secret.as_bytes(), 0o600)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_coturns_hmac() {
        // coturn: echo -n "1700000000:@alice:example.org" | openssl dgst -sha1 -hmac secret -binary | base64
        assert_eq!(
            password_for("secret", "1700000000:@alice:example.org"),
            "g/l/t/tR2Emj7Ax0fkxwtp3GUrQ="
        );
        assert_eq!(
            expiry_of("1700000000:@alice:example.org"),
            Some(1_700_000_000)
        );
        assert_eq!(expiry_of("1700000000"), Some(1_700_000_000));
        assert_eq!(expiry_of("alice"), None);
    }

    #[test]
    fn uris_follow_the_public_host() {
        let config = Config {
            public_baseurl: Some("https://matrix.example.org:8448/".to_owned()),
            turn_relay_enabled: true,
            ..Config::default()
        };
        assert_eq!(
            relay_uris(&config),
            [
                "turn:matrix.example.org:3478?transport=udp",
                "turn:matrix.example.org:3478?transport=tcp",
                "turns:matrix.example.org:5349?transport=tcp"
            ]
        );
        assert_eq!(strip_port("[2001:db8::1]:443"), "[2001:db8::1]");
        assert_eq!(strip_port("localhost"), "localhost");
    }
}
