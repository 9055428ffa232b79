//! An owner's Files: listed in pages (newest first), read one by one, deleted. Deleting a File
//! removes its blob and the chunk records its upload kept; the File is gone for its owner as
//! soon as its record is, so a failure after that only leaks storage and is logged.

use lfusys_core::ids::{FileId, UserId};
use storage::{FilePage, FileRecord, StoreError};

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
            .delete_file(&file.file_id)
            .await
            .map_err(DomainError::storage("deleting the file"))?;
        if !existed {
            return Err(DomainError::NotFound(Subject::File));
        }
        // The file is gone for its owner; what fails below only leaks storage, so log it.
        if let Err(e) = self.state.blobs.delete_blob(&file.blob_key).await {
            tracing::error!(file_id = %file.file_id, blob_key = %file.blob_key, error = %e, "cannot delete the blob of a deleted file");
        }
        if let Err(e) = self.state.metadata.delete_chunks(&file.upload_id).await {
            tracing::warn!(upload_id = %file.upload_id, error = %e, "cannot drop the chunk records of a deleted file");
        }
        tracing::info!(file_id = %file.file_id, "file deleted");
        Ok(())
    }
}
