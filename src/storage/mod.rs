//! Every SQL statement of the appliance lives below this module; nothing here knows Matrix rules.
//!
//! One SQLite file in WAL mode. Writes go to a single writer thread with its own connection
//! (SQLite allows one writer at a time anyway), which commits with `synchronous=FULL`, so a write
//! acknowledged to a client is on disk. Writes that queue up while a commit is being made to
//! disk go into the next transaction together, each in a savepoint of its own (group commit):
//! one fsync then serves many clients, and a write that fails is rolled back alone. Reads use a
//! small pool of connections on tokio's blocking threads and run beside the writer; nothing
//! touches SQLite on the async runtime.
//!
//! Every connection asks for SQLite's query planner stability guarantee (QPSG): without it
//! SQLite plans some statements (a bound `LIMIT`, some `ORDER BY`s) with the values bound and
//! compiles them again whenever they come out of rusqlite's statement cache, which clears the
//! bindings; that was a sixth of the CPU of an initial `/sync`.
//!
//! Details: up to `MAX_WRITES_PER_COMMIT` (256) writes share a commit, and one that panics is
//! rolled back alone like one that fails; every caller hears back only once the commit is on disk.
//! Every `read` closure runs in one read transaction, so a /sync built from many queries sees one
//! snapshot. At most `max_readers()` reads run at once (twice the cores, at least four), others
//! wait for a permit. Readers: `IDLE_READERS` (two) kept idle, each with a 256 KiB page cache
//! (the kernel's page cache is shared anyway). Every connection keeps `STATEMENT_CACHE_CAPACITY`
//! (64) prepared statements, sets foreign keys and a `busy_timeout`
//! (`tests::bound_statements_are_not_compiled_again` guards QPSG). WAL checkpoints are SQLite's own
//! autocheckpoint: a checkpointer beside the writer never completed under a steady write load, so
//! the WAL grew without bound. Migrations (`migrations.rs`) are embedded SQL files applied in one
//! transaction at start; a database newer than the binary is refused.

pub mod account_data;
pub mod appservice;
pub mod backup;
pub mod delayed_events;
pub mod directory;
pub mod e2ee_keys;
pub mod federation_inbound;
pub mod federation_queue;
pub mod federation_reads;
pub mod key_backup;
pub mod media;
mod migrations;
pub mod openid;
pub mod pdus;
pub mod presence;
pub mod push;
pub mod pushers;
pub mod registration_tokens;
pub mod relations;
pub mod remote_e2ee;
pub mod remote_memberships;
pub mod reports;
pub mod room_upgrade;
pub mod rooms;
pub mod search;
pub mod server_keys;
pub mod sliding_sync;
pub mod to_device;
pub mod users;

pub use migrations::SCHEMA_VERSION;
#[cfg(test)]
pub use migrations::migrated_in_memory;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
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
    /// The queue of the writer thread, which ends when the last `Database` is dropped.
    writes: mpsc::Sender<WriteJob>,
    readers: Mutex<Vec<Connection>>,
    /// Permits for `read`s running at once (see [`max_readers`]).
    reading: Arc<tokio::sync::Semaphore>,
}

/// A write waiting for the writer thread: runs in its savepoint and says whether it succeeded,
/// then hears how the commit went.
type WriteJob = Box<dyn FnOnce(&Transaction<'_>) -> RanJob + Send>;

struct RanJob {
    succeeded: bool,
    finish: FinishJob,
}

/// Hands the caller its result once the transaction is committed (or failed to commit).
type FinishJob = Box<dyn FnOnce(Result<(), &rusqlite::Error>) + Send>;

/// Most writes one transaction takes: bounds how long the first of them waits for its commit.
const MAX_WRITES_PER_COMMIT: usize = 256;

/// How many idle read connections are kept; more are opened under load and then closed. Each
/// holds its page cache, schema and statements (a few hundred KiB); two cover the common case of
/// one /sync being built while another request reads.
const IDLE_READERS: usize = 2;

/// How many `read`s run at once: twice the cores, at least four; more wait for a permit
/// before they take a blocking thread. A read is CPU work on pages the kernel caches, so more
/// at once than the cores can run adds no throughput, but each one beyond the idle pool opens a
/// connection (schema, page cache, statements: a few hundred KiB) on a thread of its own, and
/// their freed memory stays with the allocator: fifty long polls of sliding sync arriving
/// together took a dozen threads and connections, 5-15 MiB of resident memory that stayed.
/// Twice the cores leaves room for reads that wait on the disk.
fn max_readers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (2 * cores).max(4)
}

/// The page cache of each read connection and of the writer, in KiB (SQLite's negative
/// `cache_size`; SQLite's default is 2 MiB each). The pages are in the kernel's page cache
/// anyway, which all connections share, so small private caches mostly save copies.
const READER_CACHE_KIB: i64 = -256;
const WRITER_CACHE_KIB: i64 = -512;

