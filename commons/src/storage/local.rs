//! Local-disk blob store (embedded default).
//! STUB: to be implemented (see storage/mod.rs for the contract).

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{BlobStore, ByteStream, ChunkTarget, PartRef, StoreError, StoreResult};
use crate::range::ByteRange;

#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    root: PathBuf,
}

impl LocalBlobStore {
    pub fn open(root: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(root)?;
        Ok(Self { root: root.to_path_buf() })
    }
}

fn todo_err() -> StoreError {
    StoreError::Other("not implemented yet".into())
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn begin_upload(&self, _upload_id: &str, _size: u64) -> StoreResult<String> {
        let _ = &self.root;
        Err(todo_err())
    }
    async fn write_chunk(&self, _target: &ChunkTarget, _body: ByteStream) -> StoreResult<String> {
        Err(todo_err())
    }
    async fn complete_upload(&self, _u: &str, _h: &str, _p: &[PartRef], _k: &str) -> StoreResult<()> {
        Err(todo_err())
    }
    async fn abort_upload(&self, _u: &str, _h: &str) -> StoreResult<()> {
        Err(todo_err())
    }
    async fn blob_size(&self, _k: &str) -> StoreResult<u64> {
        Err(todo_err())
    }
    async fn read_blob(&self, _k: &str, _r: Option<ByteRange>) -> StoreResult<ByteStream> {
        Err(todo_err())
    }
    async fn delete_blob(&self, _k: &str) -> StoreResult<()> {
        Err(todo_err())
    }
    async fn check(&self) -> StoreResult<()> {
        Err(todo_err())
    }
}
