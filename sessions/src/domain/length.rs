//! Declaring the length of an upload created without one (DeclareLength; tus
//! `creation-defer-length`, the IETF draft's creation without `Upload-Length`).
//!
//! Such an upload is planned for the most it may hold ([`PlanPolicy::deferred_plan`]: the
//! preferred chunk size, at most `MAX_CHUNKS` chunks) and takes chunks of that plan while its
//! length is unknown. The declaration cuts the plan to the length — same chunk size, fewer
//! chunks, a shorter last one — once: the same length again answers the upload (a retry), any
//! other is refused. Every chunk recorded so far must be a chunk of the new plan (none past
//! its end, the new last one only at its new length). The blob store learns the size first
//! (local disk: the file's length), then the metadata store; when every chunk of the new plan
//! is already recorded, that write completes the set and the job is sent, as the commit that
//! completes a set does.
//!
//! [`PlanPolicy::deferred_plan`]: lfusys_core::plan::PlanPolicy::deferred_plan

use lfusys_core::clock::now_ms;
use lfusys_core::ids::{UploadId, UserId};
use lfusys_core::plan::UploadPlan;
use lfusys_core::state::UploadState;
use storage::{SizeDeclared, UploadRecord};

use super::{transitioned, Conflict, DomainError, DomainResult, SessionsDomain};

impl SessionsDomain {
    /// Declares the length of `upload_id` (see the module's description); answers the upload.
    pub async fn declare_length(
        &self,
        owner_id: &UserId,
        upload_id: &UploadId,
        size: u64,
    ) -> DomainResult<UploadRecord> {
        let rec = self.owned_upload(owner_id, upload_id).await?;
        if !rec.length_deferred {
            if rec.size != size {
                return Err(Conflict::LengthSet(rec.size).into());
            }
            if rec.state != UploadState::Uploading {
                return Ok(rec);
            }
            // A retry: it finishes a declaration a crash cut short between the stores' writes
            // (and changes nothing otherwise).
            return self.record_length(upload_id, size, rec.total_chunks).await;
        }
        if rec.state != UploadState::Uploading {
            return Err(Conflict::LengthNotDeclarable(rec.state).into());
        }
        let bound = UploadPlan::new(rec.size, rec.chunk_size);
        let plan = bound.declared(size)?;
        for chunk in self
            .state
            .metadata
            .list_chunks(upload_id)
            .await
            .map_err(DomainError::storage("reading the chunks"))?
        {
            if plan.chunk_len(chunk.index) != Some(chunk.size) {
                let end = bound.offset(chunk.index) + chunk.size;
                return Err(DomainError::invalid(
                    "size",
                    format!(
                        "chunk {} is stored, so the upload holds at least {end} bytes: it cannot be {size} bytes long",
                        chunk.index
                    ),
                ));
            }
        }
        self.state
            .blobs
            .set_upload_size(upload_id, size)
            .await
            .map_err(DomainError::storage("sizing the blob storage"))?;
        self.record_length(upload_id, size, plan.total_chunks).await
    }

    /// The metadata store's half of a declaration; sends the job when it completed the set.
    async fn record_length(
        &self,
        upload_id: &UploadId,
        size: u64,
        total_chunks: u32,
    ) -> DomainResult<UploadRecord> {
        let declared = self
            .state
            .metadata
            .declare_size(upload_id, size, total_chunks, now_ms())
            .await
            .map_err(DomainError::storage("recording the length"))?;
        let completed_set = match declared {
            SizeDeclared::Applied { completed_set } => completed_set,
            SizeDeclared::NotApplied => {
                // Declared (or closed) concurrently: the same length is the same answer.
                let now = self.any_upload(upload_id).await?;
                if !now.length_deferred && now.size == size {
                    return Ok(now);
                }
                return Err(DomainError::ChangedConcurrently);
            }
        };
        tracing::info!(%upload_id, size, total_chunks, "upload length declared");
        if completed_set {
            transitioned(&self.state, upload_id, UploadState::Assembling);
            tracing::info!(%upload_id, "every chunk was recorded before the length; assembling");
            self.send_job(upload_id).await;
        }
        self.state.changes.changed(upload_id);
        self.any_upload(upload_id).await
    }
}
