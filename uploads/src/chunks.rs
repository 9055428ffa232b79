//! Chunk ingest: `PUT /api/v1/chunks/{upload_id}/{index}` (DESIGN §3 step 2).
//!
//! The request carries `Authorization: Bearer <upload token>`, `Content-Length` (the chunk's
//! exact length) and `Content-Digest: sha-256=:<base64>:`. Answers, checked in this order:
//!
//! | status | when |
//! |---|---|
//! | 401 | token missing, invalid or expired (verified locally with the gateway's public key) |
//! | 403 | the token names another upload |
//! | 410 | the upload was cancelled or has expired |
//! | 400 | index not a number or out of range |
//! | 411 | no `Content-Length` (chunked bodies are refused) |
//! | 400 | `Content-Digest` missing or malformed |
//! | 413 | declared length longer than the chunk (answered before reading the body) |
//! | 400 | declared length, or the body, shorter than the chunk |
//! | 422 | the body's SHA-256 differs from `Content-Digest` (nothing is recorded) |
//! | 200 | the same chunk with the same digest is already stored (nothing is written) |
//! | 409 | stored with another digest, the upload takes no new chunks, or another request is writing this chunk now |
//! | 201 | stored |
//!
//! The chunk plan comes from the token's claims, so every local check runs without a
//! database. Only when a local check fails does the worker ask the sessions service for the
//! upload's state, to let `410` win over it; a good request costs exactly two calls,
//! `BeginChunk` (a lease on the chunk) and `CommitChunk`. The lease is renewed every third of
//! its length while the body streams, so a slow chunk keeps it and a dead worker loses it.
//!
//! Answers given without storing the body still read it: the `200` and `409` answers that
//! follow `BeginChunk` verify its length and digest first (so `400` and `422` keep their
//! precedence), and earlier refusals discard a body of at most one chunk, so an HTTP/1.1
//! client that is still sending gets the answer instead of a connection reset.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};
use bytes::Bytes;
use futures::StreamExt;
use lfusys_core::digest::{parse_content_digest, to_hex, Sha256};
use lfusys_core::plan::UploadPlan;
use lfusys_core::state::UploadState;
use lfusys_core::tokens::{TokenError, UploadClaims};
use serde::{Deserialize, Serialize};
use service_kit::problem::Problem;
use sessions_api::proto::{
    BeginChunkOutcome, BeginChunkRequest, BeginChunkResponse, CommitChunkOutcome,
    CommitChunkRequest, GetUploadRequest, ReleaseChunkRequest,
};
use sha2::Digest;
use storage::{ByteStream, ChunkTarget, StoreError};
use tokio_util::sync::CancellationToken;

use crate::{sessions_problem, WorkerState};

/// The chunk route.
pub const CHUNK_ROUTE: &str = "/api/v1/chunks/{upload_id}/{index}";

/// A body that sends nothing for this long is abandoned (and its lease released).
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an early answer waits for the rest of a body it discards.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bodies up to this size are discarded before early answers even without a known plan.
const MIN_DRAIN: u64 = 64 * 1024 * 1024;

/// The body of `200` and `201` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkReceipt {
    pub index: u32,
    pub size: u64,
    /// Lowercase hex SHA-256 of the chunk.
    pub sha256: String,
    pub received_count: u32,
    pub total_chunks: u32,
    /// Every chunk of the upload is recorded.
    pub complete: bool,
}

pub(crate) fn router(state: WorkerState) -> Router {
    Router::new()
        .route(
            CHUNK_ROUTE,
            put(put_chunk)
                // Chunks are streamed to storage, never collected: no body limit applies.
                .layer(DefaultBodyLimit::disable())
                .fallback(method_not_allowed),
        )
        .with_state(state)
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "chunks are uploaded with PUT",
    )
}

async fn put_chunk(
    State(state): State<WorkerState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Runs to the end even when the client goes away: a handler dropped mid-chunk would keep
    // its lease until it runs out and block the client's retry of that chunk.
    let task = tokio::spawn(async move { handle(&state, path, &headers, body).await });
    let res = match task.await {
        Ok(res) => res,
        Err(e) => {
            tracing::error!(error = %e, "chunk handler failed");
            Problem::internal("the chunk could not be processed").into_response()
        }
    };
    metrics::counter!("lfusys_chunks_received_total", "outcome" => outcome_label(res.status()))
        .increment(1);
    res
}

