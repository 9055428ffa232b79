//! The storage ports. Services depend on these traits only; each has an embedded
//! implementation (local disk, SQLite) and a production one (S3, DynamoDB, SQS).
//!
//! - [`BlobStore`]: the bytes of uploads in progress and of published files.
//! - [`MetadataStore`]: upload sessions, chunk records and files (owned by the sessions service).
//! - [`AuthStore`]: users and refresh tokens (owned by the gateway).
//! - [`JobQueue`]: the assembly queue (SQS FIFO semantics).
//!
//! With the feature `conformance`, the module `conformance` holds the suite of cases every
//! adapter of a port passes, generic over the port's trait.

#[cfg(feature = "conformance")]
pub mod conformance;

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use lfusys_core::digest::Crc64;
pub use lfusys_core::ids::{ClaimId, FileId, UploadId, UserId};
use lfusys_core::range::ByteRange;
use lfusys_core::state::UploadState;

/// The error beneath a store failure (an SDK, SQLite or I/O error), kept so that logs can show
/// the whole chain (`source()`); clients only ever see the message.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of any store. `Unavailable` is transient (retry); the rest are not.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("storage unavailable: {message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<Cause>,
    },
    #[error("chunk body does not match its declared checksum")]
    DigestMismatch,
    /// What the store holds, part by part at its place, is not the file whose CRC-64/NVME the
    /// commit expected: nothing was committed.
    #[error("the stored parts do not make the expected file: {0}")]
    ChecksumMismatch(String),
    #[error("chunk body has the wrong length: expected {expected}, got {actual}")]
    LengthMismatch { expected: u64, actual: u64 },
    #[error("the request body failed: {message}")]
    Body {
        message: String,
        #[source]
        source: Option<Cause>,
    },
    /// The disk (or a quota) is full: nothing more is stored until space is freed. What was
    /// stored stays as it was.
    #[error("storage is full: {message}")]
    Full {
        message: String,
        #[source]
        source: Option<Cause>,
    },
    #[error("storage error: {message}")]
    Other {
        message: String,
        #[source]
        source: Option<Cause>,
    },
}

impl StoreError {
    /// Transient: the caller may retry.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// [`StoreError::unavailable`], keeping the error that caused it.
    pub fn unavailable_from(message: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: Some(cause.into()),
        }
    }

    /// The body being written failed (the client went away, a read timed out).
    pub fn body(message: impl Into<String>) -> Self {
        Self::Body {
            message: message.into(),
            source: None,
        }
    }

    /// [`StoreError::body`], keeping the error that caused it.
    pub fn body_from(message: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Self::Body {
            message: message.into(),
            source: Some(cause.into()),
        }
    }

    /// Neither transient nor the caller's fault.
    pub fn other(message: impl Into<String>) -> Self {
        Self::Other {
            message: message.into(),
            source: None,
        }
    }

    /// [`StoreError::other`], keeping the error that caused it.
    pub fn other_from(message: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Self::Other {
            message: message.into(),
            source: Some(cause.into()),
        }
    }
}

impl StoreError {
    /// [`StoreError::Full`], keeping the error that caused it.
    pub fn full_from(message: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Self::Full {
            message: message.into(),
            source: Some(cause.into()),
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind;
        // ENOSPC and EDQUOT, also where std does not name them.
        let full = matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
            || matches!(e.raw_os_error(), Some(28 | 122));
        if full {
            Self::full_from(e.to_string(), e)
        } else {
            Self::other_from(e.to_string(), e)
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A stream of body bytes; an `Err` item aborts the write.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

// ---------------------------------------------------------------------------------------------
// Blob store

/// Where one chunk goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkTarget {
    pub upload_id: UploadId,
    /// The handle `begin_upload` returned (S3's multipart upload id; local disk has none).
    pub handle: Option<String>,
    pub index: u32,
    pub offset: u64,
    pub len: u64,
    /// The chunk's CRC-64/NVME as the client declared it, when it did: S3 is sent it with the
    /// part and refuses a body that does not match it (`DigestMismatch`).
    pub crc64nvme: Option<Crc64>,
}

/// What `write_chunk` stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenChunk {
    /// CRC-64/NVME of the bytes the store wrote, computed as they streamed through it.
    pub crc64nvme: Crc64,
    /// The part's receipt, if the backend gives one (S3's ETag).
    pub etag: Option<String>,
}

/// A recorded chunk, as the assembler hands it back to the blob store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRef {
    pub index: u32,
    pub size: u64,
    /// CRC-64/NVME of the part, as `write_chunk` computed it.
    pub crc64nvme: Crc64,
    /// The receipt `write_chunk` returned (S3's ETag; local disk has none).
    pub etag: Option<String>,
}

/// Bytes of a chunk kept apart until the rest of the chunk arrives (see
/// [`BlobStore::stage_piece`]): `len` bytes from `start` within the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StagedPiece {
    pub start: u64,
    pub len: u64,
}

