//! SQLite metadata, auth and queue stores (embedded default).
//!
//! Each store owns one database file, in WAL mode, opened by one connection per store
//! instance. Several instances (and processes) may open the same file: read-modify-write
//! operations run in `BEGIN IMMEDIATE` transactions, so SQLite's own locking serializes them
//! and a `busy_timeout` waits for the lock instead of failing at once.

mod auth;
mod metadata;
mod queue;

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

pub use auth::SqliteAuthStore;
pub use metadata::SqliteMetadataStore;
pub use queue::SqliteJobQueue;

use storage::{StoreError, StoreResult};

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An error inside a store call: SQLite's own, or one of the store's rules. Calls answer with
/// the [`StoreError`] it maps to; the port's error type cannot know SQLite.
#[derive(Debug)]
pub(crate) enum DbError {
    Sql(rusqlite::Error),
    Store(StoreError),
}

pub(crate) type DbResult<T> = Result<T, DbError>;

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<StoreError> for DbError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<std::io::Error> for DbError {
    fn from(e: std::io::Error) -> Self {
        Self::Store(e.into())
    }
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        let e = match e {
            DbError::Store(e) => return e,
            DbError::Sql(e) => e,
        };
        let code = match &e {
            rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
            _ => None,
        };
        match code {
            // Transient: another connection holds the lock, or the disk is failing.
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure,
            ) => Self::unavailable_from(e.to_string(), e),
            // Full until space is freed (the transaction rolled back: nothing half written).
            Some(ErrorCode::DiskFull) => Self::full_from(e.to_string(), e),
            Some(ErrorCode::ConstraintViolation) => Self::Conflict(e.to_string()),
            _ => Self::other_from(e.to_string(), e),
        }
    }
}

/// Waits for another connection's lock for about [`BUSY_TIMEOUT`] in all. SQLite's own
/// `busy_timeout` backs off to 100 ms naps, which starves writers under contention between
/// connections; short naps hand the lock over within a millisecond or two.
fn wait_for_lock(attempt: i32) -> bool {
    const FAST: i32 = 100; // 1 ms naps first
    let nap_ms = if attempt < FAST { 1 } else { 5 };
    let waited_ms = if attempt < FAST {
        u128::from(attempt.unsigned_abs())
    } else {
        u128::from(FAST.unsigned_abs()) + 5 * u128::from((attempt - FAST).unsigned_abs())
    };
    if waited_ms >= BUSY_TIMEOUT.as_millis() {
        return false;
    }
    std::thread::sleep(Duration::from_millis(nap_ms));
    true
}

/// `synchronous` setting of a store's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// In WAL mode, survives a process crash; a power loss may drop the last commits.
    Normal,
    /// Every commit is fsynced before it is acknowledged.
    Full,
}

/// Calls answered together: at most this many share one transaction.
const MAX_BATCH: usize = 128;

/// A store's connection, owned by a thread of its own that runs the store's calls in order.
///
/// Calls are queued to that thread, so concurrent requests cost no blocking-pool threads
/// (under 200 clients the blocking pool had grown to 200 threads, each parked on the one
/// connection's mutex, each with an allocator heap of its own). Calls that are queued
/// together commit together (group commit): the thread opens one `BEGIN IMMEDIATE`
/// transaction, runs each call in a savepoint of it (a failed call is rolled back to its
/// savepoint and answers its own error; [`immediate`] nests as a savepoint), commits once and
/// only then answers them all, so N writes cost one WAL sync instead of N and each caller
/// still hears "done" only once its write is as durable as the store's [`Durability`] says.
/// A lone call runs on its own, as before.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    calls: std::sync::mpsc::Sender<Box<dyn Call>>,
}

/// One queued call: run it, then answer it once the fate of its transaction is known.
trait Call: Send {
    /// Runs the call; `true` when it succeeded (its changes may be committed).
    fn run(&mut self, conn: &mut Connection) -> bool;
    /// Answers the caller: its own result, or the error that kept the batch from committing.
    fn answer(self: Box<Self>, commit: Option<&rusqlite::Error>);
}

