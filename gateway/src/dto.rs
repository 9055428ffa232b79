//! The JSON documents of the HTTP API (also the OpenAPI schemas).

use lfusys_core::clock::rfc3339;
use lfusys_core::digest::crc64_hex;
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
    /// The file's size; while `length_deferred`, the most the upload may hold.
    pub size: u64,
    /// Created without a length (tus `creation-defer-length`) that is not declared yet:
    /// `size` and `total_chunks` are the upload's bound until it is.
    pub length_deferred: bool,
    pub content_type: String,
    /// The whole file's SHA-256 the client declared (at creation, or with `crc64nvme`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The whole file's CRC-64/NVME (16 hex digits) the client declared with
    /// `PATCH /api/v1/uploads/{id}`, once it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<String>,
    pub chunk_size: u64,
    pub total_chunks: u32,
    /// `uploading | assembling | completed | failed | cancelled | expired`.
    pub state: String,
    /// Indices of the stored chunks, ascending.
    pub received_chunks: Vec<u32>,
    /// CRC-64/NVME (16 hex digits) of each stored chunk, in the order of `received_chunks`: a
    /// client resuming proves with them that its file is the one uploaded.
    pub received_crc64nvme: Vec<String>,
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
    /// Whole-file SHA-256 (hex), `null` when none is known; `sha256_source` says who vouches
    /// for it.
    pub sha256: Option<String>,
    /// `client`: the uploading client computed it in the same pass over the file as the
    /// CRC-64/NVME it declared, which the server verified; `declared`: declared at creation,
    /// checked by no one; `received`: the workers hashed the bytes in the order they received
    /// them (a tus upload); `server`: the server hashed the stored file (earlier versions).
    /// `null` with no SHA-256.
    pub sha256_source: Option<String>,
    /// Whole-file CRC-64/NVME (16 hex digits), computed by the server from the bytes it
    /// received and verified against the stored file before the File was published; also
    /// the download's ETag. `null` for files of earlier versions.
    pub crc64nvme: Option<String>,
    pub created_at: String,
}

/// The body of `PATCH /api/v1/uploads/{id}`: the whole-file checksums a client computed while
/// it read the file, declared before its last chunk.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DeclareChecksums {
    /// The whole file's CRC-64/NVME, 16 hex digits. The server verifies the stored file
    /// against it.
    pub crc64nvme: String,
    /// The whole file's SHA-256, 64 hex digits, computed in the same pass. When the upload was
    /// created with a `sha256`, a different one fails the upload.
    #[serde(default)]
    pub sha256: Option<String>,
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
            length_deferred: u.length_deferred,
            content_type: u.content_type,
            sha256: non_empty(u.sha256),
            crc64nvme: u.crc64nvme.map(crc64_hex),
            chunk_size: u.chunk_size,
            total_chunks: u.total_chunks,
            received_chunks: u.received_chunks,
            received_crc64nvme: u.received_crc64nvme.into_iter().map(crc64_hex).collect(),
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
            sha256_source: non_empty(f.sha256_source),
            crc64nvme: f.crc64nvme.map(crc64_hex),
            created_at: rfc3339(f.created_at_ms),
        }
    }
}
