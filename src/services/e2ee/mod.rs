//! End-to-end encryption: the server stores and routes keys and encrypted messages, never
//! plaintext. Device keys and one-time keys (`keys`), cross-signing (`cross_signing`), who must
//! re-fetch whose keys (`device_lists`), to-device messages (`to_device`), server-side key
//! backups (`backup`) and the E2EE fields of /sync (`sync_fields`).
//!
//! Local-only functions (`keys::query_local`, `keys::claim_local`, `device_lists`) take no
//! requester's HTTP context, so the federation endpoints (`user/keys/query`, `user/keys/claim`,
//! `user/devices`) can serve from the same code.
//!
//! Handlers are in `api/client/keys.rs` (keys, cross-signing, `/sendToDevice`) and
//! `api/client/backup.rs`, for other servers in `api/server/user_keys.rs`; SQL in
//! `storage/{e2ee_keys,to_device,key_backup,remote_e2ee}.rs` (migrations `0005_e2ee.sql`,
//! `0015_remote_e2ee.sql`). What clients upload is kept as they sent it (JSON text), so
//! signatures over it stay verifiable. Everything of a device (keys, inbox, transactions)
//! references `devices` with `ON DELETE CASCADE`, so deleting a device removes it.
//!
//! Across servers: `federation` asks other servers for their users' keys (`/keys/query`,
//! `/keys/claim`) and serves ours; `remote_lists` turns our users' rows of `device_list_changes`
//! into `m.device_list_update` / `m.signing_key_update` EDUs (the user's previous row is the
//! `prev_id`) and keeps other servers' users' device lists from theirs; `to_device` queues
//! `m.direct_to_device` EDUs in the federation sender's queue and delivers received ones.

pub mod backup;
pub mod cross_signing;
pub mod device_lists;
pub mod federation;
pub mod keys;
pub mod remote_lists;
pub mod signatures;
pub mod sync_fields;
pub mod to_device;

use http::StatusCode;
use ruma::api::error::ErrorKind;
use serde_json::{Map, Value, json};

use crate::error::Error;

/// `M_INVALID_SIGNATURE` (400): a key's signature does not verify. ruma has no variant for this
/// errcode, so the kind is read from its JSON form.
pub fn invalid_signature(message: impl Into<String>) -> Error {
    let kind = serde_json::from_value::<ErrorKind>(json!({"errcode": "M_INVALID_SIGNATURE"}))
        .unwrap_or(ErrorKind::Unknown);
    Error::new(StatusCode::BAD_REQUEST, kind, message.into())
}

/// A JSON object from a client, or `M_BAD_JSON`.
fn object(value: &serde_json::value::RawValue, what: &str) -> Result<Map<String, Value>, Error> {
    serde_json::from_str(value.get())
        .map_err(|_| Error::bad_json(format!("{what} must be a JSON object")))
}

/// The same object without `signatures` and `unsigned`: what a signature covers.
fn signed_part(object: &Map<String, Value>) -> Map<String, Value> {
    let mut part = object.clone();
    part.remove("signatures");
    part.remove("unsigned");
    part
}