impl StagedPiece {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// How many bytes from the chunk's start `pieces` (ascending by start) hold without a gap.
pub fn staged_prefix(pieces: &[StagedPiece]) -> u64 {
    let mut end = 0;
    for piece in pieces {
        if piece.start > end {
            break;
        }
        end = end.max(piece.end());
    }
    end
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Prepares storage for an upload of `size` bytes; returns the backend's handle of it, if
    /// the backend keeps one (S3's multipart upload id).
    async fn begin_upload(&self, upload_id: &UploadId, size: u64) -> StoreResult<Option<String>>;

    /// Streams exactly `target.len` bytes to the chunk's final place, without buffering the
    /// whole chunk, computing their CRC-64/NVME on the way. The caller verifies length and
    /// the client's checksums of what it streamed; S3 also refuses a body that does not match
    /// `target.crc64nvme` (`DigestMismatch`). The store keeps, with the bytes, the checksum of
    /// what is at each place, for [`BlobStore::complete_upload`] to verify the file by.
    async fn write_chunk(
        &self,
        target: &ChunkTarget,
        body: ByteStream,
    ) -> StoreResult<WrittenChunk>;

    /// Makes the upload's bytes the immutable blob `blob_key`, once it has verified, without
    /// reading them back, that what it holds at each place makes a file whose CRC-64/NVME is
    /// `whole_crc64nvme`: S3 checks its parts' checksums against it (a `FULL_OBJECT`
    /// checksum), local disk the checksums it recorded of its positioned writes. Otherwise
    /// nothing is committed and the answer is `ChecksumMismatch`. Idempotent: committing an
    /// upload that was already committed to `blob_key` succeeds.
    async fn complete_upload(
        &self,
        upload_id: &UploadId,
        handle: Option<&str>,
        parts: &[PartRef],
        blob_key: &str,
        whole_crc64nvme: Crc64,
    ) -> StoreResult<()>;

    /// Keeps `len` bytes that belong at `start` within chunk `index` apart from the chunk's
    /// place, durably, until the rest of the chunk arrives: the appends of the tus and IETF
    /// protocols may end anywhere, and a chunk is written to its place (an S3 part) only whole.
    /// A piece is listed by [`BlobStore::staged_pieces`] only once all of it is stored; a
    /// piece at the same `start` replaces the one before.
    async fn stage_piece(
        &self,
        upload_id: &UploadId,
        index: u32,
        start: u64,
        len: u64,
        body: ByteStream,
    ) -> StoreResult<()>;

    /// The staged pieces of chunk `index`, ascending by start.
    async fn staged_pieces(
        &self,
        upload_id: &UploadId,
        index: u32,
    ) -> StoreResult<Vec<StagedPiece>>;

    /// Streams one staged piece back (to be written with the rest of its chunk).
    async fn read_staged(
        &self,
        upload_id: &UploadId,
        index: u32,
        piece: StagedPiece,
    ) -> StoreResult<ByteStream>;

    /// Deletes the staged pieces of chunk `index`. Idempotent. [`BlobStore::abort_upload`]
    /// deletes those of every chunk.
    async fn discard_staged(&self, upload_id: &UploadId, index: u32) -> StoreResult<()>;

    /// Sets the size of an upload begun with a larger one (its length was deferred, and is
    /// now declared): chunks are written only below it from now on, and the committed file
    /// has exactly this size. Idempotent. Only local disk keeps a size (S3 needs nothing).
    async fn set_upload_size(&self, upload_id: &UploadId, size: u64) -> StoreResult<()>;

    /// Releases the storage of an unfinished upload, its staged pieces included. Idempotent;
    /// without the handle (a crash before it was recorded), whatever was begun for `upload_id`
    /// is released.
    async fn abort_upload(&self, upload_id: &UploadId, handle: Option<&str>) -> StoreResult<()>;

    /// Upload ids of blob uploads in progress not written since `before_ms` (at most
    /// `limit`), for the sweeper to release those that no upload record owns: what a crash
    /// between `begin_upload` and recording the upload leaves. A store that cannot trace an
    /// upload in progress back to its upload id lists none (the default; S3 names a multipart
    /// upload by the File's key, and what an interrupted create leaves there is an empty
    /// multipart upload, without a byte, for the bucket's lifecycle rule to abort).
    async fn idle_blob_uploads(
        &self,
        _before_ms: i64,
        _limit: usize,
    ) -> StoreResult<Vec<UploadId>> {
        Ok(Vec::new())
    }

    /// Size of a committed blob.
    async fn blob_size(&self, blob_key: &str) -> StoreResult<u64>;

    /// Streams a committed blob, or one inclusive byte range of it.
    async fn read_blob(&self, blob_key: &str, range: Option<ByteRange>) -> StoreResult<ByteStream>;

    /// Deletes a committed blob. Idempotent.
    async fn delete_blob(&self, blob_key: &str) -> StoreResult<()>;

    /// Cheap check that the backend is reachable (readiness).
    async fn check(&self) -> StoreResult<()>;

    /// A short-lived URL that serves a committed blob directly (an S3 presigned `GET` that
    /// answers with the given `Content-Disposition` and `Content-Type`), when the store can
    /// give one.
    async fn presigned_url(
        &self,
        _blob_key: &str,
        _expires_in: Duration,
        _content_disposition: &str,
        _content_type: &str,
    ) -> StoreResult<Option<String>> {
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata store (upload sessions, chunks, files)

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub upload_id: UploadId,
    pub owner_id: UserId,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    /// Client-declared whole-file SHA-256 (lowercase hex), if any: at creation (the file's
    /// expected SHA-256) or with the whole-file checksums (see `crc64nvme`).
    pub sha256: Option<String>,
    /// The whole file's CRC-64/NVME as the client computed it in the same pass as its SHA-256,
    /// declared before the last chunk (`PATCH /api/v1/uploads/{id}`); `None` until then.
    pub crc64nvme: Option<Crc64>,
    pub chunk_size: u64,
    pub total_chunks: u32,
    /// The client did not know the file's length at creation (tus `creation-defer-length`):
    /// `size` and `total_chunks` are then the most the upload may hold, until the length is
    /// declared ([`MetadataStore::declare_size`]).
    pub length_deferred: bool,
    /// Whether the upload is a part of a parallel upload, or the whole made of such parts
    /// (tus `concatenation`).
    pub concat: Concat,
    pub state: UploadState,
    /// The blob store's handle of the upload (see [`BlobStore::begin_upload`]).
    pub storage_handle: Option<String>,
    pub error: Option<String>,
    pub file_id: Option<FileId>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub expires_at_ms: i64,
}

/// How an upload takes part in a parallel upload (tus `concatenation`, docs/protocol.md
/// "Parallel uploads").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Concat {
    /// An ordinary upload.
    #[default]
    None,
    /// A part of a parallel upload: it never becomes a File of its own, and its last chunk
    /// does not complete it (its set is never moved to assembling by
    /// [`MetadataStore::commit_chunk`]); it waits in uploading, and expires there, until a
    /// final upload takes it.
    Partial,
    /// The file made of these partial uploads' bytes, in this order. It takes no bytes from a
    /// client: its assembler copies the partials' into it.
    Final(Vec<UploadId>),
}

/// Prefix of a final upload's stored form.
const FINAL_PREFIX: &str = "final:";

impl Concat {
    pub fn is_partial(&self) -> bool {
        matches!(self, Self::Partial)
    }

