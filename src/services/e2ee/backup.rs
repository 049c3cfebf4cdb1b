//! Server-side key backups (`/room_keys/...`): versions with the client's `auth_data`, and the
//! session keys the client encrypted for them. Keys go only into the current (newest) version;
//! a session already backed up is replaced only by a better copy (the spec's rules); `etag`
//! changes whenever a version's keys change.
//!
//! Versions count up per user and are never reused; the current one is the newest not deleted, and
//! only it takes keys (`M_WRONG_ROOM_KEYS_VERSION` with `current_version` otherwise). A stored
//! session is replaced by a verified copy over an unverified one, then by a lower
//! `first_message_index`, then by a lower `forwarded_count`. `etag` counts the changes of a
//! version's keys; `session_data` is kept as the client sent it (its shape depends on the
//! algorithm).

use http::StatusCode;
use ruma::{
    UInt, UserId,
    api::{
        client::backup::{BackupAlgorithm, KeyBackupData},
        error::{ErrorKind, WrongRoomKeysVersionErrorData},
    },
    serde::Raw,
};
use serde_json::{Map, Value, json};

use super::object;
use crate::{
    error::{Error, Result},
    services::{Services, json_depth},
    storage::key_backup::{self as store, KeyRow, VersionRow},
};

/// A version as `GET /room_keys/version` shows it.
pub struct VersionInfo {
    pub algorithm: Raw<BackupAlgorithm>,
    pub count: UInt,
    pub etag: String,
    pub version: String,
}

/// A session key to back up.
pub struct NewKey {
    pub room_id: String,
    pub session_id: String,
    pub data: Raw<KeyBackupData>,
}

fn unknown_version() -> Error {
    Error::not_found("Unknown backup version")
}

/// Version numbers are decimal integers; anything else names no version.
fn parse_version(version: &str) -> Result<i64> {
    version.parse().map_err(|_| unknown_version())
}

/// `(algorithm, auth_data)` of a backup algorithm object, checked.
fn algorithm_parts(algorithm: &Raw<BackupAlgorithm>) -> Result<(String, Map<String, Value>)> {
    algorithm
        .deserialize()
        .map_err(|e| Error::bad_json(format!("Invalid backup algorithm: {e}")))?;
    let body = object(algorithm.json(), "The backup version")?;
    let name = body
        .get("algorithm")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_json("`algorithm` must be a string"))?
        .to_owned();
    let auth_data = body
        .get("auth_data")
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| Error::bad_json("`auth_data` must be an object"))?;
    json_depth::check("auth_data", &body["auth_data"])?;
    Ok((name, auth_data))
}

/// `POST /room_keys/version`: the new version becomes the current one.
pub async fn create_version(
    services: &Services,
    user: &UserId,
    algorithm: &Raw<BackupAlgorithm>,
) -> Result<String> {
    let (name, auth_data) = algorithm_parts(algorithm)?;
    let auth_data = serde_json::to_string(&auth_data).map_err(Error::internal)?;
    let user = user.to_string();
    let version = services
        .db
        .write(move |tx| store::create_version(tx, &user, &name, &auth_data))
        .await?;
    Ok(version.to_string())
}

/// `GET /room_keys/version[/{version}]`: the named version, or the current one.
pub async fn version_info(
    services: &Services,
    user: &UserId,
    version: Option<&str>,
) -> Result<VersionInfo> {
    let version = version.map(parse_version).transpose()?;
    let user = user.to_string();
    let (row, count) = services
        .db
        .read(move |c| {
            let row = match version {
                Some(version) => store::version(c, &user, version)?,
                None => store::current_version(c, &user)?,
            };
            let Some(row) = row else {
                return Ok(None);
            };
            let count = store::count_keys(c, &user, row.version)?;
            Ok::<_, Error>(Some((row, count)))
        })
        .await?
        .ok_or_else(|| match version {
            Some(_) => unknown_version(),
            None => Error::not_found("No current backup version"),
        })?;
    let auth_data: Value = serde_json::from_str(&row.auth_data).map_err(Error::internal)?;
    let algorithm = json!({"algorithm": row.algorithm, "auth_data": auth_data});
    Ok(VersionInfo {
        algorithm: Raw::from_json(
            serde_json::value::to_raw_value(&algorithm).map_err(Error::internal)?,
        ),
        count: UInt::try_from(count).unwrap_or_default(),
        etag: row.etag.to_string(),
        version: row.version.to_string(),
    })
}

