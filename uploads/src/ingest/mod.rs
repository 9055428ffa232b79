//! Chunk ingest, protocol-neutral (DESIGN §3 steps 2–3): the one use case every upload
//! protocol of the workers shares — the native `PUT /api/v1/chunks/{upload_id}/{index}`
//! ([`crate::chunks`]) today, tus / IETF resumable uploads (§3 step 7) next.
//!
//! An adapter authenticates the request, checks what it can from the request alone, and
//! hands [`ingest_chunk`] a [`ChunkRequest`] (whose upload, which chunk, its exact length
//! and the checksums the client declared for it) and the body as a [`ByteStream`]. The core
//! then:
//!
//! 1. asks the sessions service for the chunk's lease (`BeginChunk`). Refused because the
//!    chunk is already stored, being written by another request, or the upload takes no
//!    chunks: nothing is written, but the body is still read and verified, so that
//!    `400`/`413`/`422` keep their precedence over `200`/`409`; a stored chunk is the same
//!    chunk (`200`) when the body's CRC-64/NVME is the stored one's, another one (`409`) if not;
//! 2. streams the body into the blob store at the chunk's final place while counting it,
//!    hashing it with SHA-256 only when the client declared one (the store computes the
//!    CRC-64/NVME of what it writes), and renewing the lease every third of its length; the
//!    body is never buffered whole;
//! 3. compares length and checksums with the declared ones; a mismatch records nothing;
//! 4. records the chunk with its CRC-64/NVME (`CommitChunk`), which completes the set
//!    exactly once.
//!
//! An adapter that receives the file in order (tus) asks for the file's running SHA-256
//! ([`ChunkRequest::sha256_chain`]): the claim hands over the state before the chunk, the
//! body is hashed on as it streams (the one SHA-256 pass of the file, on the server), and the
//! commit records the state after it, from which the assembler finishes the File's SHA-256.
//!
//! A good chunk costs exactly two calls (`BeginChunk`, `CommitChunk`). Once the lease is
//! granted, every path that does not record the chunk gives it back (a [`LeaseGuard`]): the
//! failures before answering, and a request future that is dropped or panics, in the
//! background. Every refusal is an [`IngestError`]; its problem+json answer comes from the
//! one table, `impl From<IngestError> for Problem` (`ingest/error.rs`).
//!
//! Metrics: `lfusys_bytes_received_total` (body bytes read, stored or not) and
//! `lfusys_chunk_write_seconds` (blob-store writes); the adapter counts answers.

mod body;
mod error;
mod lease;
mod sessions;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lfusys_core::digest::{crc64_hex, to_hex, ChunkDigests};
use lfusys_core::failpoint;
use lfusys_core::ids::UploadId;
use lfusys_core::plan::UploadPlan;
use lfusys_core::sha256_chain::Sha256Chain;
use lfusys_core::tokens::UploadClaims;
use serde::{Deserialize, Serialize};
use sessions_api::proto::{BeginChunkOutcome, BeginChunkResponse, CommitChunkOutcome};
use storage::{ByteStream, ChunkTarget, WrittenChunk};
use tokio_util::sync::CancellationToken;

use crate::WorkerState;
use body::Tally;
use sessions::ChunkCalls;

pub use body::drain;
pub use error::{Gone, IngestError};
pub use lease::LeaseGuard;
pub use sessions::upload_gone;

/// One chunk to ingest, as the adapter established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRequest {
    /// The user the upload belongs to.
    pub owner_id: String,
    pub upload_id: String,
    /// How the upload is cut (from the upload token's claims).
    pub plan: UploadPlan,
    /// 0-based chunk index.
    pub index: u32,
    /// The chunk's exact length, `plan.chunk_len(index)`; the body must be exactly this long.
    pub len: u64,
    /// The checksums the client declared for the chunk (`Content-Digest`).
    pub digests: ChunkDigests,
    /// The bytes arrive in file order (tus): carry the file's running SHA-256 through this
    /// chunk, when the sessions service hands it over.
    pub sha256_chain: bool,
}

impl ChunkRequest {
    /// Chunk `index` (of length `len`) of the upload an upload token names.
    pub fn from_claims(claims: &UploadClaims, index: u32, len: u64, digests: ChunkDigests) -> Self {
        Self {
            owner_id: claims.sub.clone(),
            upload_id: claims.upl.clone(),
            plan: claims.plan(),
            index,
            len,
            digests,
            sha256_chain: false,
        }
    }

