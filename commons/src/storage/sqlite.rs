//! SQLite metadata, auth and queue stores (embedded default).
//! STUB: to be implemented (see storage/mod.rs for the contracts).

use std::path::Path;

#[derive(Debug)]
pub struct SqliteMetadataStore;
#[derive(Debug)]
pub struct SqliteAuthStore;
#[derive(Debug)]
pub struct SqliteJobQueue;

impl SqliteMetadataStore {
    pub fn open(_path: &Path) -> super::StoreResult<Self> {
        Ok(Self)
    }
}
impl SqliteAuthStore {
    pub fn open(_path: &Path) -> super::StoreResult<Self> {
        Ok(Self)
    }
}
impl SqliteJobQueue {
    pub fn open(_path: &Path) -> super::StoreResult<Self> {
        Ok(Self)
    }
}

use std::time::Duration;

use async_trait::async_trait;

use super::{
    AuthStore, ChunkRecord, ClaimOutcome, CommitOutcome, FilePage, FileRecord, JobQueue, MetadataStore, QueueDepth,
    ReceivedJob, RefreshRecord, RotateOutcome, StoreError, StoreResult, UploadRecord, UserRecord,
};
use crate::state::UploadState;

fn todo_err() -> StoreError {
    StoreError::Other("not implemented yet".into())
}

#[async_trait]
impl MetadataStore for SqliteMetadataStore {
    async fn insert_upload(&self, _u: &UploadRecord) -> StoreResult<()> { Err(todo_err()) }
    async fn get_upload(&self, _id: &str) -> StoreResult<Option<UploadRecord>> { Err(todo_err()) }
    async fn list_uploads(&self, _o: &str, _s: &[UploadState]) -> StoreResult<Vec<UploadRecord>> { Err(todo_err()) }
    async fn list_chunks(&self, _id: &str) -> StoreResult<Vec<ChunkRecord>> { Err(todo_err()) }
    async fn claim_chunk(&self, _u: &str, _i: u32, _s: &str, _c: &str, _l: Duration, _n: i64) -> StoreResult<ClaimOutcome> { Err(todo_err()) }
    async fn release_chunk(&self, _u: &str, _i: u32, _c: &str) -> StoreResult<()> { Err(todo_err()) }
    async fn commit_chunk(&self, _u: &str, _c: &ChunkRecord, _cl: &str, _n: i64) -> StoreResult<CommitOutcome> { Err(todo_err()) }
    async fn transition(&self, _u: &str, _f: &[UploadState], _t: UploadState, _e: Option<&str>, _n: i64) -> StoreResult<bool> { Err(todo_err()) }
    async fn list_expired(&self, _n: i64, _l: u32) -> StoreResult<Vec<UploadRecord>> { Err(todo_err()) }
    async fn list_stale_assembling(&self, _b: i64, _l: u32) -> StoreResult<Vec<UploadRecord>> { Err(todo_err()) }
    async fn delete_chunks(&self, _u: &str) -> StoreResult<()> { Err(todo_err()) }
    async fn publish_file(&self, _f: &FileRecord, _n: i64) -> StoreResult<FileRecord> { Err(todo_err()) }
    async fn get_file(&self, _f: &str) -> StoreResult<Option<FileRecord>> { Err(todo_err()) }
    async fn list_files(&self, _o: &str, _c: Option<&str>, _l: u32) -> StoreResult<FilePage> { Err(todo_err()) }
    async fn delete_file(&self, _f: &str) -> StoreResult<bool> { Err(todo_err()) }
    async fn check(&self) -> StoreResult<()> { Err(todo_err()) }
}

#[async_trait]
impl AuthStore for SqliteAuthStore {
    async fn create_user(&self, _u: &UserRecord) -> StoreResult<()> { Err(todo_err()) }
    async fn user_by_email(&self, _e: &str) -> StoreResult<Option<UserRecord>> { Err(todo_err()) }
    async fn user_by_id(&self, _i: &str) -> StoreResult<Option<UserRecord>> { Err(todo_err()) }
    async fn insert_refresh(&self, _t: &RefreshRecord) -> StoreResult<()> { Err(todo_err()) }
    async fn rotate_refresh(&self, _o: &str, _n: &RefreshRecord, _now: i64) -> StoreResult<RotateOutcome> { Err(todo_err()) }
    async fn family_of(&self, _t: &str) -> StoreResult<Option<String>> { Err(todo_err()) }
    async fn revoke_family(&self, _f: &str) -> StoreResult<()> { Err(todo_err()) }
    async fn is_family_revoked(&self, _f: &str) -> StoreResult<bool> { Err(todo_err()) }
    async fn check(&self) -> StoreResult<()> { Err(todo_err()) }
}

#[async_trait]
impl JobQueue for SqliteJobQueue {
    async fn send(&self, _d: &str, _b: &str) -> StoreResult<()> { Err(todo_err()) }
    async fn receive(&self, _w: Duration, _v: Duration) -> StoreResult<Option<ReceivedJob>> { Err(todo_err()) }
    async fn extend_visibility(&self, _r: &str, _v: Duration) -> StoreResult<()> { Err(todo_err()) }
    async fn delete(&self, _r: &str) -> StoreResult<()> { Err(todo_err()) }
    async fn depth(&self) -> StoreResult<QueueDepth> { Err(todo_err()) }
    async fn check(&self) -> StoreResult<()> { Err(todo_err()) }
}
