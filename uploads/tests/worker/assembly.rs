//! The assembler (DESIGN §3 step 4): whole-file checksum, redelivery after a dead assembler,
//! heartbeat of long jobs, duplicate jobs, and the dead-letter rule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use async_trait::async_trait;
use lfusys_core::ids::{blob_key_for_file, file_id_for_upload};
use lfusys_core::jobs::AssemblyJob;
use lfusys_core::range::ByteRange;
use lfusys_core::state::UploadState;
use storage::{
    BlobStore, ByteStream, ChunkTarget, PartRef, StagedPiece, StoreError, StoreResult, UploadId,
    WrittenChunk,
};

async fn upload_all(h: &Harness, up: &TestUpload) {
    for i in 0..up.plan.total_chunks {
        let r = h.put_chunk(up, i).await;
        assert_eq!(r.status, 201, "{r:?}");
    }
}

fn no_assembler() -> Options {
    Options {
        worker: WorkerOptions {
            assemblers: 0,
            ..WorkerOptions::default()
        },
        ..Options::default()
    }
}

/// The client declared a whole-file CRC-64/NVME that the chunks received do not make (it read
/// another file than it sent, or the bytes changed on the way in a way each chunk's check
/// missed): the upload fails with both values and nothing is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_file_checksum_mismatch_fails_the_upload_and_publishes_nothing() {
    let h = Harness::start(Options::default()).await;
    let up = h.create_upload((2 * CHUNK + 5) as usize, None).await;
    let declared = lfusys_core::digest::crc64nvme(b"not the uploaded bytes");
    h.grpc
        .clone()
        .declare_checksums(sessions_api::proto::DeclareChecksumsRequest {
            owner_id: OWNER.to_owned(),
            upload_id: up.id.clone(),
            sha256: String::new(),
            crc64nvme: declared,
        })
        .await
        .unwrap();
    upload_all(&h, &up).await;
    let failed = h
        .wait_for_state(&up.id, UploadState::Failed, Duration::from_secs(30))
        .await;
    assert_eq!(
        failed.error,
        format!(
            "whole-file CRC-64/NVME mismatch: the client declared {}, the chunks received make {}",
            lfusys_core::digest::crc64_hex(declared),
            lfusys_core::digest::crc64_hex(lfusys_core::digest::crc64nvme(&up.data))
        )
    );
    assert!(failed.file_id.is_empty());
    assert!(h.files().await.is_empty());
    let blob = h.storage().blob_store().await.unwrap();
    let key = blob_key_for_file(&file_id_for_upload(&up.id));
    assert!(
        matches!(blob.blob_size(&key).await, Err(StoreError::NotFound(_))),
        "the blob was deleted"
    );
    assert!(!h
        .dir
        .path()
        .join(format!("blobs/uploads/{}.part", up.id))
        .exists());
    eventually(
        "the job to be acknowledged",
        Duration::from_secs(10),
        || async { (h.worker.queue.deleted() == 1).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_assembler_died_is_redelivered_and_completes_once() {
    let h = Harness::start(no_assembler()).await;
    let up = h.create_upload((3 * CHUNK + 1) as usize, None).await;
    upload_all(&h, &up).await;
    h.wait_for_state(&up.id, UploadState::Assembling, Duration::from_secs(5))
        .await;

    // A dead assembler: it takes the job and never acknowledges it.
    let queue = h.storage().job_queue().await.unwrap();
    let dead = queue
        .receive(Duration::from_secs(5), Duration::from_secs(2))
        .await
        .unwrap()
        .expect("the assembly job");
    let received_at = Instant::now();
    assert_eq!(dead.receive_count, 1);
    assert_eq!(AssemblyJob::from_body(&dead.body).unwrap().upload_id, up.id);

    let worker = h
        .start_worker(&WorkerOptions {
            assemblers: 1,
            visibility: Duration::from_secs(1),
            max_attempts: 5,
        })
        .await;
    let done = h
        .wait_for_state(&up.id, UploadState::Completed, Duration::from_secs(30))
        .await;
    assert!(
        received_at.elapsed() >= Duration::from_millis(1500),
        "the job stayed hidden until the dead assembler's visibility ran out"
    );
    eventually("the acknowledgement", Duration::from_secs(10), || async {
        (worker.queue.deleted() == 1).then_some(())
    })
    .await;
    assert_eq!(
        worker.queue.receives(),
        [2],
        "the second delivery did the work"
    );
    let files = h.files().await;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].file_id, done.file_id);
    assert_eq!(files[0].sha256, up.file_sha256());
    assert!(h.read_blob(&files[0].blob_key).await == up.data);
    // The dead assembler's receipt is stale.
    assert!(queue.delete(&dead.receipt).await.is_err());

    // A duplicated job (another dedup id) is acknowledged without a second File.
    let body = AssemblyJob {
        upload_id: up.id.as_str().into(),
    }
    .to_body();
    queue
        .send(&format!("again-{}", up.id), &body)
        .await
        .unwrap();
    eventually(
        "the duplicate to be acknowledged",
        Duration::from_secs(20),
        || async { (worker.queue.deleted() == 2).then_some(()) },
    )
    .await;
    let again = h.files().await;
    assert_eq!(again, files);
    assert!(h.read_blob(&files[0].blob_key).await == up.data);
    worker.stop().await;
}

