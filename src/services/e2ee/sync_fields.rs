//! The E2EE part of a /sync response: `to_device`, `device_lists`,
//! `device_one_time_keys_count` and `device_unused_fallback_key_types`.

use std::collections::BTreeMap;

use ruma::{
    OneTimeKeyAlgorithm, UInt,
    api::client::sync::sync_events::{DeviceLists, v3 as sync_events},
    events::AnyToDeviceEvent,
    serde::Raw,
};
use rusqlite::Connection;

use super::{device_lists, keys, to_device};
use crate::{error::Result, services::Services, storage::e2ee_keys as store};

/// The E2EE part of a sync for one device, shared by `/sync` and sliding sync's `e2ee` and
/// `to_device` extensions.
pub struct Fields {
    pub device_lists: DeviceLists,
    pub one_time_keys_count: BTreeMap<OneTimeKeyAlgorithm, UInt>,
    pub unused_fallback_key_types: Vec<OneTimeKeyAlgorithm>,
    pub to_device: Vec<Raw<AnyToDeviceEvent>>,
    /// Where to-device delivery stopped when more messages wait than one response carries.
    pub to_device_cut: Option<i64>,
}

/// Reads the E2EE fields for the device: device-list changes in `(lists_since, upto]` (none
/// without `lists_since`: an initial sync makes the client fetch everyone's keys) and the
/// to-device messages in `(to_device_after, upto]`, at most `to_device_limit`.
pub fn read(
    c: &Connection,
    user: &str,
    device: &str,
    lists_since: Option<i64>,
    to_device_after: i64,
    to_device_limit: usize,
    upto: i64,
) -> Result<Fields> {
    let mut device_lists = DeviceLists::new();
    if let Some(stream) = lists_since {
        let lists = device_lists::between(c, user, stream, upto)?;
        device_lists.changed = lists.changed;
        device_lists.left = lists.left;
    }
    let (to_device, to_device_cut) =
        to_device::pending(c, user, device, to_device_after, upto, to_device_limit)?;
    Ok(Fields {
        device_lists,
        one_time_keys_count: keys::one_time_key_counts(c, user, device)?,
        unused_fallback_key_types: store::unused_fallback_algorithms(c, user, device)?
            .iter()
            .map(|a| OneTimeKeyAlgorithm::from(a.as_str()))
            .collect(),
        to_device,
        to_device_cut,
    })
}

/// Fills the E2EE fields of `response` for the syncing device, for changes in
/// `(since, upto]`. Returns the position to-device delivery stopped at when more messages are
/// waiting than one response carries.
pub async fn fill(
    services: &Services,
    user: &str,
    device: &str,
    since: Option<(i64, i64)>,
    upto: i64,
    response: &mut sync_events::Response,
) -> Result<Option<i64>> {
    let (user, device) = (user.to_owned(), device.to_owned());
    let fields = services
        .db
        .read(move |c| {
            let after = since.map_or(0, |(_, to_device)| to_device);
            read(
                c,
                &user,
                &device,
                since.map(|(stream, _)| stream),
                after,
                to_device::MAX_PER_SYNC,
                upto,
            )
        })
        .await?;
    response.to_device.events = fields.to_device;
    response.device_lists = fields.device_lists;
    response.device_one_time_keys_count = fields.one_time_keys_count;
    response.device_unused_fallback_key_types = Some(fields.unused_fallback_key_types);
    Ok(fields.to_device_cut)
}

/// Whether the E2EE part of a response is worth waking a long-poll for.
pub fn has_news(response: &sync_events::Response) -> bool {
    !response.to_device.events.is_empty()
        || !response.device_lists.changed.is_empty()
        || !response.device_lists.left.is_empty()
}
