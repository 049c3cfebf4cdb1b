//! Tables `users`, `profile_fields`, `devices` and `access_tokens`.

use rusqlite::{Connection, OptionalExtension, params};

use super::now_ms;

#[derive(Debug, Clone)]
pub struct UserRow {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub deactivated: bool,
    pub created_ts: i64,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    /// The latest `last_seen_ts` over the user's devices.
    pub last_seen_ts: Option<i64>,
}

const USER_COLUMNS: &str = "u.user_id, u.password_hash, u.is_admin, u.deactivated, u.created_ts, \
     u.displayname, u.avatar_url, (SELECT max(last_seen_ts) FROM devices d WHERE d.user_id = u.user_id)";

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        user_id: row.get(0)?,
        password_hash: row.get(1)?,
        is_admin: row.get(2)?,
        deactivated: row.get(3)?,
        created_ts: row.get(4)?,
        displayname: row.get(5)?,
        avatar_url: row.get(6)?,
        last_seen_ts: row.get(7)?,
    })
}

pub struct NewUser<'a> {
    pub user_id: &'a str,
    pub localpart: &'a str,
    pub password_hash: Option<&'a str>,
    pub is_admin: bool,
    pub displayname: Option<&'a str>,
}

/// Inserts a user; returns `false` when the ID is taken (deactivated IDs stay taken).
pub fn insert_user(conn: &Connection, user: &NewUser<'_>) -> rusqlite::Result<bool> {
    let inserted = conn.execute(
        "INSERT INTO users (user_id, localpart, password_hash, is_admin, created_ts, displayname)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        params![
            user.user_id,
            user.localpart,
            user.password_hash,
            user.is_admin,
            now_ms(),
            user.displayname
        ],
    )?;
    Ok(inserted == 1)
}

pub fn get_user(conn: &Connection, user_id: &str) -> rusqlite::Result<Option<UserRow>> {
    conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users u WHERE u.user_id = ?1"
    ))?
    .query_row([user_id], user_from_row)
    .optional()
}

pub fn list_users(conn: &Connection) -> rusqlite::Result<Vec<UserRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {USER_COLUMNS} FROM users u ORDER BY u.created_ts, u.user_id"
    ))?;
    stmt.query_map([], user_from_row)?.collect()
}

pub fn user_exists(conn: &Connection, user_id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM users WHERE user_id = ?1")?
        .exists([user_id])
}

pub fn set_password_hash(
    conn: &Connection,
    user_id: &str,
    hash: Option<&str>,
) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "UPDATE users SET password_hash = ?2 WHERE user_id = ?1",
        params![user_id, hash],
    )? == 1)
}

pub fn set_admin(conn: &Connection, user_id: &str, is_admin: bool) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "UPDATE users SET is_admin = ?2 WHERE user_id = ?1",
        params![user_id, is_admin],
    )? == 1)
}

/// Marks the user deactivated and clears what identifies them; the ID stays reserved.
pub fn deactivate(conn: &Connection, user_id: &str) -> rusqlite::Result<bool> {
    conn.execute("DELETE FROM profile_fields WHERE user_id = ?1", [user_id])?;
    Ok(conn.execute(
        "UPDATE users SET deactivated = 1, password_hash = NULL, displayname = NULL, avatar_url = NULL
         WHERE user_id = ?1",
        [user_id],
    )? == 1)
}

/// Sets the display name and marks the profile for copying into member events
/// ([`pending_profile_updates`]).
pub fn set_displayname(
    conn: &Connection,
    user_id: &str,
    name: Option<&str>,
) -> rusqlite::Result<bool> {
    let changed = conn.execute(
        "UPDATE users SET displayname = ?2 WHERE user_id = ?1",
        params![user_id, name],
    )? == 1;
    if changed {
        mark_profile_pending(conn, user_id)?;
    }
    Ok(changed)
}

