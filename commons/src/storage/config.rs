//! Which storage backend a service uses, and opening its stores.

use std::path::PathBuf;
use std::sync::Arc;

use super::local::LocalBlobStore;
use super::sqlite::{SqliteAuthStore, SqliteJobQueue, SqliteMetadataStore};
use super::{AuthStore, BlobStore, JobQueue, MetadataStore, StoreResult};

pub const DEFAULT_DATA_DIR: &str = "./lfusys-data";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// Local disk and SQLite under one data directory:
    /// `blobs/` (uploads in progress and files), `sessions.db`, `auth.db`, `queue.db`.
    Embedded { data_dir: PathBuf },
}

// The openers are async because the production backends (AWS SDK clients) load their
// configuration asynchronously.
#[allow(clippy::unused_async)]
impl StorageConfig {
    /// `LFUSYS_DATA_DIR` (default `./lfusys-data`).
    pub fn from_environment() -> Self {
        let data_dir = std::env::var_os("LFUSYS_DATA_DIR")
            .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from);
        Self::Embedded { data_dir }
    }

    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self::Embedded {
            data_dir: data_dir.into(),
        }
    }

    /// The smallest chunk (but the last) the blob store accepts.
    pub fn min_chunk_size(&self) -> u64 {
        match self {
            Self::Embedded { .. } => 1,
        }
    }

    pub async fn blob_store(&self) -> StoreResult<Arc<dyn BlobStore>> {
        match self {
            Self::Embedded { data_dir } => {
                Ok(Arc::new(LocalBlobStore::open(&data_dir.join("blobs"))?))
            }
        }
    }

    pub async fn metadata_store(&self) -> StoreResult<Arc<dyn MetadataStore>> {
        match self {
            Self::Embedded { data_dir } => Ok(Arc::new(SqliteMetadataStore::open(
                &data_dir.join("sessions.db"),
            )?)),
        }
    }

    pub async fn auth_store(&self) -> StoreResult<Arc<dyn AuthStore>> {
        match self {
            Self::Embedded { data_dir } => {
                Ok(Arc::new(SqliteAuthStore::open(&data_dir.join("auth.db"))?))
            }
        }
    }

    pub async fn job_queue(&self) -> StoreResult<Arc<dyn JobQueue>> {
        match self {
            Self::Embedded { data_dir } => {
                Ok(Arc::new(SqliteJobQueue::open(&data_dir.join("queue.db"))?))
            }
        }
    }
}
