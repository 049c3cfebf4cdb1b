//! Tables `device_keys`, `one_time_keys`, `fallback_keys`, `cross_signing_keys`,
//! `key_signatures` and `device_list_changes`.

use rusqlite::{Connection, OptionalExtension, params};

use super::rooms::next_stream_position;

// ---- device keys ----

pub fn device_keys(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT key_json FROM device_keys WHERE user_id = ?1 AND device_id = ?2")?
        .query_row([user_id, device_id], |row| row.get(0))
        .optional()
}

pub fn put_device_keys(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    key_json: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO device_keys (user_id, device_id, key_json) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
    )?
    .execute(params![user_id, device_id, key_json])?;
    Ok(())
}

/// A device of a user with its display name and uploaded identity keys.
pub struct DeviceWithKeys {
    pub device_id: String,
    pub display_name: Option<String>,
    pub key_json: String,
}

/// The devices of a user that uploaded identity keys.
pub fn devices_with_keys(
    conn: &Connection,
    user_id: &str,
) -> rusqlite::Result<Vec<DeviceWithKeys>> {
    conn.prepare_cached(
        "SELECT d.device_id, d.display_name, k.key_json FROM device_keys k
         JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
         WHERE k.user_id = ?1 ORDER BY d.device_id",
    )?
    .query_map([user_id], |row| {
        Ok(DeviceWithKeys {
            device_id: row.get(0)?,
            display_name: row.get(1)?,
            key_json: row.get(2)?,
        })
    })?
    .collect()
}

// ---- one-time and fallback keys ----

pub fn one_time_key(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
    key_id: &str,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT key_json FROM one_time_keys
         WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3 AND key_id = ?4",
    )?
    .query_row(params![user_id, device_id, algorithm, key_id], |row| {
        row.get(0)
    })
    .optional()
}

pub fn insert_one_time_key(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
    key_id: &str,
    key_json: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![user_id, device_id, algorithm, key_id, key_json])?;
    Ok(())
}

/// How many unclaimed one-time keys of an algorithm a device has.
pub struct AlgorithmCount {
    pub algorithm: String,
    pub count: i64,
}

/// A device's unclaimed one-time keys, counted by algorithm.
pub fn count_one_time_keys(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
) -> rusqlite::Result<Vec<AlgorithmCount>> {
    conn.prepare_cached(
        "SELECT algorithm, count(*) FROM one_time_keys WHERE user_id = ?1 AND device_id = ?2
         GROUP BY algorithm",
    )?
    .query_map([user_id, device_id], |row| {
        Ok(AlgorithmCount {
            algorithm: row.get(0)?,
            count: row.get(1)?,
        })
    })?
    .collect()
}

/// A stored one-time or fallback key of a device.
pub struct DeviceKey {
    /// The key ID, without the `<algorithm>:` before it.
    pub key_id: String,
    /// The key object's JSON, as uploaded.
    pub key_json: String,
}

/// A `DeviceKey` from the columns key ID, key JSON.
fn device_key(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceKey> {
    Ok(DeviceKey {
        key_id: row.get(0)?,
        key_json: row.get(1)?,
    })
}

/// Removes and returns the oldest one-time key of an algorithm.
pub fn take_one_time_key(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> rusqlite::Result<Option<DeviceKey>> {
    conn.prepare_cached(
        "DELETE FROM one_time_keys WHERE rowid = (
             SELECT rowid FROM one_time_keys WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3
             ORDER BY rowid LIMIT 1)
         RETURNING key_id, key_json",
    )?
    .query_row(params![user_id, device_id, algorithm], device_key)
    .optional()
}

/// The device's fallback key for an algorithm.
pub fn fallback_key(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> rusqlite::Result<Option<DeviceKey>> {
    conn.prepare_cached(
        "SELECT key_id, key_json FROM fallback_keys
         WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3",
    )?
    .query_row(params![user_id, device_id, algorithm], device_key)
    .optional()
}

/// Replaces the fallback key of an algorithm with a new, unused one.
pub fn put_fallback_key(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
    key_id: &str,
    key_json: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
         VALUES (?1, ?2, ?3, ?4, ?5, 0)
         ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET
             key_id = excluded.key_id, key_json = excluded.key_json, used = 0",
    )?
    .execute(params![user_id, device_id, algorithm, key_id, key_json])?;
    Ok(())
}

pub fn mark_fallback_key_used(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE fallback_keys SET used = 1 WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3",
    )?
    .execute(params![user_id, device_id, algorithm])?;
    Ok(())
}

/// Algorithms for which the device has a fallback key not handed out yet.
pub fn unused_fallback_algorithms(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT algorithm FROM fallback_keys WHERE user_id = ?1 AND device_id = ?2 AND used = 0
         ORDER BY algorithm",
    )?
    .query_map([user_id, device_id], |row| row.get(0))?
    .collect()
}

// ---- cross-signing keys and signatures ----

/// One of a user's cross-signing keys, as stored.
pub struct CrossSigningKeyRow {
    /// The key's ed25519 public key, which names it.
    pub public_key: String,
    /// The key object's JSON, with its signatures as uploaded.
    pub key_json: String,
}

/// One of the user's cross-signing keys (`key_type`: master, self_signing, user_signing).
pub fn cross_signing_key(
    conn: &Connection,
    user_id: &str,
    key_type: &str,
) -> rusqlite::Result<Option<CrossSigningKeyRow>> {
    conn.prepare_cached(
        "SELECT public_key, key_json FROM cross_signing_keys WHERE user_id = ?1 AND key_type = ?2",
    )?
    .query_row([user_id, key_type], |row| {
        Ok(CrossSigningKeyRow {
            public_key: row.get(0)?,
            key_json: row.get(1)?,
        })
    })
    .optional()
}

