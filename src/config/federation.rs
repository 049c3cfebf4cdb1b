//! Federation's key settings, in Synapse's form: `trusted_key_servers` (notaries) and
//! `old_signing_keys` (keys this server used before, published as `old_verify_keys`).

use std::collections::BTreeMap;

use ruma::{ServerName, serde::Base64};
use serde::{Deserialize, Serialize};

use super::Config;

/// A notary other servers' keys are fetched through when a server cannot be asked itself
/// (Synapse's `trusted_key_servers` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeyServer {
    pub server_name: String,
    /// The notary's keys (key ID -> unpadded base64): its answers must be signed by one of
    /// them. Unset: its keys are fetched from it directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_keys: Option<BTreeMap<String, String>>,
}

/// Synapse's default: matrix.org, whose keys are fetched from it.
pub fn default_trusted_key_servers() -> Vec<TrustedKeyServer> {
    vec![TrustedKeyServer {
        server_name: "matrix.org".to_owned(),
        verify_keys: None,
    }]
}

/// A key this server signed with before (Synapse's `old_signing_keys` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OldSigningKey {
    /// The public key, unpadded base64.
    pub key: String,
    /// When the key stopped being used (ms since the epoch).
    pub expired_ts: u64,
}

pub(super) fn validate(config: &Config) -> Result<(), (&'static str, String)> {
    for notary in &config.trusted_key_servers {
        if <&ServerName>::try_from(notary.server_name.as_str()).is_err() {
            return Err((
                "trusted_key_servers",
                format!("`{}` is not a server name", notary.server_name),
            ));
        }
        for (key_id, key) in notary.verify_keys.iter().flatten() {
            check_key("trusted_key_servers", key_id, key)?;
        }
    }
    for (key_id, old) in &config.old_signing_keys {
        check_key("old_signing_keys", key_id, &old.key)?;
    }
    Ok(())
}

fn check_key(name: &'static str, key_id: &str, key: &str) -> Result<(), (&'static str, String)> {
    if !key_id.starts_with("ed25519:") {
        return Err((name, format!("`{key_id}` is not an ed25519 key ID")));
    }
    match Base64::<ruma::serde::base64::Standard>::parse(key) {
        Ok(decoded) if decoded.as_bytes().len() == 32 => Ok(()),
        _ => Err((
            name,
            format!("the key of `{key_id}` is not a base64 ed25519 public key"),
        )),
    }
}
