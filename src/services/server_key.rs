//! The server's ed25519 signing key: made on first start, kept in the data directory (0600), and
//! published signed at `/_matrix/key/v2/server` so that federation comes without a migration.

use std::{
    collections::BTreeMap,
    fs,
    io::ErrorKind,
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{Context, bail};
use base64::{
    Engine, engine::general_purpose::STANDARD as BASE64,
    engine::general_purpose::STANDARD_NO_PAD as BASE64_UNPADDED,
};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, serde::Raw,
    signatures::Ed25519KeyPair,
};

use crate::config::{federation::OldSigningKey, write::write_atomically};

pub const SIGNING_KEY_FILE: &str = "signing.key";

/// How long other servers may cache our published key.
const KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct ServerKey {
    server_name: OwnedServerName,
    key_pair: Ed25519KeyPair,
    /// `old_signing_keys`: published as `old_verify_keys`.
    old_keys: BTreeMap<String, OldSigningKey>,
}

impl ServerKey {
    /// The file holds one line: `ed25519 <version> <base64 PKCS#8 document>`.
    pub fn load_or_create(data_dir: &Path, server_name: &OwnedServerName) -> anyhow::Result<Self> {
        let path = data_dir.join(SIGNING_KEY_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let document = Ed25519KeyPair::generate();
                let version = format!("a_{}", &hex::encode(rand::random::<[u8; 2]>()));
                let line = format!("ed25519 {version} {}\n", BASE64.encode(&*document));
                write_atomically(&path, line.as_bytes(), 0o600)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                tracing::info!(key_id = %format!("ed25519:{version}"), "made a new server signing key");
                line
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut parts = text.split_whitespace();
        let (Some("ed25519"), Some(version), Some(document), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bail!(
                "{} is not a signing key file (expected `ed25519 <version> <key>`)",
                path.display()
            );
        };
        let document = BASE64
            .decode(document)
            .with_context(|| format!("{}: bad base64", path.display()))?;
        let key_pair = Ed25519KeyPair::from_der(&document, version.to_owned())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Self {
            server_name: server_name.clone(),
            key_pair,
            old_keys: BTreeMap::new(),
        })
    }

    /// The keys this server used before (Synapse's `old_signing_keys`), for `old_verify_keys`.
    pub fn with_old_keys(mut self, old_keys: BTreeMap<String, OldSigningKey>) -> Self {
        // The current key is never an old one.
        let current = self.key_id();
        self.old_keys = old_keys;
        self.old_keys.remove(&current);
        self
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.server_name
    }

    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.key_pair.version())
    }

    pub fn public_key_base64(&self) -> String {
        BASE64_UNPADDED.encode(self.key_pair.public_key())
    }

    /// Signs a JSON object in place, as this server.
    pub fn sign_json(
        &self,
        object: &mut CanonicalJsonObject,
    ) -> Result<(), ruma::signatures::JsonError> {
        ruma::signatures::sign_json(self.server_name.as_str(), &self.key_pair, object)
    }

    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.key_pair
    }

    /// The body of `GET /_matrix/key/v2/server`, signed.
    pub fn signed_server_keys<T>(&self) -> anyhow::Result<Raw<T>> {
        let valid_until = SystemTime::now() + KEY_VALIDITY;
        let valid_until_ms = valid_until
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_millis() as i64;
        let mut verify_key = CanonicalJsonObject::new();
        verify_key.insert(
            "key".into(),
            CanonicalJsonValue::String(self.public_key_base64()),
        );
        let mut verify_keys = CanonicalJsonObject::new();
        verify_keys.insert(self.key_id(), CanonicalJsonValue::Object(verify_key));
        let mut object = CanonicalJsonObject::new();
        object.insert(
            "server_name".into(),
            CanonicalJsonValue::String(self.server_name.to_string()),
        );
        object.insert(
            "verify_keys".into(),
            CanonicalJsonValue::Object(verify_keys),
        );
        let mut old_verify_keys = CanonicalJsonObject::new();
        for (key_id, old) in &self.old_keys {
            let mut entry = CanonicalJsonObject::new();
            entry.insert("key".into(), CanonicalJsonValue::String(old.key.clone()));
            entry.insert(
                "expired_ts".into(),
                CanonicalJsonValue::Integer(i64::try_from(old.expired_ts)?.try_into()?),
            );
            old_verify_keys.insert(key_id.clone(), CanonicalJsonValue::Object(entry));
        }
        object.insert(
            "old_verify_keys".into(),
            CanonicalJsonValue::Object(old_verify_keys),
        );
        object.insert(
            "valid_until_ts".into(),
            CanonicalJsonValue::Integer(valid_until_ms.try_into()?),
        );
        self.sign_json(&mut object)?;
        Ok(Raw::from_json(serde_json::value::to_raw_value(&object)?))
    }
}
