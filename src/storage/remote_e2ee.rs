//! Tables `remote_device_lists`, `remote_devices`, `federation_to_device_seen` and
//! `device_list_outbound_position` (migration `0013_remote_e2ee.sql`), and the reads of
//! `device_list_changes` that turn our users' changes into EDUs. No Matrix rules here:
//! `services/e2ee/federation.rs` decides.

use rusqlite::{Connection, OptionalExtension, params};

/// A cached device list of another server's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteList {
    pub stream_id: i64,
    pub master_key: Option<String>,
    pub self_signing_key: Option<String>,
}

/// A device of a cached list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDevice {
    pub device_id: String,
    pub display_name: Option<String>,
    pub key_json: Option<String>,
}

pub fn remote_list(conn: &Connection, user_id: &str) -> rusqlite::Result<Option<RemoteList>> {
    conn.prepare_cached(
        "SELECT stream_id, master_key, self_signing_key FROM remote_device_lists
         WHERE user_id = ?1",
    )?
    .query_row([user_id], |row| {
        Ok(RemoteList {
            stream_id: row.get(0)?,
            master_key: row.get(1)?,
            self_signing_key: row.get(2)?,
        })
    })
    .optional()
}

pub fn remote_devices(conn: &Connection, user_id: &str) -> rusqlite::Result<Vec<RemoteDevice>> {
    conn.prepare_cached(
        "SELECT device_id, display_name, key_json FROM remote_devices WHERE user_id = ?1
         ORDER BY device_id",
    )?
    .query_map([user_id], |row| {
        Ok(RemoteDevice {
            device_id: row.get(0)?,
            display_name: row.get(1)?,
            key_json: row.get(2)?,
        })
    })?
    .collect()
}

/// Replaces the whole cached list of `user_id` (a resync).
pub fn replace_remote_list(
    conn: &Connection,
    user_id: &str,
    list: &RemoteList,
    devices: &[RemoteDevice],
) -> rusqlite::Result<()> {
    delete_remote_list(conn, user_id)?;
    conn.prepare_cached(
        "INSERT INTO remote_device_lists (user_id, stream_id, master_key, self_signing_key)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        user_id,
        list.stream_id,
        list.master_key,
        list.self_signing_key
    ])?;
    for device in devices {
        put_remote_device(conn, user_id, device)?;
    }
    Ok(())
}

fn put_remote_device(
    conn: &Connection,
    user_id: &str,
    device: &RemoteDevice,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO remote_devices (user_id, device_id, display_name, key_json)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, device_id) DO UPDATE SET
             display_name = excluded.display_name, key_json = excluded.key_json",
    )?
    .execute(params![
        user_id,
        device.device_id,
        device.display_name,
        device.key_json
    ])?;
    Ok(())
}

/// Applies one device update to a cached list and moves its `stream_id` on: the device is
/// stored (or, `None`, deleted).
pub fn apply_device_update(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    device: Option<&RemoteDevice>,
    stream_id: i64,
) -> rusqlite::Result<()> {
    match device {
        Some(device) => put_remote_device(conn, user_id, device)?,
        None => {
            conn.prepare_cached(
                "DELETE FROM remote_devices WHERE user_id = ?1 AND device_id = ?2",
            )?
            .execute([user_id, device_id])?;
        }
    }
    conn.prepare_cached("UPDATE remote_device_lists SET stream_id = ?2 WHERE user_id = ?1")?
        .execute(params![user_id, stream_id])?;
    Ok(())
}

/// Sets the cross-signing keys of a cached list (`None` keeps the stored one); whether the user
/// has a cached list.
pub fn set_remote_cross_signing(
    conn: &Connection,
    user_id: &str,
    master_key: Option<&str>,
    self_signing_key: Option<&str>,
) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE remote_device_lists SET master_key = coalesce(?2, master_key),
                 self_signing_key = coalesce(?3, self_signing_key)
             WHERE user_id = ?1",
        )?
        .execute(params![user_id, master_key, self_signing_key])?
        > 0)
}

/// Forgets the cached list of `user_id` (and its devices).
pub fn delete_remote_list(conn: &Connection, user_id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM remote_device_lists WHERE user_id = ?1")?
        .execute([user_id])?;
    Ok(())
}

