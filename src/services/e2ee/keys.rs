//! Device identity keys, one-time keys and fallback keys: `/keys/upload`, `/keys/query`,
//! `/keys/claim`, `/keys/changes`.
//!
//! `/keys/upload`: device keys must be the token's device and carry its own valid signature; a
//! one-time key ID reused with another key is refused; re-uploading the same fallback key keeps it
//! marked used. `/keys/query` merges in the signatures of `/keys/signatures/upload`, only those by
//! the key's owner or the requester. `/keys/claim` hands out the oldest one-time key, else the
//! fallback key, which stays and is marked used. Users of other servers: `federation.rs`.

use std::collections::BTreeMap;

use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, OwnedUserId, UInt, UserId,
    api::client::keys::{claim_keys::v3 as claim_keys, get_keys::v3 as get_keys},
    encryption::{CrossSigningKey, DeviceKeys, OneTimeKey},
    serde::Raw,
};
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::{device_lists, federation, invalid_signature, object, signatures};
use crate::{
    error::{Error, Result},
    services::{Services, json_depth, sessions::Identity, sync::SyncToken},
    storage::e2ee_keys as store,
};

/// The one-time key algorithm every client counts; always reported, 0 when none are left.
const SIGNED_CURVE25519: &str = "signed_curve25519";

/// What `/keys/upload` carries.
pub struct Upload {
    pub device_keys: Option<Raw<DeviceKeys>>,
    pub one_time_keys: BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
    pub fallback_keys: BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
}

/// Stores what a device uploads, all or nothing; returns its one-time key counts.
pub async fn upload(
    services: &Services,
    identity: &Identity,
    upload: Upload,
) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
    let user = identity.user_id.to_string();
    let device = identity.device_id.to_string();
    let device_keys = upload
        .device_keys
        .map(|raw| checked_device_keys(&raw, &user, &device))
        .transpose()?;
    let one_time_keys = checked_one_time_keys(&upload.one_time_keys)?;
    let fallback_keys = checked_one_time_keys(&upload.fallback_keys)?;
    let (counts, changed_at) = services
        .db
        .write(move |tx| {
            let mut changed_at = None;
            if let Some(keys) = device_keys
                && !store::device_keys(tx, &user, &device)?
                    .is_some_and(|old| same_json(&old, &keys))
            {
                store::put_device_keys(tx, &user, &device, &keys)?;
                changed_at = Some(store::record_device_list_change(
                    tx,
                    &user,
                    Some(&device),
                    None,
                )?);
            }
            for (algorithm, key_id, json) in one_time_keys {
                match store::one_time_key(tx, &user, &device, &algorithm, &key_id)? {
                    Some(old) if same_json(&old, &json) => {}
                    Some(_) => {
                        return Err(Error::invalid_param(format!(
                            "One-time key {algorithm}:{key_id} already exists with another value"
                        )));
                    }
                    None => {
                        store::insert_one_time_key(tx, &user, &device, &algorithm, &key_id, &json)?
                    }
                }
            }
            for (algorithm, key_id, json) in fallback_keys {
                let same = store::fallback_key(tx, &user, &device, &algorithm)?
                    .is_some_and(|old| old.key_id == key_id && same_json(&old.key_json, &json));
                // Uploading the same key again must not make a used key look fresh.
                if !same {
                    store::put_fallback_key(tx, &user, &device, &algorithm, &key_id, &json)?;
                }
            }
            Ok::<_, Error>((one_time_key_counts(tx, &user, &device)?, changed_at))
        })
        .await?;
    if let Some(position) = changed_at {
        services.rooms.notify(position);
    }
    Ok(counts)
}

/// The device keys to store (without `unsigned`), checked: they are this device's and carry its
/// own signature.
fn checked_device_keys(raw: &Raw<DeviceKeys>, user: &str, device: &str) -> Result<String> {
    json_depth::check_text("device_keys", raw.json().get())?;
    raw.deserialize()
        .map_err(|e| Error::bad_json(format!("Invalid device_keys: {e}")))?;
    let mut keys = object(raw.json(), "device_keys")?;
    keys.remove("unsigned");
    if keys.get("user_id").and_then(Value::as_str) != Some(user)
        || keys.get("device_id").and_then(Value::as_str) != Some(device)
    {
        return Err(Error::invalid_param(
            "device_keys must be for the device of the access token",
        ));
    }
    let ed25519 = signatures::device_ed25519_key(&keys, device)
        .ok_or_else(|| Error::invalid_param(format!("device_keys lack ed25519:{device}")))?;
    signatures::verify(&keys, user, &format!("ed25519:{device}"), &ed25519)
        .map_err(invalid_signature)?;
    serde_json::to_string(&keys).map_err(Error::internal)
}