pub fn put_cross_signing_key(
    conn: &Connection,
    user_id: &str,
    key_type: &str,
    public_key: &str,
    key_json: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO cross_signing_keys (user_id, key_type, public_key, key_json)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, key_type) DO UPDATE SET
             public_key = excluded.public_key, key_json = excluded.key_json",
    )?
    .execute(params![user_id, key_type, public_key, key_json])?;
    Ok(())
}

pub struct SignatureRow {
    pub signer_user_id: String,
    pub signer_key_id: String,
    pub signature: String,
}

pub fn put_signature(
    conn: &Connection,
    target_user_id: &str,
    target_key_id: &str,
    signature: &SignatureRow,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO key_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)
         DO UPDATE SET signature = excluded.signature",
    )?
    .execute(params![
        target_user_id,
        target_key_id,
        signature.signer_user_id,
        signature.signer_key_id,
        signature.signature
    ])?;
    Ok(())
}

/// Signatures on a key made by its owner or by `viewer`, the only ones `viewer` may see.
pub fn signatures_on(
    conn: &Connection,
    target_user_id: &str,
    target_key_id: &str,
    viewer: &str,
) -> rusqlite::Result<Vec<SignatureRow>> {
    conn.prepare_cached(
        "SELECT signer_user_id, signer_key_id, signature FROM key_signatures
         WHERE target_user_id = ?1 AND target_key_id = ?2 AND signer_user_id IN (?1, ?3)",
    )?
    .query_map([target_user_id, target_key_id, viewer], |row| {
        Ok(SignatureRow {
            signer_user_id: row.get(0)?,
            signer_key_id: row.get(1)?,
            signature: row.get(2)?,
        })
    })?
    .collect()
}

/// Forgets the signatures on a key (a replaced master key) and those made with a key (a
/// replaced signing key): they can no longer be valid.
pub fn delete_signatures_involving(
    conn: &Connection,
    user_id: &str,
    key_id: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM key_signatures WHERE (target_user_id = ?1 AND target_key_id = ?2)
             OR (signer_user_id = ?1 AND signer_key_id = 'ed25519:' || ?2)",
    )?
    .execute([user_id, key_id])?;
    Ok(())
}

// ---- device-list changes ----

/// Records that `user_id`'s device list changed (for everyone, or only for `visible_to`);
/// returns the stream position.
pub fn record_device_list_change(
    conn: &Connection,
    user_id: &str,
    device_id: Option<&str>,
    visible_to: Option<&str>,
) -> rusqlite::Result<i64> {
    let position = next_stream_position(conn)?;
    conn.prepare_cached(
        "INSERT INTO device_list_changes (stream_position, user_id, device_id, visible_to)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![position, user_id, device_id, visible_to])?;
    Ok(position)
}

/// Users whose device lists changed in `(since, upto]` as `viewer` may see them: changes for
/// everyone of users who share a joined room with `viewer` (or are `viewer`), and changes
/// visible to `viewer` alone.
pub fn device_list_changes_between(
    conn: &Connection,
    viewer: &str,
    since: i64,
    upto: i64,
) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT DISTINCT c.user_id FROM device_list_changes c
         WHERE c.stream_position > ?2 AND c.stream_position <= ?3
           AND (c.visible_to = ?1
             OR (c.visible_to IS NULL AND (c.user_id = ?1 OR EXISTS (
                 SELECT 1 FROM memberships mine JOIN memberships theirs ON theirs.room_id = mine.room_id
                 WHERE mine.user_id = ?1 AND mine.membership = 'join'
                   AND theirs.user_id = c.user_id AND theirs.membership = 'join'))))
         ORDER BY c.user_id",
    )?
    .query_map(params![viewer, since, upto], |row| row.get(0))?
    .collect()
}

/// Users who share a joined room with `user_id` (not `user_id` itself).
pub fn users_sharing_a_room(conn: &Connection, user_id: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT DISTINCT theirs.user_id FROM memberships mine
         JOIN memberships theirs ON theirs.room_id = mine.room_id
         WHERE mine.user_id = ?1 AND mine.membership = 'join' AND theirs.membership = 'join'
           AND theirs.user_id != ?1",
    )?
    .query_map([user_id], |row| row.get(0))?
    .collect()
}

/// Membership changes in `(since, upto]` that may change who shares a room with `user_id`, as
/// Another user and a membership that changed between them and the user asking.
pub struct MembershipChange {
    /// The other user.
    pub user_id: String,
    pub membership: String,
}

/// In rooms `user_id` was already joined to, the other members whose membership changed, with
/// their membership; in rooms `user_id` joined or left in that interval, everyone joined there,
/// with `user_id`'s own new membership.
pub fn membership_changes_around(
    conn: &Connection,
    user_id: &str,
    since: i64,
    upto: i64,
) -> rusqlite::Result<Vec<MembershipChange>> {
    conn.prepare_cached(
        "SELECT theirs.user_id,
                CASE WHEN mine.stream_ordering > ?2 THEN mine.membership ELSE theirs.membership END
         FROM memberships mine JOIN memberships theirs ON theirs.room_id = mine.room_id
         WHERE mine.user_id = ?1 AND theirs.user_id != ?1
           AND ((mine.membership = 'join' AND mine.stream_ordering <= ?2
                 AND theirs.stream_ordering > ?2 AND theirs.stream_ordering <= ?3)
             OR (mine.stream_ordering > ?2 AND mine.stream_ordering <= ?3
                 AND mine.membership IN ('join', 'leave', 'ban') AND theirs.membership = 'join'))",
    )?
    .query_map(params![user_id, since, upto], |row| {
        Ok(MembershipChange {
            user_id: row.get(0)?,
            membership: row.get(1)?,
        })
    })?
    .collect()
}
