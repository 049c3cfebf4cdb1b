//! Password hashing with argon2id (RustCrypto's `argon2`). Hashing is slow on purpose, so it
//! runs on a blocking thread, and one hash runs at a time: a burst of logins queues instead of
//! multiplying the process's memory by the number of cores, and a flood of guesses from many
//! addresses (each within its rate limit) can keep at most one core busy, never the whole box.
//! Logins are rare on a personal server and a hash takes about 15 ms on a desktop core, so the
//! queue stays short.
//!
//! The parameters are the low-memory end of OWASP's argon2id recommendations (m = 7 MiB, t = 5,
//! p = 1), which OWASP rates as strong as its 19 MiB / t = 2 setting: the same work, in a third
//! of the memory: 7 MiB held while someone logs in instead of 19. Each stored hash carries its own parameters (PHC string), so hashes
//! made with other settings (the crate's defaults, used before) keep verifying.

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};

use tokio::sync::Semaphore;

use crate::error::{Error, Result};

static HASHING_SLOTS: Semaphore = Semaphore::const_new(1);

/// Memory in KiB, passes and lanes of new hashes (see the module's doc).
const MEMORY_KIB: u32 = 7 * 1024;
const PASSES: u32 = 5;
const LANES: u32 = 1;

fn hasher() -> Result<Argon2<'static>> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None)
        .map_err(|e| Error::internal(format!("argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Runs one argon2 computation when a slot is free.
async fn with_slot<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let _slot = HASHING_SLOTS.acquire().await.ok()?;
    tokio::task::spawn_blocking(|| {
        // Freed memory goes back before the hash takes its 7 MiB, so the two do not add up.
        crate::allocator::release_free_memory();
        work()
    })
    .await
    .ok()
}

pub async fn hash(password: String) -> Result<String> {
    with_slot(move || {
        hasher()?
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
        // Verification takes the parameters from the stored hash.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn new_hashes_use_the_low_memory_parameters() {
        let hash = hash("correct horse".to_owned()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{hash}");
        assert!(verify("correct horse".to_owned(), Some(hash.clone())).await);
        assert!(!verify("wrong horse".to_owned(), Some(hash)).await);
    }

    #[tokio::test]
    async fn hashes_made_with_the_old_defaults_still_verify() {
        let old = Argon2::default()
            .hash_password(b"battery staple")
            .expect("hash")
            .to_string();
        assert!(old.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{old}");
        assert!(verify("battery staple".to_owned(), Some(old.clone())).await);
        assert!(!verify("battery stapler".to_owned(), Some(old)).await);
        assert!(!verify("battery staple".to_owned(), Some("not a hash".to_owned())).await);
        assert!(!verify("battery staple".to_owned(), None).await);
    }
}
