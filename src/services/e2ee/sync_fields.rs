//! The E2EE part of a /sync response: `to_device`, `device_lists`,
//! `device_one_time_keys_count` and `device_unused_fallback_key_types`.

use ruma::{OneTimeKeyAlgorithm, api::client::sync::sync_events::v3 as sync_events};

use super::{device_lists, keys, to_device};
use crate::{
    error::{Error, Result},
    services::Services,
    storage::e2ee_keys as store,
};

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
    let (fields, cut) = services
        .rooms
        .db()
        .read(move |c| {
            let mut fields = sync_events::Response::new(String::new());
            // An initial sync reports no device-list changes: the client fetches everyone's keys.
            if let Some((stream, _)) = since {
                let lists = device_lists::between(c, &user, stream, upto)?;
                fields.device_lists.changed = lists.changed;
                fields.device_lists.left = lists.left;
            }
            let after = since.map_or(0, |(_, to_device)| to_device);
            let (events, cut) = to_device::pending(c, &user, &device, after, upto)?;
            fields.to_device.events = events;
            fields.device_one_time_keys_count = keys::one_time_key_counts(c, &user, &device)?;
            fields.device_unused_fallback_key_types = Some(
                store::unused_fallback_algorithms(c, &user, &device)?
                    .iter()
                    .map(|a| OneTimeKeyAlgorithm::from(a.as_str()))
                    .collect(),
            );
            Ok::<_, Error>((fields, cut))
        })
        .await?;
    response.to_device = fields.to_device;
    response.device_lists = fields.device_lists;
    response.device_one_time_keys_count = fields.device_one_time_keys_count;
    response.device_unused_fallback_key_types = fields.device_unused_fallback_key_types;
    Ok(cut)
}

/// Whether the E2EE part of a response is worth waking a long-poll for.
pub fn has_news(response: &sync_events::Response) -> bool {
    !response.to_device.events.is_empty()
        || !response.device_lists.changed.is_empty()
        || !response.device_lists.left.is_empty()
}
