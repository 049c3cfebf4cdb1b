//! Device lists across servers, both ways.
//!
//! **Out** (`queue_local_changes`, run by the federation sender after every commit): each public
//! row of one of our users in `device_list_changes` (a device added, renamed, deleted, new
//! identity keys, a signature by the owner; cross-signing keys) becomes an EDU for every other
//! server sharing a room with the user: `m.device_list_update` for a device (`stream_id` the
//! row's position, `prev_id` the user's previous device row, the device's current keys with the
//! owner's signatures), `m.signing_key_update` for the master and self-signing keys. A stored
//! cursor (`device_list_outbound_position`) moves in the transaction that queues the EDUs, so
//! every change is queued once, whichever code path made it (SQL triggers included).
//! `GET /user/devices/{userId}` (`user_devices`) gives the whole list with, as `stream_id`, the
//! position the next update's `prev_id` names.
//!
//! **In**: the origin's own users only, and only users sharing a room with one of ours (others'
//! servers stop telling us when no room is shared, so such a cache could not be kept right; the
//! migration's trigger drops it when the last shared room ends). An update applies when its
//! `prev_id`s are all the last `stream_id` applied ([`decide`]); an older one is a duplicate; one
//! with an unknown `prev_id`, no `prev_id` (as Synapse does: the first update of a user) or for a
//! user without a cached list drops the cache, and the next `/keys/query` for the user fetches
//! the whole list (`resync`, `/user/devices`), as for a user queried the first time. Each
//! change is a row of `device_list_changes` of that user, so local clients sharing a room see it
//! in /sync's `device_lists.changed`. `/keys/query` answers from the cache (`federation.rs`).

use std::time::Duration;

use ruma::{
    OwnedServerName, ServerName, UInt, UserId,
    api::federation::{
        device::get_devices::v1 as get_devices,
        transactions::edu::{DeviceListUpdateContent, Edu, SigningKeyUpdateContent},
    },
    serde::Raw,
};
use rusqlite::Connection;
use serde_json::Value;

use super::keys::query_local;
use crate::{
    error::{Error, Result},
    services::{Services, federation::sender, json_depth},
    storage::{
        Database,
        e2ee_keys::record_device_list_change,
        federation_queue::servers_sharing_a_room,
        remote_e2ee::{self as store, LocalChange, RemoteDevice, RemoteList},
    },
};

/// Changes turned into EDUs in one write transaction.
const CHANGES_PER_WRITE: i64 = 200;
/// How long fetching a user's whole device list may take.
const RESYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// A `/user/devices` answer: a few KiB per device.
const RESYNC_MAX_BYTES: usize = 4 * 1024 * 1024;
/// The most devices kept for one remote user (a list longer than this is cut).
const MAX_REMOTE_DEVICES: usize = 1000;

// ---- out ----

/// Queues the EDUs of our users' device-list changes not queued yet (see the module comment);
/// whether any EDU was queued. Reads only, unless there is something new.
pub async fn queue_local_changes(db: &Database, own: &ServerName) -> Result<bool> {
    let (done, last) = db
        .read(|c| {
            Ok::<_, Error>((
                store::outbound_position(c)?,
                store::last_change_position(c)?,
            ))
        })
        .await?;
    if last <= done {
        return Ok(false);
    }
    let mut queued_any = false;
    loop {
        let own = own.to_owned();
        let (queued, more) = db
            .write(move |tx| {
                let from = store::outbound_position(tx)?;
                let changes = store::local_changes_after(tx, from, CHANGES_PER_WRITE)?;
                let more = changes.len() as i64 == CHANGES_PER_WRITE;
                let mut queued = false;
                for change in &changes {
                    queued |= queue_change(tx, &own, change)?;
                }
                let upto = match changes.last() {
                    Some(change) if more => change.stream_position,
                    // Everything after the last of ours is someone else's: done up to the end.
                    _ => store::last_change_position(tx)?,
                };
                store::set_outbound_position(tx, upto.max(from))?;
                Ok::<_, Error>((queued, more))
            })
            .await?;
        queued_any |= queued;
        if !more {
            return Ok(queued_any);
        }
    }
}

