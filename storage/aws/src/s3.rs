//! S3 blob store: one multipart upload per upload session, verified as a whole by its
//! CRC-64/NVME without a byte read back.
//!
//! - `begin_upload` creates a multipart upload (checksum algorithm CRC-64/NVME, checksum type
//!   `FULL_OBJECT`) at the object key the upload's File will have (`files/{file id}`, derived
//!   from the upload id), so assembly copies nothing: `CompleteMultipartUpload` makes the parts
//!   the object.
//! - Chunk *i* is part *i+1*, streamed to `UploadPart` with its `Content-Length` through a body
//!   that computes the bytes' CRC-64/NVME as they go (what `write_chunk` answers). With the
//!   chunk's CRC the client declared, that is sent as `x-amz-checksum-crc64nvme` and S3
//!   refuses a body that does not match (`BadDigest` → [`StoreError::DigestMismatch`]);
//!   without, the SDK computes the CRC itself and sends it as a trailer (aws-chunked), so S3
//!   still records every part's checksum. Re-sending a part replaces it.
//! - `complete_upload` lists the parts (`ListParts`) and checks, before completing, that the
//!   parts' checksums as S3 recorded them are the chunks' and combine, in part order, to the
//!   expected whole CRC (not every S3-compatible server verifies a `FULL_OBJECT` checksum;
//!   where the listing shows no part checksums, or cannot be read, as moto's, the chunks'
//!   recorded CRCs are checked instead); then completes with each part's ETag and checksum
//!   and the whole CRC, which S3 verifies too. A mismatch, or S3 refusing the parts, is
//!   [`StoreError::ChecksumMismatch`] and nothing is completed. An upload that was already
//!   completed (`NoSuchUpload` while the object exists) is success. A `200` whose body is an
//!   error is an error (the SDK turns it into a retryable `InternalError`; a response without
//!   an ETag is refused too).
//! - `abort_upload` aborts the handle and every other multipart upload still open on the
//!   upload's key (an orphan of a retried `CreateMultipartUpload`), so nothing is left behind.
//! - Staged pieces (the tus / IETF appends that end inside a chunk) are objects of their own,
//!   `staging/{upload_id}/{index}-{start}` (`PutObject`, whole or not at all), listed by
//!   prefix; the chunk is sent as its part once whole. `abort_upload` deletes them too.
//! - Reads are `GetObject`, with `Range` for partial reads; `presigned_url` signs a `GetObject`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::config::{
    RequestChecksumCalculation, ResponseChecksumValidation, StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::list_parts::ListPartsError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart, Part as S3Part,
};
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures::StreamExt;

use super::{error_code, sdk_error};
use lfusys_core::digest::{
    crc64_base64, crc64_hex, crc64nvme, crc64nvme_of_pieces, parse_crc64_base64, Crc64, Crc64Nvme,
};
use lfusys_core::ids;
use lfusys_core::range::ByteRange;
use storage::{
    BlobStore, ByteStream, ChunkTarget, PartRef, StagedPiece, StoreError, StoreResult, UploadId,
    WrittenChunk,
};

/// S3's limit on the parts of one multipart upload.
pub const MAX_PARTS: u32 = 10_000;
/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// [`BlobStore`] on one S3 bucket.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
}

/// The S3 client for `sdk`: path-style addressing when an endpoint is configured (S3-compatible
/// servers), checksums only where we ask for them (a part without a declared CRC asks for the
/// SDK's, see `write_chunk`), and a long grace for slow chunk bodies.
pub fn client(sdk: &SdkConfig) -> Client {
    let custom_endpoint = sdk.endpoint_url().is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some_and(|v| !v.is_empty());
    let path_style = match std::env::var("LFUSYS_S3_PATH_STYLE").ok().as_deref() {
        Some("true" | "1") => true,
        Some("false" | "0") => false,
        _ => custom_endpoint,
    };
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .stalled_stream_protection(
            StalledStreamProtectionConfig::enabled()
                .grace_period(Duration::from_secs(60))
                .build(),
        )
        .build();
    Client::from_conf(config)
}

impl S3BlobStore {
    pub fn new(sdk: &SdkConfig, bucket: impl Into<String>) -> Self {
        Self::with_client(client(sdk), bucket)
    }

