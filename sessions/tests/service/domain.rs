//! The sessions rules called directly, without gRPC, over real embedded stores: their answers
//! and errors are in domain terms.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lfusys_core::digest::crc64nvme;
use lfusys_core::ids::{ClaimId, UserId};
use lfusys_core::sha256_chain::Sha256Chain;
use lfusys_core::state::UploadState;
use sessions::domain::checksums::DeclaredChecksums;
use sessions::domain::chunks::{ClaimRequest, ClaimVerdict, CommitRequest, CommitVerdict};
use sessions::domain::create::NewUpload;
use sessions::domain::{Conflict, DomainError, Subject};
use sessions::{Config, SessionsDomain, SessionsState};
use storage::Sha256Source;
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
        length_deferred: false,
        concat: storage::Concat::None,
    }
}

fn claim(upload_id: &str, index: u32, data: &[u8]) -> ClaimRequest {
    ClaimRequest {
        owner_id: "alice".into(),
        upload_id: upload_id.into(),
        index,
        size: data.len() as u64,
        claim_id: None,
        sha256_chain: false,
    }
}

fn commit(upload_id: &str, index: u32, data: &[u8], claim_id: Option<ClaimId>) -> CommitRequest {
    CommitRequest {
        owner_id: "alice".into(),
        upload_id: upload_id.into(),
        index,
        size: data.len() as u64,
        crc64nvme: crc64nvme(data),
        claim_id,
        etag: None,
        sha256_chain: None,
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

/// Chunks `indices` of `data` (cut at CHUNK) claimed and recorded; answers whether the last
/// commit completed the set.
async fn store_chunks(d: &SessionsDomain, upload_id: &str, data: &[u8], indices: &[u32]) -> bool {
    let mut completed = false;
    for &index in indices {
        let start = index as usize * CHUNK as usize;
        let chunk = &data[start..(start + CHUNK as usize).min(data.len())];
        let claimed = d.begin_chunk(claim(upload_id, index, chunk)).await.unwrap();
        assert_eq!(claimed.verdict, ClaimVerdict::Claimed);
        let committed = d
            .commit_chunk(commit(upload_id, index, chunk, claimed.claim_id))
            .await
            .unwrap();
        assert_eq!(committed.verdict, CommitVerdict::Stored);
        completed = committed.completed_set;
    }
    completed
}

/// An upload created without its length takes chunks of the deferred plan; its length is
/// declared once, must hold what is stored and fit the bound, and the chunk or the
/// declaration that makes the set whole enqueues the job.
#[tokio::test]
async fn a_deferred_length_is_declared_once_and_the_set_completes_by_chunk_or_by_declaration() {
    let (_dir, state, d) = domain().await;
    let alice = UserId::from("alice");
    let deferred = NewUpload {
        length_deferred: true,
        ..new_upload("stream.bin", 0)
    };
    let rec = d.create_upload(deferred.clone()).await.unwrap();
    assert!(rec.length_deferred);
    assert_eq!(rec.chunk_size, CHUNK);
    let bound = rec.size;
    assert!(bound >= 3 * CHUNK, "{bound}");
    let data: Vec<u8> = (0..2 * CHUNK + 100).map(|i| (i * 7) as u8).collect();
    assert!(!store_chunks(&d, &rec.upload_id, &data, &[0, 1]).await);

    for (size, why) in [(2 * CHUNK - 1, "chunk 1 is stored"), (0, "positive")] {
        let err = d
            .declare_length(&alice, &rec.upload_id, size)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(why), "{size}: {err}");
    }
    let err = d
        .declare_length(&alice, &rec.upload_id, bound + 1)
        .await
        .unwrap_err();
    assert!(matches!(err, DomainError::TooLarge { .. }), "{err:?}");
    let err = d
        .declare_length(&"bob".into(), &rec.upload_id, data.len() as u64)
        .await
        .unwrap_err();
    assert!(matches!(err, DomainError::NotFound(_)), "{err:?}");

    let declared = d
        .declare_length(&alice, &rec.upload_id, data.len() as u64)
        .await
        .unwrap();
    assert_eq!(
        (
            declared.size,
            declared.total_chunks,
            declared.length_deferred,
            declared.state
        ),
        (data.len() as u64, 3, false, UploadState::Uploading)
    );
    let again = d
        .declare_length(&alice, &rec.upload_id, data.len() as u64)
        .await
        .unwrap();
    assert_eq!(again.size, declared.size);
    let err = d
        .declare_length(&alice, &rec.upload_id, data.len() as u64 + 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DomainError::Conflict(Conflict::LengthSet(n)) if n == data.len() as u64),
        "{err:?}"
    );
    assert_eq!(state.queue.depth().await.unwrap().visible, 0);
    assert!(
        store_chunks(&d, &rec.upload_id, &data, &[2]).await,
        "the last chunk completes it"
    );
    assert_eq!(state.queue.depth().await.unwrap().visible, 1);

    // Every chunk there before the length: the declaration completes the set.
    let whole = d.create_upload(deferred).await.unwrap();
    assert!(!store_chunks(&d, &whole.upload_id, &data[..2 * CHUNK as usize], &[0, 1]).await);
    let done = d
        .declare_length(&alice, &whole.upload_id, 2 * CHUNK)
        .await
        .unwrap();
    assert_eq!(
        (done.state, done.total_chunks),
        (UploadState::Assembling, 2)
    );
    assert_eq!(state.queue.depth().await.unwrap().visible, 2);
    let err = d
        .declare_length(&alice, &whole.upload_id, 2 * CHUNK + 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DomainError::Conflict(Conflict::LengthSet(_))),
        "{err:?}"
    );

    // A length for an upload that knew it: only the same one.
    let known = d.create_upload(new_upload("k.bin", 10)).await.unwrap();
    assert_eq!(
        d.declare_length(&alice, &known.upload_id, 10)
            .await
            .unwrap()
            .size,
        10
    );
    assert!(d
        .declare_length(&alice, &known.upload_id, 11)
        .await
        .is_err());
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
    assert_eq!(
        retry.stored_crc64nvme,
        Some(crc64nvme(&data[CHUNK as usize..]))
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
        .complete_assembly(&rec.upload_id, crc64nvme(&data), rec.size + 1, None)
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

/// A worker that receives the file in order gets the file's SHA-256 state before each chunk
/// and commits the one after it; the File's SHA-256 is the last one finished (`received`).
/// A chain that does not end at the chunk's end is refused; a chunk stored without a chain
/// breaks it, and the File then has no SHA-256.
#[tokio::test]
async fn a_sha256_chain_carried_through_the_chunks_gives_the_file_its_sha256() {
    let (_dir, _state, d) = domain().await;
    let data: Vec<u8> = (0..3 * CHUNK + 7).map(|i| (i * 13 % 251) as u8).collect();
    let run = |break_at: Option<u32>| {
        let (d, data) = (&d, &data);
        async move {
            let rec = d
                .create_upload(new_upload("in-order.bin", data.len() as u64))
                .await
                .unwrap();
            for (index, chunk) in data.chunks(CHUNK as usize).enumerate() {
                let index = index as u32;
                let ask = break_at != Some(index);
                let claimed = d
                    .begin_chunk(ClaimRequest {
                        sha256_chain: ask,
                        ..claim(&rec.upload_id, index, chunk)
                    })
                    .await
                    .unwrap();
                assert_eq!(claimed.verdict, ClaimVerdict::Claimed);
                let chain = claimed.sha256_chain.map(|before| {
                    let mut chain = Sha256Chain::from_bytes(&before).unwrap();
                    assert_eq!(
                        chain.len(),
                        u64::from(index) * CHUNK,
                        "the state before the chunk"
                    );
                    chain.update(chunk);
                    chain
                });
                if break_at.is_some_and(|b| index > b) {
                    assert!(
                        chain.is_none(),
                        "a chain broken at chunk {break_at:?} stays broken"
                    );
                }
                let mut commit = commit(&rec.upload_id, index, chunk, claimed.claim_id);
                if let Some(chain) = &chain {
                    // A chain that covers less than the chunk's end is refused, and records nothing.
                    let mut short = chain.clone();
                    if index == 0 {
                        short = Sha256Chain::new();
                    } else {
                        short.update(b"x");
                    }
                    let err = d
                        .commit_chunk(CommitRequest {
                            sha256_chain: Some(short.to_bytes()),
                            ..commit.clone()
                        })
                        .await
                        .unwrap_err();
                    assert!(
                        matches!(
                            err,
                            DomainError::InvalidArgument {
                                field: "sha256_chain",
                                ..
                            }
                        ),
                        "{err:?}"
                    );
                    commit.sha256_chain = Some(chain.to_bytes());
                }
                let committed = d.commit_chunk(commit).await.unwrap();
                assert_eq!(committed.verdict, CommitVerdict::Stored);
            }
            d.complete_assembly(&rec.upload_id, crc64nvme(data), rec.size, None)
                .await
                .unwrap()
        }
    };
    let file = run(None).await;
    assert_eq!(file.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
    assert_eq!(file.sha256_source, Some(Sha256Source::Received));
    let file = run(Some(1)).await;
    assert_eq!((file.sha256, file.sha256_source), (None, None));
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

fn declaration(upload_id: &str, sha256: &str, crc: u64) -> DeclaredChecksums {
    DeclaredChecksums {
        owner_id: "alice".into(),
        upload_id: upload_id.into(),
        sha256: sha256.into(),
        crc64nvme: crc,
    }
}

/// DeclareChecksums in domain terms: others than those declared are `ChecksumsDeclared`, a
/// declaration after uploading is a conflict naming the state, a malformed SHA-256 names its
/// field, and a SHA-256 other than the creation's fails the upload.
#[tokio::test]
async fn declared_checksums_in_domain_terms() {
    let (_dir, _state, d) = domain().await;
    let data: Vec<u8> = (0..100u8).collect();
    let (sha, crc) = (sha256_hex(&data), crc64nvme(&data));
    let rec = d.create_upload(new_upload("a.bin", 100)).await.unwrap();
    let err = d
        .declare_checksums(declaration(&rec.upload_id, "xyz", crc))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DomainError::InvalidArgument {
                field: "sha256",
                ..
            }
        ),
        "{err:?}"
    );
    let declared = d
        .declare_checksums(declaration(&rec.upload_id, &sha, crc))
        .await
        .unwrap();
    assert_eq!(
        (declared.sha256, declared.crc64nvme),
        (Some(sha.clone()), Some(crc))
    );
    let err = d
        .declare_checksums(declaration(&rec.upload_id, &sha, crc ^ 1))
        .await
        .unwrap_err();
    assert!(matches!(err, DomainError::ChecksumsDeclared), "{err:?}");

    let later = d.create_upload(new_upload("b.bin", 100)).await.unwrap();
    d.cancel_upload(&"alice".into(), &later.upload_id)
        .await
        .unwrap();
    let err = d
        .declare_checksums(declaration(&later.upload_id, "", crc))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DomainError::Conflict(Conflict::NotUploading(UploadState::Cancelled))
        ),
        "{err:?}"
    );

    let mut announced = new_upload("c.bin", 100);
    announced.sha256 = "AA".repeat(32);
    let announced = d.create_upload(announced).await.unwrap();
    let failed = d
        .declare_checksums(declaration(&announced.upload_id, &sha, crc))
        .await
        .unwrap();
    assert_eq!(failed.state, UploadState::Failed);
    assert_eq!(
        failed.error.as_deref(),
        Some(
            format!(
                "whole-file SHA-256 mismatch: declared {} at creation, the client computed {sha} while reading the file",
                "aa".repeat(32)
            )
            .as_str()
        )
    );
}

