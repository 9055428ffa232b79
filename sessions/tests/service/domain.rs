//! The sessions rules called directly, without gRPC, over real embedded stores: their answers
//! and errors are in domain terms.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lfusys_core::ids::ClaimId;
use lfusys_core::state::UploadState;
use sessions::domain::chunks::{ClaimRequest, ClaimVerdict, CommitRequest, CommitVerdict};
use sessions::domain::create::NewUpload;
use sessions::domain::{Conflict, DomainError, Subject};
use sessions::{Config, SessionsDomain, SessionsState};
use stores::StorageConfig;
use test_support::data::sha256_hex;

const CHUNK: u64 = 1024;

async fn domain() -> (tempfile::TempDir, SessionsState, SessionsDomain) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(StorageConfig::embedded(dir.path()));
    config.preferred_chunk_size = CHUNK;
    config.max_upload_size = 1024 * 1024;
    config.sweep_interval = Duration::from_secs(3600);
    let state = SessionsState::open(&config).await.unwrap();
    (dir, state.clone(), SessionsDomain::new(state))
}

fn new_upload(name: &str, size: u64) -> NewUpload {
    NewUpload {
        owner_id: "alice".into(),
        name: name.into(),
        size,
        content_type: String::new(),
        sha256: String::new(),
    }
}

fn claim(upload_id: &str, index: u32, data: &[u8]) -> ClaimRequest {
    ClaimRequest {
        owner_id: "alice".into(),
        upload_id: upload_id.into(),
        index,
        sha256: sha256_hex(data),
        size: data.len() as u64,
        claim_id: None,
    }
}

fn commit(upload_id: &str, index: u32, data: &[u8], claim_id: Option<ClaimId>) -> CommitRequest {
    CommitRequest {
        owner_id: "alice".into(),
        upload_id: upload_id.into(),
        index,
        size: data.len() as u64,
        sha256: sha256_hex(data),
        claim_id,
        etag: None,
    }
}

#[tokio::test]
async fn refusals_name_what_went_wrong() {
    let (_dir, _state, d) = domain().await;
    let err = d.create_upload(new_upload("a/b", 10)).await.unwrap_err();
    assert!(
        matches!(err, DomainError::InvalidArgument { field: "name", .. }),
        "{err:?}"
    );
    let err = d.create_upload(new_upload("a", 0)).await.unwrap_err();
    assert!(
        matches!(err, DomainError::InvalidArgument { field: "size", .. }),
        "{err:?}"
    );
    let err = d
        .create_upload(new_upload("a", 2 * 1024 * 1024))
        .await
        .unwrap_err();
    assert!(matches!(err, DomainError::TooLarge { .. }), "{err:?}");

    let rec = d.create_upload(new_upload("a", 10)).await.unwrap();
    // Someone else's upload does not exist for them.
    let err = d
        .get_upload(&"bob".into(), &rec.upload_id)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DomainError::NotFound(Subject::Upload)),
        "{err:?}"
    );
    let err = d
        .get_file(&"alice".into(), &"no-such-file".into())
        .await
        .unwrap_err();
    assert!(
        matches!(err, DomainError::NotFound(Subject::File)),
        "{err:?}"
    );
    let err = d.fail_upload(&rec.upload_id, "  ").await.unwrap_err();
    assert!(
        matches!(
            err,
            DomainError::InvalidArgument {
                field: "reason",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_last_commit_completes_the_set_and_enqueues_its_job() {
    let (_dir, state, d) = domain().await;
    let data: Vec<u8> = (0..CHUNK + 100).map(|i| i as u8).collect();
    let rec = d
        .create_upload(new_upload("movie.mkv", data.len() as u64))
        .await
        .unwrap();
    assert_eq!((rec.state, rec.total_chunks), (UploadState::Uploading, 2));

    let mut completed = Vec::new();
    for (index, chunk) in data.chunks(CHUNK as usize).enumerate() {
        let index = index as u32;
        let claimed = d
            .begin_chunk(claim(&rec.upload_id, index, chunk))
            .await
            .unwrap();
        assert_eq!(claimed.verdict, ClaimVerdict::Claimed);
        let committed = d
            .commit_chunk(commit(&rec.upload_id, index, chunk, claimed.claim_id))
            .await
            .unwrap();
        assert_eq!(committed.verdict, CommitVerdict::Stored);
        completed.push(committed.completed_set);
    }
    assert_eq!(completed, [false, true]);
    assert_eq!(state.queue.depth().await.unwrap().visible, 1);
    assert!(
        state
            .metadata
            .list_unsent_jobs(10)
            .await
            .unwrap()
            .is_empty(),
        "the job is sent and marked: the outbox is empty"
    );

    let retry = d
        .begin_chunk(claim(&rec.upload_id, 1, &data[CHUNK as usize..]))
        .await
        .unwrap();
    assert_eq!(
        (retry.verdict, retry.state, retry.received_count),
        (ClaimVerdict::AlreadyStored, UploadState::Assembling, 2)
    );
    let err = d
        .cancel_upload(&"alice".into(), &rec.upload_id)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DomainError::Conflict(Conflict::NotCancellable(UploadState::Assembling))
        ),
        "{err:?}"
    );
    let err = d
        .complete_assembly(&rec.upload_id, "", rec.size + 1)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DomainError::Conflict(Conflict::AssembledSizeDiffers { .. })
        ),
        "{err:?}"
    );
    let status = d.get_upload(&"alice".into(), &rec.upload_id).await.unwrap();
    assert_eq!(status.chunks.len(), 2);
    assert_eq!(status.upload.state, UploadState::Assembling);
}

/// An upload that became assembling but whose job was never sent (the process died between
/// the two) is in the outbox; the relay sends its job, once, however often it runs.
#[tokio::test]
async fn the_relay_sends_the_jobs_left_in_the_outbox() {
    let (_dir, state, d) = domain().await;
    let rec = d.create_upload(new_upload("orphan.bin", 10)).await.unwrap();
    // The store's half of a completion, without the send that follows it.
    assert!(state
        .metadata
        .transition(
            &rec.upload_id,
            &[UploadState::Uploading],
            UploadState::Assembling,
            None,
            lfusys_core::clock::now_ms(),
        )
        .await
        .unwrap());
    assert_eq!(state.queue.depth().await.unwrap().visible, 0);

    let report = sessions::relay_once(&state).await;
    assert_eq!(report, sessions::RelayReport { sent: 1, errors: 0 });
    let job = state
        .queue
        .receive(Duration::from_secs(2), Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the relayed job");
    assert_eq!(
        lfusys_core::jobs::AssemblyJob::from_body(&job.body)
            .unwrap()
            .upload_id,
        rec.upload_id
    );
    assert!(state
        .metadata
        .list_unsent_jobs(10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        sessions::relay_once(&state).await,
        sessions::RelayReport::default()
    );
    let depth = state.queue.depth().await.unwrap();
    assert_eq!((depth.visible, depth.in_flight), (0, 1), "{depth:?}");
}