fn outcome_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        201 => "stored",
        200 => "duplicate",
        401 => "unauthorized",
        403 => "forbidden",
        408 => "timeout",
        409 => "conflict",
        410 => "gone",
        411 => "length_required",
        413 => "too_large",
        422 => "digest_mismatch",
        400..=499 => "bad_request",
        _ => "error",
    }
}

/// What the local checks established about a well-formed request.
struct Checked {
    index: u32,
    len: u64,
    digest: Sha256,
}

async fn handle(
    state: &WorkerState,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let claims = match authenticate(state, headers) {
        Ok(c) => c,
        Err(res) => return reply_unread(res.into_response(), headers, body, MIN_DRAIN).await,
    };
    let drain_limit = claims.chunk_size.max(MIN_DRAIN);
    let (upload_id, raw_index) = match path {
        Ok(Path(p)) => p,
        Err(rejection) => {
            let p = Problem::bad_request("invalid-request", rejection.body_text());
            return reply_unread(p.into_response(), headers, body, drain_limit).await;
        }
    };
    if claims.upl != upload_id {
        let p = Problem::forbidden(
            "wrong-upload",
            "the upload token was issued for another upload",
        );
        return reply_unread(p.into_response(), headers, body, drain_limit).await;
    }
    let checked = match check_request(&claims.plan(), &raw_index, headers) {
        Ok(c) => c,
        Err(problem) => {
            // A cancelled or expired upload answers 410 before any request error.
            let p = gone_problem(state, &claims).await.unwrap_or(problem);
            return reply_unread(p.into_response(), headers, body, drain_limit).await;
        }
    };
    match ingest(state, &claims, &checked, headers, body).await {
        Ok((status, receipt)) => (status, Json(receipt)).into_response(),
        Err(p) => p.into_response(),
    }
}

/// A `401` answer: the problem and the `WWW-Authenticate` error code.
struct Unauthorized(Problem, &'static str);

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let mut res = self.0.into_response();
        let challenge = format!("Bearer realm=\"lfusys-upload\", error=\"{}\"", self.1);
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        res
    }
}

/// Verifies the bearer upload token.
fn authenticate(state: &WorkerState, headers: &HeaderMap) -> Result<UploadClaims, Unauthorized> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(Unauthorized(
            Problem::unauthorized(
                "an upload token is required: `Authorization: Bearer <upload_token>`",
            ),
            "invalid_request",
        ));
    };
    state.verifier().verify_upload(token).map_err(|e| match e {
        TokenError::Expired => Unauthorized(
            Problem::unauthorized(
                "the upload token has expired; refresh it with POST /api/v1/uploads/{id}/token",
            ),
            "invalid_token",
        ),
        TokenError::Invalid | TokenError::Signing => Unauthorized(
            Problem::unauthorized("the upload token is invalid"),
            "invalid_token",
        ),
    })
}

/// The checks that need nothing but the request and the token's plan, in the contract's order.
fn check_request(
    plan: &UploadPlan,
    raw_index: &str,
    headers: &HeaderMap,
) -> Result<Checked, Problem> {
    let index = (!raw_index.is_empty() && raw_index.bytes().all(|b| b.is_ascii_digit()))
        .then(|| raw_index.parse::<u32>().ok())
        .flatten()
        .ok_or_else(|| {
            Problem::bad_request(
                "invalid-index",
                format!("chunk index `{raw_index}` is not a number"),
            )
        })?;
    let len = plan.chunk_len(index).ok_or_else(|| {
        Problem::bad_request(
            "invalid-index",
            format!(
                "chunk index {index} is out of range: this upload has chunks 0 to {}",
                plan.total_chunks.saturating_sub(1)
            ),
        )
    })?;
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => {
            return Err(Problem::new(
                StatusCode::LENGTH_REQUIRED,
                "length-required",
                format!("Content-Length is required (chunked bodies are refused); chunk {index} is {len} bytes"),
            ))
        }
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| Problem::bad_request("invalid-request", "Content-Length is not a number"))?,
    };
    let digest = match headers.get("content-digest") {
        None => {
            return Err(Problem::bad_request(
                "invalid-digest",
                "Content-Digest is required: `sha-256=:<base64 of the chunk's SHA-256>:`",
            ))
        }
        Some(v) => {
            let text = v.to_str().map_err(|_| {
                Problem::bad_request("invalid-digest", "Content-Digest is not valid text")
            })?;
            parse_content_digest(text)
                .map_err(|e| Problem::bad_request("invalid-digest", e.to_string()))?
        }
    };
    if declared > len {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "chunk-too-large",
            format!("Content-Length {declared} is longer than chunk {index}, which is {len} bytes"),
        ));
    }
    if declared < len {
        return Err(Problem::bad_request(
            "chunk-too-short",
            format!(
                "Content-Length {declared} is shorter than chunk {index}, which is {len} bytes"
            ),
        ));
    }
    Ok(Checked { index, len, digest })
}