fn partial(name: &str, size: u64) -> NewUpload {
    NewUpload {
        concat: storage::Concat::Partial,
        ..new_upload(name, size)
    }
}

fn final_of(parts: &[&str]) -> NewUpload {
    NewUpload {
        concat: storage::Concat::Final(parts.iter().map(|&p| p.into()).collect()),
        ..new_upload("whole.bin", 0)
    }
}

/// A partial upload holds every byte without completing; a final upload is made of the
/// owner's complete partials only.
#[tokio::test]
async fn a_final_upload_takes_only_the_owner_s_complete_partial_uploads() {
    let (_dir, _state, d) = domain().await;
    let a: Vec<u8> = (0..2 * CHUNK + 10).map(|i| (i * 3) as u8).collect();
    let pa = d.create_upload(partial("a", a.len() as u64)).await.unwrap();
    let pb = d.create_upload(partial("b", 10)).await.unwrap();
    assert!(!store_chunks(&d, &pa.upload_id, &a, &[0, 1, 2]).await);
    let status = d.get_upload(&"alice".into(), &pa.upload_id).await.unwrap();
    assert_eq!(
        (status.upload.state, status.chunks.len()),
        (UploadState::Uploading, 3),
        "a partial upload waits for its final"
    );
    let err = d
        .create_upload(final_of(&[&pa.upload_id, &pb.upload_id]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            DomainError::Conflict(Conflict::PartialIncomplete {
                received: 0,
                size: 10,
                ..
            })
        ),
        "{err:?}"
    );
    let plain = d.create_upload(new_upload("plain", 10)).await.unwrap();
    let err = d
        .create_upload(final_of(&[&plain.upload_id]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            DomainError::InvalidArgument {
                field: "concat_parts",
                ..
            }
        ),
        "{err:?}"
    );
    let bobs = NewUpload {
        owner_id: "bob".into(),
        ..final_of(&[&pa.upload_id])
    };
    assert!(matches!(
        d.create_upload(bobs).await.unwrap_err(),
        DomainError::NotFound(Subject::Upload)
    ));
    assert!(matches!(
        d.create_upload(final_of(&[])).await.unwrap_err(),
        DomainError::InvalidArgument {
            field: "concat_parts",
            ..
        }
    ));
}

