//! The gRPC service: every rule about uploads and files lives here, over the storage ports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use lfusys_core::clock::now_ms;
use lfusys_core::ids;
use lfusys_core::jobs::AssemblyJob;
use lfusys_core::plan::{PlanError, UploadPlan};
use lfusys_core::state::UploadState;
use sessions_api::proto::sessions_server::Sessions;
use sessions_api::proto::{
    self, Assembly, BeginChunkOutcome, BeginChunkRequest, BeginChunkResponse, CancelUploadRequest,
    CommitChunkOutcome, CommitChunkRequest, CommitChunkResponse, CompleteAssemblyRequest,
    CreateUploadRequest, DeleteFileRequest, DeleteFileResponse, FailUploadRequest,
    GetAssemblyRequest, GetFileRequest, GetUploadRequest, ListFilesRequest, ListFilesResponse,
    ListUploadsRequest, ListUploadsResponse, ReleaseChunkRequest, ReleaseChunkResponse,
};
use storage::{ChunkRecord, ClaimOutcome, CommitOutcome, FileRecord, StoreError, UploadRecord};
use tonic::{Request, Response, Status};

use crate::convert::{self, store_error, Received};
use crate::{validate, SessionsState};

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Longer failure reasons are cut: they are shown to the owner, not a log.
const MAX_REASON_BYTES: usize = 1000;

/// How many uploads [`SessionsService`] keeps the unchanging fields of.
const KNOWN_UPLOADS: usize = 10_000;

/// Implements [`Sessions`] over a [`SessionsState`].
#[derive(Debug, Clone)]
pub struct SessionsService {
    state: SessionsState,
    /// Uploads as last read, for the fields that never change once an upload is created
    /// (owner, plan, storage handle, expiry): the chunk calls, two per chunk, decide on those
    /// without reading the upload again. Their state is read by the store that decides.
    known: Arc<Mutex<HashMap<String, Arc<UploadRecord>>>>,
}

impl SessionsService {
    pub fn new(state: SessionsState) -> Self {
        Self {
            state,
            known: Arc::default(),
        }
    }

