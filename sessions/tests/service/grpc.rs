//! The sessions service over a real listener, real embedded stores and a real gRPC client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use std::collections::HashSet;
use std::time::Duration;

use crate::common::{chunks_of, commit_request, start, start_with, CHUNK};
use lfusys_core::clock::now_ms;
use lfusys_core::digest::crc64nvme;
use lfusys_core::jobs::AssemblyJob;
use lfusys_core::state::UploadState as State;
use sessions_api::proto::{
    BeginChunkOutcome, CancelUploadRequest, CommitChunkOutcome, CompleteAssemblyRequest,
    CreateUploadRequest, DeleteFileRequest, FailUploadRequest, File, GetAssemblyRequest,
    GetFileRequest, GetUploadRequest, ListFilesRequest, ListUploadsRequest, ReleaseChunkRequest,
    Upload, UploadState,
};
use storage::{ReceivedJob, StoreError, UploadRecord};
use test_support::data::{bytes as data, sha256_hex};
use test_support::wait::eventually;
use tonic::Code;

const ALICE: &str = "alice";
const BOB: &str = "bob";

fn get(owner: &str, upload_id: &str) -> GetUploadRequest {
    GetUploadRequest {
        owner_id: owner.into(),
        upload_id: upload_id.into(),
        ..Default::default()
    }
}

fn cancel(owner: &str, upload_id: &str) -> CancelUploadRequest {
    CancelUploadRequest {
        owner_id: owner.into(),
        upload_id: upload_id.into(),
    }
}

fn create_req(name: &str, size: u64, sha256: &str) -> CreateUploadRequest {
    CreateUploadRequest {
        owner_id: ALICE.into(),
        name: name.into(),
        size,
        content_type: String::new(),
        sha256: sha256.into(),
        length_deferred: false,
        partial: false,
        concat_parts: Vec::new(),
    }
}

#[tokio::test]
async fn a_full_upload_completes_once_and_enqueues_one_job() {
    let h = start().await;
    let bytes = data(3 * CHUNK as usize + 100, 1);
    let upload = h.create(ALICE, "movie.mkv", bytes.len() as u64).await;
    assert_eq!(upload.state(), UploadState::Uploading);
    assert_eq!((upload.chunk_size, upload.total_chunks), (CHUNK, 4));
    assert_eq!(upload.content_type, "application/octet-stream");
    assert!(upload.expires_at_ms > upload.created_at_ms);
    assert_eq!(
        h.part_files(&upload.upload_id).len(),
        1,
        "storage is prepared"
    );

    let listed = h
        .client()
        .list_uploads(ListUploadsRequest {
            owner_id: ALICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].upload_id, upload.upload_id);

    commit_every_chunk_once(&h, &upload, &bytes).await;
    let job = one_assembly_job(&h, &upload).await;
    let file = assemble_twice_publishing_once(&h, &upload, &bytes).await;
    h.state.queue.delete(&job.receipt).await.unwrap();
    listed_as_completed(&h, &upload, &file, &bytes).await;

    // A client retrying a chunk after completion learns it is stored, with its CRC, which
    // the worker compares with the body's: the same bytes, or other ones.
    let chunk_1 = &bytes[CHUNK as usize..2 * CHUNK as usize];
    let retry = h.begin(ALICE, &upload.upload_id, 1, chunk_1, "").await;
    assert_eq!(retry.outcome(), BeginChunkOutcome::AlreadyStored);
    assert_eq!(retry.state(), UploadState::Completed);
    assert_eq!(retry.received_count, 4);
    assert_eq!(retry.stored_crc64nvme, crc64nvme(chunk_1));
    let other = data(CHUNK as usize, 99);
    let other_bytes = h.begin(ALICE, &upload.upload_id, 1, &other, "").await;
    assert_eq!(other_bytes.outcome(), BeginChunkOutcome::AlreadyStored);
    assert_ne!(other_bytes.stored_crc64nvme, crc64nvme(&other));
}