/// A final upload goes straight to assembling with its job; its File gets the SHA-256 its
/// assembler hashed, and its partials are released.
#[tokio::test]
async fn a_final_upload_assembles_and_releases_its_partial_uploads() {
    let (_dir, state, d) = domain().await;
    let a: Vec<u8> = (0..2 * CHUNK + 10).map(|i| (i * 3) as u8).collect();
    let b: Vec<u8> = (0..CHUNK / 2).map(|i| (i * 5) as u8).collect();
    let pa = d.create_upload(partial("a", a.len() as u64)).await.unwrap();
    let pb = d.create_upload(partial("b", b.len() as u64)).await.unwrap();
    assert!(!store_chunks(&d, &pa.upload_id, &a, &[0, 1, 2]).await);
    assert!(!store_chunks(&d, &pb.upload_id, &b, &[0]).await);
    let whole = d
        .create_upload(final_of(&[&pa.upload_id, &pb.upload_id]))
        .await
        .unwrap();
    assert_eq!(whole.state, UploadState::Assembling);
    assert_eq!(whole.size, (a.len() + b.len()) as u64);
    assert_eq!(
        whole.concat.parts(),
        [pa.upload_id.clone(), pb.upload_id.clone()]
    );
    let job = state
        .queue
        .receive(Duration::ZERO, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the final's assembly job");
    assert!(job.body.contains(whole.upload_id.as_str()), "{}", job.body);

    // The assembler sends the SHA-256 it hashed; without it nothing is published.
    let bytes = [a.as_slice(), b.as_slice()].concat();
    let crc = crc64nvme(&bytes);
    assert!(matches!(
        d.complete_assembly(&whole.upload_id, crc, whole.size, None)
            .await
            .unwrap_err(),
        DomainError::InvalidArgument {
            field: "sha256",
            ..
        }
    ));
    let sha = sha256_hex(&bytes);
    let file = d
        .complete_assembly(&whole.upload_id, crc, whole.size, Some(&sha))
        .await
        .unwrap();
    assert_eq!(file.sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(file.sha256_source, Some(Sha256Source::Received));
    for part in [&pa, &pb] {
        let rec = state
            .metadata
            .get_upload(&part.upload_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rec.state, UploadState::Cancelled, "{}", part.upload_id);
        assert!(state
            .metadata
            .list_chunks(&part.upload_id)
            .await
            .unwrap()
            .is_empty());
    }
    // Taken partials are gone for another final.
    let err = d
        .create_upload(final_of(&[&pa.upload_id]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DomainError::Conflict(Conflict::PartialNotUploading {
                state: UploadState::Cancelled,
                ..
            })
        ),
        "{err:?}"
    );
}
