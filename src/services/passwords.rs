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

use ruma::api::error::ErrorKind;
use tokio::sync::Semaphore;

use crate::{
    config::PasswordPolicy,
    error::{Error, Result},
};

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

/// Why a new password is refused: Synapse's `password_config.policy` rules, in Synapse's order,
/// plus the two limits that always hold (not empty, at most 512 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyViolation {
    Empty,
    TooLong,
    TooShort(usize),
    NoDigit,
    NoSymbol,
    NoUppercase,
    NoLowercase,
}

impl PolicyViolation {
    /// Synapse's errcode for the rule (`M_WEAK_PASSWORD`, the spec's, for the others).
    pub fn errcode(self) -> &'static str {
        match self {
            Self::Empty => "M_WEAK_PASSWORD",
            Self::TooLong => "M_INVALID_PARAM",
            Self::TooShort(_) => "M_PASSWORD_TOO_SHORT",
            Self::NoDigit => "M_PASSWORD_NO_DIGIT",
            Self::NoSymbol => "M_PASSWORD_NO_SYMBOL",
            Self::NoUppercase => "M_PASSWORD_NO_UPPERCASE",
            Self::NoLowercase => "M_PASSWORD_NO_LOWERCASE",
        }
    }

    /// Synapse's message for the rule.
    pub fn message(self) -> String {
        match self {
            Self::Empty => "The password must not be empty".to_owned(),
            Self::TooLong => "The password is longer than 512 bytes".to_owned(),
            Self::TooShort(n) => format!("The password must be at least {n} characters long"),
            Self::NoDigit => "The password must include at least one digit".to_owned(),
            Self::NoSymbol => "The password must include at least one symbol".to_owned(),
            Self::NoUppercase => {
                "The password must include at least one uppercase letter".to_owned()
            }
            Self::NoLowercase => {
                "The password must include at least one lowercase letter".to_owned()
            }
        }
    }

    /// The setup wizard's catalogue key for the rule.
    pub fn catalogue_key(self) -> &'static str {
        match self {
            Self::Empty | Self::TooLong => "error.password_weak",
            Self::TooShort(_) => "error.password_too_short",
            Self::NoDigit => "error.password_no_digit",
            Self::NoSymbol => "error.password_no_symbol",
            Self::NoUppercase => "error.password_no_uppercase",
            Self::NoLowercase => "error.password_no_lowercase",
        }
    }
}

/// The first rule of `policy` that `password` breaks, or `None`. Synapse checks the same rules
/// with the same character classes (`[0-9]`, `[^a-zA-Z0-9]`, `[A-Z]`, `[a-z]`) and counts
/// characters, not bytes.
pub fn policy_violation(policy: &PasswordPolicy, password: &str) -> Option<PolicyViolation> {
    if password.is_empty() {
        return Some(PolicyViolation::Empty);
    }
    // Never longer than what argon2 hashes in reasonable time, policy or not.
    if password.len() > 512 {
        return Some(PolicyViolation::TooLong);
    }
    if !policy.enabled {
        return None;
    }
    let any = |test: fn(&char) -> bool| password.chars().any(|c| test(&c));
    if password.chars().count() < policy.minimum_length {
        Some(PolicyViolation::TooShort(policy.minimum_length))
    } else if policy.require_digit && !any(char::is_ascii_digit) {
        Some(PolicyViolation::NoDigit)
    } else if policy.require_symbol && !any(|c| !c.is_ascii_alphanumeric()) {
        Some(PolicyViolation::NoSymbol)
    } else if policy.require_uppercase && !any(char::is_ascii_uppercase) {
        Some(PolicyViolation::NoUppercase)
    } else if policy.require_lowercase && !any(char::is_ascii_lowercase) {
        Some(PolicyViolation::NoLowercase)
    } else {
        None
    }
}

/// Checks a new password against the policy: `400` with Synapse's errcode for the rule broken.
/// Every path that sets a password (registration, password change, shared-secret registration,
/// the admin CLI, the setup wizard) goes through this.
pub fn check_policy(policy: &PasswordPolicy, password: &str) -> Result<()> {
    let Some(violation) = policy_violation(policy, password) else {
        return Ok(());
    };
    let kind = match violation {
        PolicyViolation::Empty => ErrorKind::WeakPassword,
        PolicyViolation::TooLong => ErrorKind::InvalidParam,
        // Synapse's own errcodes, which ruma has no variants for.
        other => serde_json::from_value(serde_json::json!({"errcode": other.errcode()}))
            .unwrap_or(ErrorKind::WeakPassword),
    };
    Err(Error::new(
        http::StatusCode::BAD_REQUEST,
        kind,
        violation.message(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_checks_synapses_rules_in_synapses_order() {
        let off = PasswordPolicy::default();
        assert_eq!(policy_violation(&off, "a"), None, "Synapse's default: any");
        assert_eq!(policy_violation(&off, ""), Some(PolicyViolation::Empty));
        assert_eq!(
            policy_violation(&off, &"x".repeat(513)),
            Some(PolicyViolation::TooLong)
        );
        let all = PasswordPolicy {
            enabled: true,
            minimum_length: 8,
            require_digit: true,
            require_symbol: true,
            require_lowercase: true,
            require_uppercase: true,
        };
        // Characters, not bytes: 7 Cyrillic letters are 14 bytes.
        assert_eq!(
            policy_violation(&all, "пароль1"),
            Some(PolicyViolation::TooShort(8))
        );
        assert_eq!(
            policy_violation(&all, "abcdefgh"),
            Some(PolicyViolation::NoDigit)
        );
        assert_eq!(
            policy_violation(&all, "abcdefg1"),
            Some(PolicyViolation::NoSymbol)
        );
        assert_eq!(
            policy_violation(&all, "abcdef1!"),
            Some(PolicyViolation::NoUppercase)
        );
        assert_eq!(
            policy_violation(&all, "ABCDEF1!"),
            Some(PolicyViolation::NoLowercase)
        );
        assert_eq!(policy_violation(&all, "Abcdef1!"), None);
        let Err(Error::Matrix { kind, status, .. }) = check_policy(&all, "abcdefgh") else {
            panic!("refused");
        };
        assert_eq!(status, http::StatusCode::BAD_REQUEST);
        assert_eq!(kind.errcode().to_string(), "M_PASSWORD_NO_DIGIT");
    }

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
