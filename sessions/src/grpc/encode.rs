//! Domain answers to protobuf messages.

use lfusys_core::state::UploadState;
use sessions_api::proto;
use storage::{ChunkRecord, FileRecord, Sha256Source, UploadRecord};

use crate::domain::chunks::{ClaimVerdict, CommitVerdict};

/// What is known about the received chunks of an upload.
pub enum Received<'a> {
    /// The recorded chunks (ascending).
    Chunks(&'a [ChunkRecord]),
    /// Only the total of bytes recorded (listings keep the index list out).
    BytesOnly(u64),
}

/// An upload; `received_crc64nvme` is parallel to `received_chunks` (both empty in listings).
pub fn upload(rec: &UploadRecord, received: &Received<'_>) -> proto::Upload {
    let (received_chunks, received_crc64nvme, bytes_received) = match received {
        Received::Chunks(chunks) => (
            chunks.iter().map(|c| c.index).collect(),
            chunks.iter().map(|c| c.crc64nvme).collect(),
            chunks.iter().map(|c| c.size).sum(),
        ),
        Received::BytesOnly(bytes) => (Vec::new(), Vec::new(), *bytes),
    };
    proto::Upload {
        upload_id: rec.upload_id.to_string(),
        owner_id: rec.owner_id.to_string(),
        name: rec.name.clone(),
        size: rec.size,
        content_type: rec.content_type.clone(),
        sha256: rec.sha256.clone().unwrap_or_default(),
        chunk_size: rec.chunk_size,
        total_chunks: rec.total_chunks,
        state: state(rec.state),
        received_chunks,
        bytes_received,
        file_id: rec.file_id.as_deref().unwrap_or_default().to_owned(),
        error: rec.error.clone().unwrap_or_default(),
        created_at_ms: rec.created_at_ms,
        expires_at_ms: rec.expires_at_ms,
        storage_handle: rec.storage_handle.clone().unwrap_or_default(),
        crc64nvme: rec.crc64nvme,
        received_crc64nvme,
        length_deferred: rec.length_deferred,
        partial: rec.concat.is_partial(),
        concat_parts: rec.concat.parts().iter().map(ToString::to_string).collect(),
    }
}

pub fn state(s: UploadState) -> i32 {
    proto::UploadState::from(s).into()
}

pub fn file(rec: &FileRecord) -> proto::File {
    proto::File {
        file_id: rec.file_id.to_string(),
        owner_id: rec.owner_id.to_string(),
        name: rec.name.clone(),
        size: rec.size,
        content_type: rec.content_type.clone(),
        sha256: rec.sha256.clone().unwrap_or_default(),
        created_at_ms: rec.created_at_ms,
        upload_id: rec.upload_id.to_string(),
        blob_key: rec.blob_key.clone(),
        crc64nvme: rec.crc64nvme,
        sha256_source: rec
            .sha256_source
            .map(Sha256Source::as_str)
            .unwrap_or_default()
            .to_owned(),
    }
}

pub fn part(chunk: &ChunkRecord) -> proto::Part {
    proto::Part {
        index: chunk.index,
        size: chunk.size,
        crc64nvme: chunk.crc64nvme,
        etag: chunk.etag.clone().unwrap_or_default(),
    }
}

pub fn claim_verdict(v: ClaimVerdict) -> proto::BeginChunkOutcome {
    match v {
        ClaimVerdict::Claimed => proto::BeginChunkOutcome::Claimed,
        ClaimVerdict::AlreadyStored => proto::BeginChunkOutcome::AlreadyStored,
        ClaimVerdict::InProgress => proto::BeginChunkOutcome::InProgress,
        ClaimVerdict::NotAccepting => proto::BeginChunkOutcome::NotAccepting,
        ClaimVerdict::Gone => proto::BeginChunkOutcome::Gone,
    }
}

pub fn commit_verdict(v: CommitVerdict) -> proto::CommitChunkOutcome {
    match v {
        CommitVerdict::Stored => proto::CommitChunkOutcome::Stored,
        CommitVerdict::AlreadyStored => proto::CommitChunkOutcome::AlreadyStored,
        CommitVerdict::DigestConflict => proto::CommitChunkOutcome::DigestConflict,
        CommitVerdict::NotAccepting => proto::CommitChunkOutcome::NotAccepting,
        CommitVerdict::Gone => proto::CommitChunkOutcome::Gone,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn upload_sums_received_bytes() {
        let rec = UploadRecord {
            upload_id: "u".into(),
            owner_id: "o".into(),
            name: "n".into(),
            size: 10,
            content_type: "c".into(),
            sha256: None,
            crc64nvme: Some(u64::MAX),
            chunk_size: 4,
            total_chunks: 3,
            length_deferred: false,
            concat: storage::Concat::None,
            state: UploadState::Uploading,
            storage_handle: None,
            error: None,
            file_id: None,
            created_at_ms: 1,
            updated_at_ms: 1,
            expires_at_ms: 2,
        };
        let chunk = |index, size| ChunkRecord {
            index,
            size,
            crc64nvme: 100 + u64::from(index),
            etag: None,
            sha256_chain: None,
        };
        let chunks = [chunk(0, 4), chunk(2, 2)];
        let p = upload(&rec, &Received::Chunks(&chunks));
        assert_eq!(p.received_chunks, vec![0, 2]);
        assert_eq!(p.received_crc64nvme, vec![100, 102]);
        assert_eq!(p.bytes_received, 6);
        assert_eq!(p.state(), proto::UploadState::Uploading);
        assert_eq!(p.sha256, "");
        assert_eq!(p.crc64nvme, Some(u64::MAX));
        let listed = upload(&rec, &Received::BytesOnly(6));
        assert!(listed.received_chunks.is_empty() && listed.received_crc64nvme.is_empty());
        assert_eq!(part(&chunks[1]).crc64nvme, 102);
    }

    #[test]
    fn files_say_who_vouches_for_their_sha256() {
        let mut rec = FileRecord {
            file_id: "f".into(),
            owner_id: "o".into(),
            upload_id: "u".into(),
            name: "n".into(),
            size: 1,
            content_type: "c".into(),
            sha256: Some("ab".repeat(32)),
            sha256_source: Some(Sha256Source::Client),
            crc64nvme: Some(7),
            blob_key: "files/f".into(),
            created_at_ms: 1,
        };
        let f = file(&rec);
        assert_eq!((f.sha256_source.as_str(), f.crc64nvme), ("client", Some(7)));
        rec.sha256 = None;
        rec.sha256_source = None;
        rec.crc64nvme = None;
        let f = file(&rec);
        assert_eq!(
            (f.sha256.as_str(), f.sha256_source.as_str(), f.crc64nvme),
            ("", "", None)
        );
    }
}
