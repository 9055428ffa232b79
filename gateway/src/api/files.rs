//! `/api/v1/files`: listing, metadata, streamed downloads with ranges, deletion.

use std::fmt::Write as _;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lfusys_core::range::{parse_range, ByteRange, RangeRequest};
use serde::Deserialize;
use service_kit::problem::Problem;
use sessions_api::proto;
use storage::StoreError;
use utoipa::IntoParams;

use super::{path_id, store_problem};
use crate::authn::AuthUser;
use crate::dto::{FileInfo, FileList, ProblemDoc};
use crate::state::GatewayState;

pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    pub limit: Option<u32>,
}

/// The caller's files, newest first, a page at a time.
#[utoipa::path(
    get, path = "/api/v1/files", tag = "files",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of files", body = FileList),
        (status = 400, description = "Bad limit or cursor", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn list_files(
    State(state): State<GatewayState>,
    user: AuthUser,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<FileList>, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request("invalid-query", e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid-query",
            "limit must be between 1 and 1000",
        ));
    }
    let page = state
        .sessions()
        .list_files(proto::ListFilesRequest {
            owner_id: user.user_id.into(),
            cursor: q.cursor.unwrap_or_default(),
            limit,
        })
        .await?
        .into_inner();
    Ok(Json(FileList {
        items: page.items.into_iter().map(FileInfo::from).collect(),
        next_cursor: (!page.next_cursor.is_empty()).then_some(page.next_cursor),
    }))
}

async fn fetch(
    state: &GatewayState,
    user: &AuthUser,
    file_id: String,
) -> Result<proto::File, Problem> {
    Ok(state
        .sessions()
        .get_file(proto::GetFileRequest {
            owner_id: user.user_id.to_string(),
            file_id,
        })
        .await?
        .into_inner())
}

/// A file's metadata.
#[utoipa::path(
    get, path = "/api/v1/files/{id}", tag = "files",
    params(("id" = String, Path, description = "File id")),
    responses(
        (status = 200, description = "The file", body = FileInfo),
        (status = 401, description = "Not signed in", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such file of the caller", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn get_file(
    State(state): State<GatewayState>,
    user: AuthUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<FileInfo>, Problem> {
    let id = path_id(path, "file")?;
    Ok(Json(fetch(&state, &user, id).await?.into()))
}

/// Download a file's bytes, streamed; a single `Range` gives `206`.
#[utoipa::path(
    get, path = "/api/v1/files/{id}/content", tag = "files",
    params(
        ("id" = String, Path, description = "File id"),
        ("Range" = Option<String>, Header, description = "One byte range, e.g. `bytes=0-1023` or `bytes=-500`"),
        ("If-None-Match" = Option<String>, Header, description = "ETag of a cached copy (`\"crc64nvme-<hex>\"`, or `\"<sha256>\"` for files of earlier versions)"),
        ("If-Range" = Option<String>, Header, description = "Apply Range only if the ETag still matches"),
    ),
    responses(
        (status = 200, description = "The whole file", content_type = "application/octet-stream",
         headers(("ETag" = String), ("Accept-Ranges" = String), ("Content-Disposition" = String), ("Content-Length" = u64))),
        (status = 206, description = "The requested range", content_type = "application/octet-stream",
         headers(("Content-Range" = String), ("ETag" = String), ("Content-Length" = u64))),
        (status = 304, description = "Not modified (If-None-Match matched)"),
        (status = 401, description = "Not signed in", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such file of the caller", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 416, description = "Range not satisfiable; Content-Range: bytes */size", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn download(
    State(state): State<GatewayState>,
    user: AuthUser,
    method: Method,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let id = path_id(path, "file")?;
    let file = fetch(&state, &user, id).await?;
    // The File's SHA-256 is its strong validator; a File without one has none.
    let etag = file_etag(&file);

    if let (Some(tag), Some(inm)) = (&etag, headers.get(header::IF_NONE_MATCH)) {
        if etag_matches(inm.to_str().unwrap_or_default(), tag) {
            let mut res = StatusCode::NOT_MODIFIED.into_response();
            insert_etag(res.headers_mut(), etag.as_deref());
            return Ok(res);
        }
    }
    if let Some(res) = presigned_redirect(&state, &file, etag.as_deref()).await {
        return Ok(res);
    }
    let range = match requested_range(&headers, file.size, etag.as_deref()) {
        RangeRequest::Full => None,
        RangeRequest::Partial(r) => Some(r),
        RangeRequest::Unsatisfiable => return Ok(range_not_satisfiable(file.size)),
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        let stream = state
            .blobs()
            .read_blob(&file.blob_key, range)
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => Problem::not_found("no such file"),
                other => store_problem(&other),
            })?;
        Body::from_stream(stream)
    };
    Ok(content_response(body, &file, range, etag.as_deref()))
}

/// A File's strong ETag: its CRC-64/NVME, which every File has since the server verifies
/// files by it (a file of an earlier version: its SHA-256, if it has one).
fn file_etag(file: &proto::File) -> Option<String> {
    match (file.crc64nvme, file.sha256.as_str()) {
        (Some(crc), _) => Some(format!(
            "\"crc64nvme-{}\"",
            lfusys_core::digest::crc64_hex(crc)
        )),
        (None, "") => None,
        (None, sha) => Some(format!("\"{sha}\"")),
    }
}

fn insert_etag(h: &mut HeaderMap, etag: Option<&str>) {
    if let Some(v) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
        h.insert(header::ETAG, v);
    }
}

