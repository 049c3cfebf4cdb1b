//! Cross-signing: a user's master, self-signing and user-signing keys
//! (`/keys/device_signing/upload`) and the signatures made with them or with devices
//! (`/keys/signatures/upload`). Every signature is checked before it is stored.
//!
//! The self-signing and user-signing keys must be signed by the master key; an upload needs
//! user-interactive auth unless the user has no master key yet or re-uploads the stored keys.
//! Signatures: of a device by the self-signing key, of the own master key by a device, of another
//! user's master key by the user-signing key; each verified with ruma (`signatures.rs`). Another
//! server's user's master key is checked against our cache of their device list; such a
//! signature stays here, visible to the signer alone (the spec and Synapse send it nowhere).

use std::collections::BTreeMap;

use http::StatusCode;
use ruma::{
    OwnedUserId, UserId,
    api::{
        client::{
            keys::upload_signatures::v3::{Failure, SignedKeys},
            uiaa::{AuthData, AuthFlow, AuthType},
        },
        error::ErrorKind,
    },
    encryption::CrossSigningKey,
    serde::Raw,
};
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::{invalid_signature, object, signatures, signed_part};
use crate::{
    error::{Error, Result},
    services::{Services, json_depth, sessions::Identity},
    storage::{
        e2ee_keys::{self as store, SignatureRow},
        remote_e2ee as remote_store,
    },
};

/// What `/keys/device_signing/upload` carries.
pub struct SigningKeys {
    pub auth: Option<AuthData>,
    pub master: Option<Raw<CrossSigningKey>>,
    pub self_signing: Option<Raw<CrossSigningKey>>,
    pub user_signing: Option<Raw<CrossSigningKey>>,
    /// The request, for the UIA session it may start or complete.
    pub operation: crate::services::uiaa::Operation,
}

/// A checked cross-signing key ready to store.
struct NewKey {
    key_type: &'static str,
    key_id: String,
    public_key: String,
    object: Map<String, Value>,
}

/// Stores new cross-signing keys. The password is asked (user-interactive auth) unless the
/// user has no master key yet, as the spec allows for the first upload, or re-uploads exactly the
/// keys stored.
pub async fn upload_signing_keys(
    services: &Services,
    identity: &Identity,
    upload: SigningKeys,
) -> Result<()> {
    let user = identity.user_id.clone();
    let new_keys: Vec<NewKey> = [
        ("master", &upload.master),
        ("self_signing", &upload.self_signing),
        ("user_signing", &upload.user_signing),
    ]
    .into_iter()
    .filter_map(|(key_type, raw)| raw.as_ref().map(|raw| checked_key(raw, key_type, &user)))
    .collect::<Result<_>>()?;
    if new_keys.is_empty() {
        return Ok(());
    }

    let user_str = user.to_string();
    let stored = services
        .db
        .read(move |c| {
            ["master", "self_signing", "user_signing"]
                .into_iter()
                .map(|key_type| Ok((key_type, store::cross_signing_key(c, &user_str, key_type)?)))
                .collect::<rusqlite::Result<BTreeMap<_, _>>>()
        })
        .await?;
    let has_master = stored.get("master").is_some_and(Option::is_some);
    let unchanged = new_keys.iter().all(|key| {
        stored
            .get(key.key_type)
            .and_then(Option::as_ref)
            .is_some_and(|stored| {
                serde_json::from_str::<Map<String, Value>>(&stored.key_json)
                    .ok()
                    .as_ref()
                    == Some(&key.object)
            })
    });
    if has_master && unchanged {
        return Ok(());
    }
    if has_master {
        let flows = vec![AuthFlow::new(vec![AuthType::Password])];
        services
            .uiaa
            .authenticate(
                services,
                upload.auth.as_ref(),
                &flows,
                Some(&user),
                &upload.operation,
            )
            .await?;
    }

    // The self-signing and user-signing keys must be signed by the master key in force after
    // this upload.
    let master = match new_keys.iter().find(|k| k.key_type == "master") {
        Some(key) => Some((key.key_id.clone(), key.public_key.clone())),
        None => stored
            .get("master")
            .and_then(Option::as_ref)
            .map(|key| &key.public_key)
            .map(|public| (format!("ed25519:{public}"), public.clone())),
    };
    for key in new_keys.iter().filter(|k| k.key_type != "master") {
        let Some((master_id, master_public)) = &master else {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::MissingParam,
                "No master key available",
            ));
        };
        signatures::verify(&key.object, user.as_str(), master_id, master_public)
            .map_err(|why| invalid_signature(format!("The {} key: {why}", key.key_type)))?;
    }

    let user_str = user.to_string();
    let position = services
        .db
        .write(move |tx| {
            for key in &new_keys {
                if let Some(old) = store::cross_signing_key(tx, &user_str, key.key_type)?
                    && old.public_key != key.public_key
                {
                    store::delete_signatures_involving(tx, &user_str, &old.public_key)?;
                }
                let json = serde_json::to_string(&key.object).map_err(Error::internal)?;
                store::put_cross_signing_key(tx, &user_str, key.key_type, &key.public_key, &json)?;
            }
            Ok::<_, Error>(store::record_device_list_change(tx, &user_str, None, None)?)
        })
        .await?;
    services.rooms.notify(position);
    Ok(())
}