struct Pending<T, F> {
    f: Option<F>,
    result: Option<DbResult<T>>,
    reply: tokio::sync::oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Call for Pending<T, F>
where
    F: FnOnce(&mut Connection) -> DbResult<T> + Send,
    T: Send,
{
    fn run(&mut self, conn: &mut Connection) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)))
            .unwrap_or_else(|_| Err(StoreError::other("a database call panicked").into()));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, commit: Option<&rusqlite::Error>) {
        let result = match (self.result, commit) {
            // Its own error stands (it was rolled back to its savepoint either way).
            (Some(Err(e)), _) => Err(StoreError::from(e)),
            (_, Some(e)) => Err(StoreError::from(DbError::Sql(same_error(e)))),
            (Some(Ok(v)), None) => Ok(v),
            (None, None) => Err(StoreError::other("a database call was not run")),
        };
        // The caller may have gone away (its request was dropped): nothing to tell then.
        let _ = self.reply.send(result);
    }
}

/// A copy of `e` for each caller of a batch that failed to commit (`rusqlite::Error` is not
/// `Clone`): the same SQLite code, so that a full disk still maps to `StoreError::Full`.
fn same_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

/// The connection's thread: takes what is queued (up to [`MAX_BATCH`]) and runs it, until
/// every handle of the store is dropped.
fn serve(mut conn: Connection, calls: &std::sync::mpsc::Receiver<Box<dyn Call>>) {
    while let Ok(first) = calls.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match calls.try_recv() {
                Ok(call) => batch.push(call),
                Err(_) => break,
            }
        }
        if batch.len() == 1 {
            for mut call in batch {
                call.run(&mut conn);
                call.answer(None);
            }
            continue;
        }
        run_batch(&mut conn, batch);
    }
}

