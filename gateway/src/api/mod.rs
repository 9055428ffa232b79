//! Handlers of `/api/v1`.

pub mod auth;
pub mod files;
pub mod uploads;

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use service_kit::problem::Problem;
use storage::StoreError;

/// Parses a JSON request body; every failure is a 400 problem (never axum's 422).
pub(crate) fn parse_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Problem> {
    check_json_content_type(headers)?;
    let body = body.map_err(|e| Problem::new(e.status(), "invalid-request", e.body_text()))?;
    serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(
            "invalid-json",
            format!("the request body is not valid: {e}"),
        )
    })
}

/// Bodies are read as JSON whatever their declared type, so `curl -d '{…}'` (sent as a form)
/// just works. Browsers are held to `application/json`: a cross-site page can only send the
/// form types without a CORS preflight, and browsers always mark their requests with
/// `Origin` or `Sec-Fetch-Site`.
pub(crate) fn check_json_content_type(headers: &HeaderMap) -> Result<(), Problem> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    let from_browser =
        headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-site");
    if json || !from_browser {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "the request body must be application/json",
        ))
    }
}

/// An id from the URL. Malformed ids answer 404 exactly like ids that do not exist.
pub(crate) fn path_id(
    path: Result<Path<String>, PathRejection>,
    what: &str,
) -> Result<String, Problem> {
    match path {
        Ok(Path(id)) if lfusys_core::ids::is_valid_id(&id) => Ok(id),
        _ => Err(Problem::not_found(format!("no such {what}"))),
    }
}

/// Maps a store failure to a problem; details are logged, not shown.
pub(crate) fn store_problem(e: &StoreError) -> Problem {
    if let StoreError::Unavailable { .. } = e {
        tracing::warn!(error = %e, "store unavailable");
        Problem::unavailable("storage is unavailable; try again shortly").with_retry_after(1)
    } else if let StoreError::Full { .. } = e {
        tracing::warn!(error = %e, "store full");
        Problem::storage_full("the storage is full; retry once space is freed")
    } else {
        tracing::error!(error = %e, "store error");
        Problem::internal("an internal error occurred")
    }
}

pub(crate) fn internal(e: &impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "internal error");
    Problem::internal("an internal error occurred")
}

/// Seconds since the epoch, for token claims.
pub(crate) fn now_s() -> i64 {
    lfusys_core::clock::now_ms() / 1000
}