/// `(algorithm, key name, JSON)` of uploaded one-time or fallback keys, checked to parse.
fn checked_one_time_keys(
    keys: &BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
) -> Result<Vec<(String, String, String)>> {
    keys.iter()
        .map(|(id, raw)| {
            json_depth::check_text(&format!("Key {id}"), raw.json().get())?;
            raw.deserialize()
                .map_err(|e| Error::bad_json(format!("Invalid key {id}: {e}")))?;
            let (algorithm, name) = id
                .as_str()
                .split_once(':')
                .ok_or_else(|| Error::invalid_param(format!("Invalid key ID {id}")))?;
            Ok((
                algorithm.to_owned(),
                name.to_owned(),
                raw.json().get().to_owned(),
            ))
        })
        .collect()
}

fn same_json(a: &str, b: &str) -> bool {
    serde_json::from_str::<Value>(a).ok() == serde_json::from_str::<Value>(b).ok()
}

/// Unclaimed one-time keys per algorithm (`signed_curve25519` always present).
pub fn one_time_key_counts(
    conn: &Connection,
    user: &str,
    device: &str,
) -> rusqlite::Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
    let mut counts = BTreeMap::from([(OneTimeKeyAlgorithm::from(SIGNED_CURVE25519), UInt::MIN)]);
    for store::AlgorithmCount { algorithm, count } in
        store::count_one_time_keys(conn, user, device)?
    {
        counts.insert(
            OneTimeKeyAlgorithm::from(algorithm.as_str()),
            UInt::try_from(count).unwrap_or_default(),
        );
    }
    Ok(counts)
}

/// `/keys/query`: the keys of local users as `viewer` may see them, and of other servers'
/// users as their servers (or our cache of their device lists) give them (`federation.rs`).
pub async fn query(
    services: &Services,
    viewer: &UserId,
    requested: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    timeout: Option<std::time::Duration>,
) -> Result<get_keys::Response> {
    let server_name = services.server_name.clone();
    let (local, remote): (BTreeMap<_, _>, BTreeMap<_, _>) = requested
        .into_iter()
        .partition(|(user, _)| user.server_name() == server_name);
    let viewer_id = viewer.to_string();
    let mut response = services
        .db
        .read(move |c| {
            let mut response = get_keys::Response::new();
            for (user, devices) in local {
                let keys = query_local(c, &user, &devices, Some(&viewer_id))?;
                response.device_keys.insert(user.clone(), keys.devices);
                if let Some(key) = keys.master {
                    response.master_keys.insert(user.clone(), key);
                }
                if let Some(key) = keys.self_signing {
                    response.self_signing_keys.insert(user.clone(), key);
                }
                if let Some(key) = keys.user_signing {
                    response.user_signing_keys.insert(user.clone(), key);
                }
            }
            Ok::<_, Error>(response)
        })
        .await?;
    if !remote.is_empty() {
        let timeout = federation::timeout(timeout);
        federation::query_remote(services, viewer, remote, timeout, &mut response).await?;
    }
    Ok(response)
}

/// One local user's keys.
pub struct UserKeys {
    pub devices: BTreeMap<OwnedDeviceId, Raw<DeviceKeys>>,
    pub master: Option<Raw<CrossSigningKey>>,
    pub self_signing: Option<Raw<CrossSigningKey>>,
    /// Only for the user themselves.
    pub user_signing: Option<Raw<CrossSigningKey>>,
}

/// The keys of a local user (`devices` empty: all devices) with the signatures `viewer` may see:
/// the owner's and `viewer`'s own. `viewer` is `None` for another server, which sees only the
/// owner's signatures and never the user-signing key.
pub fn query_local(
    conn: &Connection,
    user: &UserId,
    devices: &[OwnedDeviceId],
    viewer: Option<&str>,
) -> Result<UserKeys> {
    let user = user.as_str();
    let viewer_or_owner = viewer.unwrap_or(user);
    let mut result = UserKeys {
        devices: BTreeMap::new(),
        master: None,
        self_signing: None,
        user_signing: None,
    };
    for device in store::devices_with_keys(conn, user)? {
        if !devices.is_empty() && !devices.iter().any(|d| d.as_str() == device.device_id) {
            continue;
        }
        let what = || format!("device keys of {user} {}", device.device_id);
        let Some(Value::Object(mut keys)) = json_depth::readable(what, &device.key_json) else {
            continue;
        };
        merge_signatures(conn, &mut keys, user, &device.device_id, viewer_or_owner)?;
        if let Some(name) = device.display_name {
            keys.insert("unsigned".into(), json!({"device_display_name": name}));
        }
        result
            .devices
            .insert(device.device_id.as_str().into(), to_raw(&keys)?);
    }
    if let Some(master) = store::cross_signing_key(conn, user, "master")?
        && let Some(Value::Object(mut key)) =
            readable_cross_signing_key(user, "master", &master.key_json)
    {
        merge_signatures(conn, &mut key, user, &master.public_key, viewer_or_owner)?;
        result.master = Some(to_raw(&key)?);
    }
    if let Some(store::CrossSigningKeyRow { key_json: json, .. }) =
        store::cross_signing_key(conn, user, "self_signing")?
        && let Some(key) = readable_cross_signing_key(user, "self_signing", &json)
    {
        result.self_signing = Some(to_raw_value(&key)?);
    }
    if viewer == Some(user)
        && let Some(store::CrossSigningKeyRow { key_json: json, .. }) =
            store::cross_signing_key(conn, user, "user_signing")?
        && let Some(key) = readable_cross_signing_key(user, "user_signing", &json)
    {
        result.user_signing = Some(to_raw_value(&key)?);
    }
    Ok(result)
}