    fn remember(&self, rec: &UploadRecord) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= KNOWN_UPLOADS && !known.contains_key(&rec.upload_id) {
            known.clear();
        }
        known.insert(rec.upload_id.clone(), Arc::new(rec.clone()));
    }

    /// The upload if it exists and belongs to `owner_id`; `NOT_FOUND` otherwise, so that
    /// nobody learns whether someone else's id exists. Read from the store (current state).
    async fn owned_upload(&self, owner_id: &str, upload_id: &str) -> Result<UploadRecord, Status> {
        validate::owner(owner_id)?;
        match self.upload(upload_id).await? {
            Some(rec) if rec.owner_id == owner_id => {
                self.remember(&rec);
                Ok(rec)
            }
            _ => Err(upload_not_found()),
        }
    }

    /// As [`Self::owned_upload`], but possibly as read earlier: only its unchanging fields
    /// may be used, never its state.
    async fn known_upload(
        &self,
        owner_id: &str,
        upload_id: &str,
    ) -> Result<Arc<UploadRecord>, Status> {
        let known = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(upload_id)
            .cloned();
        match known {
            Some(rec) if rec.owner_id == owner_id => Ok(rec),
            Some(_) => Err(upload_not_found()),
            None => Ok(Arc::new(self.owned_upload(owner_id, upload_id).await?)),
        }
    }

    /// Completes the set of an upload that still says uploading although `received` (counted
    /// again by the caller) covers every chunk — a store that records and counts in two steps
    /// lost a count to a crash: moves it to assembling and enqueues its job, once. Returns
    /// whether this call did.
    async fn complete_if_counted(&self, rec: &UploadRecord, received: u32) -> Result<bool, Status> {
        if received < rec.total_chunks
            || !self
                .state
                .metadata
                .transition(
                    &rec.upload_id,
                    &[UploadState::Uploading],
                    UploadState::Assembling,
                    None,
                    now_ms(),
                )
                .await
                .map_err(|e| store_error("completing the upload", e))?
        {
            return Ok(false);
        }
        count_transition(UploadState::Assembling);
        tracing::info!(upload_id = %rec.upload_id, "every chunk recorded (counted late); assembling");
        if let Err(e) = enqueue_assembly(&self.state, &rec.upload_id).await {
            tracing::error!(upload_id = %rec.upload_id, error = %e, "cannot enqueue the assembly job");
        }
        Ok(true)
    }

    async fn upload(&self, upload_id: &str) -> Result<Option<UploadRecord>, Status> {
        if !ids::is_valid_id(upload_id) {
            return Ok(None);
        }
        self.state
            .metadata
            .get_upload(upload_id)
            .await
            .map_err(|e| store_error("reading the upload", e))
    }

    async fn any_upload(&self, upload_id: &str) -> Result<UploadRecord, Status> {
        self.upload(upload_id).await?.ok_or_else(upload_not_found)
    }

    async fn chunks(&self, upload_id: &str) -> Result<Vec<ChunkRecord>, Status> {
        self.state
            .metadata
            .list_chunks(upload_id)
            .await
            .map_err(|e| store_error("listing the chunks", e))
    }

    async fn owned_file(&self, owner_id: &str, file_id: &str) -> Result<FileRecord, Status> {
        validate::owner(owner_id)?;
        if !ids::is_valid_id(file_id) {
            return Err(file_not_found());
        }
        match self
            .state
            .metadata
            .get_file(file_id)
            .await
            .map_err(|e| store_error("reading the file", e))?
        {
            Some(f) if f.owner_id == owner_id => Ok(f),
            _ => Err(file_not_found()),
        }
    }

    /// How a chunk request ends on an upload that takes no new chunks: a retry of a stored
    /// chunk is still recognised (also after completion), the rest is refused.
    async fn settled_outcome(
        &self,
        rec: &UploadRecord,
        state: UploadState,
        index: u32,
        sha256: &str,
    ) -> Result<BeginChunkOutcome, Status> {
        if state.is_gone() {
            return Ok(BeginChunkOutcome::Gone);
        }
        let chunks = self.chunks(&rec.upload_id).await?;
        Ok(match chunks.iter().find(|c| c.index == index) {
            Some(c) if c.sha256.eq_ignore_ascii_case(sha256) => BeginChunkOutcome::AlreadyStored,
            Some(_) => BeginChunkOutcome::DigestConflict,
            None => BeginChunkOutcome::NotAccepting,
        })
    }

    async fn received_count(&self, upload_id: &str) -> Result<u32, Status> {
        self.state
            .metadata
            .received_count(upload_id)
            .await
            .map_err(|e| store_error("counting the chunks", e))
    }
}

fn upload_not_found() -> Status {
    Status::not_found("upload not found")
}

fn file_not_found() -> Status {
    Status::not_found("file not found")
}

