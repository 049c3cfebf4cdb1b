//! Tables `backup_versions` and `backup_keys`.

use rusqlite::{Connection, OptionalExtension, params};

pub struct VersionRow {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: String,
    pub etag: i64,
}

fn version_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
    Ok(VersionRow {
        version: row.get(0)?,
        algorithm: row.get(1)?,
        auth_data: row.get(2)?,
        etag: row.get(3)?,
    })
}

/// Creates the next version (never reusing a deleted one's number); returns it.
pub fn create_version(
    conn: &Connection,
    user_id: &str,
    algorithm: &str,
    auth_data: &str,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO backup_versions (user_id, version, algorithm, auth_data)
         VALUES (?1, (SELECT coalesce(max(version), 0) + 1 FROM backup_versions WHERE user_id = ?1), ?2, ?3)
         RETURNING version",
    )?
    .query_row([user_id, algorithm, auth_data], |row| row.get(0))
}

/// A version that was not deleted.
pub fn version(
    conn: &Connection,
    user_id: &str,
    version: i64,
) -> rusqlite::Result<Option<VersionRow>> {
    conn.prepare_cached(
        "SELECT version, algorithm, auth_data, etag FROM backup_versions
         WHERE user_id = ?1 AND version = ?2 AND deleted = 0",
    )?
    .query_row(params![user_id, version], version_from_row)
    .optional()
}

/// The newest version not deleted.
pub fn current_version(conn: &Connection, user_id: &str) -> rusqlite::Result<Option<VersionRow>> {
    conn.prepare_cached(
        "SELECT version, algorithm, auth_data, etag FROM backup_versions
         WHERE user_id = ?1 AND deleted = 0 ORDER BY version DESC LIMIT 1",
    )?
    .query_row([user_id], version_from_row)
    .optional()
}

pub fn set_auth_data(
    conn: &Connection,
    user_id: &str,
    version: i64,
    auth_data: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE backup_versions SET auth_data = ?3 WHERE user_id = ?1 AND version = ?2",
    )?
    .execute(params![user_id, version, auth_data])?;
    Ok(())
}

/// Marks a version deleted and drops its keys; `false` when there was no such version.
pub fn delete_version(conn: &Connection, user_id: &str, version: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached("DELETE FROM backup_keys WHERE user_id = ?1 AND version = ?2")?
        .execute(params![user_id, version])?;
    Ok(conn
        .prepare_cached(
            "UPDATE backup_versions SET deleted = 1 WHERE user_id = ?1 AND version = ?2 AND deleted = 0",
        )?
        .execute(params![user_id, version])?
        == 1)
}

pub fn bump_etag(conn: &Connection, user_id: &str, version: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE backup_versions SET etag = etag + 1 WHERE user_id = ?1 AND version = ?2",
    )?
    .execute(params![user_id, version])?;
    Ok(())
}

pub fn count_keys(conn: &Connection, user_id: &str, version: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT count(*) FROM backup_keys WHERE user_id = ?1 AND version = ?2")?
        .query_row(params![user_id, version], |row| row.get(0))
}

#[derive(Debug, Clone)]
pub struct KeyRow {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    pub session_data: String,
}

fn key_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        room_id: row.get(0)?,
        session_id: row.get(1)?,
        first_message_index: row.get(2)?,
        forwarded_count: row.get(3)?,
        is_verified: row.get(4)?,
        session_data: row.get(5)?,
    })
}

/// Backed-up keys of a version, optionally of one room and one session.
pub fn keys(
    conn: &Connection,
    user_id: &str,
    version: i64,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> rusqlite::Result<Vec<KeyRow>> {
    conn.prepare_cached(
        "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
         FROM backup_keys WHERE user_id = ?1 AND version = ?2
           AND (?3 IS NULL OR room_id = ?3) AND (?4 IS NULL OR session_id = ?4)
         ORDER BY room_id, session_id",
    )?
    .query_map(
        params![user_id, version, room_id, session_id],
        key_from_row,
    )?
    .collect()
}

pub fn put_key(
    conn: &Connection,
    user_id: &str,
    version: i64,
    key: &KeyRow,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO backup_keys (user_id, version, room_id, session_id, first_message_index,
             forwarded_count, is_verified, session_data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
             first_message_index = excluded.first_message_index,
             forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified,
             session_data = excluded.session_data",
    )?
    .execute(params![
        user_id,
        version,
        key.room_id,
        key.session_id,
        key.first_message_index,
        key.forwarded_count,
        key.is_verified,
        key.session_data
    ])?;
    Ok(())
}

/// Deletes backed-up keys of a version, optionally of one room and one session; returns how many.
pub fn delete_keys(
    conn: &Connection,
    user_id: &str,
    version: i64,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM backup_keys WHERE user_id = ?1 AND version = ?2
           AND (?3 IS NULL OR room_id = ?3) AND (?4 IS NULL OR session_id = ?4)",
    )?
    .execute(params![user_id, version, room_id, session_id])
}