/// Adds the stored signatures on a key (`key_id`: device ID or public key) to its JSON.
fn merge_signatures(
    conn: &Connection,
    key: &mut Map<String, Value>,
    user: &str,
    key_id: &str,
    viewer: &str,
) -> Result<()> {
    let extra = store::signatures_on(conn, user, key_id, viewer)?;
    if extra.is_empty() {
        return Ok(());
    }
    let signatures = key
        .entry("signatures")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| Error::internal("stored key with non-object signatures"))?;
    for row in extra {
        if let Some(by_signer) = signatures
            .entry(row.signer_user_id)
            .or_insert_with(|| json!({}))
            .as_object_mut()
        {
            by_signer.insert(row.signer_key_id, Value::String(row.signature));
        }
    }
    Ok(())
}

/// A stored cross-signing key, unless an older version stored it too deeply nested to hand out.
fn readable_cross_signing_key(user: &str, key_type: &str, json: &str) -> Option<Value> {
    json_depth::readable(|| format!("{key_type} key of {user}"), json)
}

fn to_raw_value<T>(value: &Value) -> Result<Raw<T>> {
    Ok(Raw::from_json(
        serde_json::value::to_raw_value(value).map_err(Error::internal)?,
    ))
}

fn to_raw<T>(value: &Map<String, Value>) -> Result<Raw<T>> {
    Ok(Raw::from_json(
        serde_json::value::to_raw_value(value).map_err(Error::internal)?,
    ))
}

/// `/keys/claim`: one key per requested device, the local ones in one transaction, the others
/// from their servers (`federation.rs`).
pub async fn claim(
    services: &Services,
    requested: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
    timeout: Option<std::time::Duration>,
) -> Result<claim_keys::Response> {
    let server_name = services.server_name.clone();
    let (local, remote): (BTreeMap<_, _>, BTreeMap<_, _>) = requested
        .into_iter()
        .partition(|(user, _)| user.server_name() == server_name);
    let claimed = services.db.write(move |tx| claim_local(tx, &local)).await?;
    let mut response = claim_keys::Response::new(claimed);
    if !remote.is_empty() {
        let timeout = federation::timeout(timeout);
        federation::claim_remote(services, remote, timeout, &mut response).await;
    }
    Ok(response)
}

/// Claims keys of local devices: the oldest one-time key of the algorithm, else the fallback
/// key (which stays, marked used). Devices with neither are left out.
pub fn claim_local(
    conn: &Connection,
    requested: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
) -> Result<BTreeMap<OwnedUserId, claim_keys::OneTimeKeys>> {
    let mut claimed = BTreeMap::new();
    for (user, devices) in requested {
        let mut user_keys = BTreeMap::new();
        for (device, algorithm) in devices {
            let (user_str, device_str, algorithm) =
                (user.as_str(), device.as_str(), algorithm.as_str());
            let key = match store::take_one_time_key(conn, user_str, device_str, algorithm)? {
                Some(key) => Some(key),
                None => {
                    let fallback = store::fallback_key(conn, user_str, device_str, algorithm)?;
                    if fallback.is_some() {
                        store::mark_fallback_key_used(conn, user_str, device_str, algorithm)?;
                    }
                    fallback
                }
            };
            let Some(stored) = key else { continue };
            let key_id = format!("{algorithm}:{}", stored.key_id);
            let Ok(key_id) = OwnedOneTimeKeyId::try_from(key_id) else {
                continue;
            };
            // A key an older version stored too deeply nested is used up without being handed
            // out: the response would be unreadable.
            let what = || format!("one-time key {key_id} of {user} {device}");
            let Some(key) = json_depth::readable(what, &stored.key_json) else {
                continue;
            };
            let raw = to_raw_value(&key)?;
            user_keys.insert(device.clone(), BTreeMap::from([(key_id, raw)]));
        }
        if !user_keys.is_empty() {
            claimed.insert(user.clone(), user_keys);
        }
    }
    Ok(claimed)
}

/// `/keys/changes`: users whose keys changed, and users no longer sharing a room, between two
/// sync tokens.
pub async fn changes(
    services: &Services,
    user: &UserId,
    from: &str,
    to: &str,
) -> Result<(Vec<OwnedUserId>, Vec<OwnedUserId>)> {
    let from: SyncToken = from.parse()?;
    let to: SyncToken = to.parse()?;
    let user = user.to_string();
    services
        .db
        .read(move |c| {
            let lists = device_lists::between(c, &user, from.stream, to.stream)?;
            Ok::<_, Error>((lists.changed, lists.left))
        })
        .await
}