/// `410` when the sessions service says the upload is cancelled, expired or gone.
/// Any other answer (or no answer) leaves the caller's own problem standing.
async fn gone_problem(state: &WorkerState, claims: &UploadClaims) -> Option<Problem> {
    let req = GetUploadRequest {
        owner_id: claims.sub.clone(),
        upload_id: claims.upl.clone(),
    };
    match state.sessions().get_upload(req).await {
        Ok(res) => {
            let upload_state = sessions_api::upload_state(res.into_inner().state)?;
            upload_state.is_gone().then(|| gone(upload_state))
        }
        Err(status) if status.code() == tonic::Code::NotFound => Some(sessions_problem(&status)),
        Err(status) => {
            tracing::warn!(%status, upload_id = %claims.upl, "could not look up the upload's state");
            None
        }
    }
}

fn gone(state: UploadState) -> Problem {
    let detail = match state {
        UploadState::Expired => "the upload has expired",
        _ => "the upload was cancelled",
    };
    Problem::new(StatusCode::GONE, "upload-gone", detail)
}

/// Answers a request without storing its body. A body of at most `limit` bytes is read and
/// discarded first, so that the client reads the answer rather than a reset connection;
/// a longer one is left unread (the connection is then closed after the answer).
async fn reply_unread(res: Response, headers: &HeaderMap, body: Body, limit: u64) -> Response {
    discard(headers, body, limit).await;
    res
}

async fn discard(headers: &HeaderMap, body: Body, limit: u64) {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    if declared.is_none_or(|d| d <= limit) {
        let mut stream = body.into_data_stream();
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
            let mut seen = 0u64;
            while let Some(Ok(bytes)) = stream.next().await {
                seen += bytes.len() as u64;
                if seen > limit {
                    break;
                }
            }
        })
        .await;
    }
}