/// Prepared statements kept per connection. A `/sync` runs about twenty distinct statements for
/// each room in turn; with rusqlite's default of 16 that cycle missed the cache every time and
/// compiled every statement again (7 % of an initial sync).
const STATEMENT_CACHE_CAPACITY: usize = 64;

impl Database {
    /// Opens (or creates) the database and applies pending migrations in one transaction.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let sqlite = |source| OpenError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let mut writer = open_connection(path, false).map_err(sqlite)?;
        migrations::apply(&mut writer, path)?;
        let (writes, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || run_writer(writer, queue))
            .map_err(|e| sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writes,
                readers: Mutex::new(Vec::new()),
                reading: Arc::new(tokio::sync::Semaphore::new(max_readers())),
            }),
        })
    }

    /// Runs `f` in a write transaction on the writer thread; it is committed when `f` returns
    /// `Ok` (an `Err` rolls back what `f` wrote), and this returns once the commit is on disk.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<rusqlite::Error> + Send + 'static,
    {
        let (reply, result) = tokio::sync::oneshot::channel();
        let job: WriteJob = Box::new(move |tx: &Transaction<'_>| {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(tx)));
            RanJob {
                succeeded: matches!(outcome, Ok(Ok(_))),
                finish: Box::new(move |commit: Result<(), &rusqlite::Error>| {
                    let outcome = match (outcome, commit) {
                        (Ok(Ok(_)), Err(e)) => Ok(Err(E::from(clone_error(e)))),
                        (outcome, _) => outcome,
                    };
                    let _ = reply.send(outcome);
                }),
            }
        });
        if self.inner.writes.send(job).is_err() {
            return Err(E::from(write_not_run()));
        }
        match result.await {
            Ok(Ok(result)) => result,
            // A panic inside a database closure is a bug; carry it to the caller's task, where
            // the HTTP layer turns it into a 500 instead of taking the process down.
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(E::from(write_not_run())),
        }
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
        // The semaphore is never closed, so `acquire_owned` cannot fail. The permit goes with
        // the closure: it is held until the read ends, even when the caller stops waiting.
        let permit = self.inner.reading.clone().acquire_owned().await;
        let inner = self.inner.clone();
        run_blocking(move || {
            let _permit = permit;
            inner.read_now(f)
        })
        .await
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

/// The writer thread: takes the first waiting write and every other one already queued (up to
/// [`MAX_WRITES_PER_COMMIT`]), runs each in a savepoint of one transaction, commits once, then
/// answers them all.
fn run_writer(mut conn: Connection, queue: mpsc::Receiver<WriteJob>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_WRITES_PER_COMMIT {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                tracing::error!("cannot begin a write transaction: {e}");
                for job in batch {
                    fail_unrun(job, &e);
                }
                continue;
            }
        };
        let mut ran = Vec::with_capacity(batch.len());
        let mut broken = None;
        for job in batch {
            if let Some(e) = &broken {
                fail_unrun(job, e);
                continue;
            }
            if let Err(e) = tx.execute_batch("SAVEPOINT write_job") {
                fail_unrun(job, &e);
                broken = Some(e);
                continue;
            }
            let outcome = job(&tx);
            let ended = if outcome.succeeded {
                tx.execute_batch("RELEASE write_job")
            } else {
                tx.execute_batch("ROLLBACK TO write_job; RELEASE write_job")
            };
            match ended {
                Ok(()) => ran.push(outcome),
                Err(e) => {
                    // The transaction can no longer be trusted: nothing of it is committed.
                    (outcome.finish)(Err(&e));
                    broken = Some(e);
                }
            }
        }
        let committed = match broken {
            Some(e) => {
                let _ = tx.rollback();
                Err(e)
            }
            None => tx.commit(),
        };
        for outcome in ran {
            (outcome.finish)(committed.as_ref().map(|_| ()));
        }
    }
}

/// Drops a write that never ran: its caller gets an error ([`write_not_run`]); the cause is
/// logged here, once.
fn fail_unrun(job: WriteJob, error: &rusqlite::Error) {
    tracing::error!("a database write was not run: {error}");
    drop(job);
}

fn clone_error(error: &rusqlite::Error) -> rusqlite::Error {
    match error {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::ToSqlConversionFailure(other.to_string().into()),
    }
}

fn write_not_run() -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(
        "the database write was not run (see the log for the cause)".into(),
    )
}

impl Inner {
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
    let cache = if read_only {
        READER_CACHE_KIB
    } else {
        WRITER_CACHE_KIB
    };
    conn.pragma_update(None, "cache_size", cache)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
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

/// A database file in a new temporary directory, created and migrated by [`Database::open`]
/// (whose writer thread is gone again), for tests that read or change it with a connection of
/// their own.
#[cfg(test)]
pub(crate) fn migrated_test_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("appliance.db");
    drop(Database::open(&path).unwrap());
    (dir, path)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;

    use super::*;