    fn receipt(
        &self,
        crc64nvme: u64,
        received_count: u32,
        total_chunks: u32,
        complete: bool,
    ) -> ChunkReceipt {
        ChunkReceipt {
            index: self.index,
            size: self.len,
            crc64nvme: crc64_hex(crc64nvme),
            sha256: self.digests.sha256.as_ref().map(to_hex),
            received_count,
            total_chunks,
            complete,
        }
    }
}

/// What a stored chunk's answer says (the body of the native `200` and `201`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkReceipt {
    pub index: u32,
    pub size: u64,
    /// CRC-64/NVME of the stored chunk (16 lowercase hex digits).
    pub crc64nvme: String,
    /// Lowercase hex SHA-256 of the chunk, when the client declared one (and it was verified).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    pub received_count: u32,
    pub total_chunks: u32,
    /// Every chunk of the upload is recorded.
    pub complete: bool,
}

/// A chunk that is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This request stored it.
    Stored(ChunkReceipt),
    /// It was already stored with these bytes (an idempotent retry): nothing was written.
    AlreadyStored(ChunkReceipt),
}

impl Outcome {
    pub fn receipt(&self) -> &ChunkReceipt {
        match self {
            Self::Stored(r) | Self::AlreadyStored(r) => r,
        }
    }
}

/// The exact length of chunk `index` of `plan`, or why there is no such chunk.
pub fn chunk_len(plan: &UploadPlan, index: u32) -> Result<u64, IngestError> {
    plan.chunk_len(index).ok_or(IngestError::IndexOutOfRange {
        index,
        total_chunks: plan.total_chunks,
    })
}

/// A declared body length against the chunk's `len`: longer is refused before the body is
/// read, and so is shorter.
pub fn check_declared_len(index: u32, len: u64, declared: u64) -> Result<(), IngestError> {
    if declared > len {
        return Err(IngestError::DeclaredTooLong {
            index,
            len,
            declared,
        });
    }
    if declared < len {
        return Err(IngestError::DeclaredTooShort {
            index,
            len,
            declared,
        });
    }
    Ok(())
}

/// Ingests one chunk: lease, stream and verify, record (see the module documentation).
/// Adapters check index and length first ([`chunk_len`], [`check_declared_len`]) in their
/// protocol's order; a request that fails those checks here is refused unread.
pub async fn ingest_chunk(
    state: &WorkerState,
    req: &ChunkRequest,
    body: ByteStream,
) -> Result<Outcome, IngestError> {
    match write_chunk(state, req, None, body).await? {
        Written::Settled(outcome) => Ok(outcome),
        Written::Held(held) => held.commit().await,
    }
}

/// What writing a chunk left: a chunk already stored with these bytes (nothing written), or
/// the chunk written to its place under its lease and not yet recorded.
#[derive(Debug)]
pub enum Written {
    Settled(Outcome),
    Held(Box<HeldChunk>),
}

/// A chunk written to its place and verified, under its lease, not yet recorded: until
/// [`HeldChunk::commit`] nothing of it is part of the upload (a later write of the chunk
/// replaces its bytes). Dropped or [released](HeldChunk::release), its lease is given back.
/// An adapter holds chunks when something after them decides whether they are kept (the tus
/// checksum of a whole request); it renews them ([`HeldChunk::renew`]) every
/// [`HeldChunk::renew_every`] meanwhile.
pub struct HeldChunk {
    req: ChunkRequest,
    calls: ChunkCalls,
    claim_id: String,
    lease: LeaseGuard,
    written: WrittenChunk,
    chain: Option<Sha256Chain>,
    renew_every: Duration,
}

impl std::fmt::Debug for HeldChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldChunk")
            .field("upload_id", &self.req.upload_id)
            .field("index", &self.req.index)
            .field("claim_id", &self.claim_id)
            .field("crc64nvme", &self.written.crc64nvme)
            .finish_non_exhaustive()
    }
}

impl HeldChunk {
    pub fn upload_id(&self) -> &str {
        &self.req.upload_id
    }

    pub fn index(&self) -> u32 {
        self.req.index
    }

