//! The JSON documents of the HTTP API (also the OpenAPI schemas).

use lfusys_core::clock::rfc3339;
use serde::{Deserialize, Serialize};
use sessions_api::proto;
use utoipa::ToSchema;

/// RFC 9457 problem details: the body of every error.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDoc {
    /// URI naming the kind of problem, e.g. `https://lfusys.io/problems/not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// An email address; stored lower-cased.
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// 8 to 128 characters.
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
    /// Display name, at most 100 characters.
    #[serde(default)]
    #[schema(max_length = 100)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// The refresh token; may be omitted when the `lfusys_refresh` cookie is sent.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
}

/// A new token pair. Browsers also receive it as cookies.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub user: User,
    /// EdDSA JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Opaque; single use: every refresh returns a new one.
    pub refresh_token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
}

/// Body of `POST /api/v1/uploads` (documentation; the handler validates a raw JSON value so
/// that every bad size is a 400).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct CreateUploadRequest {
    /// File name shown in listings and downloads.
    name: String,
    /// Size in bytes: a positive integer.
    #[schema(minimum = 1)]
    size: u64,
    /// Media type of the file (default `application/octet-stream`).
    content_type: Option<String>,
    /// Whole-file SHA-256 (hex); verified after assembly when given.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    sha256: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUpload {
    pub upload_id: String,
    pub chunk_size: u64,
    pub total_chunks: u32,
    /// Where the chunks go: `PUT {upload_url}/{index}`. Absolute, or a path on this origin.
    pub upload_url: String,
    /// Bearer token for the chunk PUTs.
    pub upload_token: String,
    /// When the upload session expires if unfinished (RFC 3339).
    pub expires_at: String,
    /// When `upload_token` expires (RFC 3339); renew it with `POST /api/v1/uploads/{id}/token`.
    pub upload_token_expires_at: String,
    #[schema(example = "uploading")]
    pub state: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadToken {
    pub upload_token: String,
    /// When the token expires (RFC 3339).
    pub expires_at: String,
    /// Where this upload's chunks go (`PUT {upload_url}/{index}`): resuming clients need it.
    pub upload_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadStatus {
    pub upload_id: String,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub chunk_size: u64,
    pub total_chunks: u32,
    /// `uploading | assembling | completed | failed | cancelled | expired`.
    pub state: String,
    /// Indices of the stored chunks, ascending.
    pub received_chunks: Vec<u32>,
    pub bytes_received: u64,
    /// Set once the upload is completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    /// Why the upload failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: String,
    pub expires_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadList {
    pub items: Vec<UploadStatus>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileInfo {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    /// Whole-file SHA-256 (hex) the client declared when creating the upload, verified when
    /// the file was assembled; also the download's ETag. `null` when the client declared none
    /// (every chunk was still verified against its own SHA-256; the file is not hashed whole).
    pub sha256: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileList {
    pub items: Vec<FileInfo>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

pub fn state_name(v: i32) -> String {
    sessions_api::upload_state(v).map_or_else(|| "unknown".to_owned(), |s| s.as_str().to_owned())
}

impl From<proto::Upload> for UploadStatus {
    fn from(u: proto::Upload) -> Self {
        Self {
            state: state_name(u.state),
            upload_id: u.upload_id,
            name: u.name,
            size: u.size,
            content_type: u.content_type,
            sha256: non_empty(u.sha256),
            chunk_size: u.chunk_size,
            total_chunks: u.total_chunks,
            received_chunks: u.received_chunks,
            bytes_received: u.bytes_received,
            file_id: non_empty(u.file_id),
            error: non_empty(u.error),
            created_at: rfc3339(u.created_at_ms),
            expires_at: rfc3339(u.expires_at_ms),
        }
    }
}

impl From<proto::File> for FileInfo {
    fn from(f: proto::File) -> Self {
        Self {
            id: f.file_id,
            name: f.name,
            size: f.size,
            content_type: f.content_type,
            sha256: non_empty(f.sha256),
            created_at: rfc3339(f.created_at_ms),
        }
    }
}
