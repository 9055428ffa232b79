//! An owner's Files: listed in pages (newest first), read one by one, deleted. Deleting a File
//! removes its record and puts its upload into the outbox of releases in one write, then
//! releases the blob and the chunk records the upload kept. The File is gone for its owner as
//! soon as its record is; a release that fails after that is logged and finished by the
//! sweeper.

use lfusys_core::clock::now_ms;
use lfusys_core::ids::{FileId, UserId};
use storage::{FilePage, FileRecord, StoreError};

use super::cancel::release_storage;
use super::{validate, DomainError, DomainResult, SessionsDomain, Subject};

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 1000;

impl SessionsDomain {
    /// A page of the owner's files from `cursor` (empty: the first page); `limit` 0 means
    /// [`DEFAULT_PAGE_SIZE`], larger ones are capped at [`MAX_PAGE_SIZE`].
    pub async fn list_files(
        &self,
        owner_id: &UserId,
        cursor: &str,
        limit: u32,
    ) -> DomainResult<FilePage> {
        validate::owner(owner_id)?;
        let limit = match limit {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let cursor = Some(cursor).filter(|c| !c.is_empty());
        self.state
            .metadata
            .list_files(owner_id, cursor, limit)
            .await
            .map_err(|e| match e {
                // The only conflict a listing can have is a cursor it cannot read.
                StoreError::Conflict(what) => DomainError::invalid("cursor", what),
                e => DomainError::storage("listing the files")(e),
            })
    }

    pub async fn get_file(&self, owner_id: &UserId, file_id: &FileId) -> DomainResult<FileRecord> {
        self.owned_file(owner_id, file_id).await
    }

    pub async fn delete_file(&self, owner_id: &UserId, file_id: &FileId) -> DomainResult<()> {
        let file = self.owned_file(owner_id, file_id).await?;
        let existed = self
            .state
            .metadata
            .delete_file(&file.file_id, now_ms())
            .await
            .map_err(DomainError::storage("deleting the file"))?;
        if !existed {
            return Err(DomainError::NotFound(Subject::File));
        }
        tracing::info!(file_id = %file.file_id, "file deleted");
        // The File is gone for its owner; its upload is in the outbox of releases, which the
        // sweeper drains if this fails.
        let released = match self.state.metadata.get_upload(&file.upload_id).await {
            Ok(Some(upload)) => release_storage(&self.state, &upload, true).await,
            // Older data: a File without its upload record. Its blob is all there is.
            Ok(None) => self.state.blobs.delete_blob(&file.blob_key).await,
            Err(e) => Err(e),
        };
        if let Err(e) = released {
            tracing::warn!(file_id = %file.file_id, upload_id = %file.upload_id, error = %e, "cannot release the storage of a deleted file now; the sweeper will");
        }
        Ok(())
    }
}
