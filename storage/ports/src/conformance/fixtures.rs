//! Records and bodies the conformance cases and the adapters' own tests build their cases from,
//! so a case reads the same whichever backend's test it is in.

use bytes::Bytes;
use lfusys_core::state::UploadState;

use crate::{ByteStream, ChunkRecord, ChunkTarget, Concat, FileRecord, PartRef, UploadRecord};

/// An uploading upload of `total_chunks` chunks of 10 bytes, expiring a day after it was created.
pub fn upload(id: &str, owner: &str, total_chunks: u32, created_at_ms: i64) -> UploadRecord {
    UploadRecord {
        upload_id: id.into(),
        owner_id: owner.into(),
        name: format!("{id}.bin"),
        size: u64::from(total_chunks) * 10,
        content_type: "application/octet-stream".into(),
        sha256: None,
        crc64nvme: None,
        chunk_size: 10,
        total_chunks,
        length_deferred: false,
        concat: Concat::None,
        state: UploadState::Uploading,
        storage_handle: None,
        error: None,
        file_id: None,
        created_at_ms,
        updated_at_ms: created_at_ms,
        expires_at_ms: created_at_ms + 86_400_000,
    }
}

/// A 10-byte chunk record with the CRC-64/NVME `crc64nvme` (any value: stores compare it, never
/// compute it).
pub fn chunk(index: u32, crc64nvme: lfusys_core::digest::Crc64) -> ChunkRecord {
    ChunkRecord {
        index,
        size: 10,
        crc64nvme,
        etag: None,
        sha256_chain: None,
    }
}

/// The File of an upload, 10 bytes, published at `created_at_ms`.
pub fn file(upload_id: &str, owner: &str, created_at_ms: i64) -> FileRecord {
    FileRecord {
        file_id: format!("f-{upload_id}").into(),
        owner_id: owner.into(),
        upload_id: upload_id.into(),
        name: "a.bin".into(),
        size: 10,
        content_type: "application/octet-stream".into(),
        sha256: Some("ab".repeat(32)),
        sha256_source: Some(crate::Sha256Source::Client),
        // Above i64::MAX, so that a store keeping it in a signed column shows it keeps it all.
        crc64nvme: Some(0xfedc_ba98_7654_3210),
        blob_key: format!("files/f-{upload_id}"),
        created_at_ms,
    }
}

/// `len` bytes that differ from chunk to chunk (by `seed`) and within a chunk.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

/// A body of `data` cut into frames of `frame` bytes.
pub fn body(data: &[u8], frame: usize) -> ByteStream {
    let frames: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(frame)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(frames))
}

/// Where chunk `index` of an upload, at `offset`, with the body `data`, goes; the client
/// declared the chunk's CRC-64/NVME (set `crc64nvme` to `None` for a client that did not).
pub fn target(
    upload_id: &str,
    handle: Option<&str>,
    index: u32,
    offset: u64,
    data: &[u8],
) -> ChunkTarget {
    ChunkTarget {
        upload_id: upload_id.into(),
        handle: handle.map(str::to_owned),
        index,
        offset,
        len: data.len() as u64,
        crc64nvme: Some(lfusys_core::digest::crc64nvme(data)),
    }
}

/// The part an assembler hands back for chunk `index` with the body `data`, as `write_chunk`
/// stored it (`written`).
pub fn part(index: u32, data: &[u8], written: crate::WrittenChunk) -> PartRef {
    PartRef {
        index,
        size: data.len() as u64,
        crc64nvme: written.crc64nvme,
        etag: written.etag,
    }
}
