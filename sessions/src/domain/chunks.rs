//! One chunk's life (DESIGN §3.2–§3.3): a worker claims it (a lease, so that one writer
//! streams it at a time), writes its bytes to the blob store, then commits it under the claim,
//! or releases the claim when the write failed.
//!
//! Completion is exactly-once: the store records the chunk and moves the upload from
//! uploading to assembling in one conditional write, so exactly one commit completes the set
//! however many race; that write also puts the upload in the store's outbox. The commit then
//! sends the assembly job and marks it sent; a crash or a queue error in between leaves the
//! upload in the outbox, and the relay (`crate::outbox`) sends its job within a second.
//! A chunk is recorded with the CRC-64/NVME its worker computed of the bytes it stored. A claim
//! of a stored chunk (also after completion) answers that CRC, for the worker to tell a retry
//! of the same chunk from another one by the body's CRC; a commit of a stored chunk compares
//! the CRCs itself. A chunk sent past the upload's expiry expires the upload on the spot and is
//! answered `Gone`.
//!
//! A worker that receives the file in order (a tus append) asks its claim for the file's
//! running SHA-256 before the chunk (`core::sha256_chain`): the empty state for chunk 0, the
//! state chunk `index - 1` was recorded with otherwise. It hashes the chunk on and commits the
//! state after it, which must cover exactly the bytes up to the chunk's end; the assembler
//! finishes the last chunk's into the file's SHA-256. An upload that declared its SHA-256 gets
//! no chain, nor does a chunk whose predecessor was stored without one (the chain is broken:
//! the file then has no SHA-256 unless the client declares one).

use lfusys_core::clock::now_ms;
use lfusys_core::digest::Crc64;
use lfusys_core::failpoint;
use lfusys_core::ids::{self, ClaimId, UploadId, UserId};
use lfusys_core::plan::UploadPlan;
use lfusys_core::sha256_chain::Sha256Chain;
use lfusys_core::state::UploadState;
use storage::{ChunkRecord, ClaimOutcome, CommitOutcome, UploadRecord};

use super::assembly::send_assembly_job;
use super::cancel::expire_upload;
use super::{transitioned, DomainError, DomainResult, SessionsDomain};

/// A worker's request for the right to write one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    pub owner_id: UserId,
    pub upload_id: UploadId,
    pub index: u32,
    pub size: u64,
    /// Renews this claim; `None` for a new one.
    pub claim_id: Option<ClaimId>,
    /// Asks for the file's running SHA-256 before this chunk ([`ClaimAnswer::sha256_chain`]).
    pub sha256_chain: bool,
}

/// How a claim ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimVerdict {
    /// The caller holds the lease: write the chunk, then commit it.
    Claimed,
    /// Recorded already, with the CRC in [`ClaimAnswer::stored_crc64nvme`]: the same chunk
    /// (an idempotent retry) if the body's CRC is that, another one otherwise.
    AlreadyStored,
    /// Another live claim holds the chunk.
    InProgress,
    /// The upload takes no new chunks (assembling, completed, failed).
    NotAccepting,
    /// The upload was cancelled or has expired.
    Gone,
}

/// The answer to a [`ClaimRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimAnswer {
    pub verdict: ClaimVerdict,
    /// The upload's state as the claim found it.
    pub state: UploadState,
    /// The claim to commit or release under; `None` unless claimed.
    pub claim_id: Option<ClaimId>,
    /// When the lease runs out; 0 unless claimed.
    pub lease_expires_at_ms: i64,
    /// Chunks recorded so far; 0 when claimed (the commit tells).
    pub received_count: u32,
    pub total_chunks: u32,
    /// The blob store's handle of the upload, for the worker's write.
    pub storage_handle: Option<String>,
    /// The stored chunk's CRC-64/NVME; `Some` exactly when [`ClaimVerdict::AlreadyStored`].
    pub stored_crc64nvme: Option<Crc64>,
    /// The serialised SHA-256 state of the bytes before the chunk, when claimed, asked for and
    /// known (see the module header).
    pub sha256_chain: Option<Vec<u8>>,
}