/// One transaction for the whole batch, a savepoint per call, one commit, then the answers.
fn run_batch(conn: &mut Connection, batch: Vec<Box<dyn Call>>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        for call in batch {
            call.answer(Some(&e));
        }
        return;
    }
    let mut ran = Vec::with_capacity(batch.len());
    let mut failed: Option<rusqlite::Error> = None;
    for mut call in batch {
        if failed.is_none() {
            match conn.execute_batch("SAVEPOINT call") {
                Ok(()) => {
                    let ok = call.run(conn);
                    let undo = if ok {
                        "RELEASE call"
                    } else {
                        "ROLLBACK TO call; RELEASE call"
                    };
                    if let Err(e) = conn.execute_batch(undo) {
                        failed = Some(e);
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        ran.push(call);
    }
    let outcome = match failed {
        Some(e) => Err(e),
        None => conn.execute_batch("COMMIT"),
    };
    if outcome.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    let err = outcome.err();
    for call in ran {
        call.answer(err.as_ref());
    }
}

impl Db {
    /// Opens `path` (creating its directory), applies the pragmas and brings the schema up to
    /// date: `migrations[v]` takes a file from schema version `v` to `v + 1` (version 0 is a new
    /// file), so the current version is `migrations.len()`; a file's version is its
    /// `PRAGMA user_version`. The steps run in one transaction. Then starts the connection's
    /// thread.
    pub(crate) fn open(path: &Path, migrations: &[&str], durability: Durability) -> DbResult<Self> {
        let version = i32::try_from(migrations.len()).unwrap_or(i32::MAX);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_handler(Some(wait_for_lock))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::other(format!(
                "{}: cannot use WAL (journal_mode={mode})",
                path.display()
            ))
            .into());
        }
        let sync = match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
        ))?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: i32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if current > version {
            return Err(StoreError::other(format!(
                "{}: schema version {current} is newer than this build's {version}",
                path.display()
            ))
            .into());
        }
        if current < version {
            for step in &migrations[usize::try_from(current).unwrap_or(0)..] {
                tx.execute_batch(step)?;
            }
            tx.execute_batch(&format!("PRAGMA user_version = {version}"))?;
        }
        tx.commit()?;
        let (calls, queued) = std::sync::mpsc::channel();
        let name = path.file_stem().map_or_else(
            || "sqlite".to_owned(),
            |s| format!("sqlite-{}", s.to_string_lossy()),
        );
        std::thread::Builder::new()
            .name(name)
            .spawn(move || serve(conn, &queued))?;
        Ok(Self { calls })
    }

    /// Runs `f` with the connection on the connection's thread (see [`Db`]).
    pub(crate) async fn call<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&mut Connection) -> DbResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let call = Box::new(Pending {
            f: Some(f),
            result: None,
            reply,
        });
        self.calls
            .send(call)
            .map_err(|_| StoreError::other("the database thread has stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::other("the database thread stopped during a call"))?
    }

    pub(crate) async fn check(&self) -> StoreResult<()> {
        self.call(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction, committed when `f` succeeds; inside a batch
/// (a transaction is open already) in a savepoint of it, released when `f` succeeds.
pub(crate) fn immediate<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> DbResult<T>,
) -> DbResult<T> {
    if !conn.is_autocommit() {
        let sp = conn.savepoint()?;
        let out = f(&sp)?;
        sp.commit()?;
        return Ok(out);
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn mapped(code: std::os::raw::c_int) -> StoreError {
        StoreError::from(DbError::Sql(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        )))
    }

    /// Calls queued together share a transaction; each keeps its own outcome: the one that
    /// breaks a constraint is rolled back alone and the others are committed (and visible to
    /// another connection once answered).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn calls_committed_together_keep_their_own_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let schema = "CREATE TABLE t (id INTEGER PRIMARY KEY, note TEXT NOT NULL);";
        let db = Db::open(&path, &[schema], Durability::Full).unwrap();
        // A row there before the calls, so that the one conflict does not depend on the
        // order in which the calls run.
        db.call(|c| {
            c.execute("INSERT INTO t (id, note) VALUES (10000, 'before')", [])?;
            Ok(())
        })
        .await
        .unwrap();
        let calls = (0..200).map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                // Call 150 reuses id 10000: its insert of two rows fails on the second and
                // must leave neither behind.
                let (first, second) = if i == 150 {
                    (1000, 10000)
                } else {
                    (i, i + 500)
                };
                db.call(move |c| {
                    immediate(c, |tx| {
                        tx.execute("INSERT INTO t (id, note) VALUES (?1, 'a')", [first])?;
                        tx.execute("INSERT INTO t (id, note) VALUES (?1, 'b')", [second])?;
                        Ok(i)
                    })
                })
                .await
            })
        });
        let results = futures::future::join_all(calls).await;
        let mut conflicts = 0;
        for (i, r) in results.into_iter().enumerate() {
            match r.unwrap() {
                Ok(n) => assert_eq!(n, i),
                Err(StoreError::Conflict(_)) if i == 150 => conflicts += 1,
                Err(e) => panic!("call {i}: {e}"),
            }
        }
        assert_eq!(conflicts, 1);
        let other = Connection::open(&path).unwrap();
        let rows: i64 = other
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1 + 2 * 199);
        let stray: i64 = other
            .query_row("SELECT COUNT(*) FROM t WHERE id = 1000", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stray, 0);
    }

    #[test]
    fn sqlite_errors_map_to_the_port_s() {
        assert!(matches!(
            mapped(rusqlite::ffi::SQLITE_FULL),
            StoreError::Full { .. }
        ));
        assert!(matches!(
            mapped(rusqlite::ffi::SQLITE_BUSY),
            StoreError::Unavailable { .. }
        ));
        assert!(matches!(
            mapped(rusqlite::ffi::SQLITE_CONSTRAINT),
            StoreError::Conflict(_)
        ));
        assert!(matches!(
            mapped(rusqlite::ffi::SQLITE_CORRUPT),
            StoreError::Other { .. }
        ));
    }
}
