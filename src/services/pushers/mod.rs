//! Pushers (`GET /pushers`, `POST /pushers/set`) and `GET /notifications`; their delivery to
//! push gateways is [`delivery`].
//!
//! A pusher belongs to the device that set it (`0017_push.sql`: it is deleted with the device, so
//! logging out, deleting the device, a password change that signs the other devices out and
//! deactivation remove it, as in Synapse). Only `http` pushers are kept: `data.url` must be a
//! URL with the path `/_matrix/push/v1/notify` (Synapse does not insist on `https`, nor do we:
//! the outbound address policy decides what may be reached); `email` pushers need a verified
//! email address, which this server never has (no mail is configured), and are refused as
//! Synapse refuses an address it does not know (`M_THREEPID_NOT_FOUND`).
//!
//! `/notifications` is computed, not stored: the events of the user's rooms since they joined
//! (and their invites), newest first, run through the same evaluation as /sync's counts
//! (`push::notifying_actions`), so that the list, the counts and the pushes agree. Each request
//! looks at a bounded number of events; `next_token` carries on from there.

pub mod delivery;

use std::collections::{HashMap, HashSet};

use http::StatusCode;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedRoomId, RoomVersionId, UInt, UserId,
    api::{
        client::push::{
            Pusher, PusherKind, get_notifications::v3::Notification, set_pusher::v3::PusherAction,
        },
        error::ErrorKind,
    },
    push::Action,
    serde::Raw,
};

use super::{Services, json_depth, push};
use crate::{
    error::{Error, Result},
    services::sessions::Identity,
    storage::{now_ms, pushers as store, rooms as room_store},
};

/// The path every push gateway URL must have (Push Gateway API).
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// The spec's limits on the pusher's identifiers.
const MAX_PUSHKEY_BYTES: usize = 512;
const MAX_APP_ID_BYTES: usize = 64;

/// `limit` of `/notifications` when not given, and the most it may be.
const DEFAULT_NOTIFICATIONS: usize = 20;
const MAX_NOTIFICATIONS: usize = 100;
/// The most events one `/notifications` request runs through the rules: a user whose rooms are
/// busy but who is rarely notified pages on with `next_token` instead of one long request.
const MAX_SCANNED: usize = 2_000;

/// The user's pushers, as they set them.
pub async fn list(services: &Services, user: &UserId) -> Result<Vec<Pusher>> {
    let user = user.to_string();
    let stored = services.db.read(move |c| store::of_user(c, &user)).await?;
    Ok(stored
        .iter()
        .filter_map(|json| match serde_json::from_str(json) {
            Ok(pusher) => Some(pusher),
            Err(e) => {
                tracing::warn!("unreadable stored pusher left out: {e}");
                None
            }
        })
        .collect())
}

/// `POST /pushers/set`: adds, replaces or (kind `null`) deletes a pusher of the sender's.
pub async fn set(services: &Services, sender: &Identity, action: PusherAction) -> Result<()> {
    let user = sender.user_id.to_string();
    let pusher = match action {
        PusherAction::Delete(ids) => {
            // Like Synapse: deleting a pusher that does not exist is no error.
            services
                .db
                .write(move |tx| store::delete(tx, &user, &ids.app_id, &ids.pushkey))
                .await?;
            return Ok(());
        }
        PusherAction::Post(post) => (post.pusher, post.append),
        _ => return Err(Error::invalid_param("Unknown pusher action")),
    };
    let (pusher, append) = pusher;
    if pusher.ids.pushkey.len() > MAX_PUSHKEY_BYTES {
        return Err(Error::invalid_param("`pushkey` is longer than 512 bytes"));
    }
    if pusher.ids.app_id.len() > MAX_APP_ID_BYTES {
        return Err(Error::invalid_param("`app_id` is longer than 64 bytes"));
    }
    let url = match &pusher.kind {
        PusherKind::Http(data) => gateway_url(&data.url)?,
        PusherKind::Email(_) => {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::ThreepidNotFound,
                "Email pushers need a verified email address, and this server sends no email",
            ));
        }
        _ => {
            return Err(Error::invalid_param(
                "Unknown pusher kind; only `http` is supported",
            ));
        }
    };
    let json = serde_json::to_value(&pusher).map_err(Error::internal)?;
    json_depth::check("A pusher", &json)?;
    let json = json.to_string();
    let device = sender.device_id.to_string();
    services
        .db
        .write(move |tx| {
            let position = room_store::current_stream_position(tx)?;
            store::set(
                tx,
                &store::NewPusher {
                    user_id: &user,
                    device_id: &device,
                    app_id: &pusher.ids.app_id,
                    pushkey: &pusher.ids.pushkey,
                    pusher: &json,
                    url: url.as_str(),
                    now_ms: now_ms(),
                    position,
                },
                append,
            )
        })
        .await?;
    Ok(())
}

