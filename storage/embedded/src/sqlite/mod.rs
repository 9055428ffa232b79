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
use std::sync::{Arc, Mutex};
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

/// One connection, shared by the store's calls; each call runs on the blocking pool.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl Db {
    /// Opens `path` (creating its directory), applies the pragmas and brings the schema up to
    /// date: `migrations[v]` takes a file from schema version `v` to `v + 1` (version 0 is a new
    /// file), so the current version is `migrations.len()`; a file's version is its
    /// `PRAGMA user_version`. The steps run in one transaction.
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
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    pub(crate) async fn call<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&mut Connection) -> DbResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::other("database connection lock poisoned"))?;
            f(&mut guard).map_err(StoreError::from)
        })
        .await
        .map_err(|e| StoreError::other_from(format!("database task failed: {e}"), e))?
    }

    pub(crate) async fn check(&self) -> StoreResult<()> {
        self.call(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction, committed when `f` succeeds.
pub(crate) fn immediate<T>(
    conn: &mut Connection,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> DbResult<T>,
) -> DbResult<T> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(code: std::os::raw::c_int) -> StoreError {
        StoreError::from(DbError::Sql(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        )))
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