/// S3 mode: a redirect to a short-lived presigned URL (S3 serves ranges itself), when the
/// store gives one. A failure to presign falls back to streaming.
async fn presigned_redirect(
    state: &GatewayState,
    file: &proto::File,
    etag: Option<&str>,
) -> Option<Response> {
    let ttl = state.config().download_redirect?;
    let disposition = content_disposition(&file.name);
    let url = match state
        .blobs()
        .presigned_url(&file.blob_key, ttl, &disposition, &file.content_type)
        .await
    {
        Ok(url) => url?,
        Err(e) => {
            tracing::warn!(error = %e, "presigning a download failed; streaming it instead");
            return None;
        }
    };
    let location = HeaderValue::from_str(&url).ok()?;
    let mut res = StatusCode::FOUND.into_response();
    let h = res.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    insert_etag(h, etag);
    Some(res)
}

/// What the request's `Range` asks for. `If-Range`: the range applies only to the
/// representation the client already has part of.
fn requested_range(headers: &HeaderMap, size: u64, etag: Option<&str>) -> RangeRequest {
    let range_applies = match headers.get(header::IF_RANGE) {
        None => true,
        Some(v) => etag.is_some_and(|tag| v.to_str().is_ok_and(|v| v.trim() == tag)),
    };
    let range_header = headers
        .get(header::RANGE)
        .filter(|_| range_applies)
        .and_then(|v| v.to_str().ok());
    parse_range(range_header, size)
}