    /// The partial uploads of a final one; none otherwise.
    pub fn parts(&self) -> &[UploadId] {
        match self {
            Self::Final(parts) => parts,
            _ => &[],
        }
    }

    /// The form the stores keep: empty, `partial`, or `final:` and the partials' ids
    /// separated by spaces.
    pub fn to_stored(&self) -> String {
        match self {
            Self::None => String::new(),
            Self::Partial => "partial".to_owned(),
            Self::Final(parts) => {
                let ids: Vec<&str> = parts.iter().map(UploadId::as_str).collect();
                format!("{FINAL_PREFIX}{}", ids.join(" "))
            }
        }
    }

    /// Reads [`Concat::to_stored`]'s form back.
    pub fn from_stored(stored: &str) -> StoreResult<Self> {
        match stored {
            "" => Ok(Self::None),
            "partial" => Ok(Self::Partial),
            other => match other.strip_prefix(FINAL_PREFIX) {
                Some(ids) if !ids.trim().is_empty() => Ok(Self::Final(
                    ids.split(' ').map(UploadId::from).collect(),
                )),
                _ => Err(StoreError::other(format!(
                    "an upload's concatenation is stored as {other:?}: neither empty, `partial` nor `final:<ids>`"
                ))),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRecord {
    pub index: u32,
    pub size: u64,
    /// CRC-64/NVME of the stored chunk, as the worker that wrote it computed it. Two writes
    /// of a chunk are the same chunk when their CRCs are equal.
    pub crc64nvme: Crc64,
    /// The blob store's receipt of the chunk (see [`BlobStore::write_chunk`]).
    pub etag: Option<String>,
    /// The file's running SHA-256 after this chunk (`lfusys_core::sha256_chain`, serialised),
    /// when the worker hashed it on from the previous chunk's: only for tus appends of uploads
    /// that declared no SHA-256, which arrive in order.
    pub sha256_chain: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub file_id: FileId,
    pub owner_id: UserId,
    pub upload_id: UploadId,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    /// Hex SHA-256 of the whole file, when one is known; `sha256_source` says who vouches for
    /// it. `None` when the client declared none.
    pub sha256: Option<String>,
    pub sha256_source: Option<Sha256Source>,
    /// CRC-64/NVME of the whole file, which the server verified the stored file against
    /// before publishing it; `None` for files published before LFUSYS kept one.
    pub crc64nvme: Option<Crc64>,
    pub blob_key: String,
    pub created_at_ms: i64,
}

/// Who vouches for a File's SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sha256Source {
    /// The uploading client computed it in the same pass over the file as the whole-file
    /// CRC-64/NVME it declared, which the server verified: it names the bytes the server
    /// stored, as far as the client is to be trusted.
    Client,
    /// Declared at creation only: no one checked it against the bytes.
    Declared,
    /// The server read the stored file back and hashed it (files published before LFUSYS
    /// verified files by their CRC-64/NVME).
    Server,
    /// The workers hashed the bytes in the order they received them, chunk after chunk (a tus
    /// upload, whose client declares no checksum of the file): it names the bytes the server
    /// stored, which it verified by their CRC-64/NVME.
    Received,
}

impl Sha256Source {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Declared => "declared",
            Self::Server => "server",
            Self::Received => "received",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client" => Some(Self::Client),
            "declared" => Some(Self::Declared),
            "server" => Some(Self::Server),
            "received" => Some(Self::Received),
            _ => None,
        }
    }
}

/// The page cursor of a file listing: where the next page starts (newest first, ties by id).
/// One encoding for every store, so a cursor stays valid whatever store answers.
pub fn encode_cursor(file: &FileRecord) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}:{}", file.created_at_ms, file.file_id))
}

