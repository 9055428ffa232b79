//! The assembler: consumes the assembly queue and turns complete uploads into Files
//! (DESIGN §3 step 4).
//!
//! One receiver per process long-polls the [`JobQueue`] (10 s wait) whenever one of
//! `Config::assemblers` assembly slots is free, hiding the message it receives for
//! `Config::assembly_visibility`; the assembly that takes it renews that every third of it
//! while it works (heartbeat), so a long job keeps its message while a crashed assembler's
//! job reappears once its visibility runs out. For an [`AssemblyJob`] an assembly:
//!
//! 1. asks the sessions service for the assembly (`GetAssembly`); an upload that is no longer
//!    assembling (completed, failed, cancelled, expired or unknown) is acknowledged and left alone;
//! 2. combines the recorded chunks' CRC-64/NVME (each computed by the worker that stored it)
//!    into the whole file's, and checks it against the one the client declared, if it did;
//! 3. commits the blob (`BlobStore::complete_upload`, idempotent), which first verifies that
//!    what the store holds at each place makes a file with that CRC — S3 from its parts'
//!    checksums (a `FULL_OBJECT` checksum), local disk from its record of positioned writes —
//!    so that a chunk stored at the wrong place is caught without reading the file back;
//! 4. checks the blob's size;
//! 5. publishes the File with that CRC (`CompleteAssembly`, idempotent: the File id derives
//!    from the upload id) and acknowledges (deletes) the message.
//!
//! A mismatch at 2–4 fails the upload with the reason stated, deletes the blob and publishes
//! nothing. The file's SHA-256 is never computed here: the client computes it as it reads
//! the file and declares it with the CRC (docs/protocol.md, "Checksums").
//!
//! A transient error (storage or sessions service unreachable) is logged and the message is
//! not acknowledged: it is redelivered after the visibility timeout.
//!
//! **Dead-letter rule.** A message received more than `Config::assembly_max_attempts` times
//! is not tried again: the upload is marked failed with
//! `assembly failed after N attempts: <last error>` and the message is acknowledged. On SQS the
//! queue's redrive policy moves a job to the dead-letter queue after `assembly_max_attempts`
//! receives (set when the queue is created), before this rule can apply: the sessions service
//! consumes the dead-letter queue and fails the upload (see `sessions::dead_letters`).
//!
//! **Test-only failpoints** ([`failpoint::AFTER_BLOB_COMMIT`], [`failpoint::AFTER_FILE_PUBLISHED`]):
//! armed in `LFUSYS_FAILPOINTS`, the process aborts right after committing a blob and before
//! publishing the File, or after publishing it and before acknowledging the job. The system
//! tests use them to kill an assembler mid-job; never set them in a deployment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lfusys_core::digest::{crc64_hex, crc64nvme_of_pieces};
use lfusys_core::failpoint;
use lfusys_core::ids::UploadId;
use lfusys_core::jobs::AssemblyJob;
use lfusys_core::state::UploadState;
use sessions_api::proto::{
    Assembly, CompleteAssemblyRequest, FailUploadRequest, GetAssemblyRequest,
};
use storage::{PartRef, ReceivedJob, StoreError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::WorkerState;

mod concat;

/// Long-poll wait of one receive.
pub const RECEIVE_WAIT: Duration = Duration::from_secs(10);

/// The last transient error per upload, shared by the assemblers of this process, for the
/// reason given when a job is dead-lettered.
type LastErrors = Arc<Mutex<HashMap<UploadId, String>>>;

/// Starts the assemblers: one receiver that long-polls the queue and hands each job to one of
/// up to `tasks` concurrent assemblies, until `stop` is cancelled; the returned task ends once
/// the assemblies in progress have ended too.
///
/// One receiver, not one per assembly: a receive in progress when the process dies may still
/// be handed a job by the queue (SQS, and moto, deliver to a long poll whose caller is gone),
/// which then counts as a delivery and stays invisible for the visibility timeout. With a long
/// poll per assembler, 32 of them dead after a crash could use up a job's five deliveries
/// before any live assembler saw it (seen on moto: jobs dead-lettered 11 s after the restart).
pub(crate) fn spawn(
    state: &WorkerState,
    tasks: usize,
    stop: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    if tasks == 0 {
        return Vec::new();
    }
    let a = Arc::new(Assembler {
        state: state.clone(),
        stop: stop.clone(),
        last_errors: LastErrors::default(),
    });
    vec![tokio::spawn(async move {
        tracing::debug!(assemblers = tasks, "assemblers started");
        a.run(tasks).await;
        tracing::debug!("assemblers stopped");
    })]
}

struct Assembler {
    state: WorkerState,
    stop: CancellationToken,
    last_errors: LastErrors,
}

/// How a job ended; all of these acknowledge the message.
enum Done {
    Completed { file_id: String },
    Failed { reason: String },
    Skipped { why: String },
}

/// A transient failure: the message is left to be redelivered.
struct Retry(String);

impl Assembler {
    fn visibility(&self) -> Duration {
        self.state.config().assembly_visibility
    }

    /// The receiver: takes a job only when one of the `tasks` assemblies is free, runs it on a
    /// task of its own, and at the end waits for those in progress.
    async fn run(self: &Arc<Self>, tasks: usize) {
        let queue = Arc::clone(self.state.queue());
        let free = Arc::new(tokio::sync::Semaphore::new(tasks));
        loop {
            let slot = tokio::select! {
                slot = Arc::clone(&free).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
                () = self.stop.cancelled() => break,
            };
            let receive = queue.receive(RECEIVE_WAIT, self.visibility());
            tokio::pin!(receive);
            let received = tokio::select! {
                r = &mut receive => r,
                () = self.stop.cancelled() => {
                    if queue.receives_outlive_their_caller() {
                        // The queue may still hand this receive a job: take the answer and
                        // give such a job back at once, rather than leave it invisible (and
                        // its upload waiting) for the whole visibility timeout.
                        let answer =
                            tokio::time::timeout(RECEIVE_WAIT + Duration::from_secs(5), receive).await;
                        if let Ok(Ok(Some(job))) = answer {
                            if let Err(e) = queue.extend_visibility(&job.receipt, Duration::ZERO).await {
                                tracing::debug!(error = %e, "returning a job received while stopping failed");
                            }
                        }
                    }
                    break;
                }
            };
            match received {
                Ok(Some(job)) => {
                    let a = Arc::clone(self);
                    tokio::spawn(async move {
                        a.handle(job).await;
                        drop(slot);
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "receiving from the assembly queue failed");
                    tokio::select! {
                        () = self.stop.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        // The assemblies in progress hand their jobs back (they see `stop` too): wait for them.
        let all = u32::try_from(tasks).unwrap_or(u32::MAX);
        let _ = free.acquire_many(all).await;
    }

    async fn handle(&self, job: ReceivedJob) {
        let queue = Arc::clone(self.state.queue());
        let heartbeat = Heartbeat::start(&self.state, &job.receipt, self.visibility());
        let started = Instant::now();
        let result = tokio::select! {
            () = self.stop.cancelled() => {
                drop(heartbeat);
                // Hand the job back at once rather than after the visibility timeout.
                if let Err(e) = queue.extend_visibility(&job.receipt, Duration::ZERO).await {
                    tracing::debug!(error = %e, "returning an unfinished job to the queue failed");
                }
                return;
            }
            r = self.process(&job) => r,
        };
        drop(heartbeat);
        let upload_id = AssemblyJob::from_body(&job.body)
            .map(|j| j.upload_id)
            .unwrap_or_default();
        let outcome = match result {
            Err(Retry(error)) => {
                tracing::warn!(%upload_id, attempt = job.receive_count, %error, "assembly failed; the job will be redelivered");
                self.last_errors
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(upload_id, error);
                metrics::counter!("lfusys_assemblies_total", "outcome" => "retry").increment(1);
                return;
            }
            Ok(done) => done,
        };
        self.last_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&upload_id);
        let label = match &outcome {
            Done::Completed { file_id } => {
                metrics::histogram!("lfusys_assembly_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                tracing::info!(%upload_id, %file_id, seconds = started.elapsed().as_secs_f64(), "upload assembled");
                "completed"
            }
            Done::Failed { reason } => {
                tracing::warn!(%upload_id, %reason, "upload failed in assembly");
                "failed"
            }
            Done::Skipped { why } => {
                tracing::info!(%upload_id, %why, "assembly job acknowledged without work");
                "skipped"
            }
        };
        metrics::counter!("lfusys_assemblies_total", "outcome" => label).increment(1);
        if label == "completed" {
            failpoint::hit(failpoint::AFTER_FILE_PUBLISHED);
        }
        if let Err(e) = queue.delete(&job.receipt).await {
            // The message was redelivered meanwhile; its next run finds the work done.
            tracing::warn!(%upload_id, error = %e, "acknowledging the assembly job failed");
        }
    }

    async fn process(&self, job: &ReceivedJob) -> Result<Done, Retry> {
        let Ok(AssemblyJob { upload_id }) = AssemblyJob::from_body(&job.body) else {
            tracing::error!(body = %job.body, "dropping a malformed assembly job");
            return Ok(Done::Skipped {
                why: "malformed job".to_owned(),
            });
        };
        let Some(assembly) = self.get_assembly(&upload_id).await? else {
            return Ok(Done::Skipped {
                why: "the upload does not exist".to_owned(),
            });
        };
        let upload = assembly.upload.clone().unwrap_or_default();
        let upload_state = sessions_api::upload_state(upload.state);
        if upload_state != Some(UploadState::Assembling) {
            if upload_state == Some(UploadState::Failed) {
                // A failed upload never publishes: drop a blob an earlier run may have left.
                self.delete_blob(&assembly.blob_key).await;
            }
            return Ok(Done::Skipped {
                why: format!(
                    "the upload is {}",
                    upload_state.map_or("in an unknown state", UploadState::as_str)
                ),
            });
        }

        let max = self.state.config().assembly_max_attempts;
        if job.receive_count > max {
            let last = self
                .last_errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&upload_id)
                .cloned()
                .unwrap_or_else(|| {
                    "no error was recorded by this worker (an assembler may have crashed)"
                        .to_owned()
                });
            let reason = format!(
                "assembly failed after {} attempts: {last}",
                job.receive_count - 1
            );
            return self.fail(&upload_id, &assembly.blob_key, reason).await;
        }

        if upload.partial {
            // Only its final's assembler copies it (it never reaches assembling itself).
            return Ok(Done::Skipped {
                why: "a partial upload is assembled into its final upload".to_owned(),
            });
        }
        let blob = self.state.blob();
        let committed = if upload.concat_parts.is_empty() {
            self.commit(&upload_id, &assembly)
                .await?
                .map(|whole| (whole, None))
        } else {
            concat::assemble(self, &assembly)
                .await?
                .map(|(whole, sha256)| (whole, Some(sha256)))
        };
        let (whole, copied_sha256) = match committed {
            Ok(found) => found,
            Err(reason) => return self.fail(&upload_id, &assembly.blob_key, reason).await,
        };
        failpoint::hit(failpoint::AFTER_BLOB_COMMIT);

        let size = blob
            .blob_size(&assembly.blob_key)
            .await
            .map_err(|e| Retry(format!("reading the blob's size: {e}")))?;
        if size != upload.size {
            let reason = format!(
                "assembled size mismatch: expected {} bytes, the blob has {size}",
                upload.size
            );
            return self.fail(&upload_id, &assembly.blob_key, reason).await;
        }
        let req = CompleteAssemblyRequest {
            upload_id: upload_id.to_string(),
            size,
            crc64nvme: whole,
            sha256: copied_sha256.unwrap_or_default(),
        };
        match self.state.sessions().complete_assembly(req).await {
            Ok(file) => Ok(Done::Completed {
                file_id: file.into_inner().file_id,
            }),
            // The upload moved on meanwhile (failed, or completed and deleted): nothing to publish.
            Err(s) if s.code() == tonic::Code::FailedPrecondition => Ok(Done::Skipped {
                why: format!("the file was not published: {}", s.message()),
            }),
            Err(s) => Err(Retry(format!("publishing the file: {}", s.message()))),
        }
    }

    /// Steps 2 and 3: the file's CRC from its chunks', checked against the client's, then the
    /// commit, which the store makes only once it has verified the file against it. Answers
    /// that CRC, or why the upload fails.
    async fn commit(
        &self,
        upload_id: &UploadId,
        assembly: &Assembly,
    ) -> Result<Result<u64, String>, Retry> {
        let upload = assembly.upload.clone().unwrap_or_default();
        let parts: Vec<PartRef> = assembly.parts.iter().map(PartRef::from).collect();
        let whole = crc64nvme_of_pieces(parts.iter().map(|p| (p.crc64nvme, p.size)));
        if let Some(declared) = upload.crc64nvme.filter(|&d| d != whole) {
            return Ok(Err(format!(
                "whole-file CRC-64/NVME mismatch: the client declared {}, the chunks received make {}",
                crc64_hex(declared),
                crc64_hex(whole)
            )));
        }
        let committed = self
            .state
            .blob()
            .complete_upload(
                upload_id,
                sessions_api::optional(&upload.storage_handle),
                &parts,
                &assembly.blob_key,
                whole,
            )
            .await;
        match committed {
            Ok(()) => Ok(Ok(whole)),
            Err(StoreError::ChecksumMismatch(detail)) => Ok(Err(format!(
                "the stored file is not the file received (CRC-64/NVME {}): {detail}",
                crc64_hex(whole)
            ))),
            Err(e) => Err(Retry(format!("committing the blob: {e}"))),
        }
    }

    async fn get_assembly(&self, upload_id: &UploadId) -> Result<Option<Assembly>, Retry> {
        let req = GetAssemblyRequest {
            upload_id: upload_id.to_string(),
        };
        match self.state.sessions().get_assembly(req).await {
            Ok(res) => Ok(Some(res.into_inner())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(Retry(format!("reading the assembly: {}", s.message()))),
        }
    }

    /// Marks the upload failed (nothing is published) and deletes its blob.
    async fn fail(
        &self,
        upload_id: &UploadId,
        blob_key: &str,
        reason: String,
    ) -> Result<Done, Retry> {
        let req = FailUploadRequest {
            upload_id: upload_id.to_string(),
            reason: reason.clone(),
        };
        match self.state.sessions().fail_upload(req).await {
            Ok(res) => {
                let upload = res.into_inner();
                if sessions_api::upload_state(upload.state) == Some(UploadState::Failed) {
                    self.delete_blob(blob_key).await;
                    Ok(Done::Failed { reason })
                } else {
                    // Someone else finished it first; its blob may be a published file.
                    Ok(Done::Skipped {
                        why: format!("the upload is {} already", upload.state().as_str_name()),
                    })
                }
            }
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::FailedPrecondition | tonic::Code::NotFound
                ) =>
            {
                Ok(Done::Skipped {
                    why: format!("the upload could not be failed: {}", s.message()),
                })
            }
            Err(s) => Err(Retry(format!("failing the upload: {}", s.message()))),
        }
    }

    async fn delete_blob(&self, blob_key: &str) {
        if blob_key.is_empty() {
            return;
        }
        if let Err(e) = self.state.blob().delete_blob(blob_key).await {
            tracing::warn!(%blob_key, error = %e, "deleting the blob of a failed upload failed");
        }
    }
}

/// Keeps a received message invisible while its job runs; stops when dropped.
struct Heartbeat(JoinHandle<()>);

impl Heartbeat {
    fn start(state: &WorkerState, receipt: &str, visibility: Duration) -> Self {
        let queue = Arc::clone(state.queue());
        let receipt = receipt.to_owned();
        let every = (visibility / 3).max(Duration::from_millis(50));
        Self(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = queue.extend_visibility(&receipt, visibility).await {
                    tracing::warn!(error = %e, "extending the assembly job's visibility failed");
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}