fn checked_key(
    raw: &Raw<CrossSigningKey>,
    key_type: &'static str,
    user: &UserId,
) -> Result<NewKey> {
    json_depth::check_text(&format!("The {key_type} key"), raw.json().get())?;
    let parsed: CrossSigningKey = raw
        .deserialize()
        .map_err(|e| Error::bad_json(format!("Invalid {key_type} key: {e}")))?;
    if parsed.user_id != user {
        return Err(Error::invalid_param(format!(
            "The {key_type} key must be for {user}"
        )));
    }
    if !parsed.usage.iter().any(|u| u.as_str() == key_type) {
        return Err(Error::invalid_param(format!(
            "The {key_type} key must have usage {key_type}"
        )));
    }
    let mut object = object(raw.json(), key_type)?;
    object.remove("unsigned");
    let (key_id, public_key) = signatures::single_ed25519_key(&object).ok_or_else(|| {
        Error::invalid_param(format!(
            "The {key_type} key must hold exactly one ed25519 key named after itself"
        ))
    })?;
    Ok(NewKey {
        key_type,
        key_id,
        public_key,
        object,
    })
}

/// Stores the valid signatures of `/keys/signatures/upload`; returns a failure for each key whose
/// signatures could not be accepted (the others are stored).
pub async fn upload_signatures(
    services: &Services,
    identity: &Identity,
    signed_keys: BTreeMap<OwnedUserId, SignedKeys>,
) -> Result<BTreeMap<OwnedUserId, BTreeMap<String, Failure>>> {
    let signer = identity.user_id.clone();
    let server_name = services.server_name.clone();
    let mut work = Vec::new();
    for (target, keys) in signed_keys {
        for (key_id, json) in keys.iter() {
            work.push((
                target.clone(),
                key_id.to_owned(),
                object(json, "A signed key"),
            ));
        }
    }
    let (failures, position) = services
        .db
        .write(move |tx| {
            let mut failures: BTreeMap<OwnedUserId, BTreeMap<String, Failure>> = BTreeMap::new();
            let mut position = None;
            for (target, key_id, signed) in work {
                let outcome = match signed {
                    Err(e) => Err(failure("M_BAD_JSON", &e.to_string())),
                    Ok(signed) => accept_signatures(
                        tx,
                        signer.as_str(),
                        target.as_str(),
                        target.server_name() == server_name,
                        &key_id,
                        &signed,
                    ),
                };
                match outcome {
                    Ok(rows) if !rows.is_empty() => {
                        for row in &rows {
                            store::put_signature(tx, target.as_str(), &key_id, row)?;
                        }
                        // Signatures with the user-signing key are the signer's business only
                        // (Synapse sends them to no other server either). A signature on one of
                        // the own devices changes that device: other servers hear of it as a
                        // device-list update carrying the signed keys (`remote_lists.rs`).
                        let visible_to = (signer != target).then_some(signer.as_str());
                        let own_master = store::cross_signing_key(tx, target.as_str(), "master")?
                            .is_some_and(|master| master.public_key == key_id);
                        let device = (signer == target && !own_master).then_some(key_id.as_str());
                        position = Some(store::record_device_list_change(
                            tx,
                            target.as_str(),
                            device,
                            visible_to,
                        )?);
                    }
                    Ok(_) => {}
                    Err(f) => {
                        failures.entry(target).or_default().insert(key_id, f);
                    }
                }
            }
            Ok::<_, Error>((failures, position))
        })
        .await?;
    if let Some(position) = position {
        services.rooms.notify(position);
    }
    Ok(failures)
}

