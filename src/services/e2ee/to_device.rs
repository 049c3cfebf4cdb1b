//! To-device messages: `/sendToDevice` queues them per recipient device (or, for users of other
//! servers, as an `m.direct_to_device` EDU per destination in the federation sender's queue, in
//! the same transaction); /sync delivers them and deletes them once the client's next sync token
//! shows it received them. Those other servers send us (`receive`) go into the same inbox,
//! each `(origin, message_id)` once (`federation_to_device_seen`, kept a day).
//!
//! /sync delivers at most [`MAX_PER_SYNC`] (100) after the token's to-device position (when more
//! wait, the token gets a third part saying where delivery stopped) and deletes them only when the
//! device syncs with a token past them, so a lost response is delivered again. Transaction IDs go
//! into `to_device_transactions` in the transaction of the messages.

use std::collections::BTreeMap;

use ruma::{
    OwnedUserId, ServerName, TransactionId,
    api::{
        client::to_device::send_event_to_device::v3::Messages,
        federation::transactions::edu::{DirectDeviceContent, Edu},
    },
    serde::Raw,
    to_device::DeviceIdOrAllDevices,
};
use rusqlite::Connection;
use serde_json::json;

use super::object;
use crate::{
    error::{Error, Result},
    services::{Services, federation::sender, ignored, json_depth, sessions::Identity},
    storage::{remote_e2ee as remote_store, to_device as store},
};

/// Most messages one /sync delivers; the rest follow in the next one.
pub const MAX_PER_SYNC: usize = 100;

/// `PUT /sendToDevice/{eventType}/{txnId}`: queues every message in one transaction; a retried
/// transaction ID changes nothing. Messages for unknown local devices are dropped, as the spec
/// allows.
pub async fn send(
    services: &Services,
    sender: &Identity,
    event_type: &str,
    txn_id: &TransactionId,
    messages: Messages,
) -> Result<()> {
    let mut local: Vec<(OwnedUserId, DeviceIdOrAllDevices, String)> = Vec::new();
    let mut remote: BTreeMap<String, DirectDeviceContent> = BTreeMap::new();
    for (user, by_device) in messages {
        for (target, content) in by_device {
            json_depth::check_text("A to-device message's content", content.json().get())?;
            let content = object(content.json(), "A to-device message's content")?;
            if user.server_name() == services.server_name {
                let json = serde_json::to_string(&content).map_err(Error::internal)?;
                local.push((user.clone(), target, json));
            } else {
                // One EDU per destination and send, its message ID new (the destination
                // delivers each message ID once).
                let edu = remote
                    .entry(user.server_name().to_string())
                    .or_insert_with(|| {
                        DirectDeviceContent::new(
                            sender.user_id.clone(),
                            event_type.into(),
                            TransactionId::new(),
                        )
                    });
                let raw = serde_json::value::to_raw_value(&content).map_err(Error::internal)?;
                edu.messages
                    .entry(user.clone())
                    .or_default()
                    .insert(target, Raw::from_json(raw));
            }
        }
    }
    let queued_remote = !remote.is_empty();
    let (user, device) = (sender.user_id.to_string(), sender.device_id.to_string());
    let (event_type, txn_id) = (event_type.to_owned(), txn_id.to_string());
    let position = services
        .db
        .write(move |tx| {
            if !store::claim_transaction(tx, &user, &device, &txn_id)? {
                return Ok(None);
            }
            let mut position = None;
            for (recipient, target, content) in local {
                let recipient = recipient.as_str();
                // Not delivered to whoever ignores the sender (the spec's "Ignoring Users").
                if ignored::ignores(tx, recipient, &user)? {
                    continue;
                }
                let devices = match target {
                    DeviceIdOrAllDevices::AllDevices => store::device_ids(tx, recipient)?,
                    DeviceIdOrAllDevices::DeviceId(id) => {
                        if store::device_exists(tx, recipient, id.as_str())? {
                            vec![id.to_string()]
                        } else {
                            Vec::new()
                        }
                    }
                };
                for target in devices {
                    position = Some(store::put_inbox(
                        tx,
                        recipient,
                        &target,
                        &user,
                        &event_type,
                        &content,
                    )?);
                }
            }
            for (destination, content) in remote {
                sender::enqueue_edu_for(tx, &[destination], &Edu::DirectToDevice(content))?;
            }
            Ok::<_, Error>(position)
        })
        .await?;
    if let Some(position) = position {
        services.rooms.notify(position);
    }
    if queued_remote {
        services.federation_sender.wake();
    }
    Ok(())
}

