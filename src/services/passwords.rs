//! Password hashing with argon2id (RustCrypto's `argon2`, default OWASP parameters). Hashing is
//! slow on purpose, so it runs on a blocking thread; and it takes 19 MiB of memory per hash, so
//! at most one hash per core runs at a time: a burst of logins queues instead of multiplying the
//! process's memory (and the allocator keeping it afterwards).

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};

use std::sync::LazyLock;

use tokio::sync::Semaphore;

use crate::error::{Error, Result};

static HASHING_SLOTS: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));

/// Runs one argon2 computation when a slot is free.
async fn with_slot<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let _slot = HASHING_SLOTS.acquire().await.ok()?;
    tokio::task::spawn_blocking(work).await.ok()
}

pub async fn hash(password: String) -> Result<String> {
    with_slot(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| Error::internal(format!("password hashing failed: {e}")))
    })
    .await
    .ok_or_else(|| Error::internal("password hashing was cancelled"))?
}

/// `false` for a wrong password, and for a missing or unreadable hash.
pub async fn verify(password: String, hash: Option<String>) -> bool {
    let Some(hash) = hash else {
        return false;
    };
    with_slot(move || {
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
