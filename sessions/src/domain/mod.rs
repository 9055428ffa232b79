//! The sessions rules: every rule about uploads and files lives here, over the storage ports
//! (DESIGN §2) and the `lfusys-core` types, and answers in domain terms ([`DomainError`]).
//! Nothing here speaks gRPC: `crate::grpc` decodes requests into the inputs of these use cases
//! and encodes their answers.
//!
//! By use case:
//! - [`create`]: a new upload session (DESIGN §3.1).
//! - [`chunks`]: claim, commit and release of one chunk, known by its CRC-64/NVME; the commit
//!   that completes the set moves the upload to assembling and enqueues its job, exactly once
//!   (DESIGN §3.2–§3.3).
//! - [`concat`]: parallel uploads: partial uploads, and the final upload made of them.
//! - [`checksums`]: the whole-file CRC-64/NVME and SHA-256 a client declares before its last
//!   chunk; a SHA-256 other than the creation's fails the upload.
//! - [`assembly`]: what an assembler reads, the File it publishes (with its verified CRC and
//!   who vouches for its SHA-256), an upload it fails (DESIGN §3.4).
//! - [`listing`]: an upload's status and the owner's unfinished uploads (DESIGN §3.5).
//! - [`cancel`]: cancel and expiry, each releasing the upload's storage (DESIGN §3.6).
//! - [`files`]: the owner's files: pages, one file, deletion.
//!
//! Only the owner sees or touches an upload or a file; for anyone else it does not exist
//! ([`DomainError::NotFound`]).

pub mod assembly;
pub mod cancel;
pub mod changes;
pub mod checksums;
pub mod chunks;
pub mod concat;
pub mod create;
pub mod error;
pub mod files;
pub mod length;
pub mod listing;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use lfusys_core::ids::{self, FileId, UploadId, UserId};
use lfusys_core::state::UploadState;
use storage::{ChunkRecord, FileRecord, UploadRecord};

use crate::SessionsState;

pub use error::{Conflict, DomainError, DomainResult, Subject};

/// How many uploads [`SessionsDomain`] keeps the unchanging fields of.
const KNOWN_UPLOADS: usize = 10_000;

/// The sessions rules over a [`SessionsState`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct SessionsDomain {
    state: SessionsState,
    /// Uploads as last read, for the fields that never change once an upload is created
    /// (owner, plan, storage handle, expiry): the chunk calls, two per chunk, decide on those
    /// without reading the upload again. Their state is read by the store that decides.
    known: Arc<Mutex<HashMap<UploadId, Arc<UploadRecord>>>>,
}

impl SessionsDomain {
    pub fn new(state: SessionsState) -> Self {
        Self {
            state,
            known: Arc::default(),
        }
    }

    fn remember(&self, rec: &UploadRecord) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= KNOWN_UPLOADS && !known.contains_key(&rec.upload_id) {
            known.clear();
        }
        known.insert(rec.upload_id.clone(), Arc::new(rec.clone()));
    }

    /// The upload if it exists and belongs to `owner_id`; `NotFound` otherwise, so that
    /// nobody learns whether someone else's id exists. Read from the store (current state).
    async fn owned_upload(
        &self,
        owner_id: &UserId,
        upload_id: &UploadId,
    ) -> DomainResult<UploadRecord> {
        validate::owner(owner_id)?;
        match self.upload(upload_id).await? {
            Some(rec) if rec.owner_id == *owner_id => {
                self.remember(&rec);
                Ok(rec)
            }
            _ => Err(DomainError::NotFound(Subject::Upload)),
        }
    }

    /// As [`Self::owned_upload`], but possibly as read earlier: only its unchanging fields
    /// may be used, never its state.
    async fn known_upload(
        &self,
        owner_id: &UserId,
        upload_id: &UploadId,
    ) -> DomainResult<Arc<UploadRecord>> {
        let known = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(upload_id)
            .cloned();
        match known {
            Some(rec) if rec.owner_id == *owner_id => Ok(rec),
            Some(_) => Err(DomainError::NotFound(Subject::Upload)),
            None => Ok(Arc::new(self.owned_upload(owner_id, upload_id).await?)),
        }
    }

    async fn upload(&self, upload_id: &UploadId) -> DomainResult<Option<UploadRecord>> {
        if !ids::is_valid_id(upload_id) {
            return Ok(None);
        }
        self.state
            .metadata
            .get_upload(upload_id)
            .await
            .map_err(DomainError::storage("reading the upload"))
    }

    /// The upload whoever owns it (the callers of the assembly rules are workers).
    async fn any_upload(&self, upload_id: &UploadId) -> DomainResult<UploadRecord> {
        self.upload(upload_id)
            .await?
            .ok_or(DomainError::NotFound(Subject::Upload))
    }

    async fn chunks(&self, upload_id: &UploadId) -> DomainResult<Vec<ChunkRecord>> {
        self.state
            .metadata
            .list_chunks(upload_id)
            .await
            .map_err(DomainError::storage("listing the chunks"))
    }

    async fn chunk(&self, upload_id: &UploadId, index: u32) -> DomainResult<Option<ChunkRecord>> {
        self.state
            .metadata
            .get_chunk(upload_id, index)
            .await
            .map_err(DomainError::storage("reading the chunk"))
    }

    async fn received_count(&self, upload_id: &UploadId) -> DomainResult<u32> {
        self.state
            .metadata
            .received_count(upload_id)
            .await
            .map_err(DomainError::storage("counting the chunks"))
    }

    async fn owned_file(&self, owner_id: &UserId, file_id: &FileId) -> DomainResult<FileRecord> {
        validate::owner(owner_id)?;
        if !ids::is_valid_id(file_id) {
            return Err(DomainError::NotFound(Subject::File));
        }
        match self
            .state
            .metadata
            .get_file(file_id)
            .await
            .map_err(DomainError::storage("reading the file"))?
        {
            Some(f) if f.owner_id == *owner_id => Ok(f),
            _ => Err(DomainError::NotFound(Subject::File)),
        }
    }
}

/// Counts a state change and wakes whoever waits on the upload ([`changes`]).
pub(crate) fn transitioned(state: &SessionsState, upload_id: &UploadId, to: UploadState) {
    count_transition(to);
    state.changes.changed(upload_id);
}

pub(crate) fn count_transition(state: UploadState) {
    metrics::counter!("lfusys_upload_transitions_total", "state" => state.as_str()).increment(1);
}

/// An upload record for the domain's unit tests: one 10-byte chunk, in `state`.
#[cfg(test)]
pub(crate) fn test_upload(
    state: UploadState,
    sha256: Option<&str>,
    crc64nvme: Option<lfusys_core::digest::Crc64>,
) -> storage::UploadRecord {
    storage::UploadRecord {
        upload_id: "u".into(),
        owner_id: "o".into(),
        name: "n".into(),
        size: 10,
        content_type: String::new(),
        sha256: sha256.map(str::to_owned),
        crc64nvme,
        chunk_size: 10,
        total_chunks: 1,
        length_deferred: false,
        concat: storage::Concat::None,
        state,
        storage_handle: None,
        error: None,
        file_id: None,
        created_at_ms: 0,
        updated_at_ms: 0,
        expires_at_ms: 0,
    }
}