/// The new, valid signatures of `signer` on the key `key_id` of `target`, or why there are none.
/// `target_is_local`: a user of another server's master key is the one their server gave us
/// (the cached device list, `remote_lists.rs`).
fn accept_signatures(
    conn: &Connection,
    signer: &str,
    target: &str,
    target_is_local: bool,
    key_id: &str,
    signed: &Map<String, Value>,
) -> std::result::Result<Vec<SignatureRow>, Failure> {
    let db = |e: rusqlite::Error| failure("M_UNKNOWN", &format!("database: {e}"));
    let master = if target_is_local {
        store::cross_signing_key(conn, target, "master").map_err(db)?
    } else {
        remote_store::remote_list(conn, target)
            .map_err(db)?
            .and_then(|list| list.master_key)
            .and_then(|json| {
                let key: Map<String, Value> = serde_json::from_str(&json).ok()?;
                Some(store::CrossSigningKeyRow {
                    public_key: super::federation::master_public_key(&key)?,
                    key_json: json,
                })
            })
    };
    // Which stored key this is, and which of the signer's keys may sign it.
    let (stored_json, signing_keys): (String, Vec<(String, String)>) = if signer == target {
        if let Some(master) = master.filter(|master| master.public_key == key_id) {
            // The own master key, signed by the user's devices.
            let devices = store::devices_with_keys(conn, signer).map_err(db)?;
            let keys = devices
                .iter()
                .filter_map(|d| {
                    let keys: Map<String, Value> = serde_json::from_str(&d.key_json).ok()?;
                    let public = signatures::device_ed25519_key(&keys, &d.device_id)?;
                    Some((format!("ed25519:{}", d.device_id), public))
                })
                .collect();
            (master.key_json, keys)
        } else if let Some(json) = store::device_keys(conn, signer, key_id).map_err(db)? {
            // One of the user's devices, signed by their self-signing key.
            let ssk = store::cross_signing_key(conn, signer, "self_signing")
                .map_err(db)?
                .ok_or_else(|| failure("M_MISSING_PARAM", "No self-signing key uploaded"))?;
            let public = ssk.public_key;
            (json, vec![(format!("ed25519:{public}"), public)])
        } else {
            return Err(failure("M_NOT_FOUND", "Unknown key"));
        }
    } else {
        // Another user's master key, signed by the signer's user-signing key.
        let master = master
            .filter(|master| master.public_key == key_id)
            .ok_or_else(|| failure("M_NOT_FOUND", "Unknown key: not the user's master key"))?;
        let usk = store::cross_signing_key(conn, signer, "user_signing")
            .map_err(db)?
            .ok_or_else(|| failure("M_MISSING_PARAM", "No user-signing key uploaded"))?;
        let public = usk.public_key;
        (master.key_json, vec![(format!("ed25519:{public}"), public)])
    };
    let stored: Map<String, Value> = serde_json::from_str(&stored_json)
        .map_err(|_| failure("M_UNKNOWN", "Stored key is not JSON"))?;
    if signed_part(&stored) != signed_part(signed) {
        return Err(failure(
            "M_INVALID_PARAM",
            "The signed key does not match the uploaded key",
        ));
    }
    let offered = signed
        .get("signatures")
        .and_then(|s| s.get(signer))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut accepted = Vec::new();
    for (signer_key_id, signature) in offered {
        let Some((_, public)) = signing_keys.iter().find(|(id, _)| *id == signer_key_id) else {
            continue;
        };
        signatures::verify(signed, signer, &signer_key_id, public)
            .map_err(|why| failure("M_INVALID_SIGNATURE", &why))?;
        accepted.push(SignatureRow {
            signer_user_id: signer.to_owned(),
            signer_key_id,
            signature: signature.as_str().unwrap_or_default().to_owned(),
        });
    }
    if accepted.is_empty() {
        return Err(failure(
            "M_INVALID_SIGNATURE",
            "No signature with a key allowed to sign this key",
        ));
    }
    Ok(accepted)
}

/// ruma keeps `Failure`'s fields private: it is built from its JSON form.
fn failure(errcode: &str, error: &str) -> Failure {
    serde_json::from_value(json!({"errcode": errcode, "error": error}))
        .expect("a failure's JSON form always deserializes")
}
