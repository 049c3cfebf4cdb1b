//! Synapse's `password_config` section: whether passwords are used at all, and the policy every
//! new password must meet (registration, password change, the admin CLI and the setup wizard all
//! check it through `services::passwords::check_policy`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// Log in with passwords (`m.login.password`). When `false`, `/login` offers and accepts no
    /// password login. (Synapse's `only_for_reauth` is not supported.)
    pub enabled: bool,
    /// What a new password must contain. Off by default, as in Synapse; the setup wizard turns it
    /// on with a minimum length of 10.
    pub policy: PasswordPolicy,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            policy: PasswordPolicy::default(),
        }
    }
}

/// Synapse's `password_config.policy`; each rule refused with its own errcode
/// (`M_PASSWORD_TOO_SHORT`, `M_PASSWORD_NO_DIGIT`, …).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordPolicy {
    /// Apply the rules below.
    pub enabled: bool,
    /// The fewest characters (Unicode code points) a password may have.
    pub minimum_length: usize,
    /// At least one digit (0-9).
    pub require_digit: bool,
    /// At least one character that is not an ASCII letter or digit.
    pub require_symbol: bool,
    /// At least one lowercase ASCII letter.
    pub require_lowercase: bool,
    /// At least one uppercase ASCII letter.
    pub require_uppercase: bool,
}

impl PasswordPolicy {
    /// The policy the setup wizard writes on a new box: passphrases welcome, at least 10
    /// characters, no composition rules (they push people to predictable substitutions).
    pub fn wizard() -> Self {
        Self {
            enabled: true,
            minimum_length: 10,
            ..Self::default()
        }
    }
}
