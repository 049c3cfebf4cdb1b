//! Every SQL statement of the appliance lives below this module; nothing here knows Matrix rules.
//!
//! One SQLite file in WAL mode. Writes go through a single writer connection (SQLite allows one
//! writer at a time anyway) and commit with `synchronous=FULL`, so a write acknowledged to a client
//! is on disk. Reads use a small pool of connections and run beside the writer. All of it runs on
//! tokio's blocking threads, never on the async runtime.

pub mod account_data;
pub mod directory;
pub mod e2ee_keys;
pub mod key_backup;
pub mod media;
mod migrations;
pub mod presence;
pub mod push;
pub mod registration_tokens;
pub mod relations;
pub mod room_upgrade;
pub mod rooms;
pub mod search;
pub mod to_device;
pub mod users;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, Transaction};

/// Fails when the database cannot be opened or is newer than this binary.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} has schema version {found}, newer than this binary understands ({supported}); \
         install a newer matrix-appliance or restore a backup"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
}

#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

/// How many idle read connections are kept; more are opened under load and then closed.
const IDLE_READERS: usize = 4;

/// The page cache of each read connection, in KiB (SQLite's negative `cache_size`).
const READER_CACHE_KIB: i64 = -512;

impl Database {
    /// Opens (or creates) the database and applies pending migrations in one transaction.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let sqlite = |source| OpenError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let mut writer = open_connection(path, false).map_err(sqlite)?;
        migrations::apply(&mut writer, path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Runs `f` in a write transaction on a blocking thread; commits when it returns `Ok`.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<rusqlite::Error> + Send + 'static,
    {
        let inner = self.inner.clone();
        run_blocking(move || inner.write_now(f)).await
    }

    /// Runs `f` with a read connection on the calling thread (start-up and CLI only).
    pub fn read_now<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        self.inner.read_now(f)
    }

    /// Runs `f` with a read connection on a blocking thread.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<rusqlite::Error> + Send + 'static,
    {
        let inner = self.inner.clone();
        run_blocking(move || inner.read_now(f)).await
    }
}

async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        // A panic inside a database closure is a bug; carry it to the caller's task, where the
        // HTTP layer turns it into a 500 instead of taking the process down.
        Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
    }
}

impl Inner {
    fn write_now<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    fn read_now<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_connection(&self.path, true)?,
        };
        // One read transaction around the whole closure: every query sees the same snapshot
        // (a /sync built from many queries cannot mix two states of the database), and SQLite
        // takes its shared lock once instead of once per statement.
        let result = match conn.unchecked_transaction() {
            Ok(snapshot) => {
                let result = f(&snapshot);
                // Nothing was written: ending the transaction either way only drops the lock.
                let _ = snapshot.finish();
                result
            }
            Err(e) => Err(e.into()),
        };
        let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}

fn open_connection(path: &Path, read_only: bool) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    if !read_only {
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    }
    // FULL: every commit is fsynced before the client hears about it.
    conn.pragma_update(None, "synchronous", "FULL")?;
    if read_only {
        // Each connection has its own page cache (2 MiB by default); the readers share the
        // kernel's page cache anyway, so a small one each keeps the pool from holding several
        // copies of the same hot pages.
        conn.pragma_update(None, "cache_size", READER_CACHE_KIB)?;
    }
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

/// Milliseconds since the Unix epoch.
/// The cheapest statement that proves a connection works.
pub fn ping(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.query_row("SELECT 1", [], |_| Ok(()))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