/// Claims, writes and commits every chunk: exactly one commit completes the set.
async fn commit_every_chunk_once(h: &common::Harness, upload: &Upload, bytes: &[u8]) {
    let mut completed_sets = 0;
    for (index, chunk) in chunks_of(upload, bytes) {
        let begun = h.begin(ALICE, &upload.upload_id, index, chunk, "").await;
        assert_eq!(begun.outcome(), BeginChunkOutcome::Claimed);
        assert!(!begun.claim_id.is_empty());
        assert!(begun.lease_expires_at_ms > now_ms());
        assert_eq!(begun.total_chunks, 4);
        assert_eq!(begun.state(), UploadState::Uploading);
        assert_eq!(begun.storage_handle, upload.storage_handle);
        h.write(upload, index, chunk).await;
        let committed = h
            .commit(ALICE, &upload.upload_id, index, chunk, &begun.claim_id)
            .await;
        assert_eq!(committed.outcome(), CommitChunkOutcome::Stored);
        assert_eq!(committed.received_count, index + 1);
        assert_eq!(committed.total_chunks, 4);
        assert_eq!(committed.complete, index == 3);
        if committed.completed_set {
            completed_sets += 1;
        }
    }
    assert_eq!(completed_sets, 1);

    let status = h
        .client()
        .get_upload(get(ALICE, &upload.upload_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state(), UploadState::Assembling);
    assert_eq!(status.received_chunks, vec![0, 1, 2, 3]);
    assert_eq!(
        status.received_crc64nvme,
        chunks_of(upload, bytes)
            .iter()
            .map(|(_, c)| crc64nvme(c))
            .collect::<Vec<_>>()
    );
    assert_eq!(status.crc64nvme, None, "no whole-file CRC declared");
    assert_eq!(status.bytes_received, bytes.len() as u64);
}

/// Exactly one assembly job was enqueued; it stays received (invisible) for the caller to acknowledge.
async fn one_assembly_job(h: &common::Harness, upload: &Upload) -> ReceivedJob {
    // Exactly one job, naming the upload.
    let job = h
        .state
        .queue
        .receive(Duration::from_secs(2), Duration::from_secs(60))
        .await
        .unwrap()
        .expect("an assembly job");
    assert_eq!(
        AssemblyJob::from_body(&job.body).unwrap().upload_id,
        upload.upload_id
    );
    let none = h
        .state
        .queue
        .receive(Duration::from_millis(200), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(none.is_none(), "a second job: {none:?}");

    job
}

/// The assembler's view of a completed set; completing twice publishes one File.
async fn assemble_twice_publishing_once(
    h: &common::Harness,
    upload: &Upload,
    bytes: &[u8],
) -> File {
    // The assembler's view.
    let assembly = h
        .client()
        .get_assembly(GetAssemblyRequest {
            upload_id: upload.upload_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(assembly.parts.len(), 4);
    assert_eq!(
        assembly.parts.iter().map(|p| p.index).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(assembly.parts[3].size, 100);
    assert_eq!(
        assembly.parts[0].crc64nvme,
        crc64nvme(&bytes[..CHUNK as usize])
    );
    assert_eq!(assembly.blob_key, format!("files/{}", assembly.file_id));

    // Completing twice publishes one File.
    let file = h.assemble(&upload.upload_id, bytes).await;
    assert_eq!(file.file_id, assembly.file_id);
    assert_eq!(file.owner_id, ALICE);
    assert_eq!(file.name, "movie.mkv");
    assert_eq!(file.size, bytes.len() as u64);
    assert_eq!(file.crc64nvme, Some(crc64nvme(bytes)));
    // No SHA-256 declared: none is known.
    assert_eq!(
        (file.sha256.as_str(), file.sha256_source.as_str()),
        ("", "")
    );
    assert_eq!(file.upload_id, upload.upload_id);
    let again = h.assemble(&upload.upload_id, bytes).await;
    assert_eq!(again, file);
    file
}

/// The published File is listed with its blob; the upload is completed and no longer unfinished.
async fn listed_as_completed(h: &common::Harness, upload: &Upload, file: &File, bytes: &[u8]) {
    let files = h
        .client()
        .list_files(ListFilesRequest {
            owner_id: ALICE.into(),
            cursor: String::new(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(files.items, vec![file.clone()]);
    assert_eq!(
        h.state.blobs.blob_size(&file.blob_key).await.unwrap(),
        bytes.len() as u64
    );

    let status = h
        .client()
        .get_upload(get(ALICE, &upload.upload_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state(), UploadState::Completed);
    assert_eq!(status.file_id, file.file_id);
    assert_eq!(status.bytes_received, bytes.len() as u64);
    let unfinished = h
        .client()
        .list_uploads(ListUploadsRequest {
            owner_id: ALICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(unfinished.items.is_empty());
}

#[tokio::test]
async fn concurrent_last_commits_complete_the_set_exactly_once() {
    let h = start().await;
    let bytes = data(25 * CHUNK as usize + 7, 2);
    let upload = h.create(ALICE, "big.bin", bytes.len() as u64).await;
    assert_eq!(upload.total_chunks, 26);
    let chunks = chunks_of(&upload, &bytes);
    for &(index, chunk) in &chunks[..6] {
        let begun = h.begin(ALICE, &upload.upload_id, index, chunk, "").await;
        let c = h
            .commit(ALICE, &upload.upload_id, index, chunk, &begun.claim_id)
            .await;
        assert_eq!(c.outcome(), CommitChunkOutcome::Stored);
        assert!(!c.completed_set);
    }
    // Twenty separate claims, then twenty commits racing.
    let mut requests = Vec::new();
    for &(index, chunk) in &chunks[6..] {
        let begun = h.begin(ALICE, &upload.upload_id, index, chunk, "").await;
        assert_eq!(begun.outcome(), BeginChunkOutcome::Claimed);
        requests.push(commit_request(
            ALICE,
            &upload.upload_id,
            index,
            chunk,
            &begun.claim_id,
        ));
    }
    assert_eq!(requests.len(), 20);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|req| {
            let mut client = h.client();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                client.commit_chunk(req).await.unwrap().into_inner()
            })
        })
        .collect();
    let mut completed = 0;
    for task in tasks {
        let resp = task.await.unwrap();
        assert_eq!(resp.outcome(), CommitChunkOutcome::Stored);
        if resp.completed_set {
            completed += 1;
            assert!(resp.complete);
            assert_eq!(resp.received_count, 26);
        }
    }
    assert_eq!(completed, 1, "exactly one commit completes the set");

    let status = h
        .client()
        .get_upload(get(ALICE, &upload.upload_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state(), UploadState::Assembling);
    assert_eq!(status.received_chunks.len(), 26);
    assert!(h
        .state
        .queue
        .receive(Duration::from_secs(2), Duration::from_secs(60))
        .await
        .unwrap()
        .is_some());
    assert!(h
        .state
        .queue
        .receive(Duration::from_millis(200), Duration::from_secs(60))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn idempotent_commits_leases_and_digest_conflicts() {
    let h = start().await;
    let bytes = data(2 * CHUNK as usize, 3);
    let upload = h.create(ALICE, "two.bin", bytes.len() as u64).await;
    let id = upload.upload_id.as_str();
    let (c0, c1) = bytes.split_at(CHUNK as usize);
    let other = data(CHUNK as usize, 77);

    let a = h.begin(ALICE, id, 0, c0, "").await;
    assert_eq!(a.outcome(), BeginChunkOutcome::Claimed);
    let stored = h.commit(ALICE, id, 0, c0, &a.claim_id).await;
    assert_eq!(stored.outcome(), CommitChunkOutcome::Stored);
    assert_eq!(stored.received_count, 1);
    // The same commit again (a retried RPC) is idempotent.
    let again = h.commit(ALICE, id, 0, c0, &a.claim_id).await;
    assert_eq!(again.outcome(), CommitChunkOutcome::AlreadyStored);
    assert_eq!(again.received_count, 1);
    assert!(!again.completed_set);
    // Another CRC for the stored chunk: a conflict.
    let conflict = h.commit(ALICE, id, 0, &other, &a.claim_id).await;
    assert_eq!(conflict.outcome(), CommitChunkOutcome::DigestConflict);

    // A claim of the stored chunk answers its CRC, whatever bytes the worker has.
    for body in [c0, other.as_slice()] {
        let retry = h.begin(ALICE, id, 0, body, "").await;
        assert_eq!(retry.outcome(), BeginChunkOutcome::AlreadyStored);
        assert_eq!(retry.received_count, 1);
        assert_eq!(retry.stored_crc64nvme, crc64nvme(c0));
        assert!(retry.claim_id.is_empty());
    }

    // Leases: exclusive, renewable by their holder, released on request.
    let b = h.begin(ALICE, id, 1, c1, "").await;
    assert_eq!(b.outcome(), BeginChunkOutcome::Claimed);
    let busy = h.begin(ALICE, id, 1, c1, "").await;
    assert_eq!(busy.outcome(), BeginChunkOutcome::InProgress);
    assert!(busy.claim_id.is_empty());
    let renewed = h.begin(ALICE, id, 1, c1, &b.claim_id).await;
    assert_eq!(renewed.outcome(), BeginChunkOutcome::Claimed);
    assert_eq!(renewed.claim_id, b.claim_id);
    assert!(renewed.lease_expires_at_ms >= b.lease_expires_at_ms);
    h.client()
        .release_chunk(ReleaseChunkRequest {
            owner_id: ALICE.into(),
            upload_id: id.into(),
            index: 1,
            claim_id: b.claim_id.clone(),
        })
        .await
        .unwrap();
    let c = h.begin(ALICE, id, 1, c1, "").await;
    assert_eq!(c.outcome(), BeginChunkOutcome::Claimed);
    assert_ne!(c.claim_id, b.claim_id);
    // The released claim can no longer commit.
    let lost = h.commit(ALICE, id, 1, c1, &b.claim_id).await;
    assert_eq!(lost.outcome(), CommitChunkOutcome::NotAccepting);
    let last = h.commit(ALICE, id, 1, c1, &c.claim_id).await;
    assert_eq!(last.outcome(), CommitChunkOutcome::Stored);
    assert!(last.completed_set && last.complete);
    assert_eq!(last.received_count, 2);
    // Replaying the completing commit does not complete the set twice.
    let replay = h.commit(ALICE, id, 1, c1, &c.claim_id).await;
    assert_eq!(replay.outcome(), CommitChunkOutcome::AlreadyStored);
    assert!(replay.complete && !replay.completed_set);
}

#[tokio::test]
async fn lease_expiry_lets_another_worker_take_the_chunk() {
    let h = start_with(|c| c.chunk_lease = Duration::from_millis(50)).await;
    let bytes = data(100, 4);
    let upload = h.create(ALICE, "small", 100).await;
    let first = h.begin(ALICE, &upload.upload_id, 0, &bytes, "").await;
    assert_eq!(first.outcome(), BeginChunkOutcome::Claimed);
    let deadline = first.lease_expires_at_ms;
    eventually("the lease to run out", Duration::from_secs(10), || {
        std::future::ready(now_ms() > deadline)
    })
    .await;
    let second = h.begin(ALICE, &upload.upload_id, 0, &bytes, "").await;
    assert_eq!(second.outcome(), BeginChunkOutcome::Claimed);
    let stale = h
        .commit(ALICE, &upload.upload_id, 0, &bytes, &first.claim_id)
        .await;
    assert_eq!(stale.outcome(), CommitChunkOutcome::NotAccepting);
    let ok = h
        .commit(ALICE, &upload.upload_id, 0, &bytes, &second.claim_id)
        .await;
    assert!(ok.completed_set);
}

#[tokio::test]
async fn other_owners_and_bad_ids_see_nothing() {
    let h = start().await;
    let bytes = data(CHUNK as usize + 1, 5);
    let upload = h.create(ALICE, "mine", bytes.len() as u64).await;
    let id = upload.upload_id.clone();
    let chunk = &bytes[..CHUNK as usize];
    let claim = h.begin(ALICE, &id, 0, chunk, "").await;
    let mut client = h.client();

    probes_of_others_see_nothing(&h, &id, chunk, &claim.claim_id).await;
    unknown_uploads_are_not_found(&h).await;
    let bobs = client
        .list_uploads(ListUploadsRequest {
            owner_id: BOB.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(bobs.items.is_empty());

    // Bob's attempts changed nothing.
    let status = client
        .get_upload(get(ALICE, &id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state(), UploadState::Uploading);
    let busy = h.begin(ALICE, &id, 0, chunk, "").await;
    assert_eq!(busy.outcome(), BeginChunkOutcome::InProgress);

    others_files_are_not_found(&h).await;
}

/// Someone else's upload id and malformed ids: every chunk and upload call answers `NOT_FOUND`.
async fn probes_of_others_see_nothing(h: &common::Harness, id: &str, chunk: &[u8], claim_id: &str) {
    let mut client = h.client();
    for probe in [id, "not-a-uuid", "../../etc/passwd", ""] {
        let owner = if probe == id { BOB } else { ALICE };
        let err = client.get_upload(get(owner, probe)).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "get {probe}");
        let err = client
            .cancel_upload(cancel(owner, probe))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "cancel {probe}");
        let err = h.try_begin(owner, probe, 0, CHUNK, "").await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "begin {probe}");
        let err = client
            .commit_chunk(commit_request(owner, probe, 0, chunk, claim_id))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "commit {probe}");
        let err = client
            .release_chunk(ReleaseChunkRequest {
                owner_id: owner.into(),
                upload_id: probe.into(),
                index: 0,
                claim_id: claim_id.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "release {probe}");
    }
}

/// A random, well-formed upload id that does not exist, for the owner and for the workers.
async fn unknown_uploads_are_not_found(h: &common::Harness) {
    let mut client = h.client();
    // A random, well-formed id that does not exist looks the same.
    let missing = lfusys_core::ids::new_upload_id();
    let err = client.get_upload(get(ALICE, &missing)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    for rpc in ["assembly", "fail", "complete"] {
        let err = match rpc {
            "assembly" => client
                .get_assembly(GetAssemblyRequest {
                    upload_id: missing.clone(),
                })
                .await
                .map(|_| ()),
            "fail" => client
                .fail_upload(FailUploadRequest {
                    upload_id: "nope".into(),
                    reason: "x".into(),
                })
                .await
                .map(|_| ()),
            _ => client
                .complete_assembly(CompleteAssemblyRequest {
                    upload_id: missing.clone(),
                    size: 1,
                    crc64nvme: 0,
                    sha256: String::new(),
                })
                .await
                .map(|_| ()),
        }
        .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{rpc}");
    }
}

/// Someone else's File and a malformed id answer `NOT_FOUND`; the owner's File is untouched.
async fn others_files_are_not_found(h: &common::Harness) {
    let mut client = h.client();
    let file = h.publish(ALICE, "doc.txt", &data(10, 6)).await;
    for file_id in [file.file_id.as_str(), "nope"] {
        let owner = if file_id == file.file_id { BOB } else { ALICE };
        let err = client
            .get_file(GetFileRequest {
                owner_id: owner.into(),
                file_id: file_id.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err = client
            .delete_file(DeleteFileRequest {
                owner_id: owner.into(),
                file_id: file_id.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
    let bobs = client
        .list_files(ListFilesRequest {
            owner_id: BOB.into(),
            cursor: String::new(),
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(bobs.items.is_empty() && bobs.next_cursor.is_empty());
    let still = client
        .get_file(GetFileRequest {
            owner_id: ALICE.into(),
            file_id: file.file_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still, file);
}

#[tokio::test]
async fn invalid_requests_are_refused() {
    let h = start().await;
    let mut client = h.client();
    let code = |r: Result<tonic::Response<sessions_api::proto::Upload>, tonic::Status>| {
        r.unwrap_err().code()
    };
    assert_eq!(
        code(client.create_upload(create_req("a", 0, "")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            client
                .create_upload(create_req("a", common::MAX_UPLOAD + 1, ""))
                .await
        ),
        Code::ResourceExhausted
    );
    assert_eq!(
        code(client.create_upload(create_req("a", 10, "xyz")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            client
                .create_upload(create_req("a", 10, &"g".repeat(64)))
                .await
        ),
        Code::InvalidArgument
    );
    for name in ["", "a/b", "nul\0", "line\nbreak", &"n".repeat(256)] {
        assert_eq!(
            code(client.create_upload(create_req(name, 10, "")).await),
            Code::InvalidArgument,
            "{name:?}"
        );
    }
    let mut no_owner = create_req("a", 10, "");
    no_owner.owner_id = String::new();
    assert_eq!(
        code(client.create_upload(no_owner).await),
        Code::InvalidArgument
    );

    // Accepted: the largest size, an upper-case digest (stored lower-case), a content type.
    let sha = "AB".repeat(32);
    let mut req = create_req("ok.bin", common::MAX_UPLOAD, &sha);
    req.content_type = "video/mp4".into();
    let upload = client.create_upload(req).await.unwrap().into_inner();
    assert_eq!(upload.sha256, "ab".repeat(32));
    assert_eq!(upload.content_type, "video/mp4");
    assert_eq!(u64::from(upload.total_chunks), common::MAX_UPLOAD / CHUNK);

    let id = upload.upload_id.as_str();
    let chunk = data(CHUNK as usize, 1);
    let total = upload.total_chunks;
    for (index, size) in [
        (total, CHUNK),
        (u32::MAX, CHUNK),
        (0, CHUNK - 1),
        (0, CHUNK + 1),
    ] {
        let err = h.try_begin(ALICE, id, index, size, "").await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{index} {size}");
    }
    let mut bad = commit_request(ALICE, id, total, &chunk, "claim");
    assert_eq!(
        client.commit_chunk(bad.clone()).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    bad.index = 0;
    bad.claim_id = String::new();
    assert_eq!(
        client.commit_chunk(bad).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn cancel_releases_storage_and_later_chunks_are_gone() {
    let h = start().await;
    let bytes = data(2 * CHUNK as usize, 7);
    let upload = h.create(ALICE, "abandoned", bytes.len() as u64).await;
    let id = upload.upload_id.as_str();
    let (c0, c1) = bytes.split_at(CHUNK as usize);
    let first = h.begin(ALICE, id, 0, c0, "").await;
    h.write(&upload, 0, c0).await;
    h.commit(ALICE, id, 0, c0, &first.claim_id).await;
    let second = h.begin(ALICE, id, 1, c1, "").await;
    assert_eq!(h.part_files(id).len(), 1);

    let cancelled = h
        .client()
        .cancel_upload(cancel(ALICE, id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state(), UploadState::Cancelled);
    assert!(h.part_files(id).is_empty(), "the .part file is released");

    let gone = h.begin(ALICE, id, 1, c1, "").await;
    assert_eq!(gone.outcome(), BeginChunkOutcome::Gone);
    assert_eq!(gone.state(), UploadState::Cancelled);
    let gone = h.begin(ALICE, id, 0, c0, "").await;
    assert_eq!(gone.outcome(), BeginChunkOutcome::Gone);
    let late = h.commit(ALICE, id, 1, c1, &second.claim_id).await;
    assert_eq!(late.outcome(), CommitChunkOutcome::Gone);

    // Cancelling again answers the same; it is no longer listed as unfinished.
    let again = h
        .client()
        .cancel_upload(cancel(ALICE, id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.state(), UploadState::Cancelled);
    let status = h
        .client()
        .get_upload(get(ALICE, id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state(), UploadState::Cancelled);
    let listed = h
        .client()
        .list_uploads(ListUploadsRequest {
            owner_id: ALICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.items.is_empty());

    // Assembling and completed uploads cannot be cancelled.
    let done = data(10, 8);
    let (assembling, _) = h.upload_all(ALICE, "done", &done).await;
    let err = h
        .client()
        .cancel_upload(cancel(ALICE, &assembling.upload_id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("assembling"), "{}", err.message());
    h.assemble(&assembling.upload_id, &done).await;
    let err = h
        .client()
        .cancel_upload(cancel(ALICE, &assembling.upload_id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn expired_uploads_are_swept_and_leave_nothing_behind() {
    let h = start_with(|c| c.upload_ttl = Duration::from_millis(100)).await;
    let bytes = data(2 * CHUNK as usize, 9);
    let swept = h.create(ALICE, "slow", bytes.len() as u64).await;
    let lazy = h.create(ALICE, "slower", bytes.len() as u64).await;
    let c0 = &bytes[..CHUNK as usize];
    let claim = h.begin(ALICE, &swept.upload_id, 0, c0, "").await;
    h.write(&swept, 0, c0).await;
    h.commit(ALICE, &swept.upload_id, 0, c0, &claim.claim_id)
        .await;
    assert_eq!(h.part_files(&swept.upload_id).len(), 1);
    assert_eq!(h.part_files(&lazy.upload_id).len(), 1);

    let expiry = swept.expires_at_ms.max(lazy.expires_at_ms);
    eventually(
        "the uploads to pass their expiry",
        Duration::from_secs(10),
        || std::future::ready(now_ms() > expiry),
    )
    .await;

    // A chunk arriving after expiry is refused even before the sweeper runs.
    let late = h.begin(ALICE, &lazy.upload_id, 0, c0, "").await;
    assert_eq!(late.outcome(), BeginChunkOutcome::Gone);
    assert_eq!(late.state(), UploadState::Expired);
    assert!(h.part_files(&lazy.upload_id).is_empty());

    let report = sessions::sweep_once(&h.state).await;
    assert_eq!(report.expired, 1, "{report:?}");
    assert_eq!(report.errors, 0);
    let status = h
        .client()
        .get_upload(get(ALICE, &swept.upload_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state(), UploadState::Expired);
    assert!(status.received_chunks.is_empty());
    assert!(
        h.part_files(&swept.upload_id).is_empty(),
        "no .part file is left"
    );
    let gone = h
        .begin(ALICE, &swept.upload_id, 1, &bytes[CHUNK as usize..], "")
        .await;
    assert_eq!(gone.outcome(), BeginChunkOutcome::Gone);

    // Nothing more to do.
    assert_eq!(
        sessions::sweep_once(&h.state).await,
        sessions::SweepReport::default()
    );
}

/// What a create leaves when it dies between preparing the storage and recording the upload:
/// a part file that no upload owns. The sweeper releases it once it is `orphan_grace` old, and
/// leaves the part files of recorded uploads alone however old they are.
#[tokio::test]
async fn blob_storage_that_no_upload_owns_is_released_after_its_grace() {
    let h = start_with(|c| c.orphan_grace = Duration::from_secs(1)).await;
    let owned = h.create(ALICE, "owned.bin", 10).await;
    let orphan = lfusys_core::ids::UploadId::generate();
    h.state.blobs.begin_upload(&orphan, 10).await.unwrap();
    assert_eq!(h.part_files(orphan.as_str()).len(), 1);

    let report = sessions::sweep_once(&h.state).await;
    assert_eq!(report.orphans, 0, "not within its grace: {report:?}");
    eventually(
        "the orphan to be released",
        Duration::from_secs(10),
        || async {
            let report = sessions::sweep_once(&h.state).await;
            assert_eq!(report.errors, 0, "{report:?}");
            report.orphans == 1
        },
    )
    .await;
    assert!(h.part_files(orphan.as_str()).is_empty());
    assert_eq!(
        h.part_files(&owned.upload_id).len(),
        1,
        "an owned part file stays"
    );
    assert_eq!(sessions::sweep_once(&h.state).await.orphans, 0);
}

#[tokio::test]
async fn uploads_stuck_in_assembling_get_their_job_again() {
    let h = start().await;
    let now = now_ms();
    let stuck = UploadRecord {
        upload_id: lfusys_core::ids::UploadId::generate(),
        owner_id: ALICE.into(),
        name: "stuck".into(),
        size: 10,
        content_type: "application/octet-stream".into(),
        sha256: None,
        crc64nvme: None,
        chunk_size: 10,
        total_chunks: 1,
        length_deferred: false,
        concat: storage::Concat::None,
        state: State::Assembling,
        storage_handle: None,
        error: None,
        file_id: None,
        created_at_ms: now - 3_600_000,
        updated_at_ms: now - 3_600_000,
        expires_at_ms: now + 3_600_000,
    };
    // As if the completing commit's enqueue had failed an hour ago.
    h.state.metadata.insert_upload(&stuck).await.unwrap();
    // A fresh one is left alone.
    let (fresh, last) = h.upload_all(ALICE, "fresh", &data(10, 1)).await;
    assert!(last.completed_set);
    let fresh_job = h
        .state
        .queue
        .receive(Duration::from_secs(2), Duration::from_secs(600))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        AssemblyJob::from_body(&fresh_job.body).unwrap().upload_id,
        fresh.upload_id
    );

    let report = sessions::sweep_once(&h.state).await;
    assert_eq!(report.requeued, 1, "{report:?}");
    let job = h
        .state
        .queue
        .receive(Duration::from_secs(2), Duration::from_secs(600))
        .await
        .unwrap()
        .expect("the re-enqueued job");
    assert_eq!(
        AssemblyJob::from_body(&job.body).unwrap().upload_id,
        stuck.upload_id
    );

    // Sweeping again within the dedup window does not pile up duplicates.
    sessions::sweep_once(&h.state).await;
    let depth = h.state.queue.depth().await.unwrap();
    assert_eq!(depth.visible, 0, "{depth:?}");
}

#[tokio::test]
async fn complete_assembly_checks_state_size_and_checksum() {
    let h = start().await;
    let bytes = data(CHUNK as usize * 2, 10);
    let crc = crc64nvme(&bytes);
    let mut client = h.client();
    let uploading = h.create(ALICE, "early", 10).await;
    let err = client
        .complete_assembly(CompleteAssemblyRequest {
            upload_id: uploading.upload_id.clone(),
            size: 10,
            crc64nvme: crc,
            sha256: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    let declared = client
        .create_upload(create_req(
            "declared",
            bytes.len() as u64,
            &sha256_hex(&bytes),
        ))
        .await
        .unwrap()
        .into_inner();
    h.declare(ALICE, &declared.upload_id, &sha256_hex(&bytes), crc)
        .await
        .unwrap();
    store_every_chunk(&h, &declared, &bytes).await;
    // Another size, or another CRC than the client declared: the assembler fails the upload
    // instead, it does not publish it.
    for (crc, size) in [
        (crc, bytes.len() as u64 - 1),
        (crc64nvme(b"other"), bytes.len() as u64),
    ] {
        let err = client
            .complete_assembly(CompleteAssemblyRequest {
                upload_id: declared.upload_id.clone(),
                size,
                crc64nvme: crc,
                sha256: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    }
    let file = h.assemble(&declared.upload_id, &bytes).await;
    assert_eq!(file.sha256, sha256_hex(&bytes));
    assert_eq!(file.sha256_source, "client");
    assert_eq!(file.crc64nvme, Some(crc));
}

/// Claims, writes and commits every chunk of `upload` (the last one completes the set).
async fn store_every_chunk(h: &common::Harness, upload: &Upload, bytes: &[u8]) {
    for (index, chunk) in chunks_of(upload, bytes) {
        let b = h.begin(ALICE, &upload.upload_id, index, chunk, "").await;
        assert_eq!(b.outcome(), BeginChunkOutcome::Claimed);
        h.write(upload, index, chunk).await;
        let c = h
            .commit(ALICE, &upload.upload_id, index, chunk, &b.claim_id)
            .await;
        assert_eq!(c.outcome(), CommitChunkOutcome::Stored);
    }
}

/// A File's SHA-256 is the client's (`client`) when it declared the whole-file CRC with it,
/// which the server verified; a SHA-256 declared only at creation is `declared`; without one
/// the File has none. Its CRC is the verified one either way.
#[tokio::test]
async fn files_say_who_vouches_for_their_sha256() {
    let h = start().await;
    let bytes = data(CHUNK as usize + 3, 14);
    let (sha, crc) = (sha256_hex(&bytes), crc64nvme(&bytes));
    let size = bytes.len() as u64;
    let mut client = h.client();
    // (SHA-256 at creation, checksums declared later, expected SHA-256 and source)
    let cases = [
        (sha.as_str(), None, sha.as_str(), "declared"),
        ("", Some(sha.as_str()), sha.as_str(), "client"),
        (sha.as_str(), Some(sha.as_str()), sha.as_str(), "client"),
        ("", Some(""), "", ""),
    ];
    for (at_creation, declared, expected_sha, expected_source) in cases {
        let upload = client
            .create_upload(create_req("vouched.bin", size, at_creation))
            .await
            .unwrap()
            .into_inner();
        if let Some(declared) = declared {
            let answer = h
                .declare(ALICE, &upload.upload_id, declared, crc)
                .await
                .unwrap();
            assert_eq!(answer.crc64nvme, Some(crc));
            assert_eq!(answer.sha256, expected_sha);
        }
        store_every_chunk(&h, &upload, &bytes).await;
        let file = h.assemble(&upload.upload_id, &bytes).await;
        let case = format!("{at_creation:?} {declared:?}");
        assert_eq!(file.sha256, expected_sha, "{case}");
        assert_eq!(file.sha256_source, expected_source, "{case}");
        assert_eq!(file.crc64nvme, Some(crc), "{case}");
        let read = client
            .get_file(GetFileRequest {
                owner_id: ALICE.into(),
                file_id: file.file_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(read, file, "{case}");
    }
}

/// The whole-file checksums are recorded once (the SHA-256 lower-cased) and shown with the
/// upload; the same ones again answer the upload whatever its state, others are
/// `ALREADY_EXISTS`; someone else's upload is not found; a malformed SHA-256 is refused.
#[tokio::test]
async fn declared_checksums_are_recorded_once() {
    let h = start().await;
    let bytes = data(CHUNK as usize, 15);
    let (sha, crc) = (sha256_hex(&bytes), crc64nvme(&bytes));
    let upload = h.create(ALICE, "declared.bin", bytes.len() as u64).await;
    let id = upload.upload_id.as_str();

    let err = h.declare(ALICE, id, "xyz", crc).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = h.declare(BOB, id, &sha, crc).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = h
        .declare(ALICE, &lfusys_core::ids::new_upload_id(), &sha, crc)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let declared = h
        .declare(ALICE, id, &sha.to_ascii_uppercase(), crc)
        .await
        .unwrap();
    assert_eq!(declared.state(), UploadState::Uploading);
    assert_eq!(
        (declared.sha256.as_str(), declared.crc64nvme),
        (sha.as_str(), Some(crc))
    );
    let status = h
        .client()
        .get_upload(get(ALICE, id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (status.sha256.as_str(), status.crc64nvme),
        (sha.as_str(), Some(crc))
    );
    let listed = h
        .client()
        .list_uploads(ListUploadsRequest {
            owner_id: ALICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.items[0].crc64nvme, Some(crc));

    // The same again (a retried request, also without the SHA-256): the upload.
    for again in [sha.as_str(), ""] {
        let answer = h.declare(ALICE, id, again, crc).await.unwrap();
        assert_eq!(
            (answer.sha256.as_str(), answer.crc64nvme),
            (sha.as_str(), Some(crc))
        );
    }
    // Others: refused, and nothing changes.
    let another_sha = sha256_hex(b"other");
    for (other_sha, other_crc) in [(sha.as_str(), crc ^ 1), (another_sha.as_str(), crc)] {
        let err = h
            .declare(ALICE, id, other_sha, other_crc)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{}", err.message());
    }

    // Once the upload is assembling: the same still answer it, others are still refused.
    store_every_chunk(&h, &upload, &bytes).await;
    let answer = h.declare(ALICE, id, &sha, crc).await.unwrap();
    assert_eq!(answer.state(), UploadState::Assembling);
    assert_eq!(answer.crc64nvme, Some(crc));
    let err = h.declare(ALICE, id, &sha, crc ^ 1).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let file = h.assemble(id, &bytes).await;
    assert_eq!(file.sha256_source, "client");
}

/// Checksums are declared while the upload is uploading: afterwards (assembling, completed,
/// cancelled), a first declaration is `FAILED_PRECONDITION`.
#[tokio::test]
async fn checksums_are_declared_while_uploading() {
    let h = start().await;
    let bytes = data(10, 16);
    let crc = crc64nvme(&bytes);
    let (assembling, _) = h.upload_all(ALICE, "late.bin", &bytes).await;
    let err = h
        .declare(ALICE, &assembling.upload_id, "", crc)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("assembling"), "{}", err.message());
    h.assemble(&assembling.upload_id, &bytes).await;
    let err = h
        .declare(ALICE, &assembling.upload_id, "", crc)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    let cancelled = h.create(ALICE, "cancelled.bin", 10).await;
    h.client()
        .cancel_upload(cancel(ALICE, &cancelled.upload_id))
        .await
        .unwrap();
    let err = h
        .declare(ALICE, &cancelled.upload_id, &sha256_hex(&bytes), crc)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let status = h
        .client()
        .get_upload(get(ALICE, &cancelled.upload_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.crc64nvme, None);
}

/// A SHA-256 other than the one declared at creation: the client read another file than it
/// announced. The upload fails with both stated, its storage is released, and the answer is
/// the failed upload (a retry of the declaration gets it again); it takes no more chunks.
#[tokio::test]
async fn a_sha256_other_than_the_creation_s_fails_the_upload() {
    let h = start().await;
    let bytes = data(2 * CHUNK as usize, 17);
    let announced = sha256_hex(b"the file the client meant");
    let computed = sha256_hex(&bytes);
    let upload = h
        .client()
        .create_upload(create_req("swapped.bin", bytes.len() as u64, &announced))
        .await
        .unwrap()
        .into_inner();
    let id = upload.upload_id.as_str();
    let c0 = &bytes[..CHUNK as usize];
    let first = h.begin(ALICE, id, 0, c0, "").await;
    h.write(&upload, 0, c0).await;
    h.commit(ALICE, id, 0, c0, &first.claim_id).await;
    assert_eq!(h.part_files(id).len(), 1);

    let reason = format!(
        "whole-file SHA-256 mismatch: declared {announced} at creation, the client computed {computed} while reading the file"
    );
    let failed = h
        .declare(ALICE, id, &computed, crc64nvme(&bytes))
        .await
        .unwrap();
    assert_eq!(failed.state(), UploadState::Failed);
    assert_eq!(failed.error, reason);
    assert_eq!(failed.crc64nvme, None, "nothing is declared");
    assert!(h.part_files(id).is_empty(), "its storage is released");
    let status = h
        .client()
        .get_upload(get(ALICE, id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (status.state(), status.error.as_str()),
        (UploadState::Failed, reason.as_str())
    );

    let again = h
        .declare(ALICE, id, &computed.to_ascii_uppercase(), crc64nvme(&bytes))
        .await
        .unwrap();
    assert_eq!(
        (again.state(), again.error.as_str()),
        (UploadState::Failed, reason.as_str())
    );
    let err = h
        .declare(ALICE, id, &announced, crc64nvme(&bytes))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let refused = h.begin(ALICE, id, 1, &bytes[CHUNK as usize..], "").await;
    assert_eq!(refused.outcome(), BeginChunkOutcome::NotAccepting);
}

#[tokio::test]
async fn failed_uploads_state_the_reason_and_release_storage() {
    let h = start().await;
    let bytes = data(CHUNK as usize + 5, 11);
    let mut client = h.client();
    let (upload, _) = h.upload_all(ALICE, "corrupt", &bytes).await;
    let id = upload.upload_id.clone();
    let fail = |reason: &str| FailUploadRequest {
        upload_id: id.clone(),
        reason: reason.into(),
    };
    let err = client.fail_upload(fail("  ")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let failed = client
        .fail_upload(fail("whole-file SHA-256 mismatch"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.state(), UploadState::Failed);
    assert_eq!(failed.error, "whole-file SHA-256 mismatch");
    assert!(h.part_files(&id).is_empty());
    let status = client
        .get_upload(get(ALICE, &id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state(), UploadState::Failed);
    assert_eq!(status.error, "whole-file SHA-256 mismatch");
    assert!(status.received_chunks.is_empty());

    // Repeating answers the same; nothing else moves it on.
    let again = client
        .fail_upload(fail("another reason"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.state(), UploadState::Failed);
    assert_eq!(again.error, "whole-file SHA-256 mismatch");
    let err = client
        .complete_assembly(CompleteAssemblyRequest {
            upload_id: id.clone(),
            size: bytes.len() as u64,
            crc64nvme: crc64nvme(&bytes),
            sha256: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = client.cancel_upload(cancel(ALICE, &id)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let refused = h.begin(ALICE, &id, 0, &bytes[..CHUNK as usize], "").await;
    assert_eq!(refused.outcome(), BeginChunkOutcome::NotAccepting);
    assert_eq!(refused.state(), UploadState::Failed);

    // An upload still uploading can fail too; a completed one cannot.
    let uploading = h.create(ALICE, "x", 10).await;
    let failed = client
        .fail_upload(FailUploadRequest {
            upload_id: uploading.upload_id.clone(),
            reason: "the worker gave up".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.state(), UploadState::Failed);
    assert!(h.part_files(&uploading.upload_id).is_empty());
    let file_data = data(10, 12);
    let file = h.publish(ALICE, "fine", &file_data).await;
    let err = client
        .fail_upload(FailUploadRequest {
            upload_id: file.upload_id.clone(),
            reason: "too late".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn files_are_listed_in_pages_newest_first() {
    let h = start().await;
    let mut published = Vec::new();
    for i in 0..5u8 {
        published.push(
            h.publish(
                ALICE,
                &format!("file-{i}"),
                &data(10 + usize::from(i), u64::from(i)),
            )
            .await,
        );
    }
    h.publish(BOB, "bobs", &data(3, 0)).await;
    let mut client = h.client();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_files(ListFilesRequest {
                owner_id: ALICE.into(),
                cursor: cursor.clone(),
                limit: 2,
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.items.len() <= 2);
        seen.extend(page.items);
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 5);
    let ids: HashSet<_> = seen.iter().map(|f| f.file_id.clone()).collect();
    assert_eq!(ids.len(), 5);
    assert!(seen.iter().all(|f| f.owner_id == ALICE));
    assert!(seen
        .windows(2)
        .all(|w| w[0].created_at_ms >= w[1].created_at_ms));
    let err = client
        .list_files(ListFilesRequest {
            owner_id: ALICE.into(),
            cursor: "!!not-a-cursor".into(),
            limit: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    published.reverse();
    assert_eq!(
        seen.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        published
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn deleting_a_file_removes_its_blob() {
    let h = start().await;
    let bytes = data(CHUNK as usize * 3, 13);
    let file = h.publish(ALICE, "bye.bin", &bytes).await;
    assert_eq!(
        h.state.blobs.blob_size(&file.blob_key).await.unwrap(),
        bytes.len() as u64
    );
    let mut client = h.client();
    let del = DeleteFileRequest {
        owner_id: ALICE.into(),
        file_id: file.file_id.clone(),
    };
    client.delete_file(del.clone()).await.unwrap();
    assert!(matches!(
        h.state.blobs.blob_size(&file.blob_key).await,
        Err(StoreError::NotFound(_))
    ));
    let err = client
        .get_file(GetFileRequest {
            owner_id: ALICE.into(),
            file_id: file.file_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        client.delete_file(del).await.unwrap_err().code(),
        Code::NotFound
    );
    let listed = client
        .list_files(ListFilesRequest {
            owner_id: ALICE.into(),
            cursor: String::new(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.items.is_empty());
}

#[tokio::test]
async fn ops_endpoints_answer_on_the_grpc_port_and_shutdown_is_clean() {
    let mut h = start().await;
    h.create(ALICE, "counted", 10).await;

    let (status, _, body) = h.http_get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = h.http_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, head, body) = h.http_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(head.contains("text/plain"));
    assert!(body.contains("lfusys_uploads_created_total"), "{body}");
    assert!(body.contains("lfusys_upload_transitions_total"), "{body}");
    let (status, head, _) = h.http_get("/no/such/thing").await;
    assert_eq!(status, 404);
    assert!(head.contains("application/problem+json"), "{head}");

    h.shutdown().await.unwrap();
    let refused = tokio::net::TcpStream::connect(h.addr).await;
    assert!(refused.is_err(), "the port is closed after shutdown");
}

fn wait_for(owner: &str, upload_id: &str, wait_ms: u32) -> GetUploadRequest {
    GetUploadRequest {
        wait_ms,
        ..get(owner, upload_id)
    }
}

/// The long poll: a waiting status read answers as soon as the upload leaves the state it was
/// in (here: assembling → completed, woken by this process's commit, not by the re-read
/// interval, which is set far above the time it took), and after its wait when nothing
/// changes; someone else's upload is not found at once.
#[tokio::test]
async fn a_waiting_status_read_answers_when_the_upload_changes() {
    let h = start_with(|c| c.wait_recheck = Duration::from_secs(60)).await;
    let bytes = data(CHUNK as usize, 3);
    let (upload, _) = h.upload_all(ALICE, "wait.bin", &bytes).await;
    let id = upload.upload_id.clone();

    // Nothing changes: the answer comes after the wait, still assembling.
    let started = std::time::Instant::now();
    let same = h
        .client()
        .get_upload(wait_for(ALICE, &id, 300))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.state(), UploadState::Assembling);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    // Not the owner: not found, without waiting.
    let started = std::time::Instant::now();
    let err = h
        .client()
        .get_upload(wait_for(BOB, &id, 10_000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(started.elapsed() < Duration::from_secs(5));

    // The assembly completes while a read waits: it answers then, completed.
    let waiting = {
        let mut client = h.client();
        let req = wait_for(ALICE, &id, 15_000);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let answer = client.get_upload(req).await.unwrap().into_inner();
            (answer, started.elapsed())
        })
    };
    waiting_in(&h.state.changes).await;
    assert!(!waiting.is_finished(), "the read waits while assembling");
    let file = h.assemble(&id, &bytes).await;
    let (answer, took) = waiting.await.unwrap();
    assert_eq!(answer.state(), UploadState::Completed);
    assert_eq!(answer.file_id, file.file_id);
    assert!(took < Duration::from_secs(10), "answered after {took:?}");

    // A finished upload answers at once whatever the wait.
    let started = std::time::Instant::now();
    let done = h
        .client()
        .get_upload(wait_for(ALICE, &id, 15_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state(), UploadState::Completed);
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Until a status read waits in the service whose `changes` these are (it holds the upload's
/// change notification).
async fn waiting_in(changes: &sessions::domain::changes::UploadChanges) {
    eventually("a status read to wait", Duration::from_secs(10), || {
        std::future::ready(changes.waiting() >= 1)
    })
    .await;
}

/// Waits in progress answer when the service shuts down, so that its connections drain.
#[tokio::test]
async fn waiting_reads_answer_when_the_service_stops() {
    let mut h = start_with(|c| c.wait_recheck = Duration::from_secs(60)).await;
    let bytes = data(CHUNK as usize, 4);
    let (upload, _) = h.upload_all(ALICE, "stop.bin", &bytes).await;
    let waiting = {
        let mut client = h.client();
        let req = wait_for(ALICE, &upload.upload_id, 15_000);
        tokio::spawn(async move { client.get_upload(req).await })
    };
    waiting_in(&h.state.changes).await;
    let started = std::time::Instant::now();
    h.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
    let answer = waiting.await.unwrap().unwrap().into_inner();
    assert_eq!(answer.state(), UploadState::Assembling);
}

/// Across replicas (on AWS several sessions services share the stores): a read waiting on one
/// replica learns of a change made through another by reading again every `wait_recheck`.
#[tokio::test]
async fn a_waiting_read_sees_the_change_of_another_replica() {
    let h = start_with(|c| c.wait_recheck = Duration::from_millis(200)).await;
    let other = sessions::SessionsState::open(&h.state.config)
        .await
        .unwrap();
    let others_waits = std::sync::Arc::clone(&other.changes);
    let other = test_support::sessions::SessionsServer::start(other).await;
    let mut other_client = sessions_api::client::connect_lazy(&other.url).unwrap();
    let bytes = data(CHUNK as usize, 5);
    let (upload, _) = h.upload_all(ALICE, "replicas.bin", &bytes).await;
    let waiting = {
        let req = wait_for(ALICE, &upload.upload_id, 15_000);
        tokio::spawn(async move { other_client.get_upload(req).await })
    };
    waiting_in(&others_waits).await;
    let file = h.assemble(&upload.upload_id, &bytes).await;
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the other replica's wait answered")
        .unwrap()
        .unwrap()
        .into_inner();
    assert_eq!(answer.state(), UploadState::Completed);
    assert_eq!(answer.file_id, file.file_id);
}