    /// The file's SHA-256 state after this chunk, when it carried the chain: the next chunk
    /// of the same request goes on from it (this one is not recorded yet, so the sessions
    /// service cannot hand it over).
    pub fn sha256_chain(&self) -> Option<Sha256Chain> {
        self.chain.clone()
    }

    /// How often the lease must be renewed while the chunk is held.
    pub fn renew_every(&self) -> Duration {
        self.renew_every
    }

    /// A renewal of the lease, to run while the chunk is held; an error means it is lost
    /// (the commit will then be refused). It owns what it needs: the held chunk stays free.
    pub fn renewal(&self) -> impl Future<Output = Result<(), IngestError>> + Send + 'static {
        let (calls, claim_id) = (self.calls.clone(), self.claim_id.clone());
        async move { calls.renew(&claim_id).await }
    }

    /// Records the chunk (`CommitChunk`), which completes the set exactly once.
    pub async fn commit(self) -> Result<Outcome, IngestError> {
        failpoint::hit(failpoint::AFTER_CHUNK_STORED);
        let Self {
            req,
            calls,
            claim_id,
            lease,
            written,
            chain,
            ..
        } = self;
        let crc = written.crc64nvme;
        let committed = match calls
            .commit(&claim_id, written, chain.map(|c| c.to_bytes()))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                // Released before the answer, so that the client's retry finds the chunk free.
                lease.release().await;
                return Err(e);
            }
        };
        lease.disarm();
        if committed.completed_set {
            tracing::info!(upload_id = %req.upload_id, "last chunk recorded; the upload is queued for assembly");
        }
        let receipt = req.receipt(
            crc,
            committed.received_count,
            committed.total_chunks,
            committed.complete,
        );
        let stored =
            CommitChunkOutcome::try_from(committed.outcome) == Ok(CommitChunkOutcome::Stored);
        Ok(if stored {
            Outcome::Stored(receipt)
        } else {
            Outcome::AlreadyStored(receipt)
        })
    }

    /// Gives the lease back now: the chunk is not kept.
    pub async fn release(self) {
        self.lease.release().await;
    }
}

/// Leases chunk `req.index` and writes `body` to its place, verified, without recording it.
/// `chain` is the file's SHA-256 state before the chunk when the caller has it (the chunk
/// before is held, not recorded); otherwise the claim hands it over.
pub async fn write_chunk(
    state: &WorkerState,
    req: &ChunkRequest,
    chain: Option<Sha256Chain>,
    body: ByteStream,
) -> Result<Written, IngestError> {
    check_declared_len(req.index, chunk_len(&req.plan, req.index)?, req.len)?;
    let calls = ChunkCalls::new(state.sessions(), req);
    let (begin, body) = begin_or_drain(&calls, body, req.len).await?;
    match sessions::begin_outcome(&begin) {
        BeginChunkOutcome::Claimed => {}
        BeginChunkOutcome::Gone => {
            drain(body, req.len).await;
            return Err(sessions::begin_refusal(&begin, req.index));
        }
        other => {
            return answer_unclaimed(req, other, &begin, body)
                .await
                .map(Written::Settled)
        }
    }
    // The chunk is ours until recorded: the guard gives it back on every other path,
    // including this future being dropped before it ends.
    let lease = calls.lease(&begin.claim_id);
    let chain = chain_before(req, chain, &begin);
    let renew_every = renew_every(&begin);
    match store(state, req, &calls, &begin, chain, body).await {
        Ok((written, chain)) => Ok(Written::Held(Box::new(HeldChunk {
            req: req.clone(),
            calls,
            claim_id: begin.claim_id,
            lease,
            written,
            chain,
            renew_every,
        }))),
        Err(e) => {
            // Released before the answer, so that the client's retry finds the chunk free.
            lease.release().await;
            Err(e)
        }
    }
}

/// `BeginChunk`, or — when it fails — the body read to its end (so that the client gets the
/// answer) and the error.
async fn begin_or_drain(
    calls: &ChunkCalls,
    body: ByteStream,
    len: u64,
) -> Result<(BeginChunkResponse, ByteStream), IngestError> {
    match calls.begin("").await {
        Ok(begin) => Ok((begin, body)),
        Err(e) => {
            drain(body, len).await;
            Err(e)
        }
    }
}