    pub fn with_client(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object key of an upload: the key of the File it becomes.
    pub fn key_for_upload(upload_id: &str) -> String {
        ids::blob_key_for_file(&ids::file_id_for_upload(upload_id))
    }

    /// Every part S3 holds for a multipart upload (paginated, 1,000 a page).
    pub async fn list_parts(&self, key: &str, handle: &str) -> StoreResult<Vec<S3Part>> {
        self.list_all_parts(key, handle)
            .await
            .map_err(|e| match error_code(&e) {
                Some("NoSuchUpload") => StoreError::NotFound("multipart upload".into()),
                _ => sdk_error("S3 ListParts", e),
            })
    }

    async fn list_all_parts(
        &self,
        key: &str,
        handle: &str,
    ) -> Result<Vec<S3Part>, SdkError<ListPartsError>> {
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(handle)
                .set_part_number_marker(marker.clone())
                .send()
                .await?;
            parts.extend(out.parts().iter().cloned());
            match (out.is_truncated(), out.next_part_number_marker()) {
                (Some(true), Some(next)) if marker.as_deref() != Some(next) => {
                    marker = Some(next.to_owned());
                }
                _ => break,
            }
        }
        Ok(parts)
    }

    /// Ids of the multipart uploads open on `key` (paginated).
    pub async fn open_multipart_uploads(&self, key: &str) -> StoreResult<Vec<String>> {
        let mut ids = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(key)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| sdk_error("S3 ListMultipartUploads", e))?;
            ids.extend(
                out.uploads()
                    .iter()
                    .filter(|u| u.key() == Some(key))
                    .filter_map(|u| u.upload_id().map(str::to_owned)),
            );
            let next = (
                out.next_key_marker().map(str::to_owned),
                out.next_upload_id_marker().map(str::to_owned),
            );
            if out.is_truncated() != Some(true)
                || next.0.is_none()
                || (next.0 == key_marker && next.1 == id_marker)
            {
                break;
            }
            (key_marker, id_marker) = next;
        }
        Ok(ids)
    }

    /// The prefix of an upload's staged pieces; with `index`, of one chunk's.
    fn staged_prefix(upload_id: &str, index: Option<u32>) -> String {
        match index {
            Some(index) => format!("staging/{upload_id}/{index:010}-"),
            None => format!("staging/{upload_id}/"),
        }
    }

    /// Keys and sizes of the objects under `prefix` (paginated).
    async fn list_prefix(&self, prefix: &str) -> StoreResult<Vec<(String, u64)>> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| sdk_error("S3 ListObjectsV2", e))?;
            found.extend(out.contents().iter().filter_map(|o| {
                let size = u64::try_from(o.size().unwrap_or_default()).ok()?;
                Some((o.key()?.to_owned(), size))
            }));
            match out.next_continuation_token() {
                Some(next)
                    if out.is_truncated() == Some(true) && token.as_deref() != Some(next) =>
                {
                    token = Some(next.to_owned());
                }
                _ => break,
            }
        }
        Ok(found)
    }

    /// Deletes every object under `prefix`.
    async fn delete_prefix(&self, prefix: &str) -> StoreResult<()> {
        for (key, _) in self.list_prefix(prefix).await? {
            self.delete_blob(&key).await?;
        }
        Ok(())
    }

    async fn object_exists(&self, key: &str) -> StoreResult<bool> {
        match self.blob_size(key).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn check_key(upload_id: &str, blob_key: &str) -> StoreResult<String> {
    let key = S3BlobStore::key_for_upload(upload_id);
    if key == blob_key {
        Ok(key)
    } else {
        Err(StoreError::other(format!(
            "upload {upload_id} is stored at {key}, it cannot be committed to {blob_key}"
        )))
    }
}

/// What went wrong with the body while S3 read it.
#[derive(Debug, Clone)]
enum BodyFault {
    Stream(String),
    Length { expected: u64, actual: u64 },
}

/// A chunk body for the SDK: the request's stream, counted so that it never yields more or
/// fewer bytes than the part's declared length (an error aborts the request instead). The
/// frame that completes the length is held back until the stream has ended, so a body that
/// goes on is refused rather than cut. It computes the CRC-64/NVME of the bytes it hands over,
/// and publishes it in `sent` once the whole body has gone.
struct PartBody {
    inner: Mutex<ByteStream>,
    expected: u64,
    /// Bytes received from the stream.
    received: u64,
    /// Bytes handed to the SDK.
    emitted: u64,
    held: Option<Bytes>,
    done: bool,
    crc: Crc64Nvme,
    sent: Arc<OnceLock<Crc64>>,
    fault: Arc<Mutex<Option<BodyFault>>>,
}

type FrameResult = Result<http_body::Frame<Bytes>, std::io::Error>;

impl PartBody {
    fn new(
        body: ByteStream,
        expected: u64,
        sent: Arc<OnceLock<Crc64>>,
        fault: Arc<Mutex<Option<BodyFault>>>,
    ) -> Self {
        Self {
            inner: Mutex::new(body),
            expected,
            received: 0,
            emitted: 0,
            held: None,
            done: false,
            crc: Crc64Nvme::new(),
            sent,
            fault,
        }
    }

    fn fail(&mut self, fault: BodyFault) -> Poll<Option<FrameResult>> {
        let text = match &fault {
            BodyFault::Stream(e) => e.clone(),
            BodyFault::Length { expected, actual } => {
                format!("the body has {actual} bytes, the part {expected}")
            }
        };
        if let Ok(mut slot) = self.fault.lock() {
            slot.get_or_insert(fault);
        }
        self.done = true;
        self.held = None;
        Poll::Ready(Some(Err(std::io::Error::other(text))))
    }

    fn emit(&mut self, bytes: Bytes) -> Poll<Option<FrameResult>> {
        self.emitted += bytes.len() as u64;
        Poll::Ready(Some(Ok(http_body::Frame::data(bytes))))
    }
}

impl http_body::Body for PartBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let polled = match self.inner.get_mut() {
                Ok(stream) => stream.as_mut().poll_next(cx),
                Err(_) => return self.fail(BodyFault::Stream("body lock poisoned".into())),
            };
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    if bytes.is_empty() {
                        continue;
                    }
                    let received = self.received + bytes.len() as u64;
                    if received > self.expected {
                        let expected = self.expected;
                        return self.fail(BodyFault::Length {
                            expected,
                            actual: received,
                        });
                    }
                    self.received = received;
                    self.crc.update(&bytes);
                    if received < self.expected {
                        return self.emit(bytes);
                    }
                    // The last bytes: hand them over once the stream says it has ended.
                    self.held = Some(bytes);
                }
                Poll::Ready(Some(Err(e))) => return self.fail(BodyFault::Stream(e.to_string())),
                Poll::Ready(None) => {
                    if self.received != self.expected {
                        let (expected, actual) = (self.expected, self.received);
                        return self.fail(BodyFault::Length { expected, actual });
                    }
                    self.done = true;
                    let _ = self.sent.set(self.crc.finish());
                    return match self.held.take() {
                        Some(last) => self.emit(last),
                        None => Poll::Ready(None),
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.held.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.expected.saturating_sub(self.emitted))
    }
}

