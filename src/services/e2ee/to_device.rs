//! To-device messages: `/sendToDevice` queues them per recipient device (or, for users of other
//! servers, as an `m.direct_to_device` EDU per destination); /sync delivers them and deletes
//! them once the client's next sync token shows it received them.
//!
//! /sync delivers at most [`MAX_PER_SYNC`] (100) after the token's to-device position (when more
//! wait, the token gets a third part saying where delivery stopped) and deletes them only when the
//! device syncs with a token past them, so a lost response is delivered again. Transaction IDs go
//! into `to_device_transactions` in the transaction of the messages.

use std::collections::BTreeMap;

use ruma::{
    OwnedUserId, TransactionId, api::client::to_device::send_event_to_device::v3::Messages,
    serde::Raw, to_device::DeviceIdOrAllDevices,
};
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::object;
use crate::{
    error::{Error, Result},
    services::{Services, json_depth, sessions::Identity},
    storage::to_device as store,
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
    let mut remote: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (user, by_device) in messages {
        for (target, content) in by_device {
            json_depth::check_text("A to-device message's content", content.json().get())?;
            let content = object(content.json(), "A to-device message's content")?;
            if user.server_name() == services.server_name {
                let json = serde_json::to_string(&content).map_err(Error::internal)?;
                local.push((user.clone(), target, json));
            } else {
                let for_user = remote
                    .entry(user.server_name().to_string())
                    .or_default()
                    .entry(user.to_string())
                    .or_insert_with(|| json!({}));
                for_user[target.to_string()] = Value::Object(content);
            }
        }
    }
    let (user, device) = (sender.user_id.to_string(), sender.device_id.to_string());
    let (event_type, txn_id) = (event_type.to_owned(), txn_id.to_string());
    let position = services
        .rooms
        .db()
        .write(move |tx| {
            if !store::claim_transaction(tx, &user, &device, &txn_id)? {
                return Ok(None);
            }
            let mut position = None;
            for (recipient, target, content) in local {
                let recipient = recipient.as_str();
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
            for (destination, messages) in remote {
                let messages = serde_json::to_string(&messages).map_err(Error::internal)?;
                let message_id = TransactionId::new().to_string();
                store::put_outbox(tx, &destination, &user, &event_type, &message_id, &messages)?;
            }
            Ok::<_, Error>(position)
        })
        .await?;
    if let Some(position) = position {
        services.rooms.notify(position);
    }
    Ok(())
}

/// Deletes the messages a device received in syncs up to `acknowledged` (the position its
/// `since` token shows). Writes only when there is something to delete.
pub async fn acknowledge(
    services: &Services,
    user: &str,
    device: &str,
    acknowledged: i64,
) -> Result<()> {
    let (user, device) = (user.to_owned(), device.to_owned());
    let db = services.rooms.db();
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

/// Messages for a device in `(after, upto]`, at most [`MAX_PER_SYNC`], and the position of the
/// last one when more are waiting (the point the next sync continues from).
pub fn pending(
    conn: &Connection,
    user: &str,
    device: &str,
    after: i64,
    upto: i64,
) -> Result<(Vec<Raw<ruma::events::AnyToDeviceEvent>>, Option<i64>)> {
    let rows = store::inbox_between(conn, user, device, after, upto, MAX_PER_SYNC + 1)?;
    let cut = (rows.len() > MAX_PER_SYNC).then(|| rows[MAX_PER_SYNC - 1].stream_position);
    let events = rows
        .into_iter()
        .take(MAX_PER_SYNC)
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
