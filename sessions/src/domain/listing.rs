//! Status and resume (DESIGN §3.5): an upload's status lists every recorded chunk (also after
//! completion: chunk records stay until the File is deleted); the owner's unfinished uploads
//! are listed for resume with the bytes received, without the index lists.

use std::sync::Arc;
use std::time::Duration;

use lfusys_core::ids::{UploadId, UserId};
use lfusys_core::state::UploadState;
use storage::{ChunkRecord, UploadRecord};
use tokio::time::Instant;

use super::{validate, DomainError, DomainResult, SessionsDomain};

/// The longest one waiting status read lasts (below the 30 s limit of the callers' channel);
/// the gateway chains them for a longer `?wait`.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

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

    /// [`get_upload`](Self::get_upload) once the upload has left `while_state` (default: the
    /// state it is in now) or is finished, or after `wait` (at most [`MAX_WAIT`]) with the
    /// state it is in then: the long poll of DESIGN §3.5. Woken at once by this process's
    /// changes, it reads again every `Config::wait_recheck` for other replicas', and answers
    /// at once when the service stops.
    pub async fn wait_for_upload(
        &self,
        owner_id: &UserId,
        upload_id: &UploadId,
        while_state: Option<UploadState>,
        wait: Duration,
    ) -> DomainResult<UploadStatus> {
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        let changes = Arc::clone(&self.state.changes);
        let notify = changes.watch(upload_id);
        let mut waiting_out = while_state;
        loop {
            // Registered before the read, so a change between the read and the wait wakes it.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let status = self.get_upload(owner_id, upload_id).await?;
            let state = status.upload.state;
            let now = Instant::now();
            if state != *waiting_out.get_or_insert(state)
                || !state.is_unfinished()
                || now >= deadline
            {
                return Ok(status);
            }
            let nap = (deadline - now).min(self.state.config.wait_recheck);
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(nap) => {}
                () = changes.closed() => return Ok(status),
            }
        }
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