/// Queues the EDU of one change for every other server sharing a room with the user.
fn queue_change(tx: &Connection, own: &ServerName, change: &LocalChange) -> Result<bool> {
    let destinations: Vec<String> = servers_sharing_a_room(tx, &change.user_id)?
        .into_iter()
        .filter(|server| server != own.as_str())
        .collect();
    if destinations.is_empty() {
        return Ok(false);
    }
    let Ok(user_id) = UserId::parse(&change.user_id) else {
        return Ok(false);
    };
    let edu = match &change.device_id {
        Some(device_id) => Edu::DeviceListUpdate(device_update(tx, &user_id, device_id, change)?),
        None => {
            let keys = query_local(tx, &user_id, &[], None)?;
            let mut content = SigningKeyUpdateContent::new(user_id.clone());
            content.master_key = keys.master;
            content.self_signing_key = keys.self_signing;
            Edu::SigningKeyUpdate(content)
        }
    };
    sender::enqueue_edu_for(tx, &destinations, &edu)?;
    Ok(true)
}

/// The `m.device_list_update` of a change: the device as it is now.
fn device_update(
    tx: &Connection,
    user_id: &UserId,
    device_id: &str,
    change: &LocalChange,
) -> Result<DeviceListUpdateContent> {
    let stream_id = position_id(change.stream_position);
    let mut update = DeviceListUpdateContent::new(user_id.to_owned(), device_id.into(), stream_id);
    update.prev_id =
        store::last_device_change_before(tx, user_id.as_str(), change.stream_position)?
            .map(position_id)
            .into_iter()
            .collect();
    let display_name = store::local_device(tx, user_id.as_str(), device_id)?;
    match display_name {
        Some(name) if !change.deleted => {
            update.device_display_name = name;
            update.keys = query_local(tx, user_id, &[device_id.into()], None)?
                .devices
                .into_values()
                .next();
        }
        // Gone (now, or by this change).
        _ => update.deleted = Some(true),
    }
    Ok(update)
}

fn position_id(position: i64) -> UInt {
    UInt::try_from(position.max(0)).unwrap_or_default()
}

/// `GET /_matrix/federation/v1/user/devices/{userId}` for one of our users: every device with
/// keys, the cross-signing keys other servers may see, and the `stream_id` the next update
/// names as its `prev_id`.
pub async fn user_devices(services: &Services, user_id: &UserId) -> Result<get_devices::Response> {
    if user_id.server_name() != services.server_name {
        return Err(Error::invalid_param("The user is not of this server"));
    }
    let user = user_id.to_owned();
    services
        .db
        .read(move |c| {
            let stream_id = store::last_device_change_before(c, user.as_str(), i64::MAX)?;
            let keys = query_local(c, &user, &[], None)?;
            let mut response =
                get_devices::Response::new(user.clone(), position_id(stream_id.unwrap_or(0)));
            for store::LocalDevice {
                device_id,
                display_name,
            } in store::local_devices(c, user.as_str())?
            {
                let Some(device_keys) = keys.devices.get(device_id.as_str()) else {
                    continue;
                };
                let mut device =
                    get_devices::UserDevice::new(device_id.into(), device_keys.clone());
                device.device_display_name = display_name;
                response.devices.push(device);
            }
            response.master_key = keys.master;
            response.self_signing_key = keys.self_signing;
            Ok::<_, Error>(response)
        })
        .await
}

// ---- in ----

/// What to do with an incoming device-list update, given the `stream_id` of the last update
/// applied to the cached list (`None`: no cached list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// It follows the cached list: apply it.
    Apply,
    /// Seen before (a retried transaction): nothing to do.
    Ignore,
    /// Something was missed, or nothing is cached: the whole list must be fetched again.
    Resync,
}

/// See [`Decision`]: the update applies when every `prev_id` is the last `stream_id` applied.
/// As in Synapse, an update without `prev_id` makes us resync: a server sends none for a user's
/// first change, and also when it cannot tell what we have.
pub fn decide(cached: Option<u64>, stream_id: u64, prev_ids: &[u64]) -> Decision {
    let Some(last) = cached else {
        return Decision::Resync;
    };
    if stream_id <= last {
        return Decision::Ignore;
    }
    if !prev_ids.is_empty() && prev_ids.iter().all(|prev| *prev == last) {
        Decision::Apply
    } else {
        Decision::Resync
    }
}

/// An `m.device_list_update` from `origin`.
pub async fn receive_device_list_update(
    services: &Services,
    origin: &ServerName,
    update: DeviceListUpdateContent,
) {
    if let Err(e) = device_list_update(services, origin, update).await {
        tracing::info!(%origin, "device-list update not applied: {e}");
    }
}

