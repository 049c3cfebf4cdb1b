//! Talking to other servers: finding them (`resolve`), the HTTPS client that reaches them
//! (`client`), and the check of a server's signing keys that `appliance admin federation check`
//! runs.

pub mod backfill;
pub mod client;
pub mod inbound;
pub mod invites;
pub mod joins;
pub mod keys;
pub mod knocks;
pub mod leaves;
pub mod member_state;
pub mod pdu;
pub mod resolve;
pub mod sender;
pub mod serve;
pub mod timestamp;

use std::collections::BTreeMap;

use ruma::{CanonicalJsonObject, CanonicalJsonValue, ServerName, serde::Base64};

use client::{FederationClient, Response};

/// A `/_matrix/key/v2/server` answer is small; Synapse's limit for it.
const KEYS_MAX_BYTES: usize = 1024 * 1024;

/// What `check_server_keys` found.
pub struct KeyCheck {
    pub response: Response,
    /// (key ID, unpadded base64 public key) of `verify_keys`.
    pub keys: Vec<(String, String)>,
    pub valid_until_ts: u64,
}

/// Fetches `/_matrix/key/v2/server` of `server_name` as another server would, and checks it:
/// about that server, signed by it with a key it lists, still valid.
pub async fn check_server_keys(
    client: &FederationClient,
    server_name: &ServerName,
    now_ms: u64,
) -> Result<KeyCheck, String> {
    let response = client
        .get(server_name, "/_matrix/key/v2/server", KEYS_MAX_BYTES)
        .await?;
    if response.status != 200 {
        return Err(format!("the server answered HTTP {}", response.status));
    }
    let object: CanonicalJsonObject = serde_json::from_slice(&response.body)
        .map_err(|e| format!("the answer is not canonical JSON: {e}"))?;
    match object.get("server_name") {
        Some(CanonicalJsonValue::String(name)) if name == server_name.as_str() => {}
        other => {
            return Err(format!(
                "the keys are for {}, not {server_name}",
                other.map_or("no server".to_owned(), |v| v.to_string())
            ));
        }
    }
    let Some(CanonicalJsonValue::Object(verify_keys)) = object.get("verify_keys") else {
        return Err("the answer has no `verify_keys`".to_owned());
    };
    let mut keys = Vec::new();
    let mut public_keys = BTreeMap::new();
    for (key_id, key) in verify_keys {
        let Some(CanonicalJsonValue::String(text)) = key.as_object().and_then(|k| k.get("key"))
        else {
            return Err(format!("verify key {key_id} has no `key`"));
        };
        let decoded =
            Base64::parse(text).map_err(|e| format!("verify key {key_id} is not base64: {e}"))?;
        public_keys.insert(key_id.clone(), decoded);
        keys.push((key_id.clone(), text.clone()));
    }
    // ruma checks one signature per signing server: require the server's own among them.
    let signed_by_itself = object
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
        .is_some_and(|signatures| signatures.contains_key(server_name.as_str()));
    if !signed_by_itself {
        return Err(format!("the keys are not signed by {server_name}"));
    }
    let key_map = BTreeMap::from([(server_name.to_string(), public_keys)]);
    ruma::signatures::verify_json(&key_map, &object)
        .map_err(|e| format!("the self-signature does not verify: {e}"))?;
    let valid_until_ts = match object.get("valid_until_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
        _ => return Err("the answer has no `valid_until_ts`".to_owned()),
    };
    if valid_until_ts <= now_ms {
        return Err(format!(
            "the keys expired (valid_until_ts {valid_until_ts} is in the past)"
        ));
    }
    Ok(KeyCheck {
        response,
        keys,
        valid_until_ts,
    })
}
