//! Domain answers to protobuf messages.

use lfusys_core::state::UploadState;
use sessions_api::proto;
use storage::{ChunkRecord, FileRecord, UploadRecord};

use crate::domain::chunks::{ClaimVerdict, CommitVerdict};

/// What is known about the received chunks of an upload.
pub enum Received<'a> {
    /// The recorded chunks (ascending).
    Chunks(&'a [ChunkRecord]),
    /// Only the total of bytes recorded (listings keep the index list out).
    BytesOnly(u64),
}

pub fn upload(rec: &UploadRecord, received: &Received<'_>) -> proto::Upload {
    let (received_chunks, bytes_received) = match received {
        Received::Chunks(chunks) => (
            chunks.iter().map(|c| c.index).collect(),
            chunks.iter().map(|c| c.size).sum(),
        ),
        Received::BytesOnly(bytes) => (Vec::new(), *bytes),
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
    }
}

pub fn part(chunk: &ChunkRecord) -> proto::Part {
    proto::Part {
        index: chunk.index,
        size: chunk.size,
        sha256: chunk.sha256.clone(),
        etag: chunk.etag.clone().unwrap_or_default(),
    }
}

pub fn claim_verdict(v: ClaimVerdict) -> proto::BeginChunkOutcome {
    match v {
        ClaimVerdict::Claimed => proto::BeginChunkOutcome::Claimed,
        ClaimVerdict::AlreadyStored => proto::BeginChunkOutcome::AlreadyStored,
        ClaimVerdict::DigestConflict => proto::BeginChunkOutcome::DigestConflict,
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
            chunk_size: 4,
            total_chunks: 3,
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
            sha256: String::new(),
            etag: None,
        };
        let chunks = [chunk(0, 4), chunk(2, 2)];
        let p = upload(&rec, &Received::Chunks(&chunks));
        assert_eq!(p.received_chunks, vec![0, 2]);
        assert_eq!(p.bytes_received, 6);
        assert_eq!(p.state(), proto::UploadState::Uploading);
        assert_eq!(p.sha256, "");
    }
}