/// The (`created_at_ms`, `file_id`) a cursor of [`encode_cursor`] names.
pub fn decode_cursor(cursor: &str) -> StoreResult<(i64, String)> {
    use base64::Engine as _;
    let bad = || StoreError::Conflict("invalid page cursor".into());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (ms, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((ms.parse().map_err(|_| bad())?, id.to_owned()))
}

/// Result of asking for the right to write one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The caller holds the lease until `lease_until_ms`.
    Claimed { lease_until_ms: i64 },
    /// Already recorded, with this CRC-64/NVME: the caller compares it with the body's to
    /// tell an idempotent retry from another chunk.
    AlreadyStored { crc64nvme: Crc64 },
    /// Another live claim holds the chunk.
    InProgress,
    /// The upload is not in a state that takes chunks.
    NotAccepting(UploadState),
}

/// Result of recording one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Recorded. `completed_set` is true for exactly one commit per upload: the one that
    /// moved it from uploading to assembling.
    Stored {
        received: u32,
        completed_set: bool,
    },
    AlreadyStored {
        received: u32,
    },
    /// Recorded already with another CRC-64/NVME.
    DigestConflict,
    /// The claim was lost or the upload no longer takes chunks.
    NotAccepting(UploadState),
}

/// Result of declaring a deferred length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeDeclared {
    /// The upload is not uploading with its length deferred (or does not exist).
    NotApplied,
    /// Set; `completed_set` when every chunk was recorded already and the upload moved to
    /// assembling.
    Applied { completed_set: bool },
}

