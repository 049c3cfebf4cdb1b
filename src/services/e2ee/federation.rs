//! Keys of other servers' users for our clients, and our users' keys for other servers.
//!
//! `/keys/query` and `/keys/claim` for users of other servers (`query_remote`, `claim_remote`):
//! one request per server (`/user/keys/query`, `/user/keys/claim`), all servers at once, each
//! within the client's `timeout` (10 s when it gives none, as Synapse). A server that fails or
//! takes too long is reported in `failures` under its name (`status` and `message`, as Synapse
//! puts them); the other servers' answers are kept. With federation off, every other server is
//! a failure at once. Only the users asked for, of the server
//! that answered, are taken from an answer. A user sharing a room with one of ours whose whole
//! list is asked for is answered from the cached device list (`remote_lists.rs`), fetched first
//! when there is none yet (Synapse does the same); signatures our user made on their master key
//! are added.
//!
//! Served to other servers (`serve_query`, `serve_claim`): only our own users, with the
//! signatures their owners made, master and self-signing keys (never user-signing keys).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use futures_util::{StreamExt, future::join_all};
use http::StatusCode;
use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedServerName, OwnedUserId, ServerName, UserId,
    api::{
        client::keys::{claim_keys::v3 as claim_keys, get_keys::v3 as get_keys},
        federation::keys::{claim_keys::v1 as fed_claim, get_keys::v1 as fed_query},
    },
    encryption::{CrossSigningKey, DeviceKeys},
    serde::Raw,
};
use serde_json::{Map, Value, json};

use super::{keys, remote_lists};
use crate::{
    error::{Error, Result},
    services::{Services, federation::client::FederationError},
    storage::{e2ee_keys as key_store, remote_e2ee as store},
};

/// How long other servers get when the client names no `timeout`: Synapse's default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `timeout` a client may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Device lists of one server's users fetched at once for a query.
const RESYNCS_AT_ONCE: usize = 8;
/// An answer about one server's users: a few KiB per device.
const ANSWER_MAX_BYTES: usize = 8 * 1024 * 1024;

/// The timeout to use for a client's `timeout`.
pub fn timeout(requested: Option<Duration>) -> Duration {
    requested.unwrap_or(DEFAULT_TIMEOUT).min(MAX_TIMEOUT)
}

/// A server's entry in `failures`, as Synapse writes it.
fn failure(error: &FederationError) -> Value {
    match error.status() {
        Some(status) => json!({"status": status.as_u16(), "message": error.to_string()}),
        None => json!({"status": StatusCode::SERVICE_UNAVAILABLE.as_u16(),
                       "message": error.to_string()}),
    }
}

fn timed_out() -> Value {
    json!({"status": StatusCode::SERVICE_UNAVAILABLE.as_u16(),
           "message": "The server did not answer in time"})
}

/// The `failures` when federation is off (no listener serves it): no request goes out.
fn federation_off<'a>(
    users: impl Iterator<Item = &'a OwnedUserId>,
) -> impl Iterator<Item = (String, Value)> {
    let servers: BTreeSet<String> = users.map(|user| user.server_name().to_string()).collect();
    servers.into_iter().map(|server| {
        let message = "Federation is off on this server";
        (
            server,
            json!({"status": StatusCode::SERVICE_UNAVAILABLE.as_u16(), "message": message}),
        )
    })
}

/// Groups requests by the users' servers.
fn by_server<T>(
    requested: BTreeMap<OwnedUserId, T>,
) -> BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> {
    let mut grouped: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> = BTreeMap::new();
    for (user, value) in requested {
        grouped
            .entry(user.server_name().to_owned())
            .or_default()
            .insert(user, value);
    }
    grouped
}

/// One server's part of a `/keys/query` answer.
#[derive(Default)]
struct ServerKeys {
    device_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Raw<DeviceKeys>>>,
    master_keys: BTreeMap<OwnedUserId, Raw<CrossSigningKey>>,
    self_signing_keys: BTreeMap<OwnedUserId, Raw<CrossSigningKey>>,
}

/// Adds the keys of other servers' users to `response` (see the module comment).
pub async fn query_remote(
    services: &Services,
    viewer: &UserId,
    requested: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    timeout: Duration,
    response: &mut get_keys::Response,
) -> Result<()> {
    if !services.config.federation_enabled() {
        response.failures.extend(federation_off(requested.keys()));
        return Ok(());
    }
    let answers = join_all(
        by_server(requested)
            .into_iter()
            .map(|(server, users)| async move {
                let answer =
                    tokio::time::timeout(timeout, query_server(services, &server, users)).await;
                (server, answer)
            }),
    )
    .await;
    for (server, answer) in answers {
        let keys = match answer {
            Ok(Ok(keys)) => keys,
            Ok(Err(e)) => {
                tracing::info!(%server, "keys of its users not fetched: {e}");
                response.failures.insert(server.to_string(), failure(&e));
                continue;
            }
            Err(_) => {
                response.failures.insert(server.to_string(), timed_out());
                continue;
            }
        };
        response.device_keys.extend(keys.device_keys);
        response.self_signing_keys.extend(keys.self_signing_keys);
        for (user, key) in keys.master_keys {
            let key = with_viewer_signatures(services, viewer, &user, key).await?;
            response.master_keys.insert(user, key);
        }
    }
    Ok(())
}