/// S3's answers to a part whose checksum does not match its body.
/// What went wrong with a body the SDK read, as the store's error, if anything did.
fn body_fault(fault: &Mutex<Option<BodyFault>>) -> Option<StoreError> {
    let recorded = fault.lock().ok().and_then(|f| f.clone())?;
    Some(match recorded {
        BodyFault::Stream(e) => StoreError::body(e),
        BodyFault::Length { expected, actual } => StoreError::LengthMismatch { expected, actual },
    })
}

fn is_digest_mismatch(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "BadDigest"
                | "InvalidDigest"
                | "XAmzContentChecksumMismatch"
                | "XAmzContentSHA256Mismatch"
        )
    )
}

/// S3's refusals of a completion whose parts are not the ones, or do not make the object, it
/// was told: permanent, unlike the transient errors `sdk_error` maps.
fn is_refused_checksum(code: Option<&str>, message: Option<&str>) -> bool {
    let about_checksums = message.is_some_and(|m| m.to_ascii_lowercase().contains("checksum"));
    match code {
        Some("InvalidPart") => true,
        Some("InvalidRequest" | "InvalidArgument") => about_checksums,
        code => is_digest_mismatch(code),
    }
}

fn mismatch(detail: String) -> StoreError {
    StoreError::ChecksumMismatch(detail)
}