/// Whether `user_id` is joined to a room one of this server's users is joined to.
pub fn shares_room_with_local_user(conn: &Connection, user_id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT 1 FROM memberships theirs
         JOIN memberships mine ON mine.room_id = theirs.room_id AND mine.membership = 'join'
         JOIN users u ON u.user_id = mine.user_id
         WHERE theirs.user_id = ?1 AND theirs.membership = 'join'",
    )?
    .exists([user_id])
}

/// Records the `m.direct_to_device` message `message_id` of `origin`; `false` when it was
/// received before.
pub fn mark_to_device_seen(
    conn: &Connection,
    origin: &str,
    message_id: &str,
    now: i64,
) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO federation_to_device_seen (origin, message_id, received_ts)
             VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )?
        .execute(params![origin, message_id, now])?
        == 1)
}

/// Forgets the message IDs received before `before`.
pub fn prune_to_device_seen(conn: &Connection, before: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM federation_to_device_seen WHERE received_ts < ?1")?
        .execute([before])
}

// ---- our users' changes, as EDUs ----

/// How far our users' device-list changes were queued for other servers.
pub fn outbound_position(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT position FROM device_list_outbound_position WHERE id = 1")?
        .query_row([], |row| row.get(0))
}

pub fn set_outbound_position(conn: &Connection, position: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE device_list_outbound_position SET position = ?1 WHERE id = 1")?
        .execute([position])?;
    Ok(())
}

/// The newest device-list change (of anyone).
pub fn last_change_position(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT coalesce(max(stream_position), 0) FROM device_list_changes")?
        .query_row([], |row| row.get(0))
}

/// A change of one of our users that everyone sharing a room with them may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalChange {
    pub stream_position: i64,
    pub user_id: String,
    /// `None`: the user's cross-signing keys.
    pub device_id: Option<String>,
    pub deleted: bool,
}

/// Our users' public changes after `after`, oldest first, at most `limit`.
pub fn local_changes_after(
    conn: &Connection,
    after: i64,
    limit: i64,
) -> rusqlite::Result<Vec<LocalChange>> {
    conn.prepare_cached(
        "SELECT c.stream_position, c.user_id, c.device_id, c.deleted FROM device_list_changes c
         WHERE c.stream_position > ?1 AND c.visible_to IS NULL
           AND EXISTS (SELECT 1 FROM users u WHERE u.user_id = c.user_id)
         ORDER BY c.stream_position LIMIT ?2",
    )?
    .query_map(params![after, limit], |row| {
        Ok(LocalChange {
            stream_position: row.get(0)?,
            user_id: row.get(1)?,
            device_id: row.get(2)?,
            deleted: row.get(3)?,
        })
    })?
    .collect()
}

/// The position of the user's last public device change (not of cross-signing keys) before
/// `before`: a device-list update's `prev_id`, and `/user/devices`'s `stream_id`.
pub fn last_device_change_before(
    conn: &Connection,
    user_id: &str,
    before: i64,
) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT max(stream_position) FROM device_list_changes
         WHERE user_id = ?1 AND stream_position < ?2 AND device_id IS NOT NULL
           AND visible_to IS NULL",
    )?
    .query_row(params![user_id, before], |row| row.get(0))
}

/// The display name of one of our devices, `None` when it does not exist.
pub fn local_device(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
) -> rusqlite::Result<Option<Option<String>>> {
    conn.prepare_cached("SELECT display_name FROM devices WHERE user_id = ?1 AND device_id = ?2")?
        .query_row([user_id, device_id], |row| row.get(0))
        .optional()
}

/// Every device of one of our users: `(device_id, display_name)`.
pub fn local_devices(
    conn: &Connection,
    user_id: &str,
) -> rusqlite::Result<Vec<(String, Option<String>)>> {
    conn.prepare_cached(
        "SELECT device_id, display_name FROM devices WHERE user_id = ?1 ORDER BY device_id",
    )?
    .query_map([user_id], |row| Ok((row.get(0)?, row.get(1)?)))?
    .collect()
}
