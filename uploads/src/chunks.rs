//! Chunk ingest: `PUT /api/v1/chunks/{upload_id}/{index}` (DESIGN §3 step 2).
//!
//! The request carries `Authorization: Bearer <upload token>`, `Content-Length` (the chunk's
//! exact length) and `Content-Digest` with a `crc64nvme=:<base64>:` member (the chunk's
//! CRC-64/NVME, 8 bytes big-endian), a `sha-256=:<base64>:` member, or both; each one given is
//! verified. Answers, checked in this order:
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
//! | 422 | the body's CRC-64/NVME or SHA-256 differs from `Content-Digest` (nothing is recorded) |
//! | 200 | the same chunk (the same CRC-64/NVME) is already stored (nothing is written) |
//! | 409 | stored with other bytes, the upload takes no new chunks, or another request is writing this chunk now |
//! | 201 | stored |
//! | 507 | the blob store's or the metadata store's disk is full (`Retry-After`; nothing of the chunk is recorded) |
//!
//! This module is the native protocol's adapter: it parses the path and headers in that
//! order into a [`ChunkRequest`], hands it with the body to the protocol-neutral core
//! ([`crate::ingest::ingest_chunk`]: lease, stream and verify, record) and answers with its
//! receipt or its [`IngestError`] (problem+json, from the error's one table; `401` adds
//! `WWW-Authenticate`). It counts every answer in `lfusys_chunks_received_total{outcome}`.
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

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};
use futures::TryStreamExt;
use lfusys_core::digest::{parse_content_digest, ChunkDigests};
use lfusys_core::plan::UploadPlan;
use lfusys_core::tokens::{TokenError, UploadClaims};
use service_kit::problem::Problem;
use storage::ByteStream;

use crate::ingest::{self, ChunkRequest, IngestError, Outcome};
use crate::WorkerState;

pub use crate::ingest::ChunkReceipt;

/// The chunk route.
pub const CHUNK_ROUTE: &str = "/api/v1/chunks/{upload_id}/{index}";