/// Checks, before completing, the parts S3 lists for the upload against the file whose
/// CRC-64/NVME is `whole`: each part to complete (`parts`, or without them every listed part)
/// must be listed, with the checksum S3 recorded for it when it took the part equal to the
/// chunk's, and those checksums must combine, in part order, to `whole`. A server that lists
/// no part checksums (moto) cannot be checked this way; then the recorded chunks' CRCs must at
/// least combine to `whole`, and the rest is the server's own check at completion.
fn check_listed_parts(parts: &[PartRef], listed: &[S3Part], whole: Crc64) -> StoreResult<()> {
    let by_number: HashMap<i32, &S3Part> = listed
        .iter()
        .filter_map(|p| Some((p.part_number()?, p)))
        .collect();
    let mut completing: Vec<(i32, Option<&PartRef>)> = if parts.is_empty() {
        by_number.keys().map(|&n| (n, None)).collect()
    } else {
        parts
            .iter()
            .map(|p| (p.index as i32 + 1, Some(p)))
            .collect()
    };
    completing.sort_by_key(|&(n, _)| n);
    let mut pieces = Vec::with_capacity(completing.len());
    let mut listed_all = true;
    for (number, part) in completing {
        let chunk = number - 1;
        let Some(stored) = by_number.get(&number) else {
            return Err(mismatch(format!("part {chunk}: S3 holds no part {number}")));
        };
        let Some(text) = stored.checksum_crc64_nvme() else {
            listed_all = false;
            continue;
        };
        let crc = parse_crc64_base64(text).ok_or_else(|| {
            StoreError::other(format!(
                "S3 listed {text:?} as the CRC-64/NVME of part {number}"
            ))
        })?;
        let size = match part {
            Some(p) if p.crc64nvme != crc => {
                return Err(mismatch(format!(
                    "part {chunk}: the bytes S3 holds as part {number} have CRC-64/NVME {}, the chunk {}",
                    crc64_hex(crc),
                    crc64_hex(p.crc64nvme)
                )));
            }
            Some(p) => p.size,
            None => stored.size().unwrap_or_default().max(0) as u64,
        };
        pieces.push((crc, size));
    }
    if listed_all {
        let stored = crc64nvme_of_pieces(pieces);
        if stored != whole {
            return Err(mismatch(format!(
                "the parts S3 holds make CRC-64/NVME {}, expected {}",
                crc64_hex(stored),
                crc64_hex(whole)
            )));
        }
    } else if !parts.is_empty() {
        check_recorded_parts(parts, whole)?;
    }
    Ok(())
}

/// Checks that the chunks' CRCs as they were recorded combine, in index order, to `whole`:
/// what is left to check before completing when the server's listing tells nothing.
fn check_recorded_parts(parts: &[PartRef], whole: Crc64) -> StoreResult<()> {
    let mut sorted: Vec<&PartRef> = parts.iter().collect();
    sorted.sort_by_key(|p| p.index);
    let recorded = crc64nvme_of_pieces(sorted.iter().map(|p| (p.crc64nvme, p.size)));
    if recorded != whole {
        return Err(mismatch(format!(
            "the parts' CRC-64/NVME combine to {}, expected {}",
            crc64_hex(recorded),
            crc64_hex(whole)
        )));
    }
    Ok(())
}

/// A listing the SDK could not decode: a success status whose body is no `ListPartsResult`.
fn is_unreadable_listing(err: &SdkError<ListPartsError>) -> bool {
    match err {
        SdkError::ServiceError(e) => e.raw().status().is_success() && e.err().code().is_none(),
        SdkError::ResponseError(_) => true,
        _ => false,
    }
}

fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

#[async_trait]
impl BlobStore for S3BlobStore {
    /// A multipart upload has no size: the parts listed at completion make the object.
    async fn set_upload_size(&self, _upload_id: &UploadId, _size: u64) -> StoreResult<()> {
        Ok(())
    }

    async fn begin_upload(&self, upload_id: &UploadId, _size: u64) -> StoreResult<Option<String>> {
        let key = Self::key_for_upload(upload_id);
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_type(ChecksumType::FullObject)
            .send()
            .await
            .map_err(|e| sdk_error("S3 CreateMultipartUpload", e))?;
        out.upload_id()
            .filter(|id| !id.is_empty())
            .map(|id| Some(id.to_owned()))
            .ok_or_else(|| StoreError::unavailable("S3 returned no multipart upload id"))
    }