/// The keys of `users` (all of `server`): cached lists where we follow them, the rest asked.
async fn query_server(
    services: &Services,
    server: &ServerName,
    users: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
) -> std::result::Result<ServerKeys, FederationError> {
    let mut keys = ServerKeys::default();
    let mut ask = BTreeMap::new();
    // The users whose whole list is asked for, each from the cache (fetched first if need be:
    // several at once, within the same timeout as the rest).
    let (whole, some): (Vec<_>, Vec<_>) = users.into_iter().partition(|(_, d)| d.is_empty());
    ask.extend(some);
    let mut cached = futures_util::stream::iter(whole)
        .map(|(user, devices)| async move {
            let mut keys = ServerKeys::default();
            let hit = from_cache(services, &user, &mut keys).await;
            (user, devices, hit.then_some(keys))
        })
        .buffer_unordered(RESYNCS_AT_ONCE);
    while let Some((user, devices, hit)) = cached.next().await {
        match hit {
            Some(found) => {
                keys.device_keys.extend(found.device_keys);
                keys.master_keys.extend(found.master_keys);
                keys.self_signing_keys.extend(found.self_signing_keys);
            }
            None => {
                ask.insert(user, devices);
            }
        }
    }
    drop(cached);
    if ask.is_empty() {
        return Ok(keys);
    }
    let asked: BTreeSet<OwnedUserId> = ask.keys().cloned().collect();
    let answer = services
        .federation
        .send_with_limit(server, fed_query::Request::new(ask), ANSWER_MAX_BYTES)
        .await?;
    let wanted = |user: &OwnedUserId| asked.contains(user);
    keys.device_keys
        .extend(answer.device_keys.into_iter().filter(|(u, _)| wanted(u)));
    keys.master_keys
        .extend(answer.master_keys.into_iter().filter(|(u, _)| wanted(u)));
    keys.self_signing_keys.extend(
        answer
            .self_signing_keys
            .into_iter()
            .filter(|(u, _)| wanted(u)),
    );
    Ok(keys)
}

/// Fills in `user`'s keys from the cached device list, fetching the list first when the user
/// shares a room with one of ours and none is cached; `false` when there is none to use.
async fn from_cache(services: &Services, user: &UserId, keys: &mut ServerKeys) -> bool {
    let u = user.to_string();
    let db = &services.db;
    let read = move |c: &rusqlite::Connection| {
        if !crate::storage::rooms::shares_a_room_with_a_local_user(c, &u)? {
            return Ok::<_, Error>(None);
        }
        let Some(list) = store::remote_list(c, &u)? else {
            return Ok(Some(None));
        };
        Ok(Some(Some((list, store::remote_devices(c, &u)?))))
    };
    let cached = match db.read(read).await {
        Ok(Some(Some(cached))) => cached,
        Ok(Some(None)) => {
            if remote_lists::resync(services, user).await.is_err() {
                return false;
            }
            let u = user.to_string();
            match db
                .read(move |c| {
                    Ok::<_, Error>(match store::remote_list(c, &u)? {
                        Some(list) => Some((list, store::remote_devices(c, &u)?)),
                        None => None,
                    })
                })
                .await
            {
                Ok(Some(cached)) => cached,
                _ => return false,
            }
        }
        Ok(None) | Err(_) => return false,
    };
    let (list, devices) = cached;
    let raw = |json: &str| -> Option<Box<serde_json::value::RawValue>> {
        serde_json::value::RawValue::from_string(json.to_owned()).ok()
    };
    let mut user_devices = BTreeMap::new();
    for device in devices {
        let Some(key_json) = device.key_json else {
            continue;
        };
        let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(&key_json) else {
            continue;
        };
        if let Some(name) = device.display_name {
            object.insert("unsigned".into(), json!({"device_display_name": name}));
        }
        let Some(value) = serde_json::value::to_raw_value(&object).ok() else {
            continue;
        };
        user_devices.insert(OwnedDeviceId::from(device.device_id), Raw::from_json(value));
    }
    keys.device_keys.insert(user.to_owned(), user_devices);
    if let Some(master) = list.master_key.as_deref().and_then(raw) {
        keys.master_keys
            .insert(user.to_owned(), Raw::from_json(master));
    }
    if let Some(ssk) = list.self_signing_key.as_deref().and_then(raw) {
        keys.self_signing_keys
            .insert(user.to_owned(), Raw::from_json(ssk));
    }
    true
}