/// The answer when `BeginChunk` granted no lease: nothing is written, but the body is
/// still verified — a corrupt retry is a `422` whatever is stored — and a stored chunk is
/// the same chunk only if the body's CRC-64/NVME is the stored one's.
async fn answer_unclaimed(
    req: &ChunkRequest,
    outcome: BeginChunkOutcome,
    begin: &BeginChunkResponse,
    body: ByteStream,
) -> Result<Outcome, IngestError> {
    let crc = body::read_unstored(req, body).await?;
    if outcome == BeginChunkOutcome::AlreadyStored {
        if crc != begin.stored_crc64nvme {
            return Err(IngestError::DigestConflict { index: req.index });
        }
        let complete = begin.received_count >= begin.total_chunks;
        return Ok(Outcome::AlreadyStored(req.receipt(
            crc,
            begin.received_count,
            begin.total_chunks,
            complete,
        )));
    }
    Err(sessions::begin_refusal(begin, req.index))
}

/// Streams the body to the chunk's place in the blob store while renewing the lease, and
/// verifies it; returns what the store wrote (its CRC-64/NVME, S3's ETag) and the file's
/// SHA-256 chain after the chunk, when `chain` (the state before it) was given.
async fn store(
    state: &WorkerState,
    req: &ChunkRequest,
    calls: &ChunkCalls,
    begin: &BeginChunkResponse,
    chain: Option<Sha256Chain>,
    body: ByteStream,
) -> Result<(WrittenChunk, Option<Sha256Chain>), IngestError> {
    let (index, offset) = place_of(req);
    let target = ChunkTarget {
        upload_id: UploadId::from(&req.upload_id),
        handle: sessions_api::optional(&begin.storage_handle).map(str::to_owned),
        index,
        offset,
        len: req.len,
        crc64nvme: req.digests.crc64nvme,
    };
    let mut tally = Tally::new(req, true);
    tally.sha256_chain = chain;
    let tally = Arc::new(Mutex::new(tally));
    let abort = CancellationToken::new();
    let stream = body::metered(body, req.len, Arc::clone(&tally), abort.clone());
    let started = Instant::now();
    let write = state.blob().write_chunk(&target, stream);
    let claim_id = begin.claim_id.as_str();
    let renew = move || calls.renew(claim_id);
    let written = lease::write_with_lease(write, renew_every(begin), renew, &abort).await?;
    metrics::histogram!("lfusys_chunk_write_seconds").record(started.elapsed().as_secs_f64());
    let mut tally = Tally::take(&tally);
    metrics::counter!("lfusys_bytes_received_total").increment(tally.count);
    let chain = tally.sha256_chain.take();
    Ok((body::verify(req, tally, written.map(Some))?, chain))
}

/// The file's SHA-256 before the chunk, when asked for: `given` by the caller, else handed
/// over by the claim. A state that is not one of the bytes before the chunk (which the
/// sessions service never hands out) is dropped: the file then gets no SHA-256 rather than a
/// wrong one.
fn chain_before(
    req: &ChunkRequest,
    given: Option<Sha256Chain>,
    begin: &BeginChunkResponse,
) -> Option<Sha256Chain> {
    if !req.sha256_chain {
        return None;
    }
    let offset = req.plan.offset(req.index);
    let chain = match given {
        Some(chain) => chain,
        None => match Sha256Chain::from_bytes(begin.sha256_chain.as_deref()?) {
            Ok(chain) => chain,
            Err(e) => {
                tracing::warn!(upload_id = %req.upload_id, index = req.index, error = %e, "the SHA-256 chain handed over is unreadable; the file gets no SHA-256");
                return None;
            }
        },
    };
    if chain.len() != offset {
        tracing::warn!(upload_id = %req.upload_id, index = req.index, covers = chain.len(), offset, "the SHA-256 chain does not end at the chunk; the file gets no SHA-256");
        return None;
    }
    Some(chain)
}