async fn device_list_update(
    services: &Services,
    origin: &ServerName,
    update: DeviceListUpdateContent,
) -> Result<()> {
    if update.user_id.server_name() != origin {
        return Ok(());
    }
    let user = update.user_id.to_string();
    let db = &services.db;
    let u = user.clone();
    let (shared, cached) = db
        .read(move |c| {
            let shared = crate::storage::rooms::shares_a_room_with_a_local_user(c, &u)?;
            Ok::<_, Error>((shared, store::remote_list(c, &u)?))
        })
        .await?;
    if !shared {
        if cached.is_some() {
            db.write(move |tx| store::delete_remote_list(tx, &user))
                .await?;
        }
        return Ok(());
    }
    let prev_ids: Vec<u64> = update.prev_id.iter().map(|id| u64::from(*id)).collect();
    let cached_id = cached.map(|list| u64::try_from(list.stream_id).unwrap_or(0));
    match decide(cached_id, u64::from(update.stream_id), &prev_ids) {
        Decision::Ignore => Ok(()),
        // Not fetched here: the transaction would wait on the network (a server could send a
        // hundred such updates at once). The cache goes, our clients hear the list changed, and
        // their next /keys/query fetches it (`federation.rs`).
        Decision::Resync => {
            let position = db
                .write(move |tx| {
                    store::delete_remote_list(tx, &user)?;
                    Ok::<_, Error>(record_device_list_change(tx, &user, None, None)?)
                })
                .await?;
            services.rooms.notify(position);
            Ok(())
        }
        Decision::Apply => {
            let device = if update.deleted == Some(true) {
                None
            } else {
                Some(RemoteDevice {
                    device_id: update.device_id.to_string(),
                    display_name: update.device_display_name.clone(),
                    key_json: update.keys.as_ref().and_then(|keys| {
                        checked_device_keys(keys, &user, update.device_id.as_str())
                    }),
                })
            };
            let device_id = update.device_id.to_string();
            let stream_id = i64::try_from(u64::from(update.stream_id)).unwrap_or(i64::MAX);
            let position = db
                .write(move |tx| {
                    store::apply_device_update(tx, &user, &device_id, device.as_ref(), stream_id)?;
                    Ok::<_, Error>(record_device_list_change(
                        tx,
                        &user,
                        Some(&device_id),
                        None,
                    )?)
                })
                .await?;
            services.rooms.notify(position);
            Ok(())
        }
    }
}

/// The device keys of a remote device as JSON, when they are about that device and readable;
/// their signatures are the clients' to check.
fn checked_device_keys(
    keys: &Raw<ruma::encryption::DeviceKeys>,
    user: &str,
    device: &str,
) -> Option<String> {
    let text = keys.json().get();
    json_depth::check_text("device keys", text).ok()?;
    let value: Value = serde_json::from_str(text).ok()?;
    (value.get("user_id").and_then(Value::as_str) == Some(user)
        && value.get("device_id").and_then(Value::as_str) == Some(device))
    .then(|| text.to_owned())
}

fn raw_json<T>(raw: Option<&Raw<T>>) -> Option<String> {
    raw.map(|raw| raw.json().get())
        .filter(|text| json_depth::check_text("a cross-signing key", text).is_ok())
        .map(str::to_owned)
}

