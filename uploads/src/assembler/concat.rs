//! Assembling a final upload (tus `concatenation`; `sessions::domain::concat`): the bytes of
//! its partial uploads, in order, become the final's chunks.
//!
//! 1. Each partial's blob is committed as its own assembly would commit it (its chunks' CRCs
//!    combined, the store verifying the parts at their places against them), so that what is
//!    read next is what the partial's workers verified chunk by chunk.
//! 2. The partials' blobs are read one after the other, cut at the final's chunk boundaries
//!    and written to its chunks' places; every byte is hashed on the way into the file's
//!    SHA-256 (the partials were hashed apart, and SHA-256 does not combine) and the store
//!    computes each chunk's CRC as it writes it.
//! 3. The final's blob is committed against the CRC of the chunks written.
//!
//! This reads and writes every byte once more, on the server, and holds the bytes twice until
//! the File is published and the partials are released: the cost of a protocol that names a
//! file's partials only after their bytes were sent (docs/protocol.md, "Parallel uploads").
//! A job redelivered after the final's commit (a crash before its File was published) finds
//! the blob committed and reads it once to hash it again, rather than copy onto a blob upload
//! that no longer exists.

use std::sync::{Arc, Mutex, PoisonError};

use futures::{StreamExt, TryStreamExt};
use lfusys_core::digest::{crc64nvme_of_pieces, to_hex, Crc64, Crc64Nvme};
use lfusys_core::ids::UploadId;
use lfusys_core::plan::UploadPlan;
use lfusys_core::state::UploadState;
use sessions_api::proto::Assembly;
use sha2::{Digest, Sha256};
use storage::{ByteStream, ChunkTarget, PartRef, StoreError};

use super::{Assembler, Retry};
use crate::streams::Splitter;

/// The whole file's CRC-64/NVME and SHA-256 (hex) once the final's blob is committed, or why
/// the upload fails.
type Assembled = Result<(Crc64, String), String>;

/// Steps 1–3 for the final upload of `assembly`.
pub(super) async fn assemble(a: &Assembler, assembly: &Assembly) -> Result<Assembled, Retry> {
    let upload = assembly.upload.clone().unwrap_or_default();
    let blob = a.state.blob();
    if let Ok(size) = blob.blob_size(&assembly.blob_key).await {
        if size == upload.size {
            return rehash(a, &assembly.blob_key).await.map(Ok);
        }
    }
    let mut sources = Vec::with_capacity(upload.concat_parts.len());
    for id in &upload.concat_parts {
        let id = UploadId::from(id.as_str());
        let Some(part) = a.get_assembly(&id).await? else {
            return Ok(Err(format!("partial upload {id} no longer exists")));
        };
        let state = sessions_api::upload_state(part.upload.as_ref().map_or(0, |u| u.state));
        if state != Some(UploadState::Uploading) {
            return Ok(Err(format!(
                "partial upload {id} is {}",
                state.map_or("in an unknown state", UploadState::as_str)
            )));
        }
        if let Err(reason) = a.commit(&id, &part).await? {
            return Ok(Err(format!("partial upload {id}: {reason}")));
        }
        let expected = part.upload.as_ref().map_or(0, |u| u.size);
        let size = blob
            .blob_size(&part.blob_key)
            .await
            .map_err(|e| Retry(format!("reading the size of partial upload {id}: {e}")))?;
        if size != expected {
            return Ok(Err(format!(
                "partial upload {id} is {expected} bytes, but its blob has {size}"
            )));
        }
        sources.push(part.blob_key);
    }
    copy(a, assembly, &upload, sources).await
}