/// `416` with `Content-Range: bytes */size`.
fn range_not_satisfiable(size: u64) -> Response {
    let mut res = Problem::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range-not-satisfiable",
        format!("the file is {size} bytes long"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
        res.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    res
}

/// The `200`/`206` answer carrying `body`: the file's type, length, disposition, validator and
/// range.
fn content_response(
    body: Body,
    file: &proto::File,
    range: Option<ByteRange>,
    etag: Option<&str>,
) -> Response {
    let (status, length) = match range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.len()),
        None => (StatusCode::OK, file.size),
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type(&file.content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&content_disposition(&file.name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    insert_etag(h, etag);
    if let Some(r) = range {
        if let Ok(v) = HeaderValue::from_str(&r.content_range(file.size)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    res
}

/// Delete a file and its bytes.
#[utoipa::path(
    delete, path = "/api/v1/files/{id}", tag = "files",
    params(("id" = String, Path, description = "File id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not signed in", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "Cookie request without a matching X-CSRF-Token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such file of the caller", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub async fn delete_file(
    State(state): State<GatewayState>,
    user: AuthUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, Problem> {
    let id = path_id(path, "file")?;
    state
        .sessions()
        .delete_file(proto::DeleteFileRequest {
            owner_id: user.user_id.into(),
            file_id: id.clone(),
        })
        .await?;
    tracing::info!(file_id = %id, "file deleted");
    Ok(StatusCode::NO_CONTENT)
}

fn content_type(declared: &str) -> HeaderValue {
    HeaderValue::from_str(declared)
        .ok()
        .filter(|_| !declared.is_empty())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"))
}

/// `If-None-Match` (weak comparison, RFC 9110 §13.1.2): `*` or a list of entity tags.
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let ours = strip(etag);
    if_none_match
        .split(',')
        .any(|t| t.trim() == "*" || strip(t) == ours)
}

/// `attachment` with an ASCII fallback `filename` and the exact UTF-8 name in `filename*`
/// (RFC 6266, RFC 5987/8187).
pub fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '/' | '%')) || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let fallback = if fallback.trim().is_empty() {
        "download".to_owned()
    } else {
        fallback
    };
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        // attr-char of RFC 8187.
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            let _ = write!(encoded, "%{b:02X}");
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn disposition_encodes_non_ascii_and_quotes() {
        assert_eq!(
            content_disposition("report.pdf"),
            "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
        );
        assert_eq!(
            content_disposition("naïve \"x\".txt"),
            "attachment; filename=\"na_ve _x_.txt\"; filename*=UTF-8''na%C3%AFve%20%22x%22.txt"
        );
        assert_eq!(
            content_disposition("日本"),
            "attachment; filename=\"__\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC"
        );
        assert!(content_disposition("a/b\\c%").starts_with("attachment; filename=\"a_b_c_\";"));
        assert!(HeaderValue::from_str(&content_disposition("ü\r\nX-Evil: 1")).is_ok());
    }

    /// The name back from a `filename*=UTF-8''…` value (RFC 8187 percent-decoding).
    fn percent_decoded(value: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut bytes = value.bytes();
        while let Some(b) = bytes.next() {
            if b == b'%' {
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                out.push(u8::from_str_radix(&hex, 16).unwrap());
            } else {
                out.push(b);
            }
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// Whatever the name — quotes, backslashes, CR/LF, non-ASCII — the header is one
        /// valid field value: the quoted fallback holds no quote, backslash or control
        /// character, and `filename*` decodes to exactly the name.
        #[test]
        fn any_name_is_one_safe_disposition(name in proptest::prelude::any::<String>()) {
            let value = content_disposition(&name);
            proptest::prop_assert!(HeaderValue::from_str(&value).is_ok(), "{value:?}");
            proptest::prop_assert!(!value.contains('\r') && !value.contains('\n'));
            let rest = value.strip_prefix("attachment; filename=\"").unwrap();
            let (fallback, encoded) = rest.split_once("\"; filename*=UTF-8''").unwrap();
            proptest::prop_assert!(!fallback.is_empty());
            proptest::prop_assert!(fallback.chars().all(|c| c == ' ' || (c.is_ascii_graphic() && c != '"' && c != '\\')));
            proptest::prop_assert_eq!(percent_decoded(encoded), name.as_bytes());
        }
    }

    #[test]
    fn if_none_match() {
        let tag = "\"abc\"";
        assert!(etag_matches("\"abc\"", tag));
        assert!(etag_matches("W/\"abc\"", tag));
        assert!(etag_matches("\"x\", \"abc\"", tag));
        assert!(etag_matches("*", tag));
        assert!(!etag_matches("\"abd\"", tag));
    }
}