/// Fetches the whole device list of `user_id` from their server and replaces the cached one; on
/// failure the cache is dropped (queries then go to their server). Local clients hear the list
/// changed when the cache did.
pub async fn resync(services: &Services, user_id: &UserId) -> Result<()> {
    let server: OwnedServerName = user_id.server_name().to_owned();
    let request = get_devices::Request::new(user_id.to_owned());
    let answer = tokio::time::timeout(
        RESYNC_TIMEOUT,
        services
            .federation
            .send_with_limit(&server, request, RESYNC_MAX_BYTES),
    )
    .await;
    let user = user_id.to_string();
    let fetched = match answer {
        Ok(Ok(response)) if response.user_id == *user_id => {
            let devices: Vec<RemoteDevice> = response
                .devices
                .iter()
                .take(MAX_REMOTE_DEVICES)
                .map(|device| RemoteDevice {
                    device_id: device.device_id.to_string(),
                    display_name: device.device_display_name.clone(),
                    key_json: checked_device_keys(&device.keys, &user, device.device_id.as_str()),
                })
                .collect();
            let list = RemoteList {
                stream_id: i64::try_from(u64::from(response.stream_id)).unwrap_or(i64::MAX),
                master_key: raw_json(response.master_key.as_ref()),
                self_signing_key: raw_json(response.self_signing_key.as_ref()),
            };
            Some((list, devices))
        }
        Ok(Ok(_)) => {
            tracing::info!(%server, %user_id, "device list answered for another user");
            None
        }
        Ok(Err(e)) => {
            tracing::info!(%server, %user_id, "cannot fetch a device list: {e}");
            None
        }
        Err(_) => {
            tracing::info!(%server, %user_id, "fetching a device list timed out");
            None
        }
    };
    let ok = fetched.is_some();
    let position = services
        .db
        .write(move |tx| {
            let had = store::remote_list(tx, &user)?.is_some();
            match fetched {
                // Only while a room is shared: the list is kept up to date only then.
                Some((list, devices))
                    if crate::storage::rooms::shares_a_room_with_a_local_user(tx, &user)? =>
                {
                    store::replace_remote_list(tx, &user, &list, &devices)?
                }
                // Nothing cached and nothing fetched: nothing changed for our clients (telling
                // them would make them ask again, and us fetch again, in a loop).
                _ if !had => return Ok::<_, Error>(None),
                _ => store::delete_remote_list(tx, &user)?,
            }
            Ok(Some(record_device_list_change(tx, &user, None, None)?))
        })
        .await?;
    if let Some(position) = position {
        services.rooms.notify(position);
    }
    if ok {
        Ok(())
    } else {
        Err(Error::internal(format!(
            "device list of {user_id} not fetched"
        )))
    }
}

/// An `m.signing_key_update` from `origin`: new cross-signing keys of one of its users.
pub async fn receive_signing_key_update(
    services: &Services,
    origin: &ServerName,
    update: SigningKeyUpdateContent,
) {
    if update.user_id.server_name() != origin {
        return;
    }
    let user = update.user_id.to_string();
    let master = raw_json(update.master_key.as_ref());
    let self_signing = raw_json(update.self_signing_key.as_ref());
    let result = services
        .db
        .write(move |tx| {
            if !crate::storage::rooms::shares_a_room_with_a_local_user(tx, &user)? {
                return Ok::<_, Error>(None);
            }
            store::set_remote_cross_signing(tx, &user, master.as_deref(), self_signing.as_deref())?;
            Ok(Some(record_device_list_change(tx, &user, None, None)?))
        })
        .await;
    match result {
        Ok(Some(position)) => services.rooms.notify(position),
        Ok(None) => {}
        Err(e) => tracing::info!(%origin, "signing-key update not applied: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{Decision, decide};

    #[test]
    fn an_update_following_the_cached_list_applies() {
        assert_eq!(decide(Some(5), 7, &[5]), Decision::Apply);
    }

    #[test]
    fn without_a_cached_list_the_list_is_fetched() {
        assert_eq!(decide(None, 7, &[5]), Decision::Resync);
    }

    #[test]
    fn a_missed_update_makes_a_resync() {
        // 6 never arrived: 7 names it.
        assert_eq!(decide(Some(5), 7, &[6]), Decision::Resync);
        // One of several parents unknown.
        assert_eq!(decide(Some(5), 8, &[5, 6]), Decision::Resync);
    }

    #[test]
    fn an_update_without_prev_id_makes_a_resync() {
        assert_eq!(decide(Some(5), 7, &[]), Decision::Resync);
    }

    #[test]
    fn an_update_seen_before_is_ignored() {
        assert_eq!(decide(Some(7), 7, &[5]), Decision::Ignore);
        assert_eq!(decide(Some(9), 7, &[5]), Decision::Ignore);
    }

    #[test]
    fn updates_applied_in_order_chain() {
        let mut cached = Some(3);
        for (stream_id, prev) in [(4, 3), (9, 4), (12, 9)] {
            assert_eq!(decide(cached, stream_id, &[prev]), Decision::Apply);
            cached = Some(stream_id);
        }
        // Delivered again after a retry.
        assert_eq!(decide(cached, 9, &[4]), Decision::Ignore);
    }
}