    async fn write_chunk(
        &self,
        target: &ChunkTarget,
        body: ByteStream,
    ) -> StoreResult<WrittenChunk> {
        if target.index >= MAX_PARTS {
            return Err(StoreError::Conflict(format!(
                "chunk {} is past S3's {MAX_PARTS} parts",
                target.index
            )));
        }
        let Some(handle) = target.handle.as_deref() else {
            return Err(StoreError::NotFound("multipart upload (no handle)".into()));
        };
        let key = Self::key_for_upload(&target.upload_id);
        let fault = Arc::new(Mutex::new(None));
        let sent = Arc::new(OnceLock::new());
        let part_body = PartBody::new(body, target.len, Arc::clone(&sent), Arc::clone(&fault));
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(handle)
            .part_number(target.index as i32 + 1)
            .content_length(target.len as i64)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .body(SdkByteStream::from_body_1_x(part_body));
        // With a declared CRC, S3 checks the body against it and refuses a mismatch. Without
        // one: the client computes checksums only for operations that require one
        // (`WhenRequired`); for this request it computes the CRC-64/NVME of the body as the body
        // streams and sends it as a trailer (aws-chunked, `STREAMING-UNSIGNED-PAYLOAD-TRAILER`),
        // which S3 checks and records for the part.
        let result = if let Some(declared) = target.crc64nvme {
            request
                .checksum_crc64_nvme(crc64_base64(declared))
                .send()
                .await
        } else {
            let calculate = aws_sdk_s3::config::Builder::default()
                .request_checksum_calculation(RequestChecksumCalculation::WhenSupported);
            request.customize().config_override(calculate).send().await
        };
        if let Some(e) = body_fault(&fault) {
            return Err(e);
        }
        let out = result.map_err(|e| match error_code(&e) {
            code if is_digest_mismatch(code) => StoreError::DigestMismatch,
            Some("NoSuchUpload") => StoreError::NotFound("multipart upload".into()),
            _ => sdk_error("S3 UploadPart", e),
        })?;
        let crc = match sent.get() {
            Some(&crc) => crc,
            // An empty body the SDK had no need to read.
            None if target.len == 0 => crc64nvme(&[]),
            None => {
                return Err(StoreError::unavailable(
                    "S3 UploadPart answered before the whole body was sent",
                ))
            }
        };
        // A server that takes a part without checking its declared checksum (moto) keeps it
        // under a checksum that is not its body's.
        if target.crc64nvme.is_some_and(|declared| declared != crc) {
            return Err(StoreError::DigestMismatch);
        }
        Ok(WrittenChunk {
            crc64nvme: crc,
            etag: out.e_tag().filter(|t| !t.is_empty()).map(str::to_owned),
        })
    }

