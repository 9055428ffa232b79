//! Status and resume (DESIGN §3.5): an upload's status lists every recorded chunk (also after
//! completion: chunk records stay until the File is deleted); the owner's unfinished uploads
//! are listed for resume with the bytes received, without the index lists.

use lfusys_core::ids::{UploadId, UserId};
use lfusys_core::state::UploadState;
use storage::{ChunkRecord, UploadRecord};

use super::{validate, DomainError, DomainResult, SessionsDomain};

/// An upload with its recorded chunks (ascending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    pub upload: UploadRecord,
    pub chunks: Vec<ChunkRecord>,
}

/// An unfinished upload with the total of bytes recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedUpload {
    pub upload: UploadRecord,
    pub bytes_received: u64,
}

impl SessionsDomain {
    /// An owner's upload and its chunks. An upload that still says uploading although every
    /// chunk is recorded (a count lost to a crash) is completed here, once.
    pub async fn get_upload(
        &self,
        owner_id: &UserId,
        upload_id: &UploadId,
    ) -> DomainResult<UploadStatus> {
        let mut rec = self.owned_upload(owner_id, upload_id).await?;
        let chunks = self.chunks(&rec.upload_id).await?;
        if rec.state == UploadState::Uploading && chunks.len() >= rec.total_chunks as usize {
            let received = self
                .state
                .metadata
                .recount(&rec.upload_id)
                .await
                .map_err(DomainError::storage("counting the chunks"))?;
            if self.complete_if_counted(&rec, received).await? {
                rec = self.any_upload(&rec.upload_id).await?;
            }
        }
        Ok(UploadStatus {
            upload: rec,
            chunks,
        })
    }

    /// The owner's uploads still uploading or assembling, newest first.
    pub async fn list_uploads(&self, owner_id: &UserId) -> DomainResult<Vec<UnfinishedUpload>> {
        validate::owner(owner_id)?;
        let records = self
            .state
            .metadata
            .list_uploads(owner_id, &[UploadState::Uploading, UploadState::Assembling])
            .await
            .map_err(DomainError::storage("listing the uploads"))?;
        let mut items = Vec::with_capacity(records.len());
        for upload in records {
            let bytes_received = self
                .chunks(&upload.upload_id)
                .await?
                .iter()
                .map(|c| c.size)
                .sum();
            items.push(UnfinishedUpload {
                upload,
                bytes_received,
            });
        }
        Ok(items)
    }
}
