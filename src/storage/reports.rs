//! Abuse reports (`reports`, migrations `0018_reports_guests.sql` and `0022_user_reports.sql`).

use rusqlite::{Connection, OptionalExtension, Transaction, params};

/// A stored report.
pub struct ReportRow {
    pub id: i64,
    pub reporter: String,
    /// `None` for a report about a user.
    pub room_id: Option<String>,
    /// `None` for a report about the whole room.
    pub event_id: Option<String>,
    pub event_sender: Option<String>,
    /// The user reported (`POST /users/{userId}/report`); `None` for a room or event report.
    pub reported_user: Option<String>,
    pub reason: Option<String>,
    pub received_ts: i64,
    pub resolved_ts: Option<i64>,
    pub resolved_by: Option<String>,
}

/// What a new report says.
pub struct NewReport<'a> {
    pub reporter: &'a str,
    /// Set for a room or event report, and only then.
    pub room_id: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub event_sender: Option<&'a str>,
    /// Set for a user report, and only then.
    pub reported_user: Option<&'a str>,
    pub reason: Option<&'a str>,
}

const COLUMNS: &str = "id, reporter, room_id, event_id, event_sender, reason, received_ts, \
     resolved_ts, resolved_by, reported_user";

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ReportRow> {
    Ok(ReportRow {
        id: row.get(0)?,
        reporter: row.get(1)?,
        room_id: row.get(2)?,
        event_id: row.get(3)?,
        event_sender: row.get(4)?,
        reason: row.get(5)?,
        received_ts: row.get(6)?,
        resolved_ts: row.get(7)?,
        resolved_by: row.get(8)?,
        reported_user: row.get(9)?,
    })
}

/// Stores a report; returns its ID.
pub fn insert(tx: &Transaction<'_>, report: &NewReport<'_>, now_ms: i64) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO reports (reporter, room_id, event_id, event_sender, reported_user, reason, \
         received_ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            report.reporter,
            report.room_id,
            report.event_id,
            report.event_sender,
            report.reported_user,
            report.reason,
            now_ms
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Reports oldest first; only the unresolved ones unless `all`.
pub fn list(conn: &Connection, all: bool) -> rusqlite::Result<Vec<ReportRow>> {
    let sql = format!("SELECT {COLUMNS} FROM reports WHERE ?1 OR resolved_ts IS NULL ORDER BY id");
    conn.prepare(&sql)?.query_map([all], from_row)?.collect()
}

pub fn get(conn: &Connection, id: i64) -> rusqlite::Result<Option<ReportRow>> {
    conn.prepare(&format!("SELECT {COLUMNS} FROM reports WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()
}

/// Marks a report resolved; `false` when there is no such report.
pub fn resolve(
    tx: &Transaction<'_>,
    id: i64,
    resolved_by: &str,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    let changed = tx.execute(
        "UPDATE reports SET resolved_ts = ?2, resolved_by = ?3 WHERE id = ?1",
        params![id, now_ms, resolved_by],
    )?;
    Ok(changed > 0)
}
