//! Parallel uploads (tus `concatenation`, docs/protocol.md "Parallel uploads"): a client sends
//! the parts of a file as partial uploads, side by side, then creates the final upload that
//! names them in order.
//!
//! - A partial upload ([`storage::Concat::Partial`]) takes chunks like any upload, but its last chunk
//!   does not complete it: it stays uploading (and expires there, its storage released, if no
//!   final upload comes), and never becomes a File of its own.
//! - A final upload ([`storage::Concat::Final`]) is created only from the owner's partial uploads that
//!   hold every byte, with their sizes summed and a chunk plan of its own, straight into
//!   assembling: its assembler commits each partial's blob, copies the partials' bytes into
//!   the final's chunks, hashing them into the file's SHA-256 on the way, and publishes the
//!   File ([`super::assembly`]).
//! - Once the File is published, the partials are cancelled and their storage released (the
//!   outbox of releases finishes what a crash cut short). The protocol names a file's partials
//!   only after their bytes were sent, so they cannot be written into the final's storage as
//!   they arrive: the final's assembly reads and writes every byte once more.
//!
//! A partial stays the owner's to cancel until then; a final whose partial is cancelled or
//! expired under it fails with that reason. Nothing ties a partial to one final: two finals
//! naming the same partial copy it both.

use lfusys_core::clock::now_ms;
use lfusys_core::ids::UploadId;
use lfusys_core::state::UploadState;
use storage::UploadRecord;

use super::create::NewUpload;
use super::{transitioned, Conflict, DomainError, DomainResult, SessionsDomain};

/// The most partial uploads a final one is made of.
pub const MAX_PARTS: usize = 1_000;

impl SessionsDomain {
    /// Creates the final upload of `new.owner_id`'s partial uploads `parts`, in order, in
    /// assembling, and enqueues its job.
    pub(super) async fn create_final(
        &self,
        new: &NewUpload,
        parts: &[UploadId],
    ) -> DomainResult<UploadRecord> {
        if parts.is_empty() || parts.len() > MAX_PARTS {
            return Err(DomainError::invalid(
                "concat_parts",
                format!(
                    "a final upload is made of 1 to {MAX_PARTS} partial uploads, not {}",
                    parts.len()
                ),
            ));
        }
        let mut size: u64 = 0;
        for id in parts {
            let part = self.owned_upload(&new.owner_id, id).await?;
            // Saturates: a sum past u64 is too large for any plan.
            size = size.saturating_add(self.ready_part(&part).await?);
        }
        let plan = self.state.policy.plan(size)?;
        let new = NewUpload {
            length_deferred: false,
            ..new.clone()
        };
        let rec = self.record_new(&new, &plan).await?;
        // Its bytes are all there: nothing to wait for but the assembler. A crash before this
        // leaves an uploading final that takes no bytes, which expires.
        if self.start_assembly(&rec.upload_id).await? {
            tracing::info!(upload_id = %rec.upload_id, parts = parts.len(), size, "final upload created; assembling");
        }
        self.any_upload(&rec.upload_id).await
    }

    /// The size of a partial upload that a final may take: one that is uploading and holds
    /// every byte.
    async fn ready_part(&self, part: &UploadRecord) -> DomainResult<u64> {
        if !part.concat.is_partial() {
            return Err(DomainError::invalid(
                "concat_parts",
                format!(
                    "upload {} is not a partial upload (create it with Upload-Concat: partial)",
                    part.upload_id
                ),
            ));
        }
        if part.state != UploadState::Uploading {
            return Err(Conflict::PartialNotUploading {
                upload_id: part.upload_id.to_string(),
                state: part.state,
            }
            .into());
        }
        if part.length_deferred {
            return Err(Conflict::PartialLengthDeferred(part.upload_id.to_string()).into());
        }
        let received = self.received_count(&part.upload_id).await?;
        if received < part.total_chunks {
            let stored: u64 = self
                .chunks(&part.upload_id)
                .await?
                .iter()
                .map(|c| c.size)
                .sum();
            return Err(Conflict::PartialIncomplete {
                upload_id: part.upload_id.to_string(),
                received: stored,
                size: part.size,
            }
            .into());
        }
        Ok(part.size)
    }

    /// The partial uploads of `final_upload`, once its File is published: cancelled, their
    /// storage released. A failure is logged: the cancel put them in the outbox of releases,
    /// which the sweeper drains.
    pub(super) async fn release_parts(&self, final_upload: &UploadRecord) {
        for id in final_upload.concat.parts() {
            let Ok(Some(part)) = self.upload(id).await else {
                continue;
            };
            if !part.concat.is_partial() {
                continue;
            }
            let reason = format!("its bytes are part of upload {}", final_upload.upload_id);
            match self
                .state
                .metadata
                .transition(
                    id,
                    &[UploadState::Uploading],
                    UploadState::Cancelled,
                    Some(&reason),
                    now_ms(),
                )
                .await
            {
                Ok(true) => {
                    transitioned(&self.state, id, UploadState::Cancelled);
                    if let Err(e) = super::cancel::release_storage(&self.state, &part, true).await {
                        tracing::warn!(upload_id = %id, error = %e, "releasing a partial upload's storage failed; the sweeper retries");
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(upload_id = %id, error = %e, "cancelling a partial upload after its final was published failed; it expires instead");
                }
            }
        }
    }
}