/// A worker's record of a chunk it wrote under a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRequest {
    pub owner_id: UserId,
    pub upload_id: UploadId,
    pub index: u32,
    pub size: u64,
    /// CRC-64/NVME of the bytes the worker stored (as the blob store computed it).
    pub crc64nvme: Crc64,
    /// The claim the chunk was written under (required).
    pub claim_id: Option<ClaimId>,
    /// The blob store's receipt of the part, if it gave one.
    pub etag: Option<String>,
    /// The file's running SHA-256 after the chunk, when the claim carried the one before it.
    pub sha256_chain: Option<Vec<u8>>,
}

/// How a commit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitVerdict {
    Stored,
    /// Recorded already with the same CRC (an idempotent retry).
    AlreadyStored,
    /// Recorded already with another CRC: another writer's bytes are the chunk.
    DigestConflict,
    /// The claim was lost, or the upload takes no new chunks.
    NotAccepting,
    /// The upload was cancelled or has expired.
    Gone,
}

/// The answer to a [`CommitRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitAnswer {
    pub verdict: CommitVerdict,
    pub received_count: u32,
    pub total_chunks: u32,
    /// Every chunk is recorded.
    pub complete: bool,
    /// This commit is the one that completed the set (true for exactly one per upload).
    pub completed_set: bool,
}

impl SessionsDomain {
    /// Claims (or renews the claim on) one chunk.
    pub async fn begin_chunk(&self, req: ClaimRequest) -> DomainResult<ClaimAnswer> {
        let known = self.known_upload(&req.owner_id, &req.upload_id).await?;
        check_chunk(&known, req.index, Some(req.size))?;
        let now = now_ms();

        if now >= known.expires_at_ms {
            if let Some(answer) = self.refuse_past_expiry(&known, &req, now).await? {
                return Ok(answer);
            }
        }

        let claim_id = req
            .claim_id
            .clone()
            .unwrap_or_else(|| ClaimId::from(ids::new_id()));
        // The store checks the upload's state with the claim.
        let outcome = self
            .state
            .metadata
            .claim_chunk(
                &known.upload_id,
                req.index,
                &claim_id,
                self.state.config.chunk_lease,
                now,
            )
            .await
            .map_err(DomainError::storage("claiming the chunk"))?;
        let ((verdict, stored), state) = match outcome {
            // The received count is only needed by requests that end here; a claimed chunk
            // learns it from its commit (counting on every claim would cost O(chunks)).
            ClaimOutcome::Claimed { lease_until_ms } => {
                let mut claimed = answer(
                    &known,
                    (ClaimVerdict::Claimed, None),
                    UploadState::Uploading,
                    (Some(claim_id), lease_until_ms),
                    0,
                );
                if req.sha256_chain {
                    claimed.sha256_chain = self.chain_before(&known, req.index).await?;
                }
                return Ok(claimed);
            }
            ClaimOutcome::NotAccepting(state) => {
                (self.settled_verdict(&known, state, req.index).await?, state)
            }
            ClaimOutcome::AlreadyStored { crc64nvme } => (
                (ClaimVerdict::AlreadyStored, Some(crc64nvme)),
                self.any_upload(&known.upload_id).await?.state,
            ),
            ClaimOutcome::InProgress => (
                (ClaimVerdict::InProgress, None),
                self.any_upload(&known.upload_id).await?.state,
            ),
        };
        let received = self.received_count(&known.upload_id).await?;
        let mut state = state;
        if verdict == ClaimVerdict::AlreadyStored
            && state == UploadState::Uploading
            && received >= known.total_chunks
        {
            // A store that records and counts a chunk in two steps (DynamoDB) may have
            // counted the last chunk only now, on this retry: complete the set here, once.
            self.complete_if_counted(&known, received).await?;
            state = UploadState::Assembling;
        }
        Ok(answer(
            &known,
            (verdict, stored),
            state,
            (None, 0),
            received,
        ))
    }