/// A page of an owner's files, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePage {
    pub items: Vec<FileRecord>,
    pub next_cursor: Option<String>,
}

#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Inserts a new upload; `Conflict` if the id exists.
    async fn insert_upload(&self, upload: &UploadRecord) -> StoreResult<()>;
    async fn get_upload(&self, upload_id: &UploadId) -> StoreResult<Option<UploadRecord>>;
    /// The owner's uploads in the given states, newest first.
    async fn list_uploads(
        &self,
        owner_id: &UserId,
        states: &[UploadState],
    ) -> StoreResult<Vec<UploadRecord>>;
    /// Recorded chunks of an upload, ascending by index.
    async fn list_chunks(&self, upload_id: &UploadId) -> StoreResult<Vec<ChunkRecord>>;
    /// One recorded chunk, `None` when it is not recorded.
    async fn get_chunk(&self, upload_id: &UploadId, index: u32)
        -> StoreResult<Option<ChunkRecord>>;

    /// How many chunks of an upload are recorded (a store may keep a count rather than list).
    async fn received_count(&self, upload_id: &UploadId) -> StoreResult<u32> {
        Ok(u32::try_from(self.list_chunks(upload_id).await?.len()).unwrap_or(u32::MAX))
    }

    /// Brings the count that completes an upload up to date with its recorded chunks, and
    /// answers it. A store that records and counts a chunk in two steps (DynamoDB) may lag
    /// behind after a writer died between them; the others count as they record.
    async fn recount(&self, upload_id: &UploadId) -> StoreResult<u32> {
        self.received_count(upload_id).await
    }

    /// Takes (or, with the same `claim_id`, renews) the exclusive lease on one chunk, only
    /// while the upload is uploading and the chunk is not recorded.
    async fn claim_chunk(
        &self,
        upload_id: &UploadId,
        index: u32,
        claim_id: &ClaimId,
        lease: Duration,
        now_ms: i64,
    ) -> StoreResult<ClaimOutcome>;

    /// Drops a claim if `claim_id` still holds it.
    async fn release_chunk(
        &self,
        upload_id: &UploadId,
        index: u32,
        claim_id: &ClaimId,
    ) -> StoreResult<()>;

    /// Atomically records a chunk written under `claim_id` (which must still hold it) and, when
    /// it is the last missing one, moves the upload from uploading to assembling (and so into
    /// the outbox, see [`list_unsent_jobs`](Self::list_unsent_jobs)).
    async fn commit_chunk(
        &self,
        upload_id: &UploadId,
        chunk: &ChunkRecord,
        claim_id: &ClaimId,
        now_ms: i64,
    ) -> StoreResult<CommitOutcome>;

    /// Records the whole-file checksums the client declared (`sha256` replaces one declared at
    /// creation only if that was `None`), only while the upload is uploading and has no
    /// `crc64nvme` yet. Returns whether it applied.
    async fn declare_checksums(
        &self,
        upload_id: &UploadId,
        sha256: Option<&str>,
        crc64nvme: Crc64,
        now_ms: i64,
    ) -> StoreResult<bool>;

    /// Sets the length of an upload created with a deferred one: `size` and `total_chunks`,
    /// only while it is uploading with its length deferred. When `total_chunks` chunks are
    /// recorded already, the same write moves it to assembling (and into the outbox of
    /// jobs), as the commit that completes a set does.
    async fn declare_size(
        &self,
        upload_id: &UploadId,
        size: u64,
        total_chunks: u32,
        now_ms: i64,
    ) -> StoreResult<SizeDeclared>;

    /// Conditional state change: applies only if the current state is one of `from`.
    /// Returns whether it applied. A move to assembling puts the upload into the outbox of
    /// jobs; a move to cancelled, expired or failed into the outbox of releases.
    async fn transition(
        &self,
        upload_id: &UploadId,
        from: &[UploadState],
        to: UploadState,
        error: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<bool>;

    /// Uploads still uploading whose `expires_at_ms` is before `now_ms`.
    async fn list_expired(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<UploadRecord>>;
    /// Uploads in assembling state, their job sent, not updated since `before_ms` (a job the
    /// queue lost), oldest first.
    async fn list_stale_assembling(
        &self,
        before_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<UploadRecord>>;
    /// The outbox: assembling uploads whose assembly job is not known to be sent, oldest first.
    /// The write that moves an upload to assembling puts it here, in the same atomic step, so a
    /// crash before its job is sent leaves it here for a relay to send.
    async fn list_unsent_jobs(&self, limit: u32) -> StoreResult<Vec<UploadRecord>>;
    /// Takes an upload out of the outbox once its job is sent; nothing if it is not in it.
    async fn mark_job_sent(&self, upload_id: &UploadId) -> StoreResult<()>;
    /// The outbox of releases: uploads whose storage (blob upload, committed blob, chunk
    /// records) is to be released, oldest first. A move to cancelled, expired or failed, and the
    /// deletion of the File an upload became, put the upload here in the same atomic write, so
    /// a crash before the release leaves it here for the sweeper.
    async fn list_pending_releases(&self, limit: u32) -> StoreResult<Vec<UploadRecord>>;
    /// Takes an upload out of the outbox of releases once its storage is released; nothing if
    /// it is not in it.
    async fn mark_released(&self, upload_id: &UploadId) -> StoreResult<()>;
    /// Drops the chunk records of a finished upload (they are not needed any more).
    async fn delete_chunks(&self, upload_id: &UploadId) -> StoreResult<()>;

    /// Atomically inserts the File and moves its upload assembling → completed.
    /// Idempotent: if the File exists, returns it unchanged.
    async fn publish_file(&self, file: &FileRecord, now_ms: i64) -> StoreResult<FileRecord>;
    async fn get_file(&self, file_id: &FileId) -> StoreResult<Option<FileRecord>>;
    async fn list_files(
        &self,
        owner_id: &UserId,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<FilePage>;
    /// Deletes a file record and puts its upload into the outbox of releases, in one atomic
    /// write; returns whether it existed.
    async fn delete_file(&self, file_id: &FileId, now_ms: i64) -> StoreResult<bool>;

    async fn check(&self) -> StoreResult<()>;
}

// ---------------------------------------------------------------------------------------------
// Auth store (users, refresh tokens)

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: UserId,
    /// Lower-cased email.
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// SHA-256 (hex) of the opaque refresh token; the token itself is never stored.
    pub token_hash: String,
    pub family_id: String,
    pub user_id: UserId,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The old token was live; it is now spent and `new` is stored.
    Rotated { user_id: UserId },
    /// The old token was already spent: the whole family is now revoked.
    Reused { family_id: String },
    /// Unknown, expired or revoked.
    Invalid,
}

#[async_trait]
pub trait AuthStore: Send + Sync + 'static {
    /// `Conflict` when the email is taken.
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>>;
    async fn user_by_id(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>>;
    async fn insert_refresh(&self, token: &RefreshRecord) -> StoreResult<()>;
    /// Atomically spends `old_hash` and stores `new` in the same family.
    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new: &RefreshRecord,
        now_ms: i64,
    ) -> StoreResult<RotateOutcome>;
    /// Family of a token (any state) — used by logout.
    async fn family_of(&self, token_hash: &str) -> StoreResult<Option<String>>;
    async fn revoke_family(&self, family_id: &str) -> StoreResult<()>;
    /// Whether a family is revoked (access tokens of a revoked family are refused).
    async fn is_family_revoked(&self, family_id: &str) -> StoreResult<bool>;
    async fn check(&self) -> StoreResult<()>;
}

// ---------------------------------------------------------------------------------------------
// Job queue

/// A received message; invisible to other consumers until its visibility runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedJob {
    pub body: String,
    /// Handle for `extend_visibility` and `delete`.
    pub receipt: String,
    /// 1 on first delivery.
    pub receive_count: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: u64,
}

