//! The consumer of the assembly queue's dead-letter queue.
//!
//! On SQS, the assembly queue's redrive policy moves a job that was received
//! `max_receives` times without being acknowledged (an assembler kept failing on it or kept
//! crashing) to the dead-letter queue. The sessions service, the authority over upload states,
//! consumes that queue: it marks the job's upload `failed` with the reason, releases its
//! storage (aborts the multipart upload and deletes a blob an assembler may have committed)
//! and acknowledges the message. A job whose upload is no longer assembling (it completed
//! after all, or is gone) is acknowledged without change. A store failure leaves the message
//! to be received again.
//!
//! The embedded queue has no dead-letter queue: there the assembler itself fails an upload
//! whose job was delivered more than `LFUSYS_ASSEMBLY_MAX_ATTEMPTS` times.

use std::sync::Arc;
use std::time::Duration;

use lfusys_core::ids::UploadId;
use lfusys_core::jobs::AssemblyJob;
use storage::{JobQueue, ReceivedJob, StoreError};
use stores::StorageConfig;
use tokio::sync::watch;

use crate::domain::assembly::fail_dead_lettered;
use crate::SessionsState;

const WAIT: Duration = Duration::from_secs(10);
const VISIBILITY: Duration = Duration::from_secs(60);

/// What happened to one dead-lettered job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The upload was marked failed.
    Failed { upload_id: UploadId },
    /// Nothing to do (malformed job, unknown upload, or an upload no longer assembling).
    Ignored,
}

/// The reason recorded on an upload whose job was dead-lettered.
pub fn reason(state: &SessionsState) -> String {
    match &state.config.storage {
        StorageConfig::Aws { resources, .. } => format!(
            "assembly failed: the job was received {} times without completing and was moved to the dead-letter queue",
            resources.max_receives
        ),
        StorageConfig::Embedded { .. } => {
            "assembly failed: the job was moved to the dead-letter queue".to_owned()
        }
    }
}

/// Settles one dead-lettered job (without acknowledging it).
pub async fn settle(state: &SessionsState, job: &ReceivedJob) -> Result<Settled, StoreError> {
    let Ok(AssemblyJob { upload_id }) = AssemblyJob::from_body(&job.body) else {
        tracing::error!(body = %job.body, "dropping a malformed dead-lettered job");
        return Ok(Settled::Ignored);
    };
    if fail_dead_lettered(state, &upload_id, &reason(state)).await? {
        Ok(Settled::Failed { upload_id })
    } else {
        Ok(Settled::Ignored)
    }
}

/// Receives from `dead_letters` until `stop` turns true or is dropped.
pub(crate) async fn run(
    state: SessionsState,
    dead_letters: Arc<dyn JobQueue>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let received = tokio::select! {
            r = dead_letters.receive(WAIT, VISIBILITY) => r,
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
                continue;
            }
        };
        match received {
            Ok(Some(job)) => match settle(&state, &job).await {
                Ok(settled) => {
                    tracing::info!(?settled, "dead-lettered assembly job settled");
                    if let Err(e) = dead_letters.delete(&job.receipt).await {
                        tracing::warn!(error = %e, "acknowledging a dead-lettered job failed");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "settling a dead-lettered job failed; it will be received again");
                }
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "receiving from the dead-letter queue failed");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}