/// BeginChunk, stream, verify, CommitChunk.
async fn ingest(
    state: &WorkerState,
    claims: &UploadClaims,
    checked: &Checked,
    headers: &HeaderMap,
    body: Body,
) -> Result<(StatusCode, ChunkReceipt), Problem> {
    let sha_hex = to_hex(&checked.digest);
    let index = checked.index;
    let begin = match begin_chunk(state, claims, checked, &sha_hex, "").await {
        Ok(begin) => begin,
        Err(p) => {
            discard(headers, body, checked.len).await;
            return Err(p);
        }
    };
    let receipt = |received_count: u32, total_chunks: u32, complete: bool| ChunkReceipt {
        index,
        size: checked.len,
        sha256: sha_hex.clone(),
        received_count,
        total_chunks,
        complete,
    };
    match begin_outcome(&begin) {
        BeginChunkOutcome::Claimed => {}
        BeginChunkOutcome::Gone => {
            discard(headers, body, checked.len).await;
            return Err(begin_refusal(BeginChunkOutcome::Gone, &begin, index));
        }
        other => {
            // Nothing is written, but the body is still verified: a corrupt retry is a 422
            // whatever is stored.
            verify_unstored(body, checked).await?;
            if other == BeginChunkOutcome::AlreadyStored {
                let complete = begin.received_count >= begin.total_chunks;
                return Ok((
                    StatusCode::OK,
                    receipt(begin.received_count, begin.total_chunks, complete),
                ));
            }
            return Err(begin_refusal(other, &begin, index));
        }
    }

    let claim_id = begin.claim_id.clone();
    let target = ChunkTarget {
        upload_id: claims.upl.clone(),
        handle: begin.storage_handle.clone(),
        index,
        offset: claims.plan().offset(index),
        len: checked.len,
        sha256: checked.digest,
    };
    // A store that verifies the digest itself (S3 checks the part checksum) refuses a corrupt
    // body on its own: hashing it here as well would only cost CPU.
    let tally = Arc::new(Mutex::new(Tally::new(
        !state.blob().verifies_digest().await,
    )));
    let abort = CancellationToken::new();
    let stream = (
        metered(body, checked.len, Arc::clone(&tally), abort.clone()),
        abort,
    );

    let started = Instant::now();
    let written =
        match write_with_lease(state, claims, checked, &sha_hex, &begin, &target, stream).await {
            Ok(w) => w,
            Err(p) => {
                release(state, claims, index, &claim_id).await;
                return Err(p);
            }
        };
    metrics::histogram!("lfusys_chunk_write_seconds").record(started.elapsed().as_secs_f64());
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(PoisonError::into_inner));
    metrics::counter!("lfusys_bytes_received_total").increment(tally.count);

    let etag = match verify(checked, tally, written) {
        Ok(etag) => etag,
        Err(p) => {
            release(state, claims, index, &claim_id).await;
            return Err(p);
        }
    };

    let commit = CommitChunkRequest {
        owner_id: claims.sub.clone(),
        upload_id: claims.upl.clone(),
        index,
        claim_id: claim_id.clone(),
        sha256: sha_hex.clone(),
        size: checked.len,
        etag,
    };
    let committed = match state.sessions().commit_chunk(commit).await {
        Ok(res) => res.into_inner(),
        Err(status) => {
            release(state, claims, index, &claim_id).await;
            return Err(sessions_problem(&status));
        }
    };
    let outcome =
        CommitChunkOutcome::try_from(committed.outcome).unwrap_or(CommitChunkOutcome::Unspecified);
    let status = match outcome {
        CommitChunkOutcome::Stored => StatusCode::CREATED,
        CommitChunkOutcome::AlreadyStored => StatusCode::OK,
        refused => {
            release(state, claims, index, &claim_id).await;
            return Err(match refused {
                CommitChunkOutcome::DigestConflict => digest_conflict(index),
                CommitChunkOutcome::NotAccepting => Problem::conflict(
                    "not-accepting",
                    format!("chunk {index} was not recorded: its lease was lost or the upload stopped accepting chunks"),
                ),
                CommitChunkOutcome::Gone => Problem::new(StatusCode::GONE, "upload-gone", "the upload was cancelled or has expired"),
                _ => {
                    tracing::error!(outcome = committed.outcome, "unexpected CommitChunk outcome");
                    Problem::internal("an internal error occurred")
                }
            });
        }
    };
    if committed.completed_set {
        tracing::info!(upload_id = %claims.upl, "last chunk recorded; the upload is queued for assembly");
    }
    Ok((
        status,
        receipt(
            committed.received_count,
            committed.total_chunks,
            committed.complete,
        ),
    ))
}

async fn begin_chunk(
    state: &WorkerState,
    claims: &UploadClaims,
    checked: &Checked,
    sha_hex: &str,
    claim_id: &str,
) -> Result<BeginChunkResponse, Problem> {
    let req = BeginChunkRequest {
        owner_id: claims.sub.clone(),
        upload_id: claims.upl.clone(),
        index: checked.index,
        sha256: sha_hex.to_owned(),
        size: checked.len,
        claim_id: claim_id.to_owned(),
    };
    state
        .sessions()
        .begin_chunk(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| sessions_problem(&status))
}

fn begin_outcome(res: &BeginChunkResponse) -> BeginChunkOutcome {
    BeginChunkOutcome::try_from(res.outcome).unwrap_or(BeginChunkOutcome::Unspecified)
}

fn digest_conflict(index: u32) -> Problem {
    Problem::conflict(
        "digest-conflict",
        format!("chunk {index} is already stored with a different SHA-256"),
    )
}