/// An `m.direct_to_device` EDU from `origin`: the messages of one of its users for ours, each
/// message ID delivered once, in one transaction; messages for other servers' users or unknown
/// devices are dropped.
pub async fn receive(services: &Services, origin: &ServerName, content: DirectDeviceContent) {
    if content.sender.server_name() != origin {
        return;
    }
    let mut deliveries: Vec<(String, DeviceIdOrAllDevices, String)> = Vec::new();
    for (user, by_device) in &content.messages {
        if user.server_name() != services.server_name {
            continue;
        }
        for (target, message) in by_device {
            let text = message.json().get();
            if json_depth::check_text("A to-device message's content", text).is_err()
                || object(message.json(), "A to-device message's content").is_err()
            {
                continue;
            }
            deliveries.push((user.to_string(), target.clone(), text.to_owned()));
        }
    }
    let (origin_name, message_id) = (origin.to_string(), content.message_id.to_string());
    let (sender_id, event_type) = (content.sender.to_string(), content.ev_type.to_string());
    let result = services
        .db
        .write(move |tx| {
            let now = crate::storage::now_ms();
            if !remote_store::mark_to_device_seen(tx, &origin_name, &message_id, now)? {
                return Ok::<_, Error>(None);
            }
            remote_store::prune_to_device_seen(tx, now - SEEN_MESSAGE_IDS_MS)?;
            let mut position = None;
            for (recipient, target, content) in deliveries {
                if ignored::ignores(tx, &recipient, &sender_id)? {
                    continue;
                }
                let devices = match target {
                    DeviceIdOrAllDevices::AllDevices => store::device_ids(tx, &recipient)?,
                    DeviceIdOrAllDevices::DeviceId(id) => {
                        if store::device_exists(tx, &recipient, id.as_str())? {
                            vec![id.to_string()]
                        } else {
                            Vec::new()
                        }
                    }
                };
                for device in devices {
                    position = Some(store::put_inbox(
                        tx,
                        &recipient,
                        &device,
                        &sender_id,
                        &event_type,
                        &content,
                    )?);
                }
            }
            Ok(position)
        })
        .await;
    match result {
        Ok(Some(position)) => services.rooms.notify(position),
        Ok(None) => {}
        Err(e) => tracing::warn!(%origin, "to-device messages not stored: {e}"),
    }
}

/// How long a received message ID is remembered: far longer than any server retries.
const SEEN_MESSAGE_IDS_MS: i64 = 24 * 3600 * 1000;

/// Deletes the messages a device received in syncs up to `acknowledged` (the position its
/// `since` token shows). Writes only when there is something to delete.
pub async fn acknowledge(
    services: &Services,
    user: &str,
    device: &str,
    acknowledged: i64,
) -> Result<()> {
    let (user, device) = (user.to_owned(), device.to_owned());
    let db = &services.db;
    let (u, d) = (user.clone(), device.clone());
    let pending = db
        .read(move |c| store::has_inbox_upto(c, &u, &d, acknowledged))
        .await?;
    if pending {
        db.write(move |tx| store::delete_inbox_upto(tx, &user, &device, acknowledged))
            .await?;
    }
    Ok(())
}

/// Messages for a device in `(after, upto]`, at most `limit` (and [`MAX_PER_SYNC`]), and the
/// position of the
/// last one when more are waiting (the point the next sync continues from).
pub fn pending(
    conn: &Connection,
    user: &str,
    device: &str,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<(Vec<Raw<ruma::events::AnyToDeviceEvent>>, Option<i64>)> {
    let limit = limit.clamp(1, MAX_PER_SYNC);
    let rows = store::inbox_between(conn, user, device, after, upto, limit + 1)?;
    let cut = (rows.len() > limit).then(|| rows[limit - 1].stream_position);
    let events = rows
        .into_iter()
        .take(limit)
        // A message stored too deeply nested by an older version is left out (and deleted with
        // the others once this sync is acknowledged): it would make the response unreadable.
        .filter_map(|row| {
            let what = || {
                let position = row.stream_position;
                format!("to-device message {position} for {user} {device}")
            };
            let content = json_depth::readable(what, &row.content)?;
            Some((row, content))
        })
        .map(|(row, content)| {
            let event = json!({"sender": row.sender, "type": row.event_type, "content": content});
            Ok(Raw::from_json(
                serde_json::value::to_raw_value(&event).map_err(Error::internal)?,
            ))
        })
        .collect::<Result<_>>()?;
    Ok((events, cut))
}