/// Keeps `len` bytes of chunk `req.index`, from `start` within it, apart until the rest of
/// the chunk arrives ([`storage::BlobStore::stage_piece`]) — for the tus / IETF appends that
/// end inside a chunk. Under the chunk's lease, renewed while the piece streams and always
/// given back (the chunk is not recorded); a body that breaks off or is short stages nothing.
/// A chunk already stored, or an upload that takes no chunks, is refused as by
/// [`ingest_chunk`].
pub async fn stage_piece(
    state: &WorkerState,
    req: &ChunkRequest,
    start: u64,
    len: u64,
    body: ByteStream,
) -> Result<(), IngestError> {
    // A staged piece carries no SHA-256 chain: the whole chunk is hashed when it is stored.
    let mut whole = req.clone();
    whole.sha256_chain = false;
    // The lease is on the whole chunk; this body must be `len` bytes.
    let calls = ChunkCalls::new(state.sessions(), &whole);
    let req = &ChunkRequest { len, ..whole };
    let (begin, body) = begin_or_drain(&calls, body, req.len).await?;
    match sessions::begin_outcome(&begin) {
        BeginChunkOutcome::Claimed => {}
        BeginChunkOutcome::AlreadyStored => {
            drain(body, req.len).await;
            return Err(IngestError::StoredMeanwhile { index: req.index });
        }
        _ => {
            drain(body, req.len).await;
            return Err(sessions::begin_refusal(&begin, req.index));
        }
    }
    let lease = calls.lease(&begin.claim_id);
    // Counted and CRC'd here: the store's staging answers no CRC.
    let tally = Arc::new(Mutex::new(Tally::new(req, false)));
    let abort = CancellationToken::new();
    let stream = body::metered(body, req.len, Arc::clone(&tally), abort.clone());
    let upload_id = UploadId::from(&req.upload_id);
    let write = state
        .blob()
        .stage_piece(&upload_id, req.index, start, req.len, stream);
    let claim_id = begin.claim_id.as_str();
    let calls = &calls;
    let renew = move || calls.renew(claim_id);
    let written = lease::write_with_lease(
        async { write.await.map(|()| None) },
        renew_every(&begin),
        renew,
        &abort,
    )
    .await;
    lease.release().await;
    let tally = Tally::take(&tally);
    metrics::counter!("lfusys_bytes_received_total").increment(tally.count);
    body::verify(req, tally, written?).map(drop)
}

/// How often a lease `begin` granted is renewed: every third of what is left of it.
fn renew_every(begin: &BeginChunkResponse) -> Duration {
    let lease_ms = (begin.lease_expires_at_ms - lfusys_core::clock::now_ms()).max(300);
    Duration::from_millis(lease_ms as u64 / 3)
}

/// Where the chunk goes in the blob store: its own index and offset — except under the
/// test-only failpoint [`failpoint::SWAP_FIRST_CHUNKS`], which puts chunks 0 and 1 (of equal
/// length) each at the other's place, as a store or assembly bug would, for the system tests
/// to show that the whole-file check catches it.
fn place_of(req: &ChunkRequest) -> (u32, u64) {
    let (index, plan) = (req.index, &req.plan);
    if index < 2 && plan.total_chunks > 2 && failpoint::is_armed(failpoint::SWAP_FIRST_CHUNKS) {
        let other = 1 - index;
        return (other, plan.offset(other));
    }
    (index, plan.offset(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_declared_length_checks() {
        let plan = UploadPlan::new(250, 100);
        assert!(matches!(chunk_len(&plan, 2), Ok(50)));
        assert!(matches!(
            chunk_len(&plan, 3),
            Err(IngestError::IndexOutOfRange {
                index: 3,
                total_chunks: 3
            })
        ));
        assert!(check_declared_len(0, 100, 100).is_ok());
        assert!(matches!(
            check_declared_len(0, 100, 101),
            Err(IngestError::DeclaredTooLong { declared: 101, .. })
        ));
        assert!(matches!(
            check_declared_len(0, 100, 0),
            Err(IngestError::DeclaredTooShort { declared: 0, .. })
        ));
    }

    #[test]
    fn receipts_name_the_chunk() {
        let req = ChunkRequest {
            owner_id: "o".into(),
            upload_id: "u".into(),
            plan: UploadPlan::new(250, 100),
            index: 2,
            len: 50,
            digests: ChunkDigests {
                sha256: Some([0xab; 32]),
                crc64nvme: None,
            },
            sha256_chain: false,
        };
        let r = Outcome::Stored(req.receipt(0xff, 3, 3, true));
        assert_eq!(
            r.receipt(),
            &ChunkReceipt {
                index: 2,
                size: 50,
                crc64nvme: "00000000000000ff".into(),
                sha256: Some("ab".repeat(32)),
                received_count: 3,
                total_chunks: 3,
                complete: true,
            }
        );
    }
}