/// Why BeginChunk (or its renewal) did not grant the lease.
fn begin_refusal(outcome: BeginChunkOutcome, res: &BeginChunkResponse, index: u32) -> Problem {
    let upload_state = sessions_api::upload_state(res.state);
    match outcome {
        BeginChunkOutcome::DigestConflict => digest_conflict(index),
        BeginChunkOutcome::InProgress => Problem::conflict(
            "chunk-in-progress",
            format!("another request is writing chunk {index} right now; retry shortly"),
        )
        .with_retry_after(1),
        BeginChunkOutcome::NotAccepting => Problem::conflict(
            "not-accepting",
            format!(
                "the upload is {} and accepts no new chunks",
                upload_state.map_or("finished", UploadState::as_str)
            ),
        ),
        BeginChunkOutcome::Gone => gone(upload_state.unwrap_or(UploadState::Cancelled)),
        BeginChunkOutcome::AlreadyStored
        | BeginChunkOutcome::Claimed
        | BeginChunkOutcome::Unspecified => {
            tracing::error!(outcome = res.outcome, "unexpected BeginChunk outcome");
            Problem::internal("an internal error occurred")
        }
    }
}

/// Streams the body into the blob store while renewing the lease every third of its length.
/// A failed renewal stops the write: someone else may own the chunk now.
async fn write_with_lease(
    state: &WorkerState,
    claims: &UploadClaims,
    checked: &Checked,
    sha_hex: &str,
    begin: &BeginChunkResponse,
    target: &ChunkTarget,
    (stream, abort): (ByteStream, CancellationToken),
) -> Result<Result<String, StoreError>, Problem> {
    let lease_ms = (begin.lease_expires_at_ms - lfusys_core::clock::now_ms()).max(300);
    let every = Duration::from_millis(lease_ms as u64 / 3);
    let write = state.blob().write_chunk(target, stream);
    tokio::pin!(write);
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lost = loop {
        tokio::select! {
            written = &mut write => return Ok(written),
            _ = renew.tick() => {
                if let Err(p) = renew_lease(state, claims, checked, sha_hex, &begin.claim_id).await {
                    break p;
                }
            }
        }
    };
    // End the write through the store's own error path rather than dropping it, so that no
    // byte of it can land after the lease (and the chunk) has passed to another writer.
    abort.cancel();
    let _ = write.await;
    Err(lost)
}

async fn renew_lease(
    state: &WorkerState,
    claims: &UploadClaims,
    checked: &Checked,
    sha_hex: &str,
    claim_id: &str,
) -> Result<(), Problem> {
    let res = begin_chunk(state, claims, checked, sha_hex, claim_id).await?;
    match begin_outcome(&res) {
        BeginChunkOutcome::Claimed => Ok(()),
        BeginChunkOutcome::Gone => Err(begin_refusal(BeginChunkOutcome::Gone, &res, checked.index)),
        _ => {
            tracing::warn!(upload_id = %claims.upl, index = checked.index, outcome = res.outcome, "lost the chunk lease while writing");
            Err(Problem::conflict(
                "chunk-in-progress",
                format!(
                    "the lease on chunk {} was lost while writing it; retry",
                    checked.index
                ),
            ))
        }
    }
}

/// Reads a body that is not going to be stored and checks its length and digest.
async fn verify_unstored(body: Body, checked: &Checked) -> Result<(), Problem> {
    let tally = Arc::new(Mutex::new(Tally::new(true)));
    let mut stream = metered(
        body,
        checked.len,
        Arc::clone(&tally),
        CancellationToken::new(),
    );
    while let Some(item) = stream.next().await {
        if item.is_err() {
            break;
        }
    }
    drop(stream);
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(PoisonError::into_inner));
    metrics::counter!("lfusys_bytes_received_total").increment(tally.count);
    verify(checked, tally, Ok(String::new())).map(|_| ())
}