/// Bodies up to this size are discarded before early answers even without a known plan.
const MIN_DRAIN: u64 = 64 * 1024 * 1024;

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
    // Runs to the end even when the client goes away, so that a chunk whose commit is on its
    // way is answered (and its lease released, when it is not recorded) in order. Were the
    // handler dropped mid-chunk anyway, the core's lease guard would release in the background.
    let task = tokio::spawn(async move { handle(&state, path, &headers, body).await });
    let res = match task.await {
        Ok(res) => res,
        Err(e) => IngestError::Crashed(e).into_response(),
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

/// The request, parsed: token, path, headers (in the contract's order), then the core.
async fn handle(
    state: &WorkerState,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let claims = match authenticate(state, headers) {
        Ok(c) => c,
        Err(e) => return refuse(e, headers, body, MIN_DRAIN).await,
    };
    let drain_limit = claims.chunk_size.max(MIN_DRAIN);
    let (upload_id, raw_index) = match path {
        Ok(Path(p)) => p,
        Err(rejection) => {
            let e = IngestError::InvalidPath(rejection.body_text());
            return refuse(e, headers, body, drain_limit).await;
        }
    };
    if claims.upl != upload_id {
        return refuse(IngestError::WrongUpload, headers, body, drain_limit).await;
    }
    let checked = match check_request(&claims.plan(), &raw_index, headers) {
        Ok(c) => c,
        Err(e) => {
            // A cancelled or expired upload answers 410 before any request error.
            let gone = ingest::upload_gone(state, &claims.sub, &claims.upl).await;
            return refuse(gone.unwrap_or(e), headers, body, drain_limit).await;
        }
    };
    let req = ChunkRequest::from_claims(&claims, checked.index, checked.len, checked.digests);
    match ingest::ingest_chunk(state, &req, body_stream(body)).await {
        Ok(Outcome::Stored(receipt)) => (StatusCode::CREATED, Json(receipt)).into_response(),
        Ok(Outcome::AlreadyStored(receipt)) => (StatusCode::OK, Json(receipt)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// problem+json from the error's table; a `401` carries its `WWW-Authenticate` challenge.
impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let challenge = self.bearer_error();
        let mut res = Problem::from(self).into_response();
        if let Some(code) = challenge {
            let value = format!("Bearer realm=\"lfusys-upload\", error=\"{code}\"");
            if let Ok(v) = HeaderValue::from_str(&value) {
                res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        res
    }
}

/// Verifies the bearer upload token.
fn authenticate(state: &WorkerState, headers: &HeaderMap) -> Result<UploadClaims, IngestError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or(IngestError::MissingToken)?;
    state.verifier().verify_upload(token).map_err(|e| match e {
        TokenError::Expired => IngestError::TokenExpired,
        TokenError::Invalid | TokenError::Signing => IngestError::InvalidToken,
    })
}

/// What the local checks established about a well-formed request.
struct Checked {
    index: u32,
    len: u64,
    digests: ChunkDigests,
}

/// The checks that need nothing but the request and the token's plan, in the contract's order.
fn check_request(
    plan: &UploadPlan,
    raw_index: &str,
    headers: &HeaderMap,
) -> Result<Checked, IngestError> {
    let index = (!raw_index.is_empty() && raw_index.bytes().all(|b| b.is_ascii_digit()))
        .then(|| raw_index.parse::<u32>().ok())
        .flatten()
        .ok_or_else(|| IngestError::IndexNotANumber(raw_index.to_owned()))?;
    let len = ingest::chunk_len(plan, index)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .ok_or(IngestError::LengthRequired { index, len })?
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or(IngestError::InvalidContentLength)?;
    let digests = declared_digests(headers)?;
    ingest::check_declared_len(index, len, declared)?;
    Ok(Checked {
        index,
        len,
        digests,
    })
}

/// The checksums of `Content-Digest` (RFC 9530).
fn declared_digests(headers: &HeaderMap) -> Result<ChunkDigests, IngestError> {
    let value = headers
        .get("content-digest")
        .ok_or(IngestError::MissingDigest)?;
    let text = value.to_str().map_err(|_| IngestError::DigestNotText)?;
    parse_content_digest(text).map_err(IngestError::MalformedDigest)
}

/// The request body as the core's byte stream.
fn body_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}

/// Answers a request without storing its body. A body of at most `limit` bytes is read and
/// discarded first, so that the client reads the answer rather than a reset connection;
/// a longer one is left unread (the connection is then closed after the answer).
async fn refuse(e: IngestError, headers: &HeaderMap, body: Body, limit: u64) -> Response {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    if declared.is_none_or(|d| d <= limit) {
        ingest::drain(body_stream(body), limit).await;
    }
    e.into_response()
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
        let status = |idx: &str, h: &HeaderMap| {
            check_request(&plan, idx, h)
                .err()
                .map(|e| Problem::from(e).status)
        };
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
        assert!(matches!(
            check_request(&plan, "0", &headers(&[("content-length", "x")])),
            Err(IngestError::InvalidContentLength)
        ));
        let ok = check_request(
            &plan,
            "0",
            &headers(&[("content-length", "100"), ("content-digest", DIGEST)]),
        )
        .ok()
        .unwrap();
        assert_eq!((ok.index, ok.len), (0, 100));
        let crc = check_request(
            &plan,
            "0",
            &headers(&[
                ("content-length", "100"),
                ("content-digest", "crc64nvme=:AAAAAAAAAP8=:"),
            ]),
        )
        .ok()
        .unwrap();
        assert_eq!(crc.digests.crc64nvme, Some(0xff));
        assert_eq!(crc.digests.sha256, None);
    }

    #[test]
    fn answers_carry_their_headers() {
        let res = IngestError::TokenExpired.into_response();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            res.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"lfusys-upload\", error=\"invalid_token\""
        );
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            service_kit::problem::CONTENT_TYPE
        );
        let res = IngestError::MissingToken.into_response();
        assert_eq!(
            res.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"lfusys-upload\", error=\"invalid_request\""
        );
        let res = IngestError::ChunkInProgress { index: 1 }.into_response();
        assert_eq!(res.status(), StatusCode::CONFLICT);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        assert!(!res.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    #[test]
    fn outcome_labels() {
        assert_eq!(outcome_label(StatusCode::CREATED), "stored");
        assert_eq!(outcome_label(StatusCode::OK), "duplicate");
        assert_eq!(outcome_label(StatusCode::BAD_REQUEST), "bad_request");
        assert_eq!(outcome_label(StatusCode::SERVICE_UNAVAILABLE), "error");
    }
}
