//! Creating an upload session (DESIGN §3.1): the server plans the chunks, prepares the blob
//! storage, then records the upload; storage prepared for an upload that could not be
//! recorded is given back. A crash between the two leaves storage that no upload owns and no
//! client knows of: the sweeper releases it once it is `orphan_grace` old (local part files;
//! on S3 it is an empty multipart upload, for the bucket's lifecycle rule).

use lfusys_core::clock::now_ms;
use lfusys_core::failpoint;
use lfusys_core::ids::{UploadId, UserId};
use lfusys_core::plan::UploadPlan;
use lfusys_core::state::UploadState;
use storage::{Concat, UploadRecord};

use super::{count_transition, validate, DomainError, DomainResult, SessionsDomain};

/// What a client asks to upload, as sent (checked by [`SessionsDomain::create_upload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUpload {
    pub owner_id: UserId,
    pub name: String,
    pub size: u64,
    /// Empty: the default media type.
    pub content_type: String,
    /// The whole file's SHA-256 in hex; empty when the client declares none.
    pub sha256: String,
    /// The client does not know the length yet (`size` is ignored): the upload is planned
    /// for the most it may hold and cut when the length is declared ([`super::length`]).
    pub length_deferred: bool,
    /// A part of a parallel upload, or the final upload made of such parts
    /// ([`super::concat`]).
    pub concat: Concat,
}

impl SessionsDomain {
    /// Creates an upload in `uploading`, with no chunk received yet; a final upload
    /// ([`Concat::Final`]) in `assembling` ([`super::concat`]).
    pub async fn create_upload(&self, new: NewUpload) -> DomainResult<UploadRecord> {
        validate::owner(&new.owner_id)?;
        if let Concat::Final(parts) = &new.concat {
            return self.create_final(&new, parts).await;
        }
        let plan = if new.length_deferred {
            self.state.policy.deferred_plan()
        } else {
            self.state.policy.plan(new.size)?
        };
        self.record_new(&new, &plan).await
    }

    /// Checks what `new` describes but its size, prepares the blob storage for `plan` and
    /// records the upload in `uploading`.
    pub(super) async fn record_new(
        &self,
        new: &NewUpload,
        plan: &UploadPlan,
    ) -> DomainResult<UploadRecord> {
        validate::file_name(&new.name)?;
        let content_type = validate::content_type(&new.content_type)?;
        let sha256 = validate::optional_sha256_hex("sha256", &new.sha256)?;
        let upload_id = UploadId::generate();
        let handle = self
            .state
            .blobs
            .begin_upload(&upload_id, plan.size)
            .await
            .map_err(DomainError::storage("preparing the blob storage"))?;
        failpoint::hit(failpoint::AFTER_STORAGE_PREPARED);
        let now = now_ms();
        let ttl_ms = i64::try_from(self.state.config.upload_ttl.as_millis()).unwrap_or(i64::MAX);
        let rec = UploadRecord {
            upload_id: upload_id.clone(),
            owner_id: new.owner_id.clone(),
            name: new.name.clone(),
            size: plan.size,
            content_type,
            sha256,
            crc64nvme: None,
            chunk_size: plan.chunk_size,
            total_chunks: plan.total_chunks,
            length_deferred: new.length_deferred,
            concat: new.concat.clone(),
            state: UploadState::Uploading,
            storage_handle: handle,
            error: None,
            file_id: None,
            created_at_ms: now,
            updated_at_ms: now,
            expires_at_ms: now.saturating_add(ttl_ms),
        };
        if let Err(e) = self.state.metadata.insert_upload(&rec).await {
            // Nothing refers to the prepared storage: give it back.
            if let Err(abort) = self
                .state
                .blobs
                .abort_upload(&upload_id, rec.storage_handle.as_deref())
                .await
            {
                tracing::warn!(%upload_id, error = %abort, "cannot release the storage of an unrecorded upload");
            }
            return Err(DomainError::storage("recording the upload")(e));
        }
        metrics::counter!("lfusys_uploads_created_total").increment(1);
        count_transition(UploadState::Uploading);
        tracing::info!(
            %upload_id,
            owner_id = %rec.owner_id,
            size = rec.size,
            chunk_size = rec.chunk_size,
            total_chunks = rec.total_chunks,
            length_deferred = rec.length_deferred,
            concat = %rec.concat.to_stored(),
            "upload created"
        );
        Ok(rec)
    }
}
