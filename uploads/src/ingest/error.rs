//! Why a chunk was not stored, and the one table that turns each reason into its
//! problem+json answer (RFC 9457; DESIGN §3 step 2 fixes the statuses, §3 "Every error body
//! is `application/problem+json`").
//!
//! The `Display` of every variant is the problem's `detail`, the sentence a client reads;
//! causes that are the server's business (a store's or the sessions service's error) stay in
//! [`std::error::Error::source`] and in the log line the table writes for them. The table is
//! [`From<IngestError> for Problem`](#impl-From<IngestError>-for-Problem); titles are the
//! statuses' canonical reasons, `type` is `https://lfusys.io/problems/{kind}`.

use axum::http::StatusCode;
use lfusys_core::digest::DigestError;
use lfusys_core::state::UploadState;
use service_kit::problem::Problem;
use storage::StoreError;

/// Every way a chunk request can end without a `200`/`201`, one variant per distinct answer.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    // --- Who is asking: the upload token.
    #[error("an upload token is required: `Authorization: Bearer <upload_token>`")]
    MissingToken,
    #[error("the upload token has expired; refresh it with POST /api/v1/uploads/{{id}}/token")]
    TokenExpired,
    #[error("the upload token is invalid")]
    InvalidToken,
    #[error("the upload token was issued for another upload")]
    WrongUpload,

    // --- The request.
    /// The request's path does not name an upload and a chunk (the text says why).
    #[error("{0}")]
    InvalidPath(String),
    #[error("chunk index `{0}` is not a number")]
    IndexNotANumber(String),
    #[error(
        "chunk index {index} is out of range: this upload has chunks 0 to {}",
        .total_chunks.saturating_sub(1)
    )]
    IndexOutOfRange { index: u32, total_chunks: u32 },
    #[error(
        "Content-Length is required (chunked bodies are refused); chunk {index} is {len} bytes"
    )]
    LengthRequired { index: u32, len: u64 },
    #[error("Content-Length is not a number")]
    InvalidContentLength,
    #[error("Content-Digest is required: `crc64nvme=:<base64 of the chunk's CRC-64/NVME>:` or `sha-256=:<base64 of its SHA-256>:`")]
    MissingDigest,
    #[error("Content-Digest is not valid text")]
    DigestNotText,
    #[error("{0}")]
    MalformedDigest(#[source] DigestError),
    #[error("Content-Length {declared} is longer than chunk {index}, which is {len} bytes")]
    DeclaredTooLong { index: u32, len: u64, declared: u64 },
    #[error("Content-Length {declared} is shorter than chunk {index}, which is {len} bytes")]
    DeclaredTooShort { index: u32, len: u64, declared: u64 },

    // --- The body.
    #[error("the body is longer than chunk {index}, which is {len} bytes")]
    BodyTooLong { index: u32, len: u64 },
    /// The body broke off (the client went away, the connection failed).
    #[error("the body ended after {received} of chunk {index}'s {len} bytes: {reason}")]
    BodyEnded {
        index: u32,
        len: u64,
        received: u64,
        reason: String,
    },
    /// The blob store saw the body fail.
    #[error("the body of chunk {index} failed: {reason}")]
    BodyFailed { index: u32, reason: String },
    #[error("the body has {received} bytes; chunk {index} is {len} bytes")]
    BodyShort { index: u32, len: u64, received: u64 },
    #[error("no data arrived for {idle_secs} s; chunk {index} was not stored")]
    BodyIdle { index: u32, idle_secs: u64 },
    /// `actual` (hex) is known when the worker checked the body itself (not when the store
    /// refused it).
    #[error(
        "Content-Digest declares {algorithm} {declared}{}; chunk {index} was discarded",
        .actual.as_ref().map(|a| format!(", the body's is {a}")).unwrap_or_default()
    )]
    DigestMismatch {
        index: u32,
        /// `SHA-256` or `CRC-64/NVME`.
        algorithm: &'static str,
        declared: String,
        actual: Option<String>,
    },

    // --- The upload and the chunk, as the sessions service sees them.
    #[error("the upload no longer exists")]
    UploadNotFound,
    #[error("{0}")]
    Gone(Gone),
    #[error("chunk {index} is already stored with other content (another CRC-64/NVME)")]
    DigestConflict { index: u32 },
    /// An append that ends inside the chunk found it stored meanwhile (a racing request of
    /// the same upload recorded it): the upload's offset has moved on.
    #[error("chunk {index} was stored meanwhile by another request; ask for the upload's offset and go on from there")]
    StoredMeanwhile { index: u32 },
    /// Another request holds the chunk's lease right now (answered with `Retry-After`).
    #[error("another request is writing chunk {index} right now; retry shortly")]
    ChunkInProgress { index: u32 },
    /// The lease could not be renewed while the body streamed; the write was stopped.
    #[error("the lease on chunk {index} was lost while writing it; retry")]
    LeaseLost { index: u32 },
    #[error("writing chunk {index} was stopped; retry")]
    WriteStopped { index: u32 },
    /// BeginChunk: the upload is assembling, completed or failed (`None`: not said).
    #[error(
        "the upload is {} and accepts no new chunks",
        .state.map_or("finished", UploadState::as_str)
    )]
    NotAccepting { state: Option<UploadState> },
    /// CommitChunk refused the record: the lease ran out and passed on, or the upload stopped
    /// accepting chunks meanwhile.
    #[error(
        "chunk {index} was not recorded: its lease was lost or the upload stopped accepting chunks"
    )]
    NotRecorded { index: u32 },

    // --- The services behind.
    #[error("storage is unavailable; try again shortly")]
    StorageUnavailable(#[source] StoreError),
    /// The blob store's disk is full; nothing of the chunk is recorded.
    #[error("the storage is full; retry once space is freed")]
    StorageFull(#[source] StoreError),
    #[error("an internal error occurred")]
    Storage(#[source] StoreError),
    #[error("the metadata service is unavailable; try again shortly")]
    SessionsUnavailable(#[source] tonic::Status),
    /// Any other refusal of the sessions service: answered as every service answers it
    /// ([`Problem::from_status`]).
    #[error("the sessions service refused: {}", .0.message())]
    SessionsRefused(#[source] tonic::Status),
    #[error("an internal error occurred")]
    UnexpectedOutcome { call: &'static str, outcome: i32 },
    /// The task that handled the chunk panicked or was cancelled.
    #[error("the chunk could not be processed")]
    Crashed(#[source] tokio::task::JoinError),
}

/// Why an upload takes no chunks at all any more (`410`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Gone {
    #[error("the upload was cancelled")]
    Cancelled,
    #[error("the upload has expired")]
    Expired,
    /// The sessions service said gone without saying which.
    #[error("the upload was cancelled or has expired")]
    CancelledOrExpired,
}

impl Gone {
    /// The reason for an upload in `state`; an unknown state reads as cancelled.
    pub fn from_state(state: Option<UploadState>) -> Self {
        if state == Some(UploadState::Expired) {
            Self::Expired
        } else {
            Self::Cancelled
        }
    }
}

impl IngestError {
    /// A failed call to the sessions service: an upload it does not know is gone, an
    /// unreachable service is retryable, anything else is its own refusal.
    pub fn from_status(status: tonic::Status) -> Self {
        match status.code() {
            tonic::Code::NotFound => Self::UploadNotFound,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                Self::SessionsUnavailable(status)
            }
            _ => Self::SessionsRefused(status),
        }
    }

    /// The `error` code of the `WWW-Authenticate: Bearer` challenge that goes with a `401`
    /// (RFC 6750 §3.1).
    pub fn bearer_error(&self) -> Option<&'static str> {
        match self {
            Self::MissingToken => Some("invalid_request"),
            Self::TokenExpired | Self::InvalidToken => Some("invalid_token"),
            _ => None,
        }
    }

    /// Logs what the client is not told.
    fn log(&self) {
        match self {
            Self::StorageUnavailable(e) => tracing::warn!(error = %e, "blob store unavailable"),
            Self::Storage(e) => tracing::error!(error = %e, "writing a chunk failed"),
            Self::StorageFull(e) => tracing::warn!(error = %e, "the blob store is full"),
            Self::SessionsUnavailable(status) => {
                tracing::warn!(%status, "sessions service unavailable");
            }
            Self::UnexpectedOutcome { call, outcome } => {
                tracing::error!(outcome, "unexpected {call} outcome");
            }
            Self::Crashed(e) => tracing::error!(error = %e, "chunk handler failed"),
            _ => {}
        }
    }
}

/// Seconds a client waits before retrying a `409 chunk-in-progress` or a `503`.
const RETRY_AFTER_SECS: Option<u64> = Some(1);

/// The table: status, problem kind and `Retry-After` of every answer.
impl From<IngestError> for Problem {
    fn from(e: IngestError) -> Self {
        use IngestError as E;
        use StatusCode as S;
        e.log();
        let (status, kind, retry_after) = match &e {
            E::MissingToken | E::TokenExpired | E::InvalidToken => {
                (S::UNAUTHORIZED, "unauthorized", None)
            }
            E::WrongUpload => (S::FORBIDDEN, "wrong-upload", None),
            E::InvalidPath(_) | E::InvalidContentLength => {
                (S::BAD_REQUEST, "invalid-request", None)
            }
            E::IndexNotANumber(_) | E::IndexOutOfRange { .. } => {
                (S::BAD_REQUEST, "invalid-index", None)
            }
            E::LengthRequired { .. } => (S::LENGTH_REQUIRED, "length-required", None),
            E::MissingDigest | E::DigestNotText | E::MalformedDigest(_) => {
                (S::BAD_REQUEST, "invalid-digest", None)
            }
            E::DeclaredTooLong { .. } | E::BodyTooLong { .. } => {
                (S::PAYLOAD_TOO_LARGE, "chunk-too-large", None)
            }
            E::DeclaredTooShort { .. }
            | E::BodyEnded { .. }
            | E::BodyFailed { .. }
            | E::BodyShort { .. } => (S::BAD_REQUEST, "chunk-too-short", None),
            E::BodyIdle { .. } => (S::REQUEST_TIMEOUT, "body-timeout", None),
            E::DigestMismatch { .. } => (S::UNPROCESSABLE_ENTITY, "digest-mismatch", None),
            E::UploadNotFound | E::Gone(_) => (S::GONE, "upload-gone", None),
            E::DigestConflict { .. } => (S::CONFLICT, "digest-conflict", None),
            E::StoredMeanwhile { .. } => (S::CONFLICT, "mismatching-upload-offset", None),
            E::ChunkInProgress { .. } => (S::CONFLICT, "chunk-in-progress", RETRY_AFTER_SECS),
            E::LeaseLost { .. } | E::WriteStopped { .. } => {
                (S::CONFLICT, "chunk-in-progress", None)
            }
            E::NotAccepting { .. } | E::NotRecorded { .. } => (S::CONFLICT, "not-accepting", None),
            E::StorageUnavailable(_) | E::SessionsUnavailable(_) => {
                (S::SERVICE_UNAVAILABLE, "unavailable", RETRY_AFTER_SECS)
            }
            E::StorageFull(_) => (
                S::INSUFFICIENT_STORAGE,
                "insufficient-storage",
                Some(service_kit::problem::STORAGE_FULL_RETRY_AFTER_SECS),
            ),
            E::Storage(_) | E::UnexpectedOutcome { .. } | E::Crashed(_) => {
                (S::INTERNAL_SERVER_ERROR, "internal", None)
            }
            // The mapping every service shares (400 / 401 / 403 / 409 / 413 / 500 by code).
            E::SessionsRefused(status) => return Problem::from_status(status),
        };
        let problem = Problem::new(status, kind, e.to_string());
        match retry_after {
            Some(secs) => problem.with_retry_after(secs),
            None => problem,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn answer(e: IngestError) -> (u16, String, String, Option<u64>) {
        let p = Problem::from(e);
        let status = StatusCode::from_u16(p.status).unwrap();
        // Titles are always the status's canonical reason.
        assert_eq!(Some(p.title.as_str()), status.canonical_reason());
        let kind = p
            .kind
            .strip_prefix("https://lfusys.io/problems/")
            .unwrap()
            .to_owned();
        (p.status, kind, p.detail, p.retry_after_secs)
    }

    /// Every variant, with the status, type, detail and `Retry-After` the worker answered
    /// before the ingest core existed.
    #[test]
    #[allow(clippy::too_many_lines)] // one line per row of the contract
    fn the_table_keeps_every_answer() {
        let d = [7u8; 32];
        let a = [9u8; 32];
        let (dh, ah) = (
            lfusys_core::digest::to_hex(&d),
            lfusys_core::digest::to_hex(&a),
        );
        let cases: Vec<(IngestError, u16, &str, String, Option<u64>)> = vec![
            (IngestError::MissingToken, 401, "unauthorized", "an upload token is required: `Authorization: Bearer <upload_token>`".into(), None),
            (IngestError::TokenExpired, 401, "unauthorized", "the upload token has expired; refresh it with POST /api/v1/uploads/{id}/token".into(), None),
            (IngestError::InvalidToken, 401, "unauthorized", "the upload token is invalid".into(), None),
            (IngestError::WrongUpload, 403, "wrong-upload", "the upload token was issued for another upload".into(), None),
            (IngestError::InvalidPath("Invalid URL".into()), 400, "invalid-request", "Invalid URL".into(), None),
            (IngestError::IndexNotANumber("x".into()), 400, "invalid-index", "chunk index `x` is not a number".into(), None),
            (IngestError::IndexOutOfRange { index: 3, total_chunks: 3 }, 400, "invalid-index", "chunk index 3 is out of range: this upload has chunks 0 to 2".into(), None),
            (IngestError::LengthRequired { index: 1, len: 100 }, 411, "length-required", "Content-Length is required (chunked bodies are refused); chunk 1 is 100 bytes".into(), None),
            (IngestError::InvalidContentLength, 400, "invalid-request", "Content-Length is not a number".into(), None),
            (IngestError::MissingDigest, 400, "invalid-digest", "Content-Digest is required: `crc64nvme=:<base64 of the chunk's CRC-64/NVME>:` or `sha-256=:<base64 of its SHA-256>:`".into(), None),
            (IngestError::DigestNotText, 400, "invalid-digest", "Content-Digest is not valid text".into(), None),
            (IngestError::MalformedDigest(DigestError::Malformed("sha-256")), 400, "invalid-digest", DigestError::Malformed("sha-256").to_string(), None),
            (IngestError::DeclaredTooLong { index: 0, len: 100, declared: 101 }, 413, "chunk-too-large", "Content-Length 101 is longer than chunk 0, which is 100 bytes".into(), None),
            (IngestError::DeclaredTooShort { index: 0, len: 100, declared: 99 }, 400, "chunk-too-short", "Content-Length 99 is shorter than chunk 0, which is 100 bytes".into(), None),
            (IngestError::BodyTooLong { index: 2, len: 100 }, 413, "chunk-too-large", "the body is longer than chunk 2, which is 100 bytes".into(), None),
            (IngestError::BodyEnded { index: 1, len: 100, received: 10, reason: "reset".into() }, 400, "chunk-too-short", "the body ended after 10 of chunk 1's 100 bytes: reset".into(), None),
            (IngestError::BodyFailed { index: 1, reason: "reset".into() }, 400, "chunk-too-short", "the body of chunk 1 failed: reset".into(), None),
            (IngestError::BodyShort { index: 1, len: 100, received: 10 }, 400, "chunk-too-short", "the body has 10 bytes; chunk 1 is 100 bytes".into(), None),
            (IngestError::BodyIdle { index: 1, idle_secs: 60 }, 408, "body-timeout", "no data arrived for 60 s; chunk 1 was not stored".into(), None),
            (IngestError::DigestMismatch { index: 4, algorithm: "SHA-256", declared: dh.clone(), actual: None }, 422, "digest-mismatch", format!("Content-Digest declares SHA-256 {dh}; chunk 4 was discarded"), None),
            (IngestError::DigestMismatch { index: 4, algorithm: "CRC-64/NVME", declared: "00000000000000ff".into(), actual: Some(ah.clone()) }, 422, "digest-mismatch", format!("Content-Digest declares CRC-64/NVME 00000000000000ff, the body's is {ah}; chunk 4 was discarded"), None),
            (IngestError::UploadNotFound, 410, "upload-gone", "the upload no longer exists".into(), None),
            (IngestError::Gone(Gone::Cancelled), 410, "upload-gone", "the upload was cancelled".into(), None),
            (IngestError::Gone(Gone::Expired), 410, "upload-gone", "the upload has expired".into(), None),
            (IngestError::Gone(Gone::CancelledOrExpired), 410, "upload-gone", "the upload was cancelled or has expired".into(), None),
            (IngestError::DigestConflict { index: 0 }, 409, "digest-conflict", "chunk 0 is already stored with other content (another CRC-64/NVME)".into(), None),
            (IngestError::StoredMeanwhile { index: 4 }, 409, "mismatching-upload-offset", "chunk 4 was stored meanwhile by another request; ask for the upload's offset and go on from there".into(), None),
            (IngestError::ChunkInProgress { index: 0 }, 409, "chunk-in-progress", "another request is writing chunk 0 right now; retry shortly".into(), Some(1)),
            (IngestError::LeaseLost { index: 0 }, 409, "chunk-in-progress", "the lease on chunk 0 was lost while writing it; retry".into(), None),
            (IngestError::WriteStopped { index: 0 }, 409, "chunk-in-progress", "writing chunk 0 was stopped; retry".into(), None),
            (IngestError::NotAccepting { state: Some(UploadState::Failed) }, 409, "not-accepting", "the upload is failed and accepts no new chunks".into(), None),
            (IngestError::NotAccepting { state: None }, 409, "not-accepting", "the upload is finished and accepts no new chunks".into(), None),
            (IngestError::NotRecorded { index: 5 }, 409, "not-accepting", "chunk 5 was not recorded: its lease was lost or the upload stopped accepting chunks".into(), None),
            (IngestError::StorageUnavailable(StoreError::unavailable("s3 down")), 503, "unavailable", "storage is unavailable; try again shortly".into(), Some(1)),
            (IngestError::Storage(StoreError::other("disk on fire")), 500, "internal", "an internal error occurred".into(), None),
            (IngestError::StorageFull(StoreError::full_from("no space", std::io::Error::from_raw_os_error(28))), 507, "insufficient-storage", "the storage is full; retry once space is freed".into(), Some(30)),
            (IngestError::SessionsUnavailable(tonic::Status::unavailable("x")), 503, "unavailable", "the metadata service is unavailable; try again shortly".into(), Some(1)),
            (IngestError::SessionsRefused(tonic::Status::invalid_argument("bad size")), 400, "invalid-request", "bad size".into(), None),
            (IngestError::SessionsRefused(tonic::Status::failed_precondition("no")), 409, "conflict", "no".into(), None),
            (IngestError::SessionsRefused(tonic::Status::permission_denied("no")), 403, "forbidden", "no".into(), None),
            (IngestError::SessionsRefused(tonic::Status::internal("secret")), 500, "internal", "an internal error occurred".into(), None),
            (IngestError::UnexpectedOutcome { call: "BeginChunk", outcome: 0 }, 500, "internal", "an internal error occurred".into(), None),
        ];
        for (e, status, kind, detail, retry) in cases {
            let shown = format!("{e:?}");
            assert_eq!(
                answer(e),
                (status, kind.to_owned(), detail, retry),
                "{shown}"
            );
        }
    }

    #[tokio::test]
    async fn a_crashed_handler_is_a_500() {
        let join = tokio::spawn(async { std::future::pending::<()>().await });
        join.abort();
        let e = join.await.unwrap_err();
        assert_eq!(
            answer(IngestError::Crashed(e)),
            (
                500,
                "internal".to_owned(),
                "the chunk could not be processed".to_owned(),
                None
            )
        );
    }

    #[test]
    fn sessions_errors_are_classified_by_code() {
        assert!(matches!(
            IngestError::from_status(tonic::Status::not_found("x")),
            IngestError::UploadNotFound
        ));
        for status in [
            tonic::Status::unavailable("x"),
            tonic::Status::deadline_exceeded("x"),
        ] {
            assert!(matches!(
                IngestError::from_status(status),
                IngestError::SessionsUnavailable(_)
            ));
        }
        assert!(matches!(
            IngestError::from_status(tonic::Status::aborted("x")),
            IngestError::SessionsRefused(_)
        ));
    }

    #[test]
    fn gone_reasons_and_bearer_challenges() {
        assert_eq!(Gone::from_state(Some(UploadState::Expired)), Gone::Expired);
        assert_eq!(
            Gone::from_state(Some(UploadState::Cancelled)),
            Gone::Cancelled
        );
        assert_eq!(Gone::from_state(None), Gone::Cancelled);
        assert_eq!(
            IngestError::MissingToken.bearer_error(),
            Some("invalid_request")
        );
        assert_eq!(
            IngestError::TokenExpired.bearer_error(),
            Some("invalid_token")
        );
        assert_eq!(
            IngestError::InvalidToken.bearer_error(),
            Some("invalid_token")
        );
        assert_eq!(IngestError::WrongUpload.bearer_error(), None);
    }
}