/// Compares what was streamed with what was declared; returns the part's receipt.
fn verify(
    checked: &Checked,
    tally: Tally,
    written: Result<String, StoreError>,
) -> Result<String, Problem> {
    let index = checked.index;
    let len = checked.len;
    if let Some(failure) = tally.failure {
        return Err(match failure {
            BodyFailure::TooLong => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "chunk-too-large",
                format!("the body is longer than chunk {index}, which is {len} bytes"),
            ),
            BodyFailure::Broken(e) => Problem::bad_request(
                "chunk-too-short",
                format!(
                    "the body ended after {} of chunk {index}'s {len} bytes: {e}",
                    tally.count
                ),
            ),
            BodyFailure::Aborted => Problem::conflict(
                "chunk-in-progress",
                format!("writing chunk {index} was stopped; retry"),
            ),
            BodyFailure::Idle => Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                format!(
                    "no data arrived for {} s; chunk {index} was not stored",
                    BODY_IDLE_TIMEOUT.as_secs()
                ),
            ),
        });
    }
    let etag = match written {
        Ok(etag) => etag,
        Err(StoreError::DigestMismatch) => return Err(mismatch(checked, None)),
        Err(StoreError::LengthMismatch { actual, .. }) => return Err(short(index, len, actual)),
        Err(StoreError::Body(e)) => {
            return Err(Problem::bad_request(
                "chunk-too-short",
                format!("the body of chunk {index} failed: {e}"),
            ))
        }
        Err(StoreError::Unavailable(e)) => {
            tracing::warn!(error = %e, "blob store unavailable");
            return Err(
                Problem::unavailable("storage is unavailable; try again shortly")
                    .with_retry_after(1),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "writing a chunk failed");
            return Err(Problem::internal("an internal error occurred"));
        }
    };
    if tally.count != len {
        return Err(short(index, len, tally.count));
    }
    if let Some(hasher) = tally.hasher {
        let actual: Sha256 = hasher.finalize().into();
        if actual != checked.digest {
            return Err(mismatch(checked, Some(&actual)));
        }
    }
    Ok(etag)
}

fn short(index: u32, len: u64, actual: u64) -> Problem {
    Problem::bad_request(
        "chunk-too-short",
        format!("the body has {actual} bytes; chunk {index} is {len} bytes"),
    )
}

fn mismatch(checked: &Checked, actual: Option<&Sha256>) -> Problem {
    let received = actual
        .map(|a| format!(", the body's is {}", to_hex(a)))
        .unwrap_or_default();
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "digest-mismatch",
        format!(
            "Content-Digest declares SHA-256 {}{received}; chunk {} was discarded",
            to_hex(&checked.digest),
            checked.index
        ),
    )
}

async fn release(state: &WorkerState, claims: &UploadClaims, index: u32, claim_id: &str) {
    let req = ReleaseChunkRequest {
        owner_id: claims.sub.clone(),
        upload_id: claims.upl.clone(),
        index,
        claim_id: claim_id.to_owned(),
    };
    // Best effort: an unreleased lease simply runs out.
    if let Err(status) = state.sessions().release_chunk(req).await {
        tracing::warn!(%status, upload_id = %claims.upl, index, "releasing a chunk lease failed");
    }
}

#[derive(Default)]
struct Tally {
    /// None when the store verifies the digest itself.
    hasher: Option<sha2::Sha256>,
    count: u64,
    failure: Option<BodyFailure>,
}

impl Tally {
    fn new(hash: bool) -> Self {
        Self {
            hasher: hash.then(sha2::Sha256::new),
            ..Self::default()
        }
    }
}

#[derive(Debug)]
enum BodyFailure {
    TooLong,
    Broken(String),
    Idle,
    /// The worker stopped the write (it lost the lease).
    Aborted,
}

