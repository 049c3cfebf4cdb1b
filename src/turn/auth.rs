//! Checks TURN REST credentials (`<expiry>:<user ID>` with an HMAC password) for the `turn`
//! crate. The crate's own `LongTermAuthHandler` takes only a bare number as user name, so the
//! Matrix user names Synapse hands out would all be refused.

use std::{
    net::SocketAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use turn::auth::{AuthHandler, generate_auth_key};

use crate::services::voip::{expiry_of, password_for};

pub struct RestAuth {
    secret: String,
}

impl RestAuth {
    pub fn new(secret: String) -> Self {
        Self { secret }
    }
}

impl AuthHandler for RestAuth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        let Some(expiry) = expiry_of(username) else {
            tracing::debug!(%src_addr, "TURN user name without an expiry refused");
            return Err(turn::Error::Other("malformed user name".to_owned()));
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if expiry < now {
            tracing::debug!(%src_addr, "expired TURN credentials refused");
            return Err(turn::Error::Other("expired credentials".to_owned()));
        }
        // The crate checks MESSAGE-INTEGRITY with this key: a wrong password fails there.
        let password = password_for(&self.secret, username);
        Ok(generate_auth_key(username, realm, &password))
    }
}
