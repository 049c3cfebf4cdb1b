//! Ignored users (`m.ignored_user_list` account data, the spec's "Ignoring Users"): what they
//! send is not delivered to the user who ignores them. Their non-state room events are hidden
//! wherever events are read (`rooms::read::Visibility`: /sync timelines, `/messages`,
//! `/context`, `/event`, relations, search), their invites are left out of /sync, their typing
//! and receipts are left out of both syncs (`sync::room`, `sync::v3`, `sync::sliding`), and
//! their to-device messages are dropped when sent (`e2ee::to_device`); their events never notify
//! (`push::UserRules` carries the list: counts, `/notifications`, pushes). Filtering at read
//! time means that un-ignoring shows the user's events again, history included, at the client's
//! next (full) sync, as the spec describes; state events stay, since the room's state must
//! remain whole.

use std::collections::HashSet;

use rusqlite::Connection;
use serde_json::Value;

use crate::{error::Result, storage::account_data as store};

/// The users `user` ignores (empty when the list is missing or malformed).
pub fn ignored_users(conn: &Connection, user: &str) -> Result<HashSet<String>> {
    let content = store::get(conn, user, "", "m.ignored_user_list")?;
    Ok(content
        .and_then(|c| serde_json::from_str::<Value>(&c).ok())
        .and_then(|c| c["ignored_users"].as_object().cloned())
        .map(|users| users.keys().cloned().collect())
        .unwrap_or_default())
}

/// Does `user` ignore `other`?
pub fn ignores(conn: &Connection, user: &str, other: &str) -> Result<bool> {
    Ok(user != other && ignored_users(conn, user)?.contains(other))
}