/// A push gateway URL as the spec has it: absolute, `http(s)`, with the path of the notify
/// endpoint. Where it may point is decided when it is used (the outbound address policy).
fn gateway_url(url: &str) -> Result<url::Url> {
    let parsed = url::Url::parse(url)
        .map_err(|e| Error::invalid_param(format!("`data.url` is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host().is_none() {
        return Err(Error::invalid_param("`data.url` must be an https URL"));
    }
    if parsed.path() != NOTIFY_PATH {
        return Err(Error::invalid_param(format!(
            "`data.url` must have the path {NOTIFY_PATH}"
        )));
    }
    Ok(parsed)
}

/// One page of `/notifications`: the notifications and the token of the next page.
pub struct NotificationsPage {
    pub notifications: Vec<Notification>,
    pub next_token: Option<String>,
}

/// `GET /notifications`: the user's notifications newest first, before `from` (a token of an
/// earlier page), at most `limit`, only highlights with `only=highlight`.
pub async fn notifications(
    services: &Services,
    user: &UserId,
    from: Option<&str>,
    limit: Option<UInt>,
    only: Option<&str>,
) -> Result<NotificationsPage> {
    let before = match from {
        None => i64::MAX,
        Some(token) => token
            .parse::<i64>()
            .ok()
            .filter(|position| *position > 0)
            .ok_or_else(|| Error::invalid_param("`from` is not a token of /notifications"))?,
    };
    let limit = limit
        .map_or(DEFAULT_NOTIFICATIONS, |l| {
            usize::try_from(u64::from(l)).unwrap_or(usize::MAX)
        })
        .clamp(1, MAX_NOTIFICATIONS);
    let only_highlight = only == Some("highlight");
    let user = user.to_owned();
    let evaluated = services.evaluated_actions.clone();
    services
        .db
        .read(move |conn| {
            let rules = push::load_for_counting(conn, &user)?;
            let mut contexts = HashMap::new();
            let mut unread: HashMap<OwnedRoomId, HashSet<i64>> = HashMap::new();
            let mut versions: HashMap<String, Option<RoomVersionId>> = HashMap::new();
            let mut notifications = Vec::new();
            let mut scanned = 0;
            let mut cursor = before;
            while notifications.len() < limit && scanned < MAX_SCANNED {
                let batch = store::candidates_before(conn, user.as_str(), cursor, 200)?;
                if batch.is_empty() {
                    return Ok(NotificationsPage {
                        notifications,
                        next_token: None,
                    });
                }
                for candidate in batch {
                    scanned += 1;
                    cursor = candidate.stream_ordering;
                    let Ok(room_id) = OwnedRoomId::try_from(candidate.room_id.as_str()) else {
                        continue;
                    };
                    let Some(actions) = push::notifying_actions(
                        conn,
                        &room_id,
                        &user,
                        candidate.stream_ordering,
                        &rules,
                        &evaluated,
                        &mut contexts,
                    )?
                    else {
                        continue;
                    };
                    if only_highlight && !actions.iter().any(Action::is_highlight) {
                        continue;
                    }
                    let version = match versions.get(&candidate.room_id) {
                        Some(version) => version.clone(),
                        None => {
                            let version = room_store::room_version(conn, &candidate.room_id)?
                                .and_then(|v| RoomVersionId::try_from(v.as_str()).ok());
                            versions.insert(candidate.room_id.clone(), version.clone());
                            version
                        }
                    };
                    let Some(version) = version else { continue };
                    let Some(row) = room_store::get_event(conn, &candidate.event_id)? else {
                        continue;
                    };
                    let Some(event) = super::rooms::read::render(
                        conn,
                        &row,
                        &version,
                        Some((user.as_str(), None)),
                        true,
                    )?
                    else {
                        continue;
                    };
                    let unread = match unread.get(&room_id) {
                        Some(unread) => unread,
                        None => unread
                            .entry(room_id.clone())
                            .or_insert(push::unread_positions(conn, &room_id, &user, i64::MAX)?),
                    };
                    let read = !unread.contains(&candidate.stream_ordering);
                    let event = serde_json::value::to_raw_value(&event).map_err(Error::internal)?;
                    notifications.push(Notification::new(
                        actions,
                        Raw::from_json(event),
                        read,
                        room_id,
                        MilliSecondsSinceUnixEpoch(
                            UInt::try_from(candidate.origin_server_ts.max(0)).unwrap_or_default(),
                        ),
                    ));
                    if notifications.len() == limit {
                        break;
                    }
                }
            }
            // A full page, or the scan bound: the next page goes on before the last event seen.
            Ok(NotificationsPage {
                notifications,
                next_token: Some(cursor.to_string()),
            })
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_need_the_notify_path() {
        assert!(gateway_url("https://push.example.org/_matrix/push/v1/notify").is_ok());
        assert!(gateway_url("http://10.0.0.5:5000/_matrix/push/v1/notify").is_ok());
        for refused in [
            "https://push.example.org/",
            "https://push.example.org/_matrix/push/v1/notify/",
            "ftp://push.example.org/_matrix/push/v1/notify",
            "/_matrix/push/v1/notify",
            "not a url",
        ] {
            assert!(gateway_url(refused).is_err(), "{refused}");
        }
    }
}
