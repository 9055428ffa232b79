//! Cancel and expiry (DESIGN §3.6): an owner cancels an upload until it is assembling;
//! unfinished uploads expire after the configured time (on the sweeper's pass, or on the spot
//! when a chunk arrives past expiry). Either way the upload's storage is released and nothing
//! is left behind. Cancelling again answers the upload's state and retries the (idempotent)
//! release, which heals a release that failed halfway.

use lfusys_core::clock::now_ms;
use lfusys_core::failpoint;
use lfusys_core::ids::{self, UploadId, UserId};
use lfusys_core::state::UploadState;
use storage::{StoreError, UploadRecord};

use super::{transitioned, Conflict, DomainError, DomainResult, SessionsDomain};
use crate::SessionsState;

impl SessionsDomain {
    /// Cancels an owner's upload that is still uploading (or answers it when it is cancelled
    /// or expired already).
    pub async fn cancel_upload(
        &self,
        owner_id: &UserId,
        upload_id: &UploadId,
    ) -> DomainResult<UploadRecord> {
        let mut rec = self.owned_upload(owner_id, upload_id).await?;
        // A lost race against a commit or the sweeper means re-reading the new state once.
        for _ in 0..2 {
            match rec.state {
                UploadState::Cancelled | UploadState::Expired => {
                    // Releasing again heals a cancel whose release failed halfway.
                    release_storage(&self.state, &rec, false)
                        .await
                        .map_err(DomainError::storage("releasing the upload's storage"))?;
                    return Ok(rec);
                }
                UploadState::Assembling | UploadState::Completed | UploadState::Failed => {
                    return Err(Conflict::NotCancellable(rec.state).into());
                }
                UploadState::Uploading => {
                    let applied = self
                        .state
                        .metadata
                        .transition(
                            &rec.upload_id,
                            &[UploadState::Uploading],
                            UploadState::Cancelled,
                            None,
                            now_ms(),
                        )
                        .await
                        .map_err(DomainError::storage("cancelling the upload"))?;
                    if applied {
                        transitioned(&self.state, &rec.upload_id, UploadState::Cancelled);
                        tracing::info!(upload_id = %rec.upload_id, "upload cancelled");
                    }
                    rec = self.any_upload(&rec.upload_id).await?;
                }
            }
        }
        Err(DomainError::ChangedConcurrently)
    }
}

/// Releases everything an upload holds — its blob upload, a blob the assembler may already
/// have committed, its chunk records — and takes it out of the outbox of releases, where the
/// write that cancelled, expired or failed it (or deleted its File) put it. Every step is
/// idempotent, so the sweeper finishes a release that a crash or an error cut short.
pub(crate) async fn release_storage(
    state: &SessionsState,
    rec: &UploadRecord,
    committed_blob_too: bool,
) -> Result<(), StoreError> {
    failpoint::hit(failpoint::BEFORE_STORAGE_RELEASE);
    state
        .blobs
        .abort_upload(&rec.upload_id, rec.storage_handle.as_deref())
        .await?;
    // A partial upload's blob is committed by the assembler of a final that copies it.
    if committed_blob_too || rec.concat.is_partial() {
        let key = ids::blob_key_for_file(&ids::file_id_for_upload(&rec.upload_id));
        state.blobs.delete_blob(&key).await?;
    }
    state.metadata.delete_chunks(&rec.upload_id).await?;
    failpoint::hit(failpoint::AFTER_STORAGE_RELEASE);
    state.metadata.mark_released(&rec.upload_id).await
}

/// Releases a blob upload in progress that no upload record owns: storage prepared by a
/// create that crashed before it recorded the upload. Returns whether it was such a one.
pub(crate) async fn release_orphan(
    state: &SessionsState,
    upload_id: &UploadId,
) -> Result<bool, StoreError> {
    if state.metadata.get_upload(upload_id).await?.is_some() {
        return Ok(false);
    }
    state.blobs.abort_upload(upload_id, None).await?;
    Ok(true)
}

/// Finishes a release the outbox holds. The blob of a File that still exists is never
/// released: the outbox only takes a published upload when its File is deleted, so that would
/// be a store's error, and the File's bytes stay.
pub(crate) async fn finish_release(
    state: &SessionsState,
    rec: &UploadRecord,
) -> Result<(), StoreError> {
    if let Some(file_id) = &rec.file_id {
        if state.metadata.get_file(file_id).await?.is_some() {
            tracing::error!(upload_id = %rec.upload_id, %file_id, "the outbox of releases holds an upload whose File exists; keeping its storage");
            return state.metadata.mark_released(&rec.upload_id).await;
        }
    }
    release_storage(state, rec, true).await
}

/// Moves an upload that is past its expiry from uploading to expired and releases its
/// storage. Returns whether this call expired it.
pub(crate) async fn expire_upload(
    state: &SessionsState,
    rec: &UploadRecord,
    now: i64,
) -> Result<bool, StoreError> {
    let applied = state
        .metadata
        .transition(
            &rec.upload_id,
            &[UploadState::Uploading],
            UploadState::Expired,
            None,
            now,
        )
        .await?;
    if applied {
        transitioned(state, &rec.upload_id, UploadState::Expired);
        tracing::info!(upload_id = %rec.upload_id, "upload expired");
        release_storage(state, rec, false).await?;
    }
    Ok(applied)
}