    async fn complete_upload(
        &self,
        upload_id: &UploadId,
        handle: Option<&str>,
        parts: &[PartRef],
        blob_key: &str,
        whole_crc64nvme: Crc64,
    ) -> StoreResult<()> {
        let key = check_key(upload_id, blob_key)?;
        let Some(handle) = handle else {
            // Nothing to complete; done before only if the object is there.
            return if self.object_exists(&key).await? {
                Ok(())
            } else {
                Err(StoreError::NotFound(format!(
                    "multipart upload of {upload_id} (no handle)"
                )))
            };
        };
        let listed = match self.list_all_parts(&key, handle).await {
            Ok(listed) => Some(listed),
            // Completed before (a redelivered job), or aborted: the object tells which.
            Err(e) if error_code(&e) == Some("NoSuchUpload") => {
                return if self.object_exists(&key).await? {
                    Ok(())
                } else {
                    Err(StoreError::NotFound(format!(
                        "multipart upload of {upload_id}"
                    )))
                };
            }
            // moto answers with a document the SDK cannot read (rooted at `ListPartsResponse`,
            // not S3's `ListPartsResult`): then the recorded parts are all there is to check.
            Err(e) if !parts.is_empty() && is_unreadable_listing(&e) => None,
            Err(e) => return Err(sdk_error("S3 ListParts", e)),
        };
        match &listed {
            Some(listed) => check_listed_parts(parts, listed, whole_crc64nvme)?,
            None => check_recorded_parts(parts, whole_crc64nvme)?,
        }
        let mut completed: Vec<CompletedPart> = if parts.is_empty() {
            listed
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|p| {
                    CompletedPart::builder()
                        .set_part_number(p.part_number())
                        .set_e_tag(p.e_tag().map(str::to_owned))
                        .set_checksum_crc64_nvme(p.checksum_crc64_nvme().map(str::to_owned))
                        .build()
                })
                .collect()
        } else {
            parts
                .iter()
                .map(|p| {
                    CompletedPart::builder()
                        .part_number(p.index as i32 + 1)
                        .set_e_tag(p.etag.clone())
                        .checksum_crc64_nvme(crc64_base64(p.crc64nvme))
                        .build()
                })
                .collect()
        };
        completed.sort_by_key(CompletedPart::part_number);
        let result = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(handle)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .checksum_crc64_nvme(crc64_base64(whole_crc64nvme))
            .checksum_type(ChecksumType::FullObject)
            .send()
            .await;
        match result {
            Ok(out) if out.e_tag().is_some_and(|t| !t.is_empty()) => Ok(()),
            // A 200 without the completion's ETag is not a completion (its body was an error).
            Ok(_) => Err(StoreError::unavailable(
                "S3 CompleteMultipartUpload answered without an ETag",
            )),
            Err(e) => match error_code(&e) {
                // Completed before (a redelivered job), or aborted: the object tells which.
                Some("NoSuchUpload") => {
                    if self.object_exists(&key).await? {
                        Ok(())
                    } else {
                        Err(StoreError::NotFound(format!(
                            "multipart upload of {upload_id}"
                        )))
                    }
                }
                code if is_refused_checksum(code, e.message()) => Err(mismatch(format!(
                    "S3 refused the parts: {}",
                    aws_smithy_types::error::display::DisplayErrorContext(&e)
                ))),
                Some("InvalidPartOrder" | "EntityTooSmall" | "InvalidRequest") => {
                    Err(StoreError::Conflict(format!(
                        "S3 refused the parts: {}",
                        aws_smithy_types::error::display::DisplayErrorContext(&e)
                    )))
                }
                _ => Err(sdk_error("S3 CompleteMultipartUpload", e)),
            },
        }
    }

    async fn abort_upload(&self, upload_id: &UploadId, handle: Option<&str>) -> StoreResult<()> {
        let key = Self::key_for_upload(upload_id);
        let mut handles = self.open_multipart_uploads(&key).await?;
        if let Some(handle) = handle.filter(|h| !handles.iter().any(|open| open == h)) {
            handles.push(handle.to_owned());
        }
        for h in handles {
            match self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(&h)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if error_code(&e) == Some("NoSuchUpload") => {}
                Err(e) => return Err(sdk_error("S3 AbortMultipartUpload", e)),
            }
        }
        self.delete_prefix(&Self::staged_prefix(upload_id, None))
            .await
    }

    async fn stage_piece(
        &self,
        upload_id: &UploadId,
        index: u32,
        start: u64,
        len: u64,
        body: ByteStream,
    ) -> StoreResult<()> {
        let key = format!("{}{start:020}", Self::staged_prefix(upload_id, Some(index)));
        let fault = Arc::new(Mutex::new(None));
        let sent = Arc::new(OnceLock::new());
        let piece = PartBody::new(body, len, sent, Arc::clone(&fault));
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_length(len as i64)
            .body(SdkByteStream::from_body_1_x(piece))
            .send()
            .await;
        if let Some(e) = body_fault(&fault) {
            return Err(e);
        }
        result.map_err(|e| sdk_error("S3 PutObject (staged piece)", e))?;
        Ok(())
    }

    async fn staged_pieces(
        &self,
        upload_id: &UploadId,
        index: u32,
    ) -> StoreResult<Vec<StagedPiece>> {
        let prefix = Self::staged_prefix(upload_id, Some(index));
        let mut pieces: Vec<StagedPiece> = self
            .list_prefix(&prefix)
            .await?
            .into_iter()
            .filter_map(|(key, len)| {
                let start = key.strip_prefix(&prefix)?.parse().ok()?;
                Some(StagedPiece { start, len })
            })
            .collect();
        pieces.sort();
        Ok(pieces)
    }

    async fn read_staged(
        &self,
        upload_id: &UploadId,
        index: u32,
        piece: StagedPiece,
    ) -> StoreResult<ByteStream> {
        let key = format!(
            "{}{:020}",
            Self::staged_prefix(upload_id, Some(index)),
            piece.start
        );
        self.read_blob(&key, None).await
    }

    async fn discard_staged(&self, upload_id: &UploadId, index: u32) -> StoreResult<()> {
        self.delete_prefix(&Self::staged_prefix(upload_id, Some(index)))
            .await
    }

    async fn blob_size(&self, blob_key: &str) -> StoreResult<u64> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(blob_key)
            .send()
            .await
        {
            Ok(out) => Ok(out.content_length().unwrap_or_default().max(0) as u64),
            Err(e)
                if e.as_service_error().is_some_and(
                    aws_sdk_s3::operation::head_object::HeadObjectError::is_not_found,
                ) =>
            {
                Err(StoreError::NotFound(blob_key.to_owned()))
            }
            Err(e) if error_code(&e) == Some("NoSuchKey") => {
                Err(StoreError::NotFound(blob_key.to_owned()))
            }
            Err(e) => Err(sdk_error("S3 HeadObject", e)),
        }
    }

    async fn read_blob(&self, blob_key: &str, range: Option<ByteRange>) -> StoreResult<ByteStream> {
        if let Some(r) = range {
            if r.start > r.end {
                return Err(StoreError::other(format!(
                    "range {}-{} is empty",
                    r.start, r.end
                )));
            }
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(blob_key)
            .set_range(range.map(|r| format!("bytes={}-{}", r.start, r.end)))
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error()
                    .is_some_and(aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key)
                {
                    StoreError::NotFound(blob_key.to_owned())
                } else {
                    sdk_error("S3 GetObject", e)
                }
            })?;
        if let Some(r) = range {
            let len = out.content_length().unwrap_or_default().max(0) as u64;
            if len != r.len() {
                return Err(StoreError::other(format!(
                    "range {}-{} is outside the blob",
                    r.start, r.end
                )));
            }
        }
        let reader = out.body.into_async_read();
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024)
            .map(|r| r.map_err(io_error));
        Ok(Box::pin(stream))
    }

    async fn delete_blob(&self, blob_key: &str) -> StoreResult<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(blob_key)
            .send()
            .await
            .map_err(|e| sdk_error("S3 DeleteObject", e))?;
        Ok(())
    }

    async fn check(&self) -> StoreResult<()> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                Err(match status {
                    Some(404) => StoreError::unavailable(format!(
                        "S3 bucket {} does not exist (create it, or start with --create-resources)",
                        self.bucket
                    )),
                    Some(403) => StoreError::unavailable(format!(
                        "access to S3 bucket {} is denied: check the AWS credentials and their permissions",
                        self.bucket
                    )),
                    Some(400 | 401) => StoreError::unavailable(format!(
                        "S3 refused the request for bucket {}: check the AWS credentials and region",
                        self.bucket
                    )),
                    _ => sdk_error(&format!("S3 HeadBucket {}", self.bucket), e),
                })
            }
        }
    }

    async fn presigned_url(
        &self,
        blob_key: &str,
        expires_in: Duration,
        content_disposition: &str,
        content_type: &str,
    ) -> StoreResult<Option<String>> {
        let config = PresigningConfig::expires_in(expires_in)
            .map_err(|e| StoreError::other_from(format!("presigning: {e}"), e))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(blob_key)
            .response_content_disposition(content_disposition)
            .set_response_content_type(Some(content_type.to_owned()).filter(|c| !c.is_empty()))
            .presigned(config)
            .await
            .map_err(|e| sdk_error("S3 presigning", e))?;
        Ok(Some(request.uri().to_owned()))
    }
}