/// Sets the avatar URL and marks the profile for copying into member events.
pub fn set_avatar_url(
    conn: &Connection,
    user_id: &str,
    url: Option<&str>,
) -> rusqlite::Result<bool> {
    let changed = conn.execute(
        "UPDATE users SET avatar_url = ?2 WHERE user_id = ?1",
        params![user_id, url],
    )? == 1;
    if changed {
        mark_profile_pending(conn, user_id)?;
    }
    Ok(changed)
}

fn mark_profile_pending(conn: &Connection, user_id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO pending_profile_updates (user_id, generation) VALUES (?1, 1)
         ON CONFLICT (user_id) DO UPDATE SET generation = generation + 1",
    )?
    .execute([user_id])?;
    Ok(())
}

/// Users whose profile changes still wait to be copied (the generation of each one's change:
/// [`pending_profile_generation`]).
pub fn pending_profile_updates(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached("SELECT user_id FROM pending_profile_updates")?
        .query_map([], |row| row.get(0))?
        .collect()
}

/// The generation of `user_id`'s waiting profile change, if one waits.
pub fn pending_profile_generation(
    conn: &Connection,
    user_id: &str,
) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT generation FROM pending_profile_updates WHERE user_id = ?1")?
        .query_row([user_id], |row| row.get(0))
        .optional()
}

/// The change of `generation` is copied; a newer one keeps its row.
pub fn clear_profile_update(
    conn: &Connection,
    user_id: &str,
    generation: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM pending_profile_updates WHERE user_id = ?1 AND generation = ?2",
    )?
    .execute(params![user_id, generation])?;
    Ok(())
}

// ---- extended profile fields ----

/// One of a local user's profile fields other than `displayname` and `avatar_url`.
#[derive(Debug, Clone)]
pub struct ProfileFieldRow {
    pub field: String,
    /// The value as canonical JSON text.
    pub value: String,
}

/// A local user's profile fields other than `displayname` and `avatar_url`, by key.
pub fn profile_fields(conn: &Connection, user_id: &str) -> rusqlite::Result<Vec<ProfileFieldRow>> {
    conn.prepare_cached(
        "SELECT field, value FROM profile_fields WHERE user_id = ?1 ORDER BY field",
    )?
    .query_map([user_id], |row| {
        Ok(ProfileFieldRow {
            field: row.get(0)?,
            value: row.get(1)?,
        })
    })?
    .collect()
}

/// Sets one profile field (`value`: canonical JSON).
pub fn set_profile_field(
    conn: &Connection,
    user_id: &str,
    field: &str,
    value: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO profile_fields (user_id, field, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value",
    )?
    .execute([user_id, field, value])?;
    Ok(())
}

/// Removes one profile field; whether it was there.
pub fn delete_profile_field(
    conn: &Connection,
    user_id: &str,
    field: &str,
) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM profile_fields WHERE user_id = ?1 AND field = ?2")?
        .execute([user_id, field])?
        == 1)
}

// ---- devices ----

#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ip: Option<String>,
    pub last_seen_ts: Option<i64>,
}

fn device_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        device_id: row.get(0)?,
        display_name: row.get(1)?,
        last_seen_ip: row.get(2)?,
        last_seen_ts: row.get(3)?,
    })
}

/// Creates the device, or keeps an existing one with the same ID and its name (the spec ignores
/// `initial_device_display_name` for a known device), as a login that names its device ID does.
pub fn upsert_device(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    display_name: Option<&str>,
    ip: Option<&str>,
) -> rusqlite::Result<()> {
    let now = now_ms();
    conn.execute(
        "INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ip, last_seen_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?4)
         ON CONFLICT (user_id, device_id) DO UPDATE SET
             last_seen_ip = excluded.last_seen_ip, last_seen_ts = excluded.last_seen_ts",
        params![user_id, device_id, display_name, now, ip],
    )?;
    Ok(())
}