/// The request body as a [`ByteStream`] that counts (and hashes, if asked) what passes through, and
/// fails (ending the write) when the body breaks, stalls or runs past `limit` bytes.
fn metered(
    body: Body,
    limit: u64,
    tally: Arc<Mutex<Tally>>,
    abort: CancellationToken,
) -> ByteStream {
    let inner = body.into_data_stream();
    Box::pin(futures::stream::unfold(Some((inner, tally)), move |st| {
        let abort = abort.clone();
        async move {
            let (mut inner, tally) = st?;
            let item: Result<Bytes, BodyFailure> = tokio::select! {
                biased;
                () = abort.cancelled() => Err(BodyFailure::Aborted),
                next = tokio::time::timeout(BODY_IDLE_TIMEOUT, inner.next()) => match next {
                    Err(_) => Err(BodyFailure::Idle),
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => Err(BodyFailure::Broken(e.to_string())),
                    Ok(Some(Ok(bytes))) => Ok(bytes),
                },
            };
            let mut t = tally.lock().unwrap_or_else(PoisonError::into_inner);
            let failure = match item {
                Ok(bytes) if t.count + bytes.len() as u64 <= limit => {
                    if let Some(h) = t.hasher.as_mut() {
                        h.update(&bytes);
                    }
                    t.count += bytes.len() as u64;
                    drop(t);
                    return Some((Ok(bytes), Some((inner, tally))));
                }
                Ok(_) => BodyFailure::TooLong,
                Err(f) => f,
            };
            let err = std::io::Error::other(format!("{failure:?}"));
            t.failure = Some(failure);
            // After an error the stream ends.
            Some((Err(err), None))
        }
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const DIGEST: &str = "sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:";

    #[test]
    fn local_checks_follow_the_contract_order() {
        let plan = UploadPlan::new(250, 100);
        let status =
            |idx: &str, h: &HeaderMap| check_request(&plan, idx, h).err().map(|p| p.status);
        let good = headers(&[("content-length", "50"), ("content-digest", DIGEST)]);
        assert_eq!(status("2", &good), None);
        assert_eq!(status("x", &headers(&[])), Some(400));
        assert_eq!(status("+1", &good), Some(400));
        assert_eq!(status("3", &headers(&[])), Some(400));
        assert_eq!(
            status("0", &headers(&[("content-digest", "garbage")])),
            Some(411)
        );
        assert_eq!(
            status("0", &headers(&[("content-length", "500")])),
            Some(400)
        );
        assert_eq!(
            status(
                "0",
                &headers(&[("content-length", "500"), ("content-digest", "sha-256=:x:")])
            ),
            Some(400)
        );
        assert_eq!(
            status(
                "0",
                &headers(&[("content-length", "101"), ("content-digest", DIGEST)])
            ),
            Some(413)
        );
        assert_eq!(
            status(
                "0",
                &headers(&[("content-length", "99"), ("content-digest", DIGEST)])
            ),
            Some(400)
        );
        let ok = check_request(
            &plan,
            "0",
            &headers(&[("content-length", "100"), ("content-digest", DIGEST)]),
        )
        .ok()
        .unwrap();
        assert_eq!((ok.index, ok.len), (0, 100));
    }

    #[tokio::test]
    async fn metered_stream_hashes_counts_and_stops_past_the_limit() {
        let tally = Arc::new(Mutex::new(Tally::new(true)));
        let body = Body::from("hello");
        let out: Vec<_> = metered(body, 5, Arc::clone(&tally), CancellationToken::new())
            .collect()
            .await;
        assert_eq!(out.len(), 1);
        let t = std::mem::take(&mut *tally.lock().unwrap());
        assert_eq!(t.count, 5);
        let d: Sha256 = t.hasher.unwrap().finalize().into();
        assert_eq!(
            to_hex(&d),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );

        let tally = Arc::new(Mutex::new(Tally::default()));
        let out: Vec<_> = metered(
            Body::from("hello!"),
            5,
            Arc::clone(&tally),
            CancellationToken::new(),
        )
        .collect()
        .await;
        assert!(out[0].is_err());
        assert!(matches!(
            tally.lock().unwrap().failure,
            Some(BodyFailure::TooLong)
        ));

        let tally = Arc::new(Mutex::new(Tally::default()));
        let abort = CancellationToken::new();
        abort.cancel();
        let out: Vec<_> = metered(Body::from("hello"), 5, Arc::clone(&tally), abort)
            .collect()
            .await;
        assert_eq!(out.len(), 1);
        assert!(out[0].is_err());
        assert!(matches!(
            tally.lock().unwrap().failure,
            Some(BodyFailure::Aborted)
        ));
    }

    #[test]
    fn outcome_labels() {
        assert_eq!(outcome_label(StatusCode::CREATED), "stored");
        assert_eq!(outcome_label(StatusCode::OK), "duplicate");
        assert_eq!(outcome_label(StatusCode::BAD_REQUEST), "bad_request");
        assert_eq!(outcome_label(StatusCode::SERVICE_UNAVAILABLE), "error");
    }
}
