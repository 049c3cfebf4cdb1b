//! Account data (global and per room), read receipts and stored filters: small per-user records
//! that ride the same stream as events, so /sync reports them.

use ruma::{EventId, RoomId, UserId};
use serde_json::Value;

use super::{json_depth, rooms::Rooms};
use crate::{
    error::{Error, Result},
    storage::{Database, account_data as store, now_ms},
};

/// Largest account data content accepted.
const MAX_CONTENT_BYTES: usize = 65_536;

/// How a warning names stored account data (never its content).
pub fn stored_name(user: &str, room: &str, data_type: &str) -> String {
    if room.is_empty() {
        format!("account data {data_type} of {user}")
    } else {
        format!("account data {data_type} of {user} in {room}")
    }
}

pub struct AccountData {
    db: Database,
}

impl AccountData {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Stores account data (`room` `None` for global) and wakes /sync.
    pub async fn put(
        &self,
        rooms: &Rooms,
        user: &UserId,
        room: Option<&RoomId>,
        data_type: &str,
        content: &Value,
    ) -> Result<()> {
        if !content.is_object() {
            return Err(Error::bad_json(
                "Account data content must be a JSON object",
            ));
        }
        json_depth::check("Account data content", content)?;
        let content = serde_json::to_string(content).map_err(Error::internal)?;
        if content.len() > MAX_CONTENT_BYTES {
            return Err(Error::too_large("Account data is larger than 64 KiB"));
        }
        let (user, room, data_type) = (
            user.to_string(),
            room.map(|r| r.to_string()).unwrap_or_default(),
            data_type.to_owned(),
        );
        let position = self
            .db
            .write(move |tx| {
                store::put(tx, &user, &room, &data_type, &content).map_err(Error::from)
            })
            .await?;
        rooms.notify(position);
        Ok(())
    }

    /// Moves the user's fully-read marker in a room (`m.fully_read` room account data), which
    /// `/receipt` with `m.fully_read` and `/read_markers` both set.
    pub async fn set_fully_read(
        &self,
        rooms: &Rooms,
        user: &UserId,
        room: &RoomId,
        event_id: &EventId,
    ) -> Result<()> {
        let content = serde_json::json!({ "event_id": event_id });
        self.put(rooms, user, Some(room), "m.fully_read", &content)
            .await
    }

    /// The stored content; `404` also for content an older version stored too deeply nested to
    /// hand out (replacing it works).
    pub async fn get(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        data_type: &str,
    ) -> Result<Value> {
        let (user, room, data_type) = (
            user.to_string(),
            room.map(|r| r.to_string()).unwrap_or_default(),
            data_type.to_owned(),
        );
        let (u, r, t) = (user.clone(), room.clone(), data_type.clone());
        let json = self
            .db
            .read(move |c| store::get(c, &u, &r, &t).map_err(Error::from))
            .await?
            .ok_or_else(|| Error::not_found("Account data not found"))?;
        json_depth::readable(|| stored_name(&user, &room, &data_type), &json).ok_or_else(|| {
            Error::not_found("This account data is nested too deeply to be shown; replace it")
        })
    }

    /// Records a receipt (`thread` empty when unthreaded) and wakes /sync.
    pub async fn put_receipt(
        &self,
        rooms: &Rooms,
        room: &RoomId,
        user: &UserId,
        receipt_type: &str,
        thread: &str,
        event_id: &str,
    ) -> Result<()> {
        let (room, user, receipt_type, thread, event_id) = (
            room.to_string(),
            user.to_string(),
            receipt_type.to_owned(),
            thread.to_owned(),
            event_id.to_owned(),
        );
        // Only our own users' receipts go out; those of other servers' users came from them.
        let local = <&UserId>::try_from(user.as_str())
            .is_ok_and(|u| u.server_name() == rooms.server_name());
        let position = self
            .db
            .write(move |tx| {
                let found = crate::storage::rooms::get_event(tx, &event_id)?
                    .is_some_and(|e| e.room_id == room);
                if !found {
                    return Err(Error::not_found("Event not found in this room"));
                }
                let now = now_ms();
                let position =
                    store::put_receipt(tx, &room, &user, &receipt_type, &thread, &event_id, now)?;
                // Public read receipts go to the room's other servers (queued in this
                // transaction, sent by services/federation/sender).
                if receipt_type == "m.read"
                    && local
                    && let (Ok(room), Ok(user), Ok(event)) = (
                        <&ruma::RoomId>::try_from(room.as_str()),
                        <&UserId>::try_from(user.as_str()),
                        <&ruma::EventId>::try_from(event_id.as_str()),
                    )
                {
                    let ts = ruma::MilliSecondsSinceUnixEpoch(
                        ruma::UInt::try_from(now).unwrap_or_default(),
                    );
                    crate::services::federation::sender::enqueue_read_receipt(
                        tx, room, user, &thread, event, ts,
                    )?;
                }
                Ok(position)
            })
            .await?;
        rooms.notify(position);
        Ok(())
    }

    pub async fn create_filter(&self, user: &UserId, json: String) -> Result<i64> {
        let user = user.to_string();
        self.db
            .write(move |tx| store::insert_filter(tx, &user, &json).map_err(Error::from))
            .await
    }

    pub async fn filter(&self, user: &UserId, id: i64) -> Result<String> {
        let user = user.to_string();
        self.db
            .read(move |c| store::get_filter(c, &user, id).map_err(Error::from))
            .await?
            .ok_or_else(|| Error::not_found("No such filter"))
    }
}