pub fn list_devices(conn: &Connection, user_id: &str) -> rusqlite::Result<Vec<DeviceRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT device_id, display_name, last_seen_ip, last_seen_ts FROM devices WHERE user_id = ?1
         ORDER BY created_ts, device_id",
    )?;
    stmt.query_map([user_id], device_from_row)?.collect()
}

pub fn get_device(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
) -> rusqlite::Result<Option<DeviceRow>> {
    conn.prepare_cached(
        "SELECT device_id, display_name, last_seen_ip, last_seen_ts FROM devices
         WHERE user_id = ?1 AND device_id = ?2",
    )?
    .query_row([user_id, device_id], device_from_row)
    .optional()
}

pub fn set_device_display_name(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    name: Option<&str>,
) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "UPDATE devices SET display_name = ?3 WHERE user_id = ?1 AND device_id = ?2",
        params![user_id, device_id, name],
    )? == 1)
}

/// Deletes a device and (by cascade) its access tokens.
pub fn delete_device(conn: &Connection, user_id: &str, device_id: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2",
        [user_id, device_id],
    )? == 1)
}

/// Deletes every device of the user, except `keep` when given, with their access tokens.
pub fn delete_all_devices(
    conn: &Connection,
    user_id: &str,
    keep: Option<&str>,
) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM devices WHERE user_id = ?1 AND (?2 IS NULL OR device_id != ?2)",
        params![user_id, keep],
    )
}

pub fn touch_device(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    ip: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE devices SET last_seen_ts = ?3, last_seen_ip = coalesce(?4, last_seen_ip)
         WHERE user_id = ?1 AND device_id = ?2",
    )?
    .execute(params![user_id, device_id, now_ms(), ip])?;
    Ok(())
}

// ---- access tokens ----

pub fn insert_access_token(
    conn: &Connection,
    token_hash: &[u8],
    user_id: &str,
    device_id: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![token_hash, user_id, device_id, now_ms()])?;
    Ok(())
}

/// Who a token belongs to.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    pub user_id: String,
    pub device_id: String,
    pub last_seen_ts: Option<i64>,
    pub is_guest: bool,
}

pub fn find_token_owner(
    conn: &Connection,
    token_hash: &[u8],
) -> rusqlite::Result<Option<TokenOwner>> {
    conn.prepare_cached(
        "SELECT t.user_id, t.device_id, d.last_seen_ts, u.is_guest
         FROM access_tokens t
         JOIN users u ON u.user_id = t.user_id
         JOIN devices d ON d.user_id = t.user_id AND d.device_id = t.device_id
         WHERE t.token_hash = ?1 AND u.deactivated = 0",
    )?
    .query_row([token_hash], |row| {
        Ok(TokenOwner {
            user_id: row.get(0)?,
            device_id: row.get(1)?,
            last_seen_ts: row.get(2)?,
            is_guest: row.get(3)?,
        })
    })
    .optional()
}

/// Marks a new account as a guest's.
pub fn set_guest(tx: &Connection, user_id: &str) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE users SET is_guest = 1 WHERE user_id = ?1",
        [user_id],
    )?;
    Ok(())
}

/// Makes a guest account a full one with a password; `false` if it is not (or no longer) a
/// guest's, so that two upgrades racing each other cannot both set a password.
pub fn upgrade_guest(
    tx: &Connection,
    user_id: &str,
    password_hash: &str,
) -> rusqlite::Result<bool> {
    let changed = tx.execute(
        "UPDATE users SET is_guest = 0, password_hash = ?2 WHERE user_id = ?1 AND is_guest = 1",
        params![user_id, password_hash],
    )?;
    Ok(changed == 1)
}

/// The guest accounts of this server joined to `room_id`.
pub fn joined_guests(conn: &Connection, room_id: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT m.user_id FROM memberships m JOIN users u ON u.user_id = m.user_id
         WHERE m.room_id = ?1 AND m.membership = 'join' AND u.is_guest = 1",
    )?
    .query_map([room_id], |row| row.get(0))?
    .collect()
}
