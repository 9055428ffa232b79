//! RFC 9457 problem details: every HTTP error body of LFUSYS.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

pub const CONTENT_TYPE: &str = "application/problem+json";

/// One problem+json document. `type` is a stable URI naming the kind of problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
}

impl Problem {
    /// `kind` is a short slug such as `digest-mismatch`; it becomes `https://lfusys.io/problems/{kind}`.
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("https://lfusys.io/problems/{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after_secs: None,
        }
    }

    #[must_use]
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn bad_request(kind: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }
    pub fn forbidden(kind: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, kind, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }
    pub fn conflict(kind: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, kind, detail)
    }
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    /// `507 Insufficient Storage`: the disk is full; retry once space is freed.
    pub fn storage_full(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient-storage",
            detail,
        )
        .with_retry_after(STORAGE_FULL_RETRY_AFTER_SECS)
    }

    /// Maps an error from the sessions service onto the HTTP problem a client should see.
    /// Internal details of unexpected failures are logged, not shown.
    pub fn from_status(status: &tonic::Status) -> Self {
        use tonic::Code;
        let msg = status.message().to_owned();
        if is_storage_full(status) {
            tracing::warn!(%status, "the metadata store is full");
            return Self::storage_full(msg);
        }
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Self::bad_request("invalid-request", msg),
            Code::NotFound => Self::not_found(msg),
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => {
                Self::conflict("conflict", msg)
            }
            Code::PermissionDenied => Self::forbidden("forbidden", msg),
            Code::Unauthenticated => Self::unauthorized(msg),
            Code::ResourceExhausted => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", msg),
            Code::Unavailable | Code::DeadlineExceeded => {
                tracing::warn!(%status, "sessions service unavailable");
                Self::unavailable("the metadata service is unavailable; try again shortly")
                    .with_retry_after(1)
            }
            _ => {
                tracing::error!(%status, "sessions service error");
                Self::internal("an internal error occurred")
            }
        }
    }
}

/// Seconds a client waits before retrying a `507`.
pub const STORAGE_FULL_RETRY_AFTER_SECS: u64 = 30;

/// The gRPC metadata key that marks a `RESOURCE_EXHAUSTED` status as a full disk (rather than
/// an upload larger than allowed, the code's other use).
const STORAGE_FULL_KEY: &str = "lfusys-storage-full";

/// The status a service answers when its store is full (see [`Problem::storage_full`]).
pub fn storage_full_status(message: impl Into<String>) -> tonic::Status {
    let mut status = tonic::Status::resource_exhausted(message);
    status.metadata_mut().insert(
        STORAGE_FULL_KEY,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    status
}

/// Whether `status` is [`storage_full_status`]'s.
pub fn is_storage_full(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::ResourceExhausted
        && status.metadata().get(STORAGE_FULL_KEY).is_some()
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (status, body).into_response();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(secs) = self.retry_after_secs {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<tonic::Status> for Problem {
    fn from(s: tonic::Status) -> Self {
        Self::from_status(&s)
    }
}

/// Turns axum's own rejections (bad JSON, bad path) into problem+json.
pub fn from_rejection(rejection: &impl std::fmt::Display, status: StatusCode) -> Problem {
    Problem::new(status, "invalid-request", rejection.to_string())
}

/// Fallback for unknown routes.
#[allow(clippy::unused_async)] // an axum handler
pub async fn not_found_fallback() -> Problem {
    Problem::not_found("no such resource")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_rfc9457_fields() {
        let p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "digest-mismatch", "nope");
        let v: serde_json::Value = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "https://lfusys.io/problems/digest-mismatch");
        assert_eq!(v["title"], "Unprocessable Entity");
        assert_eq!(v["status"], 422);
        assert_eq!(v["detail"], "nope");
        let res = p.with_retry_after(3).into_response();
        assert_eq!(res.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "3");
    }

    #[test]
    fn maps_grpc_codes() {
        assert_eq!(
            Problem::from_status(&tonic::Status::not_found("x")).status,
            404
        );
        assert_eq!(
            Problem::from_status(&tonic::Status::failed_precondition("x")).status,
            409
        );
        assert_eq!(
            Problem::from_status(&tonic::Status::invalid_argument("x")).status,
            400
        );
        assert_eq!(
            Problem::from_status(&tonic::Status::unavailable("x")).status,
            503
        );
        assert_eq!(
            Problem::from_status(&tonic::Status::internal("secret")).detail,
            "an internal error occurred"
        );
    }
}