/// `PUT /room_keys/version/{version}`: replaces `auth_data`; the algorithm cannot change.
pub async fn update_version(
    services: &Services,
    user: &UserId,
    version: &str,
    algorithm: &Raw<BackupAlgorithm>,
) -> Result<()> {
    let number = parse_version(version)?;
    let (name, auth_data) = algorithm_parts(algorithm)?;
    let body = object(algorithm.json(), "The backup version")?;
    if let Some(in_body) = body.get("version")
        && in_body.as_str() != Some(version)
    {
        return Err(Error::invalid_param(
            "The version in the body does not match the one in the path",
        ));
    }
    let auth_data = serde_json::to_string(&auth_data).map_err(Error::internal)?;
    let user = user.to_string();
    services
        .db
        .write(move |tx| {
            let row = store::version(tx, &user, number)?.ok_or_else(unknown_version)?;
            if row.algorithm != name {
                return Err(Error::invalid_param(
                    "The algorithm of a backup version cannot change",
                ));
            }
            store::set_auth_data(tx, &user, number, &auth_data)?;
            Ok(())
        })
        .await
}

/// `DELETE /room_keys/version/{version}`: the version and its keys go; the previous version, if
/// any, becomes current again.
pub async fn delete_version(services: &Services, user: &UserId, version: &str) -> Result<()> {
    let number = parse_version(version)?;
    let user = user.to_string();
    let deleted = services
        .db
        .write(move |tx| store::delete_version(tx, &user, number))
        .await?;
    if deleted {
        Ok(())
    } else {
        Err(unknown_version())
    }
}

/// The fields of an uploaded session key that the server reads.
#[derive(serde::Deserialize)]
struct BackupFields {
    first_message_index: UInt,
    forwarded_count: UInt,
    is_verified: bool,
    session_data: Map<String, Value>,
}

/// Whether `new` should replace the backed-up `old` copy of a session key: a verified copy
/// beats an unverified one, then a lower first message index, then a lower forwarded count.
pub fn should_replace(old: &KeyRow, new: &KeyRow) -> bool {
    if old.is_verified != new.is_verified {
        return new.is_verified;
    }
    if old.first_message_index != new.first_message_index {
        return new.first_message_index < old.first_message_index;
    }
    new.forwarded_count < old.forwarded_count
}

/// `PUT /room_keys/keys[...]`: stores keys into the current version; returns `(etag, count)`.
pub async fn put_keys(
    services: &Services,
    user: &UserId,
    version: &str,
    keys: Vec<NewKey>,
) -> Result<(String, UInt)> {
    let number = parse_version(version)?;
    let rows: Vec<KeyRow> = keys
        .into_iter()
        .map(|key| {
            // `session_data` depends on the algorithm (ruma's type knows only the first one):
            // the server checks the fields it orders by and keeps the rest as it came.
            let parsed: BackupFields = serde_json::from_str(key.data.json().get())
                .map_err(|e| Error::bad_json(format!("Invalid key backup data: {e}")))?;
            let session_data = Value::Object(parsed.session_data);
            // `/room_keys/keys` shows it 5 levels further down than a one-session upload.
            json_depth::check("session_data", &session_data)?;
            Ok(KeyRow {
                room_id: key.room_id,
                session_id: key.session_id,
                first_message_index: i64::from(parsed.first_message_index),
                forwarded_count: i64::from(parsed.forwarded_count),
                is_verified: parsed.is_verified,
                session_data: serde_json::to_string(&session_data).map_err(Error::internal)?,
            })
        })
        .collect::<Result<_>>()?;
    let user = user.to_string();
    services
        .db
        .write(move |tx| {
            let row = writable_version(tx, &user, number)?;
            let mut changed = false;
            for new in &rows {
                let old =
                    store::keys(tx, &user, number, Some(&new.room_id), Some(&new.session_id))?;
                if old.first().is_none_or(|old| should_replace(old, new)) {
                    store::put_key(tx, &user, number, new)?;
                    changed = true;
                }
            }
            if changed {
                store::bump_etag(tx, &user, number)?;
            }
            let count = store::count_keys(tx, &user, number)?;
            let etag = row.etag + i64::from(changed);
            Ok((etag.to_string(), UInt::try_from(count).unwrap_or_default()))
        })
        .await
}