/// Creates the bucket when it is missing, with a lifecycle rule that aborts multipart uploads
/// left incomplete for 7 days (a safety net under the sweeper; ignored by servers without
/// lifecycle support).
pub async fn create_bucket(sdk: &SdkConfig, bucket: &str) -> StoreResult<()> {
    let client = client(sdk);
    if client.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    let mut req = client.create_bucket().bucket(bucket);
    let region = sdk.region().map(ToString::to_string).unwrap_or_default();
    if !region.is_empty() && region != "us-east-1" {
        req = req.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                    region.as_str(),
                ))
                .build(),
        );
    }
    match req.send().await {
        Ok(_) => {}
        Err(e)
            if matches!(
                error_code(&e),
                Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
            ) => {}
        Err(e) => return Err(sdk_error(&format!("S3 CreateBucket {bucket}"), e)),
    }
    let rule = aws_sdk_s3::types::LifecycleRule::builder()
        .id("lfusys-abort-incomplete-multipart-uploads")
        .status(aws_sdk_s3::types::ExpirationStatus::Enabled)
        .filter(
            aws_sdk_s3::types::LifecycleRuleFilter::builder()
                .prefix("")
                .build(),
        )
        .abort_incomplete_multipart_upload(
            aws_sdk_s3::types::AbortIncompleteMultipartUpload::builder()
                .days_after_initiation(7)
                .build(),
        )
        .build()
        .map_err(|e| StoreError::other_from(format!("lifecycle rule: {e}"), e))?;
    let lifecycle = aws_sdk_s3::types::BucketLifecycleConfiguration::builder()
        .rules(rule)
        .build()
        .map_err(|e| StoreError::other_from(format!("lifecycle configuration: {e}"), e))?;
    if let Err(e) = client
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(lifecycle)
        .send()
        .await
    {
        tracing::warn!(%bucket, error = %aws_smithy_types::error::display::DisplayErrorContext(&e), "could not set the bucket's lifecycle rule");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn listed(number: i32, data: &[u8], with_checksum: bool) -> S3Part {
        S3Part::builder()
            .part_number(number)
            .e_tag(format!("\"etag-{number}\""))
            .size(data.len() as i64)
            .set_checksum_crc64_nvme(with_checksum.then(|| crc64_base64(crc64nvme(data))))
            .build()
    }

    fn recorded(index: u32, data: &[u8]) -> PartRef {
        PartRef {
            index,
            size: data.len() as u64,
            crc64nvme: crc64nvme(data),
            etag: Some(format!("\"etag-{}\"", index + 1)),
        }
    }

    fn detail(result: StoreResult<()>) -> String {
        match result {
            Err(StoreError::ChecksumMismatch(detail)) => detail,
            other => panic!("{other:?}"),
        }
    }

    /// The parts S3 lists are checked one by one against the chunks, then together against
    /// the whole file, before anything is completed.
    #[test]
    fn listed_parts_must_be_the_chunks_and_make_the_file() {
        let (a, b) = (b"first chunk".as_slice(), b"second chunk".as_slice());
        let whole = crc64nvme(&[a, b].concat());
        let parts = [recorded(0, a), recorded(1, b)];
        let stored = [listed(1, a, true), listed(2, b, true)];
        check_listed_parts(&parts, &stored, whole).unwrap();
        check_listed_parts(&[], &stored, whole).unwrap();
        // Each chunk at the other's place.
        let swapped = [listed(1, b, true), listed(2, a, true)];
        let d = detail(check_listed_parts(&parts, &swapped, whole));
        assert!(d.starts_with("part 0: "), "{d}");
        assert!(detail(check_listed_parts(&[], &swapped, whole)).contains("expected"));
        assert!(detail(check_listed_parts(&parts, &stored, whole ^ 1)).contains("expected"));
        assert!(detail(check_listed_parts(&parts, &stored[..1], whole)).contains("no part 2"));
        // A listing without part checksums: the recorded CRCs must still make the file.
        let bare = [listed(1, a, false), listed(2, b, false)];
        check_listed_parts(&parts, &bare, whole).unwrap();
        assert!(detail(check_listed_parts(&parts, &bare, whole ^ 1)).contains("combine"));
        check_recorded_parts(&parts, whole).unwrap();
    }

    #[test]
    fn refusals_of_the_parts_are_told_from_other_errors() {
        assert!(is_refused_checksum(Some("InvalidPart"), None));
        assert!(is_refused_checksum(Some("BadDigest"), None));
        assert!(is_refused_checksum(
            Some("InvalidRequest"),
            Some("The full-object Checksum you specified did not match")
        ));
        assert!(!is_refused_checksum(
            Some("InvalidRequest"),
            Some("something else")
        ));
        assert!(!is_refused_checksum(Some("InternalError"), None));
        assert!(!is_refused_checksum(None, None));
    }
}
