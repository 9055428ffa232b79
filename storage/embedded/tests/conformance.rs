//! The storage ports' conformance suite (`storage::conformance`) on the embedded adapters:
//! SQLite files and a local directory, each case on a temporary directory of its own. What only
//! these adapters do is tested beside them (`src/local.rs`, `src/sqlite/*.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use storage::conformance::{AuthHarness, BlobHarness, MetadataHarness, QueueHarness};
use storage_embedded::{LocalBlobStore, SqliteAuthStore, SqliteJobQueue, SqliteMetadataStore};
use tempfile::TempDir;

/// The embedded backend: every store on a fresh temporary directory.
struct Embedded;

impl MetadataHarness for Embedded {
    type Store = SqliteMetadataStore;
    type Place = TempDir;

    async fn place(&self) -> TempDir {
        tempfile::tempdir().unwrap()
    }

    /// In a directory `open` creates.
    async fn open(&self, dir: &TempDir) -> SqliteMetadataStore {
        SqliteMetadataStore::open(&dir.path().join("db/sessions.db")).unwrap()
    }
}

impl AuthHarness for Embedded {
    type Store = SqliteAuthStore;
    type Place = TempDir;

    async fn place(&self) -> TempDir {
        tempfile::tempdir().unwrap()
    }

    async fn open(&self, dir: &TempDir) -> SqliteAuthStore {
        SqliteAuthStore::open(&dir.path().join("auth.db")).unwrap()
    }
}

impl QueueHarness for Embedded {
    type Store = SqliteJobQueue;
    type Place = TempDir;

    async fn place(&self) -> TempDir {
        tempfile::tempdir().unwrap()
    }

    async fn open(&self, dir: &TempDir) -> SqliteJobQueue {
        SqliteJobQueue::open(&dir.path().join("queue.db")).unwrap()
    }

    /// Milliseconds count; a quarter of a second leaves a loaded machine time between calls.
    fn tick(&self) -> Duration {
        Duration::from_millis(250)
    }
}

impl BlobHarness for Embedded {
    type Store = LocalBlobStore;
    type Place = TempDir;

    async fn place(&self) -> TempDir {
        tempfile::tempdir().unwrap()
    }

    async fn open(&self, dir: &TempDir) -> LocalBlobStore {
        LocalBlobStore::open(&dir.path().join("blobs")).unwrap()
    }

    /// The store's read buffer.
    fn max_read_frame(&self) -> Option<usize> {
        Some(1024 * 1024)
    }
}

storage::metadata_conformance!(Embedded);
storage::auth_conformance!(Embedded);
storage::queue_conformance!(Embedded);
storage::blob_conformance!(Embedded);