/// Step 2 and 3: the partials' blobs `sources`, in order, into the final's chunks.
async fn copy(
    a: &Assembler,
    assembly: &Assembly,
    upload: &sessions_api::proto::Upload,
    sources: Vec<String>,
) -> Result<Assembled, Retry> {
    let blob = Arc::clone(a.state.blob());
    let hashed = Arc::new(Mutex::new((Sha256::new(), 0u64)));
    let body = Splitter::new(hashing(read_all(&blob, sources), Arc::clone(&hashed)));
    let plan = UploadPlan::new(upload.size, upload.chunk_size);
    let upload_id = UploadId::from(upload.upload_id.as_str());
    let handle = sessions_api::optional(&upload.storage_handle).map(str::to_owned);
    let mut parts = Vec::with_capacity(usize::try_from(plan.total_chunks).unwrap_or(0));
    for index in 0..plan.total_chunks {
        let len = plan.chunk_len(index).unwrap_or(0);
        let target = ChunkTarget {
            upload_id: upload_id.clone(),
            handle: handle.clone(),
            index,
            offset: plan.offset(index),
            len,
            crc64nvme: None,
        };
        let written = blob
            .write_chunk(&target, body.take(len))
            .await
            .map_err(|e| Retry(format!("copying chunk {index} of the partial uploads: {e}")))?;
        // Bytes pulled from the partials so far: the chunk's, and perhaps the start of the
        // next one's (a frame that straddles the boundary is hashed whole, once).
        let through = hashed.lock().unwrap_or_else(PoisonError::into_inner).1;
        if through < target.offset + len {
            return Ok(Err(format!(
                "the partial uploads hold {through} bytes, fewer than the final upload's {}",
                upload.size
            )));
        }
        parts.push(PartRef {
            index,
            size: len,
            crc64nvme: written.crc64nvme,
            etag: written.etag,
        });
    }
    let extra = body
        .take(1)
        .try_fold(0, |n, bytes| async move { Ok(n + bytes.len()) })
        .await
        .unwrap_or(0);
    if extra > 0 {
        return Ok(Err(format!(
            "the partial uploads hold more bytes than the final upload's {}",
            upload.size
        )));
    }
    let whole = crc64nvme_of_pieces(parts.iter().map(|p| (p.crc64nvme, p.size)));
    let committed = blob
        .complete_upload(
            &upload_id,
            handle.as_deref(),
            &parts,
            &assembly.blob_key,
            whole,
        )
        .await;
    match committed {
        Ok(()) => {}
        Err(StoreError::ChecksumMismatch(detail)) => {
            return Ok(Err(format!(
                "the stored file is not the bytes copied from the partial uploads: {detail}"
            )))
        }
        Err(e) => return Err(Retry(format!("committing the blob: {e}"))),
    }
    let sha256 = hashed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .0
        .clone()
        .finalize();
    Ok(Ok((whole, to_hex(&sha256.into()))))
}

/// The committed blobs `keys`, one after the other, each opened when the one before ends.
fn read_all(blob: &Arc<dyn storage::BlobStore>, keys: Vec<String>) -> ByteStream {
    let blob = Arc::clone(blob);
    Box::pin(
        futures::stream::iter(keys)
            .then(move |key| {
                let blob = Arc::clone(&blob);
                async move {
                    blob.read_blob(&key, None)
                        .await
                        .map_err(|e| std::io::Error::other(format!("reading {key}: {e}")))
                }
            })
            .try_flatten(),
    )
}

/// `body`, hashed into `into` (the SHA-256 and the bytes hashed) as it streams.
fn hashing(body: ByteStream, into: Arc<Mutex<(Sha256, u64)>>) -> ByteStream {
    Box::pin(body.inspect_ok(move |bytes| {
        let mut hashed = into.lock().unwrap_or_else(PoisonError::into_inner);
        hashed.0.update(bytes);
        hashed.1 += bytes.len() as u64;
    }))
}

/// The CRC and SHA-256 of a final's blob committed by an earlier run of its job.
async fn rehash(a: &Assembler, blob_key: &str) -> Result<(Crc64, String), Retry> {
    let mut read = a
        .state
        .blob()
        .read_blob(blob_key, None)
        .await
        .map_err(|e| Retry(format!("reading the committed blob: {e}")))?;
    let (mut sha, mut crc) = (Sha256::new(), Crc64Nvme::new());
    while let Some(bytes) = read.next().await {
        let bytes = bytes.map_err(|e| Retry(format!("reading the committed blob: {e}")))?;
        sha.update(&bytes);
        crc.update(&bytes);
    }
    Ok((crc.finish(), to_hex(&sha.finalize().into())))
}
