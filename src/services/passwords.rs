//! Password hashing with argon2id (RustCrypto's `argon2`, default OWASP parameters). Hashing is
//! slow on purpose, so it runs on a blocking thread.

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};

use crate::error::{Error, Result};

pub async fn hash(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| Error::internal(format!("password hashing failed: {e}")))
    })
    .await
    .map_err(Error::internal)?
}

/// `false` for a wrong password, and for a missing or unreadable hash.
pub async fn verify(password: String, hash: Option<String>) -> bool {
    let Some(hash) = hash else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// Synapse accepts any non-empty password by default; so do we, but a password is never longer
/// than what argon2 hashes in reasonable time.
pub fn check_policy(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::WeakPassword,
            "The password must not be empty",
        ));
    }
    if password.len() > 512 {
        return Err(Error::invalid_param(
            "The password is longer than 512 bytes",
        ));
    }
    Ok(())
}