/// The real local blob store, with committing slowed down (a long job).
struct SlowCommit {
    inner: Arc<dyn BlobStore>,
    delay: Duration,
}

#[async_trait]
impl BlobStore for SlowCommit {
    async fn begin_upload(&self, upload_id: &UploadId, size: u64) -> StoreResult<Option<String>> {
        self.inner.begin_upload(upload_id, size).await
    }
    async fn set_upload_size(&self, upload_id: &UploadId, size: u64) -> StoreResult<()> {
        self.inner.set_upload_size(upload_id, size).await
    }
    async fn write_chunk(
        &self,
        target: &ChunkTarget,
        body: ByteStream,
    ) -> StoreResult<WrittenChunk> {
        self.inner.write_chunk(target, body).await
    }
    async fn complete_upload(
        &self,
        upload_id: &UploadId,
        handle: Option<&str>,
        parts: &[PartRef],
        blob_key: &str,
        whole_crc64nvme: u64,
    ) -> StoreResult<()> {
        tokio::time::sleep(self.delay).await;
        self.inner
            .complete_upload(upload_id, handle, parts, blob_key, whole_crc64nvme)
            .await
    }
    async fn abort_upload(&self, upload_id: &UploadId, handle: Option<&str>) -> StoreResult<()> {
        self.inner.abort_upload(upload_id, handle).await
    }
    async fn stage_piece(
        &self,
        upload_id: &UploadId,
        index: u32,
        start: u64,
        len: u64,
        body: ByteStream,
    ) -> StoreResult<()> {
        self.inner
            .stage_piece(upload_id, index, start, len, body)
            .await
    }
    async fn staged_pieces(
        &self,
        upload_id: &UploadId,
        index: u32,
    ) -> StoreResult<Vec<StagedPiece>> {
        self.inner.staged_pieces(upload_id, index).await
    }
    async fn read_staged(
        &self,
        upload_id: &UploadId,
        index: u32,
        piece: StagedPiece,
    ) -> StoreResult<ByteStream> {
        self.inner.read_staged(upload_id, index, piece).await
    }
    async fn discard_staged(&self, upload_id: &UploadId, index: u32) -> StoreResult<()> {
        self.inner.discard_staged(upload_id, index).await
    }
    async fn blob_size(&self, blob_key: &str) -> StoreResult<u64> {
        self.inner.blob_size(blob_key).await
    }
    async fn read_blob(&self, blob_key: &str, range: Option<ByteRange>) -> StoreResult<ByteStream> {
        self.inner.read_blob(blob_key, range).await
    }
    async fn delete_blob(&self, blob_key: &str) -> StoreResult<()> {
        self.inner.delete_blob(blob_key).await
    }
    async fn check(&self) -> StoreResult<()> {
        self.inner.check().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_job_keeps_its_message_hidden() {
    let h = Harness::start(no_assembler()).await;
    let up = h.create_upload((CHUNK + 3) as usize, None).await;
    upload_all(&h, &up).await;
    // Two assemblers whose jobs take more than two visibility timeouts: without the heartbeat
    // the second would receive the job while the first still works on it.
    let opts = WorkerOptions {
        assemblers: 1,
        visibility: Duration::from_secs(2),
        max_attempts: 5,
    };
    let mut slow = Vec::new();
    for _ in 0..2 {
        let inner = h.storage().blob_store().await.unwrap();
        slow.push(Arc::new(SlowCommit {
            inner,
            delay: Duration::from_millis(4500),
        }) as Arc<dyn BlobStore>);
    }
    let b = h.start_worker_with(&opts, slow.pop().unwrap()).await;
    let a = h.start_worker_with(&opts, slow.pop().unwrap()).await;
    h.wait_for_state(&up.id, UploadState::Completed, Duration::from_secs(30))
        .await;
    eventually("the acknowledgement", Duration::from_secs(10), || async {
        (a.queue.deleted() + b.queue.deleted() == 1).then_some(())
    })
    .await;
    let receives: Vec<u32> = a
        .queue
        .receives()
        .into_iter()
        .chain(b.queue.receives())
        .collect();
    assert_eq!(receives, [1], "the job was delivered once");
    assert_eq!(h.files().await.len(), 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_delivered_more_than_the_maximum_fails_the_upload() {
    let h = Harness::start(no_assembler()).await;
    let up = h.create_upload((2 * CHUNK) as usize, None).await;
    upload_all(&h, &up).await;
    h.wait_for_state(&up.id, UploadState::Assembling, Duration::from_secs(5))
        .await;
    // Every attempt fails: the staged bytes are gone.
    std::fs::remove_file(h.dir.path().join(format!("blobs/uploads/{}.part", up.id))).unwrap();

    let worker = h
        .start_worker(&WorkerOptions {
            assemblers: 1,
            visibility: Duration::from_secs(1),
            max_attempts: 2,
        })
        .await;
    let failed = h
        .wait_for_state(&up.id, UploadState::Failed, Duration::from_secs(30))
        .await;
    assert!(
        failed
            .error
            .starts_with("assembly failed after 2 attempts: committing the blob"),
        "{failed:?}"
    );
    eventually("the acknowledgement", Duration::from_secs(10), || async {
        (worker.queue.deleted() == 1).then_some(())
    })
    .await;
    assert_eq!(worker.queue.receives(), [1, 2, 3]);
    assert!(h.files().await.is_empty());
    let depth = h
        .storage()
        .job_queue()
        .await
        .unwrap()
        .depth()
        .await
        .unwrap();
    assert_eq!((depth.visible, depth.in_flight), (0, 0));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_for_a_finished_upload_is_acknowledged_without_work() {
    let h = Harness::start(Options::default()).await;
    let up = h.create_upload(100, None).await;
    h.grpc
        .clone()
        .cancel_upload(sessions_api::proto::CancelUploadRequest {
            owner_id: OWNER.to_owned(),
            upload_id: up.id.as_str().into(),
        })
        .await
        .unwrap();
    let queue = h.storage().job_queue().await.unwrap();
    for (dedup, body) in [
        (
            up.id.clone(),
            AssemblyJob {
                upload_id: up.id.as_str().into(),
            }
            .to_body(),
        ),
        (
            "unknown".to_owned(),
            AssemblyJob {
                upload_id: "0190b7a4-0000-7000-8000-000000000000".into(),
            }
            .to_body(),
        ),
        ("malformed".to_owned(), "{not json".to_owned()),
    ] {
        queue.send(&dedup, &body).await.unwrap();
    }
    eventually(
        "three acknowledgements",
        Duration::from_secs(20),
        || async { (h.worker.queue.deleted() == 3).then_some(()) },
    )
    .await;
    let got = h.get_upload(&up.id).await;
    assert_eq!(
        sessions_api::upload_state(got.state),
        Some(UploadState::Cancelled)
    );
    assert!(h.files().await.is_empty());
}