    /// A claim on an upload past its expiry: expires it now rather than wait for the sweeper
    /// (no chunk is accepted past expiry) and answers, unless it is still uploading after all.
    async fn refuse_past_expiry(
        &self,
        known: &UploadRecord,
        req: &ClaimRequest,
        now: i64,
    ) -> DomainResult<Option<ClaimAnswer>> {
        let mut rec = self.owned_upload(&req.owner_id, &req.upload_id).await?;
        if rec.state == UploadState::Uploading {
            expire_upload(&self.state, &rec, now)
                .await
                .map_err(DomainError::storage("expiring the upload"))?;
            rec = self.any_upload(&rec.upload_id).await?;
        }
        if rec.state == UploadState::Uploading {
            return Ok(None);
        }
        let settled = self.settled_verdict(&rec, rec.state, req.index).await?;
        let received = self.received_count(&rec.upload_id).await?;
        Ok(Some(answer(known, settled, rec.state, (None, 0), received)))
    }

    /// How a chunk request ends on an upload that takes no new chunks: a stored chunk still
    /// answers its CRC (also after completion), the rest is refused.
    async fn settled_verdict(
        &self,
        rec: &UploadRecord,
        state: UploadState,
        index: u32,
    ) -> DomainResult<(ClaimVerdict, Option<Crc64>)> {
        if state.is_gone() {
            return Ok((ClaimVerdict::Gone, None));
        }
        let chunk = self.chunk(&rec.upload_id, index).await?;
        Ok(match chunk {
            Some(c) => (ClaimVerdict::AlreadyStored, Some(c.crc64nvme)),
            None => (ClaimVerdict::NotAccepting, None),
        })
    }

    /// The file's running SHA-256 before chunk `index` (see the module header).
    async fn chain_before(&self, rec: &UploadRecord, index: u32) -> DomainResult<Option<Vec<u8>>> {
        // A SHA-256 the client vouches for with its CRC needs no second one; a SHA-256 only
        // declared (the IETF draft's Repr-Digest) is checked against this one at assembly.
        if rec.sha256.is_some() && rec.crc64nvme.is_some() {
            return Ok(None);
        }
        let Some(previous) = index.checked_sub(1) else {
            return Ok(Some(Sha256Chain::new().to_bytes()));
        };
        Ok(self
            .chunk(&rec.upload_id, previous)
            .await?
            .and_then(|c| c.sha256_chain))
    }

    /// Records a chunk written under its claim; the commit that completes the set enqueues
    /// the assembly job.
    pub async fn commit_chunk(&self, req: CommitRequest) -> DomainResult<CommitAnswer> {
        let rec = self.known_upload(&req.owner_id, &req.upload_id).await?;
        check_chunk(&rec, req.index, Some(req.size))?;
        let Some(claim_id) = &req.claim_id else {
            return Err(DomainError::invalid(
                "claim_id",
                "claim_id is required: commit a chunk under the claim of BeginChunk",
            ));
        };
        if let Some(chain) = &req.sha256_chain {
            check_chain(&rec, req.index, chain)?;
        }
        let chunk = ChunkRecord {
            index: req.index,
            size: req.size,
            crc64nvme: req.crc64nvme,
            etag: req.etag,
            sha256_chain: req.sha256_chain,
        };
        let outcome = self
            .state
            .metadata
            .commit_chunk(&rec.upload_id, &chunk, claim_id, now_ms())
            .await
            .map_err(DomainError::storage("recording the chunk"))?;
        let total = rec.total_chunks;
        let mut answer = CommitAnswer {
            verdict: CommitVerdict::Stored,
            received_count: 0,
            total_chunks: total,
            complete: false,
            completed_set: false,
        };
        match outcome {
            CommitOutcome::Stored {
                received,
                completed_set,
            } => {
                metrics::counter!("lfusys_chunks_recorded_total").increment(1);
                answer.verdict = CommitVerdict::Stored;
                answer.received_count = received;
                answer.complete = completed_set || received >= total;
                answer.completed_set = completed_set;
                if completed_set {
                    transitioned(&self.state, &rec.upload_id, UploadState::Assembling);
                    tracing::info!(upload_id = %rec.upload_id, "every chunk recorded; assembling");
                    failpoint::hit(failpoint::AFTER_COMPLETING_COMMIT);
                    self.send_job(&rec.upload_id).await;
                }
            }
            CommitOutcome::AlreadyStored { received } => {
                answer.verdict = CommitVerdict::AlreadyStored;
                answer.received_count = received;
                answer.complete = received >= total;
            }
            CommitOutcome::DigestConflict => {
                answer.verdict = CommitVerdict::DigestConflict;
                answer.received_count = self.received_count(&rec.upload_id).await?;
            }
            CommitOutcome::NotAccepting(state) => {
                answer.verdict = if state.is_gone() {
                    CommitVerdict::Gone
                } else {
                    CommitVerdict::NotAccepting
                };
                answer.received_count = self.received_count(&rec.upload_id).await?;
                answer.complete = !state.is_gone() && answer.received_count >= total;
            }
        }
        Ok(answer)
    }

