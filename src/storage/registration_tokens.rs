//! Table `registration_tokens`, with Synapse's meaning of its columns.

use rusqlite::{Connection, OptionalExtension, params};

use super::now_ms;

#[derive(Debug, Clone)]
pub struct RegistrationTokenRow {
    pub token: String,
    pub uses_allowed: Option<i64>,
    pub completed: i64,
    pub expiry_time: Option<i64>,
    pub created_ts: i64,
}

impl RegistrationTokenRow {
    pub fn is_usable(&self, now: i64) -> bool {
        self.uses_allowed
            .is_none_or(|allowed| self.completed < allowed)
            && self.expiry_time.is_none_or(|expiry| expiry > now)
    }
}

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RegistrationTokenRow> {
    Ok(RegistrationTokenRow {
        token: row.get(0)?,
        uses_allowed: row.get(1)?,
        completed: row.get(2)?,
        expiry_time: row.get(3)?,
        created_ts: row.get(4)?,
    })
}

/// Returns `false` when the token already exists.
pub fn insert(
    conn: &Connection,
    token: &str,
    uses_allowed: Option<i64>,
    expiry_time: Option<i64>,
) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "INSERT INTO registration_tokens (token, uses_allowed, expiry_time, created_ts) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO NOTHING",
        params![token, uses_allowed, expiry_time, now_ms()],
    )? == 1)
}

pub fn get(conn: &Connection, token: &str) -> rusqlite::Result<Option<RegistrationTokenRow>> {
    conn.prepare_cached(
        "SELECT token, uses_allowed, completed, expiry_time, created_ts FROM registration_tokens WHERE token = ?1",
    )?
    .query_row([token], from_row)
    .optional()
}

pub fn list(conn: &Connection) -> rusqlite::Result<Vec<RegistrationTokenRow>> {
    let mut stmt = conn.prepare(
        "SELECT token, uses_allowed, completed, expiry_time, created_ts FROM registration_tokens ORDER BY created_ts",
    )?;
    stmt.query_map([], from_row)?.collect()
}

pub fn delete(conn: &Connection, token: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM registration_tokens WHERE token = ?1", [token])? == 1)
}

/// Counts one completed registration, if the token is still usable; returns whether it was.
pub fn consume(conn: &Connection, token: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "UPDATE registration_tokens SET completed = completed + 1
         WHERE token = ?1 AND (uses_allowed IS NULL OR completed < uses_allowed)
           AND (expiry_time IS NULL OR expiry_time > ?2)",
        params![token, now_ms()],
    )? == 1)
}