    async fn test_database() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("test.db")).unwrap();
        db.write(|tx| tx.execute_batch("CREATE TABLE t (v INTEGER PRIMARY KEY)"))
            .await
            .unwrap();
        (dir, db)
    }

    async fn values(db: &Database) -> Vec<i64> {
        db.read(|c| {
            let mut statement = c.prepare("SELECT v FROM t ORDER BY v")?;
            statement
                .query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()
        })
        .await
        .unwrap()
    }

    /// Holds the writer thread in a write until the returned sender is dropped, so that the
    /// writes queued meanwhile go into one transaction.
    fn hold_the_writer(db: &Database) -> std_mpsc::Sender<()> {
        let (release, held) = std_mpsc::channel::<()>();
        let db = db.clone();
        tokio::spawn(async move {
            db.write(move |_| {
                let _ = held.recv();
                Ok::<_, rusqlite::Error>(())
            })
            .await
        });
        release
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_committed_together_fail_alone() {
        let (_dir, db) = test_database().await;
        let release = hold_the_writer(&db);
        let writes: Vec<_> = (1..=40i64)
            .map(|v| {
                let db = db.clone();
                tokio::spawn(async move {
                    db.write(move |tx| {
                        tx.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
                        if v % 4 == 0 {
                            // Wrote, then failed: what it wrote must go.
                            return Err(rusqlite::Error::QueryReturnedNoRows);
                        }
                        if v == 7 {
                            panic!("a bug in one write");
                        }
                        Ok(v)
                    })
                    .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(release);
        for (v, write) in (1..=40i64).zip(writes) {
            match write.await {
                Ok(Ok(written)) => assert_eq!(written, v),
                Ok(Err(_)) => assert_eq!(v % 4, 0, "write {v} failed"),
                Err(panicked) => {
                    assert_eq!(v, 7);
                    assert!(panicked.is_panic());
                }
            }
        }
        let expected: Vec<i64> = (1..=40).filter(|v| v % 4 != 0 && *v != 7).collect();
        assert_eq!(values(&db).await, expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_sees_the_writes_before_it_in_its_transaction() {
        let (_dir, db) = test_database().await;
        let release = hold_the_writer(&db);
        let first = {
            let db = db.clone();
            tokio::spawn(async move {
                db.write(|tx| tx.execute("INSERT INTO t (v) VALUES (1)", []))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The same key again: refused, as it would be after a commit of its own.
        let second = {
            let db = db.clone();
            tokio::spawn(async move {
                db.write(|tx| tx.execute("INSERT INTO t (v) VALUES (1)", []))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(release);
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert!(second.await.unwrap().is_err());
        assert_eq!(values(&db).await, [1]);
    }

    /// Statements keep their compiled program from one use to the next, those with a bound
    /// `LIMIT` or an `ORDER BY` too (SQLite counts each recompilation per statement).
    #[tokio::test]
    async fn bound_statements_are_not_compiled_again() {
        let (_dir, db) = test_database().await;
        db.read(|c| {
            for (room, limit) in [("!a:x", 5), ("!b:x", 7)] {
                rooms::room_events_between(c, room, 0, 100, limit)?;
                rooms::room_events_paginate(c, room, (1, 1), true, limit)?;
                rooms::room_events_paginate(c, room, (1, 1), false, limit)?;
                push::unread_events(c, room, "@u:x", 0, 100, limit)?;
                let query = relations::RelationQuery {
                    room_id: room,
                    parent: "$p",
                    rel_type: None,
                    event_type: None,
                    depth: 1,
                };
                relations::relations_page(c, &query, (1, 1), true, limit)?;
                relations::thread_roots(c, room, (1, 1), None, limit)?;
                to_device::inbox_between(c, "@u:x", room, 0, 100, limit)?;
                presence::changed_for(c, "@u:x", 0, 100, true, limit)?;
                search::search(c, "hello", &[room.to_owned()], true, limit)?;
            }
            let mut recompiled = Vec::new();
            // SAFETY: walks the connection's own statements while it is borrowed here; nothing
            // else prepares or finalizes statements on it meanwhile.
            unsafe {
                let handle = c.handle();
                let mut statement = rusqlite::ffi::sqlite3_next_stmt(handle, std::ptr::null_mut());
                while !statement.is_null() {
                    let count = rusqlite::ffi::sqlite3_stmt_status(
                        statement,
                        rusqlite::ffi::SQLITE_STMTSTATUS_REPREPARE,
                        0,
                    );
                    if count > 0 {
                        let sql = std::ffi::CStr::from_ptr(rusqlite::ffi::sqlite3_sql(statement));
                        recompiled.push(sql.to_string_lossy().into_owned());
                    }
                    statement = rusqlite::ffi::sqlite3_next_stmt(handle, statement);
                }
            }
            assert!(recompiled.is_empty(), "compiled again: {recompiled:#?}");
            Ok::<_, rusqlite::Error>(())
        })
        .await
        .unwrap();
    }
}