    /// Drops a claim (a worker whose write failed), if `claim_id` still holds it; no claim id
    /// releases nothing.
    pub async fn release_chunk(
        &self,
        owner_id: &UserId,
        upload_id: &UploadId,
        index: u32,
        claim_id: Option<&ClaimId>,
    ) -> DomainResult<()> {
        let rec = self.known_upload(owner_id, upload_id).await?;
        check_chunk(&rec, index, None)?;
        if let Some(claim_id) = claim_id {
            self.state
                .metadata
                .release_chunk(&rec.upload_id, index, claim_id)
                .await
                .map_err(DomainError::storage("releasing the claim"))?;
        }
        Ok(())
    }

    /// Completes the set of an upload that still says uploading although `received` (counted
    /// again by the caller) covers every chunk — a store that records and counts in two steps
    /// lost a count to a crash: moves it to assembling and enqueues its job, once. Returns
    /// whether this call did.
    pub(super) async fn complete_if_counted(
        &self,
        rec: &UploadRecord,
        received: u32,
    ) -> DomainResult<bool> {
        // A partial upload waits in uploading for its final (`super::concat`).
        if rec.concat.is_partial() || received < rec.total_chunks {
            return Ok(false);
        }
        let started = self.start_assembly(&rec.upload_id).await?;
        if started {
            tracing::info!(upload_id = %rec.upload_id, "every chunk recorded (counted late); assembling");
        }
        Ok(started)
    }

    /// Moves an uploading upload to assembling and enqueues its job, once: whether this call
    /// did.
    pub(super) async fn start_assembly(&self, upload_id: &UploadId) -> DomainResult<bool> {
        let applied = self
            .state
            .metadata
            .transition(
                upload_id,
                &[UploadState::Uploading],
                UploadState::Assembling,
                None,
                now_ms(),
            )
            .await
            .map_err(DomainError::storage("completing the upload"))?;
        if applied {
            transitioned(&self.state, upload_id, UploadState::Assembling);
            self.send_job(upload_id).await;
        }
        Ok(applied)
    }

    /// Sends the job of an upload that just became assembling. A failure is logged, not
    /// answered: the upload is safely assembling and in the outbox, which the relay drains.
    pub(super) async fn send_job(&self, upload_id: &UploadId) {
        if let Err(e) = send_assembly_job(&self.state, upload_id).await {
            tracing::warn!(%upload_id, error = %e, "cannot send the assembly job now; the outbox relay will");
        }
    }
}

/// A claim's answer about `known`; `settled` is the verdict and the stored chunk's CRC, `claim`
/// the claim id and its lease's end.
fn answer(
    known: &UploadRecord,
    settled: (ClaimVerdict, Option<Crc64>),
    state: UploadState,
    claim: (Option<ClaimId>, i64),
    received_count: u32,
) -> ClaimAnswer {
    let (verdict, stored_crc64nvme) = settled;
    let (claim_id, lease_expires_at_ms) = claim;
    ClaimAnswer {
        verdict,
        state,
        claim_id,
        lease_expires_at_ms,
        received_count,
        total_chunks: known.total_chunks,
        storage_handle: known.storage_handle.clone(),
        stored_crc64nvme,
        sha256_chain: None,
    }
}

