//! Room tags (`m.favourite`, `u.work`, …): room account data of type `m.tag` with content
//! `{"tags": {<tag>: {"order": <number>}}}`, so /sync shows them in the room's account data.

use ruma::{RoomId, UserId, events::tag::Tags};
use serde_json::{Map, Value, json};

use super::Services;
use crate::{
    error::{Error, Result},
    storage::account_data as data_store,
};

/// The account data type that holds a room's tags.
pub const EVENT_TYPE: &str = "m.tag";

/// Longest tag name, in bytes (the spec's limit).
const MAX_TAG_BYTES: usize = 255;

/// The user's tags of a room (none when never tagged). Tags that do not parse are left out.
pub async fn tags(services: &Services, user: &UserId, room: &RoomId) -> Result<Tags> {
    let (user, room) = (user.to_string(), room.to_string());
    let stored = services
        .db
        .read(move |c| data_store::get(c, &user, &room, EVENT_TYPE).map_err(Error::from))
        .await?;
    let tags = stored
        .and_then(|json| serde_json::from_str::<Value>(&json).ok())
        .and_then(|content| content.get("tags").and_then(Value::as_object).cloned())
        .unwrap_or_default();
    Ok(tags
        .into_iter()
        .filter_map(|(name, info)| Some((name.into(), serde_json::from_value(info).ok()?)))
        .collect())
}

/// Adds or replaces a tag with its info (`{"order": 0.5}` or `{}`).
pub async fn set_tag(
    services: &Services,
    user: &UserId,
    room: &RoomId,
    tag: &str,
    info: Value,
) -> Result<()> {
    if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
        return Err(Error::invalid_param(format!(
            "A tag must have 1 to {MAX_TAG_BYTES} bytes"
        )));
    }
    if !info.is_object() {
        return Err(Error::bad_json("The tag info must be a JSON object"));
    }
    let tag = tag.to_owned();
    change(services, user, room, move |tags| {
        tags.insert(tag, info);
    })
    .await
}

/// Removes a tag; removing a tag the room does not have is not an error.
pub async fn delete_tag(
    services: &Services,
    user: &UserId,
    room: &RoomId,
    tag: &str,
) -> Result<()> {
    let tag = tag.to_owned();
    change(services, user, room, move |tags| {
        tags.remove(&tag);
    })
    .await
}

/// Changes the stored tags in one transaction and wakes /sync.
async fn change(
    services: &Services,
    user: &UserId,
    room: &RoomId,
    edit: impl FnOnce(&mut Map<String, Value>) + Send + 'static,
) -> Result<()> {
    let (user, room) = (user.to_string(), room.to_string());
    let position = services
        .db
        .write(move |tx| {
            // Tags an older version stored too deeply nested (through the account data API)
            // are dropped rather than kept unreadable.
            let what = || super::account_data::stored_name(&user, &room, EVENT_TYPE);
            let mut content: Value = data_store::get(tx, &user, &room, EVENT_TYPE)?
                .and_then(|json| super::json_depth::readable(what, &json))
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            if !content["tags"].is_object() {
                content["tags"] = json!({});
            }
            if let Some(tags) = content["tags"].as_object_mut() {
                edit(tags);
            }
            let json = serde_json::to_string(&content).map_err(Error::internal)?;
            Ok::<_, Error>(data_store::put(tx, &user, &room, EVENT_TYPE, &json)?)
        })
        .await?;
    services.rooms.notify(position);
    Ok(())
}