/// The version keys may be written to: it exists and is the current one.
fn writable_version(conn: &rusqlite::Connection, user: &str, version: i64) -> Result<VersionRow> {
    let current = store::current_version(conn, user)?;
    match current {
        Some(current) if current.version == version => Ok(current),
        Some(current) if store::version(conn, user, version)?.is_some() => Err(Error::new(
            StatusCode::FORBIDDEN,
            ErrorKind::WrongRoomKeysVersion(WrongRoomKeysVersionErrorData::new(
                current.version.to_string(),
            )),
            "The backup version is not the current one",
        )),
        _ => Err(unknown_version()),
    }
}

/// `GET /room_keys/keys[...]`: the backed-up keys of a version, of a room, or of one session.
pub async fn get_keys(
    services: &Services,
    user: &UserId,
    version: &str,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> Result<Vec<KeyRow>> {
    let number = parse_version(version)?;
    let user = user.to_string();
    let user_name = user.clone();
    let (room_id, session_id) = (room_id.map(str::to_owned), session_id.map(str::to_owned));
    let one_session = session_id.is_some();
    let keys = services
        .db
        .read(move |c| {
            store::version(c, &user, number)?.ok_or_else(unknown_version)?;
            Ok::<_, Error>(store::keys(
                c,
                &user,
                number,
                room_id.as_deref(),
                session_id.as_deref(),
            )?)
        })
        .await?;
    // A key an older version stored too deeply nested is left out: the response would be
    // unreadable. Uploading the session again replaces it.
    let keys: Vec<KeyRow> = keys
        .into_iter()
        .filter(|row| {
            let (room, session) = (&row.room_id, &row.session_id);
            let what = || format!("backed-up key {room} {session} of {user_name} version {number}");
            json_depth::readable(what, &row.session_data).is_some()
        })
        .collect();
    if one_session && keys.is_empty() {
        return Err(Error::not_found("No backed-up key for this session"));
    }
    Ok(keys)
}

/// `DELETE /room_keys/keys[...]`: returns `(etag, count)` after deleting.
pub async fn delete_keys(
    services: &Services,
    user: &UserId,
    version: &str,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> Result<(String, UInt)> {
    let number = parse_version(version)?;
    let user = user.to_string();
    let (room_id, session_id) = (room_id.map(str::to_owned), session_id.map(str::to_owned));
    services
        .db
        .write(move |tx| {
            let row = store::version(tx, &user, number)?.ok_or_else(unknown_version)?;
            let deleted =
                store::delete_keys(tx, &user, number, room_id.as_deref(), session_id.as_deref())?;
            if deleted > 0 {
                store::bump_etag(tx, &user, number)?;
            }
            let count = store::count_keys(tx, &user, number)?;
            let etag = row.etag + i64::from(deleted > 0);
            Ok((etag.to_string(), UInt::try_from(count).unwrap_or_default()))
        })
        .await
}

/// A stored key as the client uploaded it.
pub fn to_backup_data(row: &KeyRow) -> Result<Raw<KeyBackupData>> {
    let session_data: Value = serde_json::from_str(&row.session_data).map_err(Error::internal)?;
    let data = json!({
        "first_message_index": row.first_message_index,
        "forwarded_count": row.forwarded_count,
        "is_verified": row.is_verified,
        "session_data": session_data,
    });
    Ok(Raw::from_json(
        serde_json::value::to_raw_value(&data).map_err(Error::internal)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(is_verified: bool, first_message_index: i64, forwarded_count: i64) -> KeyRow {
        KeyRow {
            room_id: "!r:x".into(),
            session_id: "s".into(),
            first_message_index,
            forwarded_count,
            is_verified,
            session_data: "{}".into(),
        }
    }

    #[test]
    fn replacement_follows_the_spec_order() {
        // Verified wins whatever the indexes say.
        assert!(should_replace(&key(false, 0, 0), &key(true, 9, 9)));
        assert!(!should_replace(&key(true, 9, 9), &key(false, 0, 0)));
        // Then the lower first message index.
        assert!(should_replace(&key(true, 5, 0), &key(true, 2, 9)));
        assert!(!should_replace(&key(true, 2, 0), &key(true, 5, 0)));
        // Then the lower forwarded count; a tie keeps the stored copy.
        assert!(should_replace(&key(false, 2, 3), &key(false, 2, 1)));
        assert!(!should_replace(&key(false, 2, 1), &key(false, 2, 1)));
    }
}
