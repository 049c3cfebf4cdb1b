//! The database side of backups: a consistent copy of the live database, made with SQLite's
//! online backup API while the server goes on writing from its own connection (in this process
//! or another one), and what the copy says about itself.

use std::{path::Path, time::Duration};

use rusqlite::{
    Connection, OpenFlags,
    backup::{Backup, StepResult},
};

/// What a copy of the database holds, for the backup's manifest.
pub struct Snapshot {
    /// SQLite's `user_version`: the migrations applied.
    pub schema_version: i64,
    /// The media contents the copy's rows point at (hex SHA-256, sorted).
    pub media_sha256: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the copy of the database fails SQLite's check: {0}")]
    Corrupt(String),
}

/// How long the copy waits for a lock it cannot take at once (a migration at start, say).
const BUSY_WAIT: Duration = Duration::from_secs(30);

/// Copies the database at `source` into a new file `dest` and checks the copy. The server keeps
/// writing meanwhile; the copy is the database as one transaction saw it.
pub fn snapshot(source: &Path, dest: &Path) -> Result<Snapshot, SnapshotError> {
    // Read-write without CREATE: a missing database is an error, and a WAL database can be read
    // even when no server runs (SQLite then needs to make the `-shm` file).
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_timeout(BUSY_WAIT)?;
    let mut dst = Connection::open_with_flags(
        dest,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    {
        let backup = Backup::new(&src, &mut dst)?;
        // Every page in one step: one read transaction on the source, so the copy is a single
        // snapshot (WAL lets the server's writer go on beside it). With smaller steps, each
        // commit made through another connection restarts the copy from the first page, and a
        // busy server would never let it finish.
        let deadline = std::time::Instant::now() + BUSY_WAIT;
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        Some("the database stayed locked".to_owned()),
                    )
                    .into());
                }
            }
        }
    }
    // The copy is one self-contained file: no `-wal` beside it.
    dst.pragma_update_and_check(None, "journal_mode", "DELETE", |row| {
        row.get::<_, String>(0)
    })?;
    let check: String = dst.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if check != "ok" {
        return Err(SnapshotError::Corrupt(check));
    }
    let schema_version = dst.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let has_media: bool = dst.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'media')",
        [],
        |row| row.get(0),
    )?;
    let media_sha256 = if has_media {
        let mut statement = dst.prepare(
            "SELECT DISTINCT sha256 FROM media WHERE sha256 IS NOT NULL ORDER BY sha256",
        )?;
        statement
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?
    } else {
        Vec::new()
    };
    dst.close().map_err(|(_, e)| e)?;
    Ok(Snapshot {
        schema_version,
        media_sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy made while another connection commits in a loop is a single snapshot: complete
    /// rows only, and the count is one the writer committed.
    #[test]
    fn a_copy_under_concurrent_writes_is_consistent() {
        let (dir, path) = crate::storage::migrated_test_file();
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                let conn = Connection::open(&path).unwrap();
                conn.busy_timeout(Duration::from_secs(10)).unwrap();
                conn.execute_batch("CREATE TABLE IF NOT EXISTS pairs (a INTEGER, b INTEGER)")
                    .unwrap();
                for i in 0..400i64 {
                    // Two rows per transaction: a copy must never hold one without the other.
                    conn.execute_batch(&format!(
                        "BEGIN; INSERT INTO pairs VALUES ({i}, 0);
                         INSERT INTO pairs VALUES ({i}, 1); COMMIT;"
                    ))
                    .unwrap();
                }
            })
        };
        let mut copies = 0;
        while !writer.is_finished() || copies == 0 {
            let dest = dir.path().join(format!("copy-{copies}.db"));
            let snapshot = snapshot(&path, &dest).unwrap();
            assert_eq!(
                snapshot.schema_version,
                crate::storage::migrations::SCHEMA_VERSION
            );
            let copy = Connection::open(&dest).unwrap();
            let table: bool = copy
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'pairs')",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            if table {
                let unpaired: i64 = copy
                    .query_row(
                        "SELECT count(*) FROM
                         (SELECT a FROM pairs GROUP BY a HAVING count(*) != 2)",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert_eq!(unpaired, 0, "copy {copies} holds half a transaction");
            }
            assert!(!dir.path().join(format!("copy-{copies}.db-wal")).exists());
            copies += 1;
        }
        writer.join().unwrap();
    }
}