fn plan_of(rec: &UploadRecord) -> UploadPlan {
    UploadPlan {
        size: rec.size,
        chunk_size: rec.chunk_size,
        total_chunks: rec.total_chunks,
    }
}

/// Checks that a committed SHA-256 chain is one and covers the file up to the chunk's end: a
/// chain that does not would give the File a SHA-256 of other bytes.
fn check_chain(rec: &UploadRecord, index: u32, chain: &[u8]) -> DomainResult<()> {
    let plan = plan_of(rec);
    let end = plan.offset(index) + plan.chunk_len(index).unwrap_or(0);
    let chain = Sha256Chain::from_bytes(chain)
        .map_err(|e| DomainError::invalid("sha256_chain", e.to_string()))?;
    if chain.len() != end {
        return Err(DomainError::invalid(
            "sha256_chain",
            format!(
                "the SHA-256 chain after chunk {index} must cover the file's first {end} bytes, it covers {}",
                chain.len()
            ),
        ));
    }
    Ok(())
}

/// Checks a chunk index and its length against the upload's plan.
fn check_chunk(rec: &UploadRecord, index: u32, size: Option<u64>) -> DomainResult<()> {
    let plan = plan_of(rec);
    let Some(expected) = plan.chunk_len(index) else {
        return Err(DomainError::invalid(
            "index",
            format!(
                "chunk index {index} is out of range: the upload has {} chunks (0..={})",
                rec.total_chunks,
                rec.total_chunks.saturating_sub(1)
            ),
        ));
    };
    match size {
        Some(size) if size != expected => Err(DomainError::invalid(
            "size",
            format!("chunk {index} is {expected} bytes long, not {size}"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(size: u64, chunk_size: u64) -> UploadRecord {
        let plan = UploadPlan::new(size, chunk_size);
        UploadRecord {
            upload_id: UploadId::default(),
            owner_id: UserId::default(),
            name: String::new(),
            size,
            content_type: String::new(),
            sha256: None,
            crc64nvme: None,
            chunk_size,
            total_chunks: plan.total_chunks,
            length_deferred: false,
            concat: storage::Concat::None,
            state: UploadState::Uploading,
            storage_handle: None,
            error: None,
            file_id: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            expires_at_ms: 0,
        }
    }

    #[test]
    fn chunk_bounds_and_lengths() {
        let r = rec(10, 4);
        assert!(check_chunk(&r, 0, Some(4)).is_ok());
        assert!(check_chunk(&r, 2, Some(2)).is_ok());
        assert!(check_chunk(&r, 2, None).is_ok());
        let e = check_chunk(&r, 2, Some(4)).unwrap_err();
        assert!(
            matches!(e, DomainError::InvalidArgument { field: "size", .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("2 bytes"), "{e}");
        let e = check_chunk(&r, 3, Some(1)).unwrap_err();
        assert!(
            matches!(e, DomainError::InvalidArgument { field: "index", .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("out of range"));
    }

    #[test]
    fn a_chain_must_cover_the_file_up_to_the_chunks_end() {
        let r = rec(10, 4);
        let mut chain = Sha256Chain::new();
        chain.update(&[7; 8]);
        assert!(check_chain(&r, 1, &chain.to_bytes()).is_ok());
        let e = check_chain(&r, 0, &chain.to_bytes()).unwrap_err();
        assert!(e.to_string().contains("first 4 bytes, it covers 8"), "{e}");
        chain.update(&[7; 2]);
        assert!(check_chain(&r, 2, &chain.to_bytes()).is_ok());
        let e = check_chain(&r, 2, b"nonsense").unwrap_err();
        assert!(
            matches!(
                e,
                DomainError::InvalidArgument {
                    field: "sha256_chain",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