/// A remote user's master key with the signatures `viewer` made on it (with their user-signing
/// key: stored here, seen by them alone).
async fn with_viewer_signatures(
    services: &Services,
    viewer: &UserId,
    user: &UserId,
    key: Raw<CrossSigningKey>,
) -> Result<Raw<CrossSigningKey>> {
    let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(key.json().get()) else {
        return Ok(key);
    };
    let Some(public) = master_public_key(&object) else {
        return Ok(key);
    };
    let (user, viewer_id) = (user.to_string(), viewer.to_string());
    let rows = services
        .db
        .read(move |c| key_store::signatures_on(c, &user, &public, &viewer_id))
        .await?;
    let viewer = viewer.as_str();
    let mine: Vec<_> = rows
        .into_iter()
        .filter(|r| r.signer_user_id == viewer)
        .collect();
    if mine.is_empty() {
        return Ok(key);
    }
    let signatures = object
        .entry("signatures")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .map(|s| s.entry(viewer).or_insert_with(|| json!({})));
    if let Some(Value::Object(by_viewer)) = signatures {
        for row in mine {
            by_viewer.insert(row.signer_key_id, Value::String(row.signature));
        }
    }
    Ok(Raw::from_json(
        serde_json::value::to_raw_value(&object).map_err(Error::internal)?,
    ))
}

/// The public key of a cross-signing key (its one `keys` entry, `ed25519:<key>`).
pub fn master_public_key(key: &Map<String, Value>) -> Option<String> {
    key.get("keys")?
        .as_object()?
        .keys()
        .find_map(|id| id.strip_prefix("ed25519:"))
        .map(str::to_owned)
}

/// Claims one-time keys of other servers' users, one request per server, into `response`.
pub async fn claim_remote(
    services: &Services,
    requested: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
    timeout: Duration,
    response: &mut claim_keys::Response,
) {
    if !services.config.federation_enabled() {
        response.failures.extend(federation_off(requested.keys()));
        return;
    }
    let answers = join_all(
        by_server(requested)
            .into_iter()
            .map(|(server, users)| async move {
                let asked: BTreeSet<OwnedUserId> = users.keys().cloned().collect();
                let request = fed_claim::Request::new(users);
                let answer = tokio::time::timeout(
                    timeout,
                    services
                        .federation
                        .send_with_limit(&server, request, ANSWER_MAX_BYTES),
                )
                .await;
                (server, asked, answer)
            }),
    )
    .await;
    for (server, asked, answer) in answers {
        match answer {
            Ok(Ok(answer)) => response.one_time_keys.extend(
                answer
                    .one_time_keys
                    .into_iter()
                    .filter(|(user, _)| asked.contains(user)),
            ),
            Ok(Err(e)) => {
                tracing::info!(%server, "one-time keys of its users not claimed: {e}");
                response.failures.insert(server.to_string(), failure(&e));
            }
            Err(_) => {
                response.failures.insert(server.to_string(), timed_out());
            }
        }
    }
}

/// `POST /_matrix/federation/v1/user/keys/query`: the keys of our users among those asked for.
pub async fn serve_query(
    services: &Services,
    requested: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
) -> Result<fed_query::Response> {
    let server_name = services.server_name.clone();
    services
        .db
        .read(move |c| {
            let mut response = fed_query::Response::default();
            for (user, devices) in requested {
                if user.server_name() != server_name {
                    continue;
                }
                let keys = keys::query_local(c, &user, &devices, None)?;
                response.device_keys.insert(user.clone(), keys.devices);
                if let Some(key) = keys.master {
                    response.master_keys.insert(user.clone(), key);
                }
                if let Some(key) = keys.self_signing {
                    response.self_signing_keys.insert(user, key);
                }
            }
            Ok::<_, Error>(response)
        })
        .await
}

/// `POST /_matrix/federation/v1/user/keys/claim`: one key per device of our users asked for.
pub async fn serve_claim(
    services: &Services,
    requested: fed_claim::OneTimeKeyClaims,
) -> Result<fed_claim::Response> {
    let server_name = services.server_name.clone();
    let ours: BTreeMap<_, _> = requested
        .into_iter()
        .filter(|(user, _)| user.server_name() == server_name)
        .collect();
    let claimed = services
        .db
        .write(move |tx| keys::claim_local(tx, &ours))
        .await?;
    Ok(fed_claim::Response::new(claimed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_defaults_to_ten_seconds_and_is_capped() {
        assert_eq!(timeout(None), Duration::from_secs(10));
        assert_eq!(
            timeout(Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(timeout(Some(Duration::from_secs(3600))), MAX_TIMEOUT);
    }

    #[test]
    fn users_are_grouped_by_server() {
        let requested = BTreeMap::from([
            (OwnedUserId::try_from("@a:one.test").unwrap(), 1),
            (OwnedUserId::try_from("@b:two.test").unwrap(), 2),
            (OwnedUserId::try_from("@c:one.test").unwrap(), 3),
        ]);
        let grouped = by_server(requested);
        assert_eq!(grouped.len(), 2);
        assert_eq!(
            grouped[<&ServerName>::try_from("one.test").unwrap()].len(),
            2
        );
    }

    #[test]
    fn a_master_key_names_its_public_key() {
        let key = json!({"user_id": "@a:b", "usage": ["master"], "keys": {"ed25519:abc": "abc"}});
        assert_eq!(
            master_public_key(key.as_object().unwrap()).as_deref(),
            Some("abc")
        );
    }
}
