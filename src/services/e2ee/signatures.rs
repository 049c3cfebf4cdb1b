//! Checking the ed25519 signatures clients put on their keys: a device on its own identity keys,
//! the master key on the self-signing and user-signing keys, those on devices and other users'
//! master keys. ruma does the canonical JSON and the cryptography.

use ruma::{
    CanonicalJsonObject,
    serde::Base64,
    signatures::{
        SigningKeyAlgorithm, to_canonical_json_string_for_signing, verify_canonical_json_bytes,
    },
};
use serde_json::{Map, Value};

/// Checks the signature `key_id` (`ed25519:<name>`) of `signer` on `object`, made with the
/// ed25519 key `public_key` (unpadded base64). The error says what is wrong, for the client.
pub fn verify(
    object: &Map<String, Value>,
    signer: &str,
    key_id: &str,
    public_key: &str,
) -> Result<(), String> {
    let signature = object
        .get("signatures")
        .and_then(|s| s.get(signer))
        .and_then(|s| s.get(key_id))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("Missing signature {key_id} of {signer}"))?;
    let signature = Base64::<ruma::serde::base64::Standard>::parse(signature)
        .map_err(|_| format!("Signature {key_id} of {signer} is not base64"))?;
    let public_key = Base64::<ruma::serde::base64::Standard>::parse(public_key)
        .map_err(|_| format!("Key {key_id} is not base64"))?;
    let canonical: CanonicalJsonObject = ruma::canonical_json::try_from_json_map(object.clone())
        .map_err(|e| format!("Not canonical JSON: {e}"))?;
    let signed = to_canonical_json_string_for_signing(&canonical)
        .map_err(|e| format!("Not canonical JSON: {e}"))?;
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        public_key.as_bytes(),
        signature.as_bytes(),
        signed.as_bytes(),
    )
    .map_err(|_| format!("Invalid signature {key_id} of {signer}"))
}

/// The single ed25519 key of a cross-signing key object: `(key ID, unpadded base64 key)`.
pub fn single_ed25519_key(object: &Map<String, Value>) -> Option<(String, String)> {
    let keys = object.get("keys")?.as_object()?;
    if keys.len() != 1 {
        return None;
    }
    let (id, key) = keys.iter().next()?;
    let name = id.strip_prefix("ed25519:")?;
    let key = key.as_str()?;
    (name == key).then(|| (id.clone(), key.to_owned()))
}

/// A device's ed25519 identity key, from its uploaded device keys.
pub fn device_ed25519_key(device_keys: &Map<String, Value>, device_id: &str) -> Option<String> {
    device_keys
        .get("keys")?
        .get(format!("ed25519:{device_id}"))?
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use ruma::signatures::Ed25519KeyPair;
    use serde_json::json;

    use super::*;

    fn keypair(name: &str) -> Ed25519KeyPair {
        Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), name.to_owned()).unwrap()
    }

    fn signed(pair: &Ed25519KeyPair, signer: &str, value: Value) -> Map<String, Value> {
        let mut object: CanonicalJsonObject = serde_json::from_value(value).unwrap();
        ruma::signatures::sign_json(signer, pair, &mut object).unwrap();
        serde_json::from_value(serde_json::to_value(object).unwrap()).unwrap()
    }

    #[test]
    fn accepts_a_good_signature_and_refuses_a_tampered_object() {
        let pair = keypair("DEV");
        let public =
            Base64::<ruma::serde::base64::Standard>::new(pair.public_key().to_vec()).encode();
        let mut object = signed(&pair, "@a:x", json!({"user_id": "@a:x", "keys": {}}));
        verify(&object, "@a:x", "ed25519:DEV", &public).unwrap();
        assert!(verify(&object, "@a:x", "ed25519:OTHER", &public).is_err());
        assert!(verify(&object, "@b:x", "ed25519:DEV", &public).is_err());
        object.insert("user_id".into(), json!("@b:x"));
        assert!(verify(&object, "@a:x", "ed25519:DEV", &public).is_err());
    }

    #[test]
    fn unsigned_data_is_not_covered() {
        let pair = keypair("DEV");
        let public =
            Base64::<ruma::serde::base64::Standard>::new(pair.public_key().to_vec()).encode();
        let mut object = signed(&pair, "@a:x", json!({"a": 1}));
        object.insert("unsigned".into(), json!({"device_display_name": "x"}));
        verify(&object, "@a:x", "ed25519:DEV", &public).unwrap();
    }
}