#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Enqueues `body`. A second send with the same `dedup_id` within the deduplication
    /// window (5 minutes, as SQS FIFO) is accepted and dropped.
    async fn send(&self, dedup_id: &str, body: &str) -> StoreResult<()>;
    /// Waits up to `wait` for a visible message and hides it for `visibility`.
    async fn receive(
        &self,
        wait: Duration,
        visibility: Duration,
    ) -> StoreResult<Option<ReceivedJob>>;
    async fn extend_visibility(&self, receipt: &str, visibility: Duration) -> StoreResult<()>;
    /// Acknowledges a message. A stale receipt (the message was redelivered since) is an error.
    async fn delete(&self, receipt: &str) -> StoreResult<()>;
    async fn depth(&self) -> StoreResult<QueueDepth>;
    async fn check(&self) -> StoreResult<()>;

    /// Whether a receive that the caller stops waiting for may still take a message (SQS
    /// answers the long poll already sent; the message then stays invisible for the whole
    /// visibility timeout). A consumer that stops should then let its receive finish and hand
    /// back what it got.
    fn receives_outlive_their_caller(&self) -> bool {
        false
    }

    /// The dead-letter queue where the backend moves a message after too many receives
    /// (SQS redrive policy), for its consumer to settle; `None` when the backend has none.
    fn dead_letters(&self) -> Option<std::sync::Arc<dyn JobQueue>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use proptest::prelude::*;

    use super::*;

    fn file_at(created_at_ms: i64, file_id: &str) -> FileRecord {
        FileRecord {
            file_id: file_id.into(),
            owner_id: "o".into(),
            upload_id: "u".into(),
            name: "n".into(),
            size: 1,
            content_type: "application/octet-stream".into(),
            sha256: None,
            sha256_source: None,
            crc64nvme: None,
            blob_key: "files/x".into(),
            created_at_ms,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// A page cursor a client sends back is parsed or refused (`Conflict`, a 400), never
        /// a panic; the cursors a store writes read back to where they point.
        #[test]
        fn page_cursors_round_trip_and_anything_else_is_refused(
            ms in any::<i64>(),
            id in "[0-9a-f-]{1,40}",
            text in any::<String>(),
        ) {
            let cursor = encode_cursor(&file_at(ms, &id));
            prop_assert_eq!(decode_cursor(&cursor).unwrap(), (ms, id));
            match decode_cursor(&text) {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => prop_assert!(false, "{text:?}: {e:?}"),
            }
        }
    }

    #[test]
    fn a_full_disk_is_its_own_error() {
        for e in [
            std::io::Error::from_raw_os_error(28),
            std::io::Error::from_raw_os_error(122),
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        ] {
            let e = StoreError::from(e);
            assert!(matches!(e, StoreError::Full { .. }), "{e:?}");
        }
        let other = StoreError::from(std::io::Error::from_raw_os_error(5));
        assert!(matches!(other, StoreError::Other { .. }), "{other:?}");
    }

    #[test]
    fn store_errors_keep_their_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "blobs/ is read-only");
        let e = StoreError::from(io);
        assert!(matches!(e, StoreError::Other { .. }), "{e:?}");
        let cause = e.source().expect("the I/O error is kept");
        assert_eq!(cause.to_string(), "blobs/ is read-only");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());

        let e = StoreError::unavailable_from("S3 UploadPart", std::io::Error::other("timed out"));
        assert_eq!(e.to_string(), "storage unavailable: S3 UploadPart");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("timed out")
        );
        assert!(StoreError::unavailable("busy").source().is_none());
    }
}