/// Checks a chunk index and its length against the upload's plan.
fn check_chunk(rec: &UploadRecord, index: u32, size: Option<u64>) -> Result<(), Status> {
    let plan = UploadPlan {
        size: rec.size,
        chunk_size: rec.chunk_size,
        total_chunks: rec.total_chunks,
    };
    let Some(expected) = plan.chunk_len(index) else {
        return Err(Status::invalid_argument(format!(
            "chunk index {index} is out of range: the upload has {} chunks (0..={})",
            rec.total_chunks,
            rec.total_chunks.saturating_sub(1)
        )));
    };
    match size {
        Some(size) if size != expected => Err(Status::invalid_argument(format!(
            "chunk {index} is {expected} bytes long, not {size}"
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn count_transition(state: UploadState) {
    metrics::counter!("lfusys_upload_transitions_total", "state" => state.as_str()).increment(1);
}

/// Sends the assembly job of an upload (dedup id = upload id, so duplicates are dropped).
pub(crate) async fn enqueue_assembly(
    state: &SessionsState,
    upload_id: &str,
) -> Result<(), StoreError> {
    let job = AssemblyJob {
        upload_id: upload_id.to_owned(),
    };
    state.queue.send(upload_id, &job.to_body()).await?;
    metrics::counter!("lfusys_assembly_jobs_enqueued_total").increment(1);
    Ok(())
}

/// Releases everything an unfinished upload holds: its blob upload, a blob the assembler may
/// already have committed, and its chunk records. Every step is idempotent.
pub(crate) async fn release_storage(
    state: &SessionsState,
    rec: &UploadRecord,
    committed_blob_too: bool,
) -> Result<(), StoreError> {
    state
        .blobs
        .abort_upload(&rec.upload_id, &rec.storage_handle)
        .await?;
    if committed_blob_too {
        let key = ids::blob_key_for_file(&ids::file_id_for_upload(&rec.upload_id));
        state.blobs.delete_blob(&key).await?;
    }
    state.metadata.delete_chunks(&rec.upload_id).await
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
        count_transition(UploadState::Expired);
        tracing::info!(upload_id = %rec.upload_id, "upload expired");
        release_storage(state, rec, false).await?;
    }
    Ok(applied)
}

fn cut(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[tonic::async_trait]
impl Sessions for SessionsService {
    async fn create_upload(
        &self,
        request: Request<CreateUploadRequest>,
    ) -> Result<Response<proto::Upload>, Status> {
        let req = request.into_inner();
        validate::owner(&req.owner_id)?;
        validate::file_name(&req.name)?;
        let content_type = validate::content_type(&req.content_type)?;
        let sha256 = validate::optional_sha256_hex("sha256", &req.sha256)?;
        let plan = self.state.policy.plan(req.size).map_err(|e| match e {
            PlanError::EmptyOrNegative => Status::invalid_argument(e.to_string()),
            PlanError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
        })?;

        let upload_id = ids::new_upload_id();
        let handle = self
            .state
            .blobs
            .begin_upload(&upload_id, plan.size)
            .await
            .map_err(|e| store_error("preparing the blob storage", e))?;
        let now = now_ms();
        let ttl_ms = i64::try_from(self.state.config.upload_ttl.as_millis()).unwrap_or(i64::MAX);
        let rec = UploadRecord {
            upload_id: upload_id.clone(),
            owner_id: req.owner_id,
            name: req.name,
            size: plan.size,
            content_type,
            sha256,
            chunk_size: plan.chunk_size,
            total_chunks: plan.total_chunks,
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
                .abort_upload(&upload_id, &rec.storage_handle)
                .await
            {
                tracing::warn!(%upload_id, error = %abort, "cannot release the storage of an unrecorded upload");
            }
            return Err(store_error("recording the upload", e));
        }
        metrics::counter!("lfusys_uploads_created_total").increment(1);
        count_transition(UploadState::Uploading);
        tracing::info!(
            %upload_id,
            owner_id = %rec.owner_id,
            size = rec.size,
            chunk_size = rec.chunk_size,
            total_chunks = rec.total_chunks,
            "upload created"
        );
        Ok(Response::new(convert::upload(&rec, &Received::Chunks(&[]))))
    }

    async fn get_upload(
        &self,
        request: Request<GetUploadRequest>,
    ) -> Result<Response<proto::Upload>, Status> {
        let req = request.into_inner();
        let mut rec = self.owned_upload(&req.owner_id, &req.upload_id).await?;
        let chunks = self.chunks(&rec.upload_id).await?;
        if rec.state == UploadState::Uploading && chunks.len() >= rec.total_chunks as usize {
            let received = self
                .state
                .metadata
                .recount(&rec.upload_id)
                .await
                .map_err(|e| store_error("counting the chunks", e))?;
            if self.complete_if_counted(&rec, received).await? {
                rec = self.any_upload(&rec.upload_id).await?;
            }
        }
        Ok(Response::new(convert::upload(
            &rec,
            &Received::Chunks(&chunks),
        )))
    }

    async fn list_uploads(
        &self,
        request: Request<ListUploadsRequest>,
    ) -> Result<Response<ListUploadsResponse>, Status> {
        let req = request.into_inner();
        validate::owner(&req.owner_id)?;
        let records = self
            .state
            .metadata
            .list_uploads(
                &req.owner_id,
                &[UploadState::Uploading, UploadState::Assembling],
            )
            .await
            .map_err(|e| store_error("listing the uploads", e))?;
        let mut items = Vec::with_capacity(records.len());
        for rec in &records {
            let bytes = self
                .chunks(&rec.upload_id)
                .await?
                .iter()
                .map(|c| c.size)
                .sum();
            items.push(convert::upload(rec, &Received::BytesOnly(bytes)));
        }
        Ok(Response::new(ListUploadsResponse { items }))
    }

    async fn cancel_upload(
        &self,
        request: Request<CancelUploadRequest>,
    ) -> Result<Response<proto::Upload>, Status> {
        let req = request.into_inner();
        let mut rec = self.owned_upload(&req.owner_id, &req.upload_id).await?;
        // A lost race against a commit or the sweeper means re-reading the new state once.
        for _ in 0..2 {
            match rec.state {
                UploadState::Cancelled | UploadState::Expired => {
                    // Releasing again heals a cancel whose release failed halfway.
                    release_storage(&self.state, &rec, false)
                        .await
                        .map_err(|e| store_error("releasing the upload's storage", e))?;
                    return Ok(Response::new(convert::upload(&rec, &Received::Chunks(&[]))));
                }
                UploadState::Assembling | UploadState::Completed | UploadState::Failed => {
                    return Err(Status::failed_precondition(format!(
                        "the upload is {} and can no longer be cancelled",
                        rec.state
                    )));
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
                        .map_err(|e| store_error("cancelling the upload", e))?;
                    if applied {
                        count_transition(UploadState::Cancelled);
                        tracing::info!(upload_id = %rec.upload_id, "upload cancelled");
                    }
                    rec = self.any_upload(&rec.upload_id).await?;
                }
            }
        }
        Err(Status::aborted(
            "the upload changed state concurrently; try again",
        ))
    }

    async fn begin_chunk(
        &self,
        request: Request<BeginChunkRequest>,
    ) -> Result<Response<BeginChunkResponse>, Status> {
        let req = request.into_inner();
        let known = self.known_upload(&req.owner_id, &req.upload_id).await?;
        check_chunk(&known, req.index, Some(req.size))?;
        let sha256 = validate::sha256_hex("sha256", &req.sha256)?;
        let now = now_ms();

        let respond = |outcome: BeginChunkOutcome,
                       state: UploadState,
                       claim_id: String,
                       lease: i64,
                       received: u32| {
            let mut resp = BeginChunkResponse {
                claim_id,
                lease_expires_at_ms: lease,
                received_count: received,
                total_chunks: known.total_chunks,
                storage_handle: known.storage_handle.clone(),
                state: convert::state(state),
                ..Default::default()
            };
            resp.set_outcome(outcome);
            Response::new(resp)
        };

        if now >= known.expires_at_ms {
            // Expire now rather than wait for the sweeper: no chunk is accepted past expiry.
            let mut rec = self.owned_upload(&req.owner_id, &req.upload_id).await?;
            if rec.state == UploadState::Uploading {
                expire_upload(&self.state, &rec, now)
                    .await
                    .map_err(|e| store_error("expiring the upload", e))?;
                rec = self.any_upload(&rec.upload_id).await?;
            }
            if rec.state != UploadState::Uploading {
                let outcome = self
                    .settled_outcome(&rec, rec.state, req.index, &sha256)
                    .await?;
                let received = self.received_count(&rec.upload_id).await?;
                return Ok(respond(outcome, rec.state, String::new(), 0, received));
            }
        }

        let claim_id = if req.claim_id.is_empty() {
            ids::new_id()
        } else {
            req.claim_id
        };
        // The store checks the upload's state with the claim.
        let outcome = self
            .state
            .metadata
            .claim_chunk(
                &known.upload_id,
                req.index,
                &sha256,
                &claim_id,
                self.state.config.chunk_lease,
                now,
            )
            .await
            .map_err(|e| store_error("claiming the chunk", e))?;
        let (outcome, state) = match outcome {
            // The received count is only needed by requests that end here; a claimed chunk
            // learns it from its commit (counting on every claim would cost O(chunks)).
            ClaimOutcome::Claimed { lease_until_ms } => {
                return Ok(respond(
                    BeginChunkOutcome::Claimed,
                    UploadState::Uploading,
                    claim_id,
                    lease_until_ms,
                    0,
                ));
            }
            ClaimOutcome::NotAccepting(state) => (
                self.settled_outcome(&known, state, req.index, &sha256)
                    .await?,
                state,
            ),
            other => {
                let outcome = match other {
                    ClaimOutcome::AlreadyStored => BeginChunkOutcome::AlreadyStored,
                    ClaimOutcome::DigestConflict => BeginChunkOutcome::DigestConflict,
                    _ => BeginChunkOutcome::InProgress,
                };
                (outcome, self.any_upload(&known.upload_id).await?.state)
            }
        };
        let received = self.received_count(&known.upload_id).await?;
        let mut state = state;
        if outcome == BeginChunkOutcome::AlreadyStored
            && state == UploadState::Uploading
            && received >= known.total_chunks
        {
            // A store that records and counts a chunk in two steps (DynamoDB) may have
            // counted the last chunk only now, on this retry: complete the set here, once.
            self.complete_if_counted(&known, received).await?;
            state = UploadState::Assembling;
        }
        Ok(respond(outcome, state, String::new(), 0, received))
    }

    async fn commit_chunk(
        &self,
        request: Request<CommitChunkRequest>,
    ) -> Result<Response<CommitChunkResponse>, Status> {
        let req = request.into_inner();
        let rec = self.known_upload(&req.owner_id, &req.upload_id).await?;
        check_chunk(&rec, req.index, Some(req.size))?;
        let sha256 = validate::sha256_hex("sha256", &req.sha256)?;
        if req.claim_id.is_empty() {
            return Err(Status::invalid_argument(
                "claim_id is required: commit a chunk under the claim of BeginChunk",
            ));
        }
        let chunk = ChunkRecord {
            index: req.index,
            size: req.size,
            sha256,
            etag: req.etag,
        };
        let outcome = self
            .state
            .metadata
            .commit_chunk(&rec.upload_id, &chunk, &req.claim_id, now_ms())
            .await
            .map_err(|e| store_error("recording the chunk", e))?;
        let total = rec.total_chunks;
        let mut resp = CommitChunkResponse {
            total_chunks: total,
            ..Default::default()
        };
        match outcome {
            CommitOutcome::Stored {
                received,
                completed_set,
            } => {
                metrics::counter!("lfusys_chunks_recorded_total").increment(1);
                resp.set_outcome(CommitChunkOutcome::Stored);
                resp.received_count = received;
                resp.complete = completed_set || received >= total;
                resp.completed_set = completed_set;
                if completed_set {
                    count_transition(UploadState::Assembling);
                    tracing::info!(upload_id = %rec.upload_id, "every chunk recorded; assembling");
                    if let Err(e) = enqueue_assembly(&self.state, &rec.upload_id).await {
                        // The upload is safely assembling; the sweeper re-enqueues lost jobs.
                        tracing::error!(upload_id = %rec.upload_id, error = %e, "cannot enqueue the assembly job");
                    }
                }
            }
            CommitOutcome::AlreadyStored { received } => {
                resp.set_outcome(CommitChunkOutcome::AlreadyStored);
                resp.received_count = received;
                resp.complete = received >= total;
            }
            CommitOutcome::DigestConflict => {
                resp.set_outcome(CommitChunkOutcome::DigestConflict);
                resp.received_count = self.received_count(&rec.upload_id).await?;
            }
            CommitOutcome::NotAccepting(state) => {
                resp.set_outcome(if state.is_gone() {
                    CommitChunkOutcome::Gone
                } else {
                    CommitChunkOutcome::NotAccepting
                });
                resp.received_count = self.received_count(&rec.upload_id).await?;
                resp.complete = !state.is_gone() && resp.received_count >= total;
            }
        }
        Ok(Response::new(resp))
    }

    async fn release_chunk(
        &self,
        request: Request<ReleaseChunkRequest>,
    ) -> Result<Response<ReleaseChunkResponse>, Status> {
        let req = request.into_inner();
        let rec = self.known_upload(&req.owner_id, &req.upload_id).await?;
        check_chunk(&rec, req.index, None)?;
        if !req.claim_id.is_empty() {
            self.state
                .metadata
                .release_chunk(&rec.upload_id, req.index, &req.claim_id)
                .await
                .map_err(|e| store_error("releasing the claim", e))?;
        }
        Ok(Response::new(ReleaseChunkResponse {}))
    }

    async fn get_assembly(
        &self,
        request: Request<GetAssemblyRequest>,
    ) -> Result<Response<Assembly>, Status> {
        let req = request.into_inner();
        let rec = self.any_upload(&req.upload_id).await?;
        let chunks = self.chunks(&rec.upload_id).await?;
        let file_id = ids::file_id_for_upload(&rec.upload_id);
        Ok(Response::new(Assembly {
            upload: Some(convert::upload(&rec, &Received::Chunks(&chunks))),
            parts: chunks.iter().map(convert::part).collect(),
            blob_key: ids::blob_key_for_file(&file_id),
            file_id,
        }))
    }

    async fn complete_assembly(
        &self,
        request: Request<CompleteAssemblyRequest>,
    ) -> Result<Response<proto::File>, Status> {
        let req = request.into_inner();
        let rec = self.any_upload(&req.upload_id).await?;
        let file_id = ids::file_id_for_upload(&rec.upload_id);
        match rec.state {
            UploadState::Assembling => {}
            UploadState::Completed => {
                // A redelivered job: the same File again.
                let file = self
                    .state
                    .metadata
                    .get_file(&file_id)
                    .await
                    .map_err(|e| store_error("reading the file", e))?
                    .ok_or_else(|| {
                        Status::failed_precondition(
                            "the upload completed but its file has since been deleted",
                        )
                    })?;
                return Ok(Response::new(convert::file(&file)));
            }
            other => {
                return Err(Status::failed_precondition(format!(
                    "the upload is {other}, not assembling"
                )));
            }
        }
        // The assembler computes the whole-file SHA-256 only to verify the one the client
        // declared; without a declared one the File has none.
        let sha256 = validate::optional_sha256_hex("sha256", &req.sha256)?;
        if rec.sha256.is_some() && sha256.is_none() {
            return Err(Status::invalid_argument(
                "sha256 is required: the client declared the file's SHA-256",
            ));
        }
        if req.size != rec.size {
            return Err(Status::failed_precondition(format!(
                "the assembled file is {} bytes but the upload is {} bytes; fail the upload instead",
                req.size, rec.size
            )));
        }
        if rec
            .sha256
            .as_ref()
            .is_some_and(|declared| Some(declared) != sha256.as_ref())
        {
            return Err(Status::failed_precondition(
                "the assembled file's SHA-256 differs from the one the client declared; fail the upload instead",
            ));
        }
        let now = now_ms();
        let file = FileRecord {
            blob_key: ids::blob_key_for_file(&file_id),
            file_id,
            owner_id: rec.owner_id.clone(),
            upload_id: rec.upload_id.clone(),
            name: rec.name.clone(),
            size: rec.size,
            content_type: rec.content_type.clone(),
            sha256: sha256.unwrap_or_default(),
            created_at_ms: now,
        };
        let published = self
            .state
            .metadata
            .publish_file(&file, now)
            .await
            .map_err(|e| store_error("publishing the file", e))?;
        count_transition(UploadState::Completed);
        tracing::info!(upload_id = %rec.upload_id, file_id = %published.file_id, size = published.size, "file published");
        // The chunk records stay until the file is deleted: a client retrying a chunk after
        // completion still gets "already stored", and the upload's status stays complete.
        Ok(Response::new(convert::file(&published)))
    }

    async fn fail_upload(
        &self,
        request: Request<FailUploadRequest>,
    ) -> Result<Response<proto::Upload>, Status> {
        let req = request.into_inner();
        let reason = cut(req.reason.trim());
        if reason.is_empty() {
            return Err(Status::invalid_argument("a reason is required"));
        }
        let rec = self.any_upload(&req.upload_id).await?;
        if rec.state.is_unfinished() {
            let applied = self
                .state
                .metadata
                .transition(
                    &rec.upload_id,
                    &[UploadState::Uploading, UploadState::Assembling],
                    UploadState::Failed,
                    Some(reason),
                    now_ms(),
                )
                .await
                .map_err(|e| store_error("failing the upload", e))?;
            if applied {
                count_transition(UploadState::Failed);
                tracing::warn!(upload_id = %rec.upload_id, reason, "upload failed");
            }
        }
        let rec = self.any_upload(&req.upload_id).await?;
        if rec.state != UploadState::Failed {
            return Err(Status::failed_precondition(format!(
                "the upload is {} and cannot be failed",
                rec.state
            )));
        }
        // Also on a repeated call: heals a release that failed halfway.
        release_storage(&self.state, &rec, true)
            .await
            .map_err(|e| store_error("releasing the upload's storage", e))?;
        Ok(Response::new(convert::upload(&rec, &Received::Chunks(&[]))))
    }

    async fn list_files(
        &self,
        request: Request<ListFilesRequest>,
    ) -> Result<Response<ListFilesResponse>, Status> {
        let req = request.into_inner();
        validate::owner(&req.owner_id)?;
        let limit = match req.limit {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let cursor = Some(req.cursor.as_str()).filter(|c| !c.is_empty());
        let page = self
            .state
            .metadata
            .list_files(&req.owner_id, cursor, limit)
            .await
            .map_err(|e| match e {
                // The only conflict a listing can have is a cursor it cannot read.
                StoreError::Conflict(what) => Status::invalid_argument(what),
                e => store_error("listing the files", e),
            })?;
        Ok(Response::new(ListFilesResponse {
            items: page.items.iter().map(convert::file).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn get_file(
        &self,
        request: Request<GetFileRequest>,
    ) -> Result<Response<proto::File>, Status> {
        let req = request.into_inner();
        let file = self.owned_file(&req.owner_id, &req.file_id).await?;
        Ok(Response::new(convert::file(&file)))
    }

    async fn delete_file(
        &self,
        request: Request<DeleteFileRequest>,
    ) -> Result<Response<DeleteFileResponse>, Status> {
        let req = request.into_inner();
        let file = self.owned_file(&req.owner_id, &req.file_id).await?;
        let existed = self
            .state
            .metadata
            .delete_file(&file.file_id)
            .await
            .map_err(|e| store_error("deleting the file", e))?;
        if !existed {
            return Err(file_not_found());
        }
        // The file is gone for its owner; what fails below only leaks storage, so log it.
        if let Err(e) = self.state.blobs.delete_blob(&file.blob_key).await {
            tracing::error!(file_id = %file.file_id, blob_key = %file.blob_key, error = %e, "cannot delete the blob of a deleted file");
        }
        if let Err(e) = self.state.metadata.delete_chunks(&file.upload_id).await {
            tracing::warn!(upload_id = %file.upload_id, error = %e, "cannot drop the chunk records of a deleted file");
        }
        tracing::info!(file_id = %file.file_id, "file deleted");
        Ok(Response::new(DeleteFileResponse {}))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(size: u64, chunk_size: u64) -> UploadRecord {
        let plan = UploadPlan::new(size, chunk_size);
        UploadRecord {
            upload_id: String::new(),
            owner_id: String::new(),
            name: String::new(),
            size,
            content_type: String::new(),
            sha256: None,
            chunk_size,
            total_chunks: plan.total_chunks,
            state: UploadState::Uploading,
            storage_handle: String::new(),
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
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("2 bytes"), "{}", e.message());
        let e = check_chunk(&r, 3, Some(1)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("out of range"));
    }

    #[test]
    fn reasons_are_cut_on_char_boundaries() {
        assert_eq!(cut("short"), "short");
        let long = "é".repeat(MAX_REASON_BYTES);
        let c = cut(&long);
        assert!(c.len() <= MAX_REASON_BYTES && c.len() >= MAX_REASON_BYTES - 1);
    }
}
